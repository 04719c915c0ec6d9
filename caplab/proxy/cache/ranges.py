"""
Byte ranges (RFC 9110 section 14): what a C{Range} asks of a stored response, what a 206's
C{Content-Range} holds, and whether an C{If-Range} lets a range be served.  Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from caplab.proxy.cache.fields import Headers, bytePosition, headerValues, strongMatch
from caplab.proxy.cache.httpdate import parseHTTPDate


@dataclass(frozen=True)
class Unsatisfiable:
    """
    A C{Range} no byte of the representation satisfies: answered 416 with
    C{Content-Range: bytes */length} (RFC 9110 section 15.5.17).
    """

    length: int


def parseRange(value: bytes, length: int) -> tuple[int, int] | Unsatisfiable | None:
    """
    The one byte range a C{Range} field asks of a representation of C{length} bytes, as
    C{(start, stop)} (stop exclusive, cut at the end), L{Unsatisfiable}, or None when the
    cache leaves the request to the origin: another unit, several ranges, a malformed
    range set, an empty representation (RFC 9110 section 14.1).

    The three forms: C{bytes=100-199}, C{bytes=100-} (from 100 to the end) and C{bytes=-500}
    (the last 500 bytes); the unit is case-insensitive.
    """
    unit, equals, rangeSet = value.strip(b" \t").partition(b"=")
    if not equals or unit.strip(b" \t").lower() != b"bytes" or length <= 0:
        return None
    members = [m.strip(b" \t") for m in rangeSet.split(b",") if m.strip(b" \t")]
    if len(members) != 1:
        return None
    firstText, dash, lastText = members[0].partition(b"-")
    first = bytePosition(firstText) if firstText else -1
    last = bytePosition(lastText) if lastText else -1
    if not dash or first is None or last is None:
        return None  # not a number, or too long to be a position (MAX_DIGITS)
    if first < 0:
        if last < 0:
            return None
        if last == 0:
            return Unsatisfiable(length)
        return max(0, length - last), length
    if last >= 0 and last < first:
        return None
    if first >= length:
        return Unsatisfiable(length)
    return first, min(last + 1, length) if last >= 0 else length


def contentRange(headers: Headers) -> tuple[int, int, int] | None:
    """
    The part a 206 holds, from its one C{Content-Range: bytes FIRST-LAST/COMPLETE}: C{(first,
    stop, complete)} (stop exclusive); None if there is not exactly one such field with a
    known complete length (a C{multipart/byteranges} 206 has none).
    """
    values = headerValues(headers, b"content-range")
    if len(values) != 1:
        return None
    unit, _, spec = values[0].strip(b" \t").partition(b" ")
    span, slash, complete = spec.strip(b" \t").partition(b"/")
    firstText, dash, lastText = span.partition(b"-")
    if unit.lower() != b"bytes" or not slash or not dash:
        return None
    first, last, total = bytePosition(firstText), bytePosition(lastText), bytePosition(complete)
    if first is None or last is None or total is None or not first <= last < total:
        return None
    return first, last + 1, total


def ifRangeAllows(
    value: bytes, etag: bytes | None, lastModified: bytes | None, date: float
) -> bool:
    """
    Whether an C{If-Range} lets the range be served from a stored response with these
    validators (RFC 9110 section 13.1.5): an entity-tag must be strong and equal to a
    strong stored C{ETag}; an HTTP-date must equal the stored C{Last-Modified}, which must
    be strong (at least a second before the stored C{Date}, section 8.8.2.2).  Otherwise the
    whole representation is sent.
    """
    value = value.strip(b" \t")
    if value.startswith((b'"', b"W/")):
        return strongMatch(value, etag)
    when = parseHTTPDate(value)
    modified = parseHTTPDate(lastModified)
    return when is not None and modified is not None and when == modified and date - modified >= 1
