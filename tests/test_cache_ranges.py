"""
Tests for L{caplab.proxy.cache.ranges}: C{Range}, C{Content-Range}, C{If-Range}.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache.httpdate import formatHTTPDate
from caplab.proxy.cache.ranges import Unsatisfiable, contentRange, ifRangeAllows, parseRange

NOW = 1_700_000_000.0


class ParseRangeTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """
        A single range, an open range and a suffix range, cut at the end.
        """
        self.assertEqual(parseRange(b"bytes=2-7", 100), (2, 8))
        self.assertEqual(parseRange(b"bytes=90-200", 100), (90, 100))
        self.assertEqual(parseRange(b"bytes=100-", 1000), (100, 1000))
        self.assertEqual(parseRange(b"bytes=-500", 1000), (500, 1000))
        self.assertEqual(parseRange(b"bytes=-5000", 1000), (0, 1000))
        self.assertEqual(parseRange(b"Bytes = 0-0", 10), (0, 1))

    def test_unsatisfiable(self) -> None:
        """
        A range starting at or past the end, or an empty suffix: 416.
        """
        self.assertEqual(parseRange(b"bytes=100-", 100), Unsatisfiable(100))
        self.assertEqual(parseRange(b"bytes=-0", 100), Unsatisfiable(100))

    def test_leftToOrigin(self) -> None:
        """
        Other units, several ranges, malformed range sets, an empty representation.
        """
        for value in (
            b"items=0-5",
            b"bytes=0-5,10-20",
            b"bytes=5-2",
            b"bytes=a-b",
            b"bytes=-",
            b"bytes 0-5",
            b"bytes=0x1-5",
        ):
            self.assertIsNone(parseRange(value, 100), value)
        self.assertIsNone(parseRange(b"bytes=0-5", 0))

    def test_thousandsOfDigits(self) -> None:
        """
        A position of more digits than Python's C{int()} reads (4,300), or than any
        representation's length needs (18), is no position: the origin decides; leading
        zeros do not count.
        """
        huge = b"9" * 5000
        for value in (b"bytes=" + huge + b"-", b"bytes=0-" + huge, b"bytes=-" + huge):
            self.assertIsNone(parseRange(value, 100), value[:12])
        self.assertIsNone(parseRange(b"bytes=1234567890123456789-", 100))
        self.assertEqual(parseRange(b"bytes=" + b"0" * 5000 + b"2-3", 100), (2, 4))
        self.assertIsNone(contentRange([(b"Content-Range", b"bytes 0-4/" + huge)]))
        self.assertIsNone(contentRange([(b"Content-Range", b"bytes " + huge + b"-4/5")]))

    @settings(max_examples=200, deadline=None)
    @given(st.integers(1, 10_000), st.integers(0, 20_000), st.integers(0, 20_000))
    def test_withinRepresentation(self, length: int, first: int, last: int) -> None:
        """
        A satisfiable range always lies within the representation and is not empty.
        """
        wanted = parseRange(b"bytes=%d-%d" % (first, last), length)
        if isinstance(wanted, tuple):
            start, stop = wanted
            self.assertTrue(0 <= start < stop <= length)
            self.assertEqual(start, first)


class ContentRangeTests(SynchronousTestCase):
    def test_onePart(self) -> None:
        self.assertEqual(contentRange([(b"Content-Range", b"bytes 0-99/1000")]), (0, 100, 1000))
        self.assertEqual(
            contentRange([(b"content-range", b"bytes 999-999/1000")]), (999, 1000, 1000)
        )

    def test_notOnePart(self) -> None:
        for value in (b"bytes 0-99/*", b"bytes */1000", b"bytes 5-2/10", b"bytes 0-10/10", b"x"):
            self.assertIsNone(contentRange([(b"Content-Range", value)]), value)
        self.assertIsNone(contentRange([]))
        twice = [(b"Content-Range", b"bytes 0-1/10"), (b"Content-Range", b"bytes 2-3/10")]
        self.assertIsNone(contentRange(twice))


class IfRangeTests(SynchronousTestCase):
    """
    C{If-Range} lets a range through only with a strong validator that matches.
    """

    def test_entityTag(self) -> None:
        self.assertTrue(ifRangeAllows(b'"v1"', b'"v1"', None, NOW))
        self.assertFalse(ifRangeAllows(b'"v2"', b'"v1"', None, NOW))
        self.assertFalse(ifRangeAllows(b'W/"v1"', b'W/"v1"', None, NOW))
        self.assertFalse(ifRangeAllows(b'"v1"', b'W/"v1"', None, NOW))
        self.assertFalse(ifRangeAllows(b'"v1"', None, None, NOW))

    def test_date(self) -> None:
        """
        A date must equal a strong C{Last-Modified}: one at least a second before C{Date}.
        """
        modified = formatHTTPDate(NOW - 100)
        self.assertTrue(ifRangeAllows(modified, None, modified, NOW))
        self.assertFalse(ifRangeAllows(formatHTTPDate(NOW - 99), None, modified, NOW))
        self.assertFalse(ifRangeAllows(modified, None, modified, NOW - 100.5))
        self.assertFalse(ifRangeAllows(b"Sun, 06 Nov 1994 08:49:37 UTC", None, modified, NOW))
        self.assertFalse(ifRangeAllows(modified, b'"v1"', None, NOW))
