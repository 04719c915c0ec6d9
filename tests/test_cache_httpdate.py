"""
Tests for L{caplab.proxy.cache.httpdate}: HTTP-dates read strictly (RFC 9110 section 5.6.7).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache.httpdate import formatHTTPDate, parseHTTPDate

#: Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example.
EXAMPLE = 784111777.0


class ValidFormsTests(SynchronousTestCase):
    def test_threeForms(self) -> None:
        """
        The IMF-fixdate, the obsolete RFC 850 and asctime forms are all read.
        """
        for value in (
            b"Sun, 06 Nov 1994 08:49:37 GMT",
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
            b"  Sun, 06 Nov 1994 08:49:37 GMT\t",
        ):
            self.assertEqual(parseHTTPDate(value), EXAMPLE, value)

    def test_twoDigitYear(self) -> None:
        """
        An RFC 850 year more than 50 years in the future is the most recent past year with
        those digits.
        """
        now = parseHTTPDate(b"Mon, 01 Jan 2024 00:00:00 GMT")
        self.assertEqual(
            parseHTTPDate(b"Thursday, 01-Jan-70 00:00:00 GMT", now),
            parseHTTPDate(b"Thu, 01 Jan 2070 00:00:00 GMT"),
        )
        self.assertEqual(
            parseHTTPDate(b"Saturday, 01-Jan-00 00:00:00 GMT", now),
            parseHTTPDate(b"Sat, 01 Jan 2000 00:00:00 GMT"),
        )
        self.assertEqual(
            parseHTTPDate(b"Friday, 01-Jan-99 00:00:00 GMT", now),
            parseHTTPDate(b"Fri, 01 Jan 1999 00:00:00 GMT"),
        )

    def test_leapSecond(self) -> None:
        """
        Second 60 (a leap second) is a valid time.
        """
        self.assertIsNotNone(parseHTTPDate(b"Sat, 31 Dec 2016 23:59:60 GMT"))

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 253402300799))
    def test_roundTrip(self, when: int) -> None:
        """
        Whatever instant is formatted is read back.
        """
        self.assertEqual(parseHTTPDate(formatHTTPDate(when)), float(when))


class InvalidFormsTests(SynchronousTestCase):
    """
    Anything that is not exactly one of the three forms is not a date (RFC 9111 section 5.3
    then says an C{Expires} holding it is in the past).
    """

    def test_invalid(self) -> None:
        for value in (
            b"Sun, 06 Nov 1994 08:49:37 UTC",  # another zone
            b"Sun, 06 Nov 1994 08:49:37 +0000",
            b"Sun, 06 Nov 1994 08:49:37 +1000",
            b"Sun, 06 Nov 1994 08:49:37",  # no zone
            b"Sun, 06 Nov 94 08:49:37 GMT",  # a two-digit year in an IMF-fixdate
            b"Sun 06 Nov 1994 08:49:37 GMT",  # no comma
            b"Sun,  06 Nov 1994 08:49:37 GMT",  # doubled spaces
            b"Sun, 06  Nov 1994 08:49:37 GMT",
            b"Sun, 06-Nov-1994 08:49:37 GMT",  # dashes in the date
            b"Sun, 06 Nov 1994 08.49.37 GMT",  # periods in the time
            b"Sun, 06 Nov 1994 8:49:37 GMT",  # a one-digit hour
            b"Sun, 6 Nov 1994 08:49:37 GMT",  # a one-digit day
            b"sun, 06 nov 1994 08:49:37 gmt",  # case
            b"Sun, 06 NOV 1994 08:49:37 GMT",
            b"Sunday, 06 Nov 1994 08:49:37 GMT",  # a long day name in an IMF-fixdate
            b"Sun, 31 Feb 1994 08:49:37 GMT",  # no such day
            b"Sun, 06 Nov 1994 24:00:00 GMT",  # no such hour
            b"Sun, 06 Nov 1994 08:60:00 GMT",
            b"Sunday, 06-Nov-1994 08:49:37 GMT",  # a four-digit year in RFC 850
            b"Sun Nov 6 08:49:37 1994",  # asctime with one space before a one-digit day
            b"Sun Nov  6 08:49:37 1994 GMT",
            b"0",
            b"-1",
            b"",
            b"Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT\u00a0".encode("latin-1"),
        ):
            self.assertIsNone(parseHTTPDate(value), value)
        self.assertIsNone(parseHTTPDate(None))
