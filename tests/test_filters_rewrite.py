"""
Tests for the text rewriter: parsing C{HOSTPATTERN s/REGEX/REPLACEMENT/FLAGS}, the streaming
substitution (the same result however the body is cut), the reach of a pattern, and
character encodings.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.hosts import FilterConfigError
from caplab.proxy.filters.interfaces import ResponseHead
from caplab.proxy.filters.regexwidth import patternReach
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.filters.rewrite import RewriteFilter, parseRewrite
from caplab.proxy.filters.substitute import StreamSubstitution
from caplab.proxy.filters.text import codecName, isText, sniffEncoding
from tests.test_filters_support import makeRequest, runTransform, splitAt

#: Rules whose matches all fit in their computed reach, with text they match often.
RULES = [
    "* s/hello/HOWDY/g",
    "* s/hello/HOWDY/",
    "* s/colou?r/hue/g",
    "* s/l+o/<&>/g",
    r"* s/\bhe/HE/g",
    "* s/(?<=l)l/L/g",
    "* s/o(?= )/0/g",
    "* s/^h/H/g",
    "* s/^h/H/gm",
    "* s/$/END/g",
    "* s/o$/O/gm",
    "* s/(h)(e)/\\2\\1/g",
    "* s/(?P<x>l)/[\\g<x>]/gi",
    "* s/x*/-/g",
    "* s/é+/E/g",
    "* s/ß/ss/gi",
    "* s/ll|lo w/#/g",
    "* s/aa/b/g",
    "* s|/|\\||g",
    "* s/x{0,2}/-/g",
    "* s/(?:|x)/-/g",
    "* s/\\b/|/g",
]
#: Texts on which every rule is tried at every cut and pair of cuts.
TEXTS = ["hello world\nhello colour lo\nxx x", "llo o\nhe é ßx/o\nolor h", "xhello\no"]
ALPHABET = "helo wrdcuxéßaL/\n"


def rewrite(
    rule: str, pieces: list[bytes], charset: str | None = "utf-8", mediaType: str = "text/plain"
) -> bytes:
    parsed = parseRewrite(rule)
    head = ResponseHead(200, b"OK", [], mediaType, charset)
    transform = RewriteFilter(parsed, FilterCounters()).transformBody(makeRequest(), head)
    assert transform is not None
    return runTransform(transform, pieces)


def expected(rule: str, text: str) -> str:
    """
    The rule's substitution over the whole text, by Python's own C{re.sub}: the parsed
    replacement written as a C{re} template.
    """
    parsed = parseRewrite(rule)
    template = "".join(
        p.replace("\\", "\\\\")
        if isinstance(p, str)
        else "\\g<%s>" % (p if isinstance(p, int) else p[0])
        for p in parsed.parts
    )
    return parsed.compiled.sub(template, text, count=0 if parsed.everywhere else 1)


class ParseTests(SynchronousTestCase):
    def test_parts(self) -> None:
        """
        A rule is a host pattern, a space, and a sed-style substitution.
        """
        rule = parseRewrite("example.com,*.example.org s/colou?r/hue/gi")
        self.assertEqual(rule.pattern, "colou?r")
        self.assertEqual(rule.parts, ("hue",))
        self.assertTrue(rule.everywhere)
        self.assertEqual(rule.flags, re.IGNORECASE)
        self.assertTrue(rule.hosts.matches("example.com"))
        self.assertTrue(rule.hosts.matches("a.example.org"))
        self.assertFalse(rule.hosts.matches("example.org"))
        self.assertFalse(rule.hosts.matches("example.net"))

    def test_replacementSyntax(self) -> None:
        """
        C{&} and C{\\0} are the match, C{\\1}..C{\\9} and C{\\g<name>} groups, C{\\&},
        C{\\\\}, C{\\n}, C{\\t} and the escaped delimiter literal.
        """
        rule = parseRewrite(r"* s/(?P<w>a)(b)/&\0\2\g<w>\g<1>\&\\\n\t\//g")
        self.assertEqual(rule.parts, (0, 0, 2, ("w",), 1, "&\\\n\t/"))

    def test_otherDelimiter(self) -> None:
        """
        Any punctuation may delimit; escaped, it stands for itself, literally.
        """
        rule = parseRewrite(r"* s|a\|b|c/d|g")
        self.assertEqual(rule.pattern, r"a\|b")
        self.assertEqual(rule.parts, ("c/d",))
        self.assertEqual(rule.compiled.sub("X", "a|b ab"), "X ab")
        rule = parseRewrite(r"* s#a\#b#x#")
        self.assertEqual(rule.pattern, "a#b")

    def test_flags(self) -> None:
        rule = parseRewrite("* s/a/b/ims")
        self.assertEqual(rule.flags, re.IGNORECASE | re.MULTILINE | re.DOTALL)
        self.assertFalse(rule.everywhere)

    def assertBad(self, text: str, message: str) -> None:
        with self.assertRaises(FilterConfigError) as caught:
            parseRewrite(text)
        self.assertIn(message, str(caught.exception))
        self.assertIn(repr(text), str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_errors(self) -> None:
        """
        Each kind of bad rule gets a one-line message naming the rule and the problem.
        """
        self.assertBad("s/a/b/", "expected 'HOSTPATTERN s/REGEX/REPLACEMENT/FLAGS'")
        self.assertBad("* a/b/c/", "must start with s/")
        self.assertBad("* sxaxbx", "cannot delimit")
        self.assertBad("* s/a/b", "replacement is not closed by '/'")
        self.assertBad("* s/a", "expression is not closed by '/'")
        self.assertBad("* s//b/", "the regular expression is empty")
        self.assertBad("* s/a(/b/", "bad regular expression 'a(': missing ), unterminated")
        self.assertBad("* s/a/b/gq", "unknown flag 'q'")
        self.assertBad("* s/(a)/\\2/", "names group 2, but the expression has 1")
        self.assertBad("* s/a/\\g<x>/", "names group 'x'")
        self.assertBad("* s/a/\\g/", "\\g<name>")
        self.assertBad("http://x/ s/a/b/", "is not a host pattern")
        self.assertBad("a,,b s/a/b/", "empty host pattern")


class StreamingTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(
        st.sampled_from(RULES),
        st.text(alphabet=ALPHABET, max_size=120),
        st.lists(st.integers(0, 400), max_size=8),
    )
    def test_everySplitGivesTheSameOutput(self, rule: str, text: str, cuts: list[int]) -> None:
        """
        However the body is cut, even inside a multi-byte character, the output is that of
        the substitution over the whole text.
        """
        data = text.encode("utf-8")
        self.assertEqual(rewrite(rule, splitAt(data, cuts)).decode("utf-8"), expected(rule, text))

    def test_everyCut(self) -> None:
        """
        Every rule, on texts made for it, at every cut and every pair of cuts (some inside
        a multi-byte character), gives the output of the substitution over the whole text.
        """
        for rule in RULES:
            for text in TEXTS:
                data = text.encode("utf-8")
                want = expected(rule, text).encode("utf-8")
                for first in range(len(data) + 1):
                    for second in range(first, len(data) + 1):
                        got = rewrite(rule, splitAt(data, [first, second]))
                        self.assertEqual(got, want, (rule, text, first, second))

    @settings(max_examples=200, deadline=None)
    @given(
        st.sampled_from(["* s/hello/HOWDY/g", "* s/hel+o/<&>/g", "* s/e/ë/g"]),
        st.text(alphabet="helo ëàœ€", max_size=80),
        st.lists(st.integers(0, 200), max_size=6),
        st.sampled_from(["windows-1252", "iso-8859-15", "utf-8", None]),
    )
    def test_charsets(self, rule: str, text: str, cuts: list[int], charset: str | None) -> None:
        """
        The body is read in the charset of C{Content-Type} (C{iso-8859-1} and friends as
        windows-1252, as browsers do), UTF-8 without one, and written back in it.
        """
        codec = codecName(charset) or "utf-8"
        try:
            data = text.encode(codec)
        except UnicodeEncodeError:
            return
        out = rewrite(rule, splitAt(data, cuts), charset)
        self.assertEqual(out.decode(codec), expected(rule, text))

    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
    def test_invalidBytesSurvive(self, data: bytes, cuts: list[int]) -> None:
        """
        Bytes that are not valid in the body's encoding pass unchanged, so text no rule
        matches is passed byte for byte.
        """
        self.assertEqual(rewrite("* s/zzzz+/y/g", splitAt(data, cuts)), data)
        self.assertEqual(
            rewrite("* s/é/e/g", splitAt(data, cuts)),
            data.decode("utf-8", "surrogateescape")
            .replace("é", "e")
            .encode("utf-8", "surrogateescape"),
        )

    def test_matchAcrossPiecesWithinTheWindow(self) -> None:
        """
        An unbounded pattern finds a match that crosses pieces, as long as it fits in the
        window.
        """
        body = b"<p>keep</p><!-- a long comment " + b"x" * 5000 + b" --> after"
        pieces = splitAt(body, range(0, len(body), 7))
        out = rewrite("* s/<!--.*?-->//gs", pieces)
        self.assertEqual(out, b"<p>keep</p> after")

    def test_firstMatchOnly(self) -> None:
        """
        Without C{g}, only the body's first match is replaced.
        """
        self.assertEqual(rewrite("* s/a/b/", [b"aa", b"aa"]), b"baaa")

    def test_literalHoldsBackLittle(self) -> None:
        """
        A rule with a plain pattern holds back less than its length: the text before it
        is passed on at once.
        """
        parsed = parseRewrite("* s/hello/HOWDY/g")
        transform = RewriteFilter(parsed, FilterCounters()).transformBody(
            makeRequest(), ResponseHead(200, b"OK", [], "text/plain", "utf-8")
        )
        assert transform is not None
        self.assertEqual(transform.feed(b"say hello to the wor"), b"say HOWDY to the")
        self.assertEqual(transform.feed(b"ld"), b" w")
        self.assertEqual(transform.finish(), b"orld")
        self.assertLess(transform.window, 8)

    def test_counts(self) -> None:
        counters = FilterCounters()
        transform = RewriteFilter(parseRewrite("* s/l/L/g"), counters).transformBody(
            makeRequest(), ResponseHead(200, b"OK", [], "text/plain", None)
        )
        assert transform is not None
        runTransform(transform, [b"hello ", b"world"])
        self.assertEqual(counters["rewrites"], 1)
        transform = RewriteFilter(parseRewrite("* s/l+/L/g"), counters).transformBody(
            makeRequest(), ResponseHead(200, b"OK", [], "text/plain", None)
        )
        assert transform is not None
        runTransform(transform, [b"hello ", b"world"])
        transform = RewriteFilter(parseRewrite("* s/l+/L/g"), counters).transformBody(
            makeRequest(), ResponseHead(200, b"OK", [], "text/plain", None)
        )
        assert transform is not None
        runTransform(transform, [b"nothing to see"])
        self.assertEqual(counters["rewrites"], 2)

    def test_onlyText(self) -> None:
        """
        Rules apply to text, JavaScript, JSON, XML and CSS; not to images or unknown
        charsets.
        """
        rule = RewriteFilter(parseRewrite("* s/a/b/g"), FilterCounters())
        mediaType: str | None
        for mediaType in (
            "text/html",
            "text/css",
            "application/javascript",
            "application/json",
            "application/ld+json",
            "image/svg+xml",
        ):
            self.assertTrue(isText(mediaType), mediaType)
        for mediaType, charset in (
            ("image/png", None),
            ("application/octet-stream", None),
            (None, None),
            ("text/plain", "no-such-charset"),
            ("text/plain", "utf-16"),
        ):
            head = ResponseHead(200, b"OK", [], mediaType, charset)
            self.assertIsNone(rule.transformBody(makeRequest(), head), (mediaType, charset))

    def test_sniffedEncoding(self) -> None:
        """
        Without a charset, an HTML page's C{<meta charset>} says it, found in the first
        1024 bytes however they arrive.
        """
        page = (
            '<html><head><meta charset="windows-1252"><title>é</title>'.encode("cp1252")
            + b" " * 1100
            + "é".encode("cp1252")
        )
        out = rewrite("* s/é/E/g", splitAt(page, range(0, len(page), 13)), None, "text/html")
        self.assertEqual(out, page.replace(b"\xe9", b"E"))
        self.assertEqual(sniffEncoding(b"\xef\xbb\xbfabc", "text/plain"), "utf-8")
        self.assertEqual(sniffEncoding(b'@charset "iso-8859-2";', "text/css"), "iso8859-2")
        self.assertEqual(sniffEncoding(b"<p>no meta</p>", "text/html"), "utf-8")

    def test_utf16BodyPassesUnchanged(self) -> None:
        """
        A body the sniffer finds to be UTF-16 (a byte order mark) passes unchanged.
        """
        body = "hello".encode("utf-16")
        self.assertEqual(rewrite("* s/hello/x/g", [body], None), body)


class ReachTests(SynchronousTestCase):
    def test_known(self) -> None:
        """
        The reach of patterns: how many characters a match spans at most (lookaheads
        included), how far lookbehinds look; None where it cannot be bounded.
        """
        cases = {
            "hello": (5, 0),
            "colou?r": (6, 0),
            "[0-9]{4}": (4, 0),
            "a{2,5}b": (6, 0),
            "(?<=abc)d": (1, 3),
            "x(?=yz)": (3, 0),
            "(a|bcd)e": (4, 0),
            r"\bword\b": (4, 0),
            r"[]a]\x41\u00e9": (3, 0),
            "a{}": (3, 0),
            "(?i:ab)": (2, 0),
            "(?P<n>ab)": (2, 0),
            "(?#comment)ab": (2, 0),
            "a+": (None, 0),
            "a{3,}": (None, 0),
            r"(a)\1": (None, None),
            "(?P<n>a)(?P=n)": (None, None),
            "(?x) a b": (None, None),
        }
        for pattern, reach in cases.items():
            self.assertEqual(patternReach(pattern), reach, pattern)
        self.assertEqual(patternReach("a", re.VERBOSE), (None, None))

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(
            [p.split("s/", 1)[1].split("/")[0] for p in RULES if "\\|" not in p]
            + ["a{1,3}b?", "(ab|c){2}", "[^a]{2}x", "(?:a|)b{0,2}"]
        ),
        st.text(alphabet="abcxhelo \n", max_size=60),
    )
    def test_neverTooSmall(self, pattern: str, text: str) -> None:
        """
        No match is longer than the reach.
        """
        ahead, _ = patternReach(pattern)
        if ahead is None:
            return
        for match in re.finditer(pattern, text):
            self.assertLessEqual(match.end() - match.start(), ahead)

    def test_substitutionWindow(self) -> None:
        """
        A L{StreamSubstitution} holds back its reach plus two characters (for C{$} and
        C{\\b}), and keeps a character before its search point (for C{\\b}, C{^}).
        """
        substitution = StreamSubstitution(re.compile(r"\bab\b"), "X", 2, 0)
        self.assertEqual(substitution.window, 4)
        self.assertEqual(substitution.feed("xab ab"), "xa")
        self.assertEqual(substitution.feed(" "), "b")
        self.assertEqual(substitution.finish(), " X ")
