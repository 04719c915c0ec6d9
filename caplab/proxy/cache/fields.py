"""
Reading header fields from raw header lists (C{list[tuple[bytes, bytes]]}, names in any case),
and the numbers and entity-tags in them.
"""

from __future__ import annotations

from caplab.proxy.http1.requests import MAX_LENGTH_DIGITS

Headers = list[tuple[bytes, bytes]]


def headerValues(headers: Headers, name: bytes) -> list[bytes]:
    """
    Every value of header C{name} (lower-case) in C{headers}, in order.
    """
    return [value for key, value in headers if key.lower() == name]


def joinedHeader(headers: Headers, name: bytes) -> bytes | None:
    """
    The values of C{name} joined with C{", "} (a list-based field), or None if absent.
    """
    values = headerValues(headers, name)
    if not values:
        return None
    return b", ".join(values)


def firstHeader(headers: Headers, name: bytes) -> bytes | None:
    """
    The first value of C{name} (a singleton field), or None if absent.
    """
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


#: The most digits a number in a field is read with (delta-seconds, byte positions), as
#: C{Content-Length} is (L{caplab.proxy.http1.requests.MAX_LENGTH_DIGITS}): 18 digits stay
#: below 2^63, and Python's C{int()} refuses strings of more than 4,300 digits anyway.
MAX_DIGITS = MAX_LENGTH_DIGITS

#: What a too large delta-seconds is read as (RFC 9111 section 1.2.2).
MAX_DELTA = 1 << 31


def deltaSeconds(value: bytes | None) -> int | None:
    """
    A delta-seconds value (RFC 9111 section 1.2.2: one or more digits), at most L{MAX_DELTA}
    however many digits it has; None if it is not one.
    """
    if not value or not value.isdigit():
        return None
    value = value.lstrip(b"0") or b"0"
    if len(value) > MAX_DIGITS:
        return MAX_DELTA
    return min(int(value), MAX_DELTA)


def bytePosition(value: bytes) -> int | None:
    """
    A byte position (RFC 9110 section 14.1.1: one or more digits), or None if it is not one
    or has more than L{MAX_DIGITS} significant digits (no representation is that long).
    """
    if not value or not value.isdigit():
        return None
    value = value.lstrip(b"0") or b"0"
    if len(value) > MAX_DIGITS:
        return None
    return int(value)


def isWeak(tag: bytes) -> bool:
    """
    Whether an entity-tag is weak (C{W/"..."}, RFC 9110 section 8.8.3).
    """
    return tag.strip()[:2] == b"W/"


def strongMatch(one: bytes | None, other: bytes | None) -> bool:
    """
    The strong comparison of two entity-tags (RFC 9110 section 8.8.3.2): both present, both
    strong (no C{W/}), and the same.  The one strong comparison of the cache (a 304's or a
    206's validator, C{If-Match}, C{If-Range}, parts combined).
    """
    if one is None or other is None:
        return False
    one, other = one.strip(), other.strip()
    return one == other and not isWeak(one)
