"""
HTTP-dates (RFC 9110 section 5.6.7), read strictly: exactly one of the three grammars,
case-sensitive, with every number in range, or not a date at all.

A cache that reads C{Expires: Thu, 01 Dec 2094 16:00:00 UTC} (a zone other than C{GMT}) or
C{Thu, 01-Dec-2094 16:00:00 GMT} (dashes in an IMF-fixdate) as a date in the future would
serve as fresh what RFC 9111 section 5.3 says is already expired; so nothing here guesses.
"""

from __future__ import annotations

import calendar
import re
from email.utils import formatdate

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_DAY = "(?:" + "|".join(_DAYS) + ")"
_LONG_DAY = "(?:" + "|".join(_LONG_DAYS) + ")"
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"(\d\d):(\d\d):(\d\d)"

#: C{Sun, 06 Nov 1994 08:49:37 GMT}
_IMF_FIXDATE = re.compile(rf"{_DAY}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT")
#: C{Sunday, 06-Nov-94 08:49:37 GMT}
_RFC850 = re.compile(rf"{_LONG_DAY}, (\d\d)-{_MONTH}-(\d\d) {_TIME} GMT")
#: C{Sun Nov  6 08:49:37 1994}
_ASCTIME = re.compile(rf"{_DAY} {_MONTH} (\d\d| \d) {_TIME} (\d{{4}})")

_SECONDS_PER_YEAR = 365.2425 * 86400


def parseHTTPDate(value: bytes | None, now: float | None = None) -> float | None:
    """
    An HTTP-date as seconds since the epoch, or None if C{value} is not exactly one.

    Surrounding spaces and tabs are not part of a field value and are ignored; anything
    else that differs from the grammar (another zone, a missing comma, doubled spaces, a
    one-digit hour, dashes in an IMF-fixdate, lower-case names ...) makes it invalid.

    @param now: the present, to place the two-digit year of an RFC 850 date: a year more
        than 50 years in the future is read as the most recent past year with those digits
        (RFC 9110 section 5.6.7).  Without it, C{00}-C{69} are 20xx and C{70}-C{99} 19xx.
    """
    if not value:
        return None
    try:
        text = value.strip(b" \t").decode("ascii")
    except UnicodeDecodeError:
        return None
    match = _IMF_FIXDATE.fullmatch(text)
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
        return _timestamp(int(year), month, int(day), hour, minute, second)
    match = _RFC850.fullmatch(text)
    if match is not None:
        day, month, shortYear, hour, minute, second = match.groups()
        return _timestamp(_century(int(shortYear), now), month, int(day), hour, minute, second)
    match = _ASCTIME.fullmatch(text)
    if match is not None:
        month, day, hour, minute, second, year = match.groups()
        return _timestamp(int(year), month, int(day.strip()), hour, minute, second)
    return None


def _century(shortYear: int, now: float | None) -> int:
    if now is None:
        return 2000 + shortYear if shortYear < 70 else 1900 + shortYear
    thisYear = 1970 + int(now // _SECONDS_PER_YEAR)
    year = thisYear - thisYear % 100 + shortYear
    if year > thisYear + 50:
        year -= 100
    return year


def _timestamp(
    year: int, monthName: str, day: int, hour: str, minute: str, second: str
) -> float | None:
    month = _MONTHS.index(monthName) + 1
    h, m, s = int(hour), int(minute), int(second)
    if year < 1 or h > 23 or m > 59 or s > 60:
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    return float(calendar.timegm((year, month, day, h, m, min(s, 59))))


def formatHTTPDate(when: float) -> bytes:
    """
    C{when} as an IMF-fixdate.
    """
    return formatdate(when, usegmt=True).encode("ascii")
