"""
Reading header fields from raw header lists (C{list[tuple[bytes, bytes]]}, names in any case).
"""

from __future__ import annotations

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
