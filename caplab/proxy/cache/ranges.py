"""
Byte ranges (RFC 9110 section 14): what a C{Range} asks of a stored response, what a 206's
C{Content-Range} holds, and whether an C{If-Range} lets a range be served.  Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from caplab.proxy.cache.fields import Headers, headerValues
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
    first, dash, last = members[0].partition(b"-")
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0:
            return Unsatisfiable(length)
        return max(0, length - suffix), length
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= length:
        return Unsatisfiable(length)
    return start, min(int(last) + 1, length) if last else length


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
    first, dash, last = span.partition(b"-")
    if (
        unit.lower() != b"bytes"
        or not slash
        or not dash
        or not (first.isdigit() and last.isdigit() and complete.isdigit())
    ):
        return None
    start, stop, total = int(first), int(last) + 1, int(complete)
    if not start < stop <= total:
        return None
    return start, stop, total


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
        return (
            not value.startswith(b"W/")
            and etag is not None
            and not etag.strip().startswith(b"W/")
            and etag.strip() == value
        )
    when = parseHTTPDate(value)
    modified = parseHTTPDate(lastModified)
    return when is not None and modified is not None and when == modified and date - modified >= 1
