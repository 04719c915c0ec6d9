"""
Tests for bodies that come in tiny pieces: the rewriter and the element blocker let small
pieces add up before they search again what they hold (GATHER), so the work per byte is
bounded, and the output is the same however the body is cut.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.elements import ElementBlocker
from caplab.proxy.filters.interfaces import GATHER
from caplab.proxy.filters.substitute import StreamSubstitution
from caplab.proxy.policy import HostList, HostPolicy
from tests.test_filters_support import runTransform, splitAt


class CountingSubstitution(StreamSubstitution[bytes]):
    """
    A substitution that counts the characters each search is given.
    """

    searched = 0

    def _run(self, buffer: bytes, final: bool) -> bytes:
        self.searched += len(buffer)
        return super()._run(buffer, final)


class CountingBlocker(ElementBlocker):
    """
    An element blocker that counts the bytes each scan is given.
    """

    scanned = 0

    def _scan(self, buffer: bytes, final: bool) -> bytes:
        self.scanned += len(buffer)
        return super()._scan(buffer, final)


def blocker(window: int = 65536) -> CountingBlocker:
    blocked = HostList()
    blocked.addLines(["ads.example"], "blocked")
    return CountingBlocker(HostPolicy(blocked, HostList()), "http", "utf-8", window=window)


def marked(match: re.Match[str]) -> str:
    return f"<{match.group()}>"


class RewriteTests(SynchronousTestCase):
    def test_bytePieces(self) -> None:
        """
        A body of 20,000 one-byte pieces under a rule that holds its whole window (4096
        characters ahead and behind) costs at most a few searches per byte, not one of the
        window; the result is the one C{re.sub} gives.
        """
        pattern = re.compile(rb"a[^;]*;")
        body = (b"x" * 97 + b"a;") * 200 + b"tail"
        substitution = CountingSubstitution(pattern, b"<>", 4096, 4096)
        out = runTransform(substitution, splitAt(body, range(len(body))))
        self.assertEqual(out, pattern.sub(b"<>", body))
        self.assertLess(substitution.searched, 4 * GATHER * len(body))

    def test_outputKeepsComing(self) -> None:
        """
        Small pieces wait only for a share of what the substitution holds: what is older
        than the window (and that share) is passed on as the body comes.
        """
        substitution = StreamSubstitution(re.compile("a+b"), "X", 1000, 0)
        passed = 0
        for _ in range(20000):
            passed += len(substitution.feed("c"))
        self.assertGreater(passed, 20000 - 1000 - 1000 - 1000 // GATHER - 10)

    @settings(max_examples=200, deadline=None)
    @given(
        st.text(alphabet="ab;x", max_size=3000),
        st.lists(st.integers(0, 3000), max_size=40),
        st.booleans(),
    )
    def test_sameWhateverTheCuts(self, text: str, cuts: list[int], first: bool) -> None:
        """
        Gathering changes no output: with a window small enough to gather, any cutting of
        the body gives what C{re.sub} gives over the whole of it.
        """
        pattern = re.compile(r"(?<=x)a[ab]*;|^b")
        pieces = [text[i : i + 1] for i in range(len(text))] if not cuts else None
        if pieces is None:
            points = sorted({max(0, min(len(text), c)) for c in cuts})
            pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
        substitution = StreamSubstitution(pattern, marked, 600, 1, first)
        out = "".join(substitution.feed(piece) for piece in pieces) + substitution.finish()
        self.assertEqual(out, pattern.sub(marked, text, count=int(first)))


class ElementTests(SynchronousTestCase):
    def test_longTagBytePieces(self) -> None:
        """
        An 8,000-byte tag that comes a byte at a time is read a few times per byte at most,
        not once per byte whole; blocked elements still go.
        """
        tag = b'<img title="' + b"t" * 8000 + b'" src="http://ads.example/x.png">'
        body = b"<p>a</p>" + tag + b"<p>b</p><img src=http://ads.example/y>"
        transform = blocker()
        out = runTransform(transform, splitAt(body, range(len(body))))
        self.assertEqual(out, b"<p>a</p><p>b</p>")
        self.assertLess(transform.scanned, 4 * GATHER * len(body))

    def test_plainTextNotHeld(self) -> None:
        """
        Text and whole tags are passed on at once: gathering is only for a cut-off tag.
        """
        transform = blocker()
        self.assertEqual(transform.feed(b"<p>hello"), b"<p>hello")
        self.assertEqual(transform.feed(b" world</p>"), b" world</p>")

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 6000), st.lists(st.integers(0, 7000), max_size=60))
    def test_sameWhateverTheCuts(self, size: int, cuts: list[int]) -> None:
        """
        Gathering changes no output: a long tag, kept or removed, however the body is cut.
        """
        kept = b'<img alt="' + b"k" * size + b'" src=/x.png>'
        removed = b'<script data-x="' + b"r" * size + b'" src=//ads.example/a.js>x</script>'
        body = b"<p>1</p>" + kept + b"<p>2</p>" + removed + b"<p>3</p>"
        out = runTransform(blocker(), splitAt(body, cuts))
        self.assertEqual(out, b"<p>1</p>" + kept + b"<p>2</p><p>3</p>")
