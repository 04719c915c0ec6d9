"""
Header-field rules the filters share (RFC 9110): finding and editing fields in a header
list, C{Content-Type} and its charset, C{Cache-Control: no-transform}, content codings, and
what a transformed response must lose.

Pure functions on L{Headers} lists (raw bytes, order and repeats kept); nothing here edits
a list it was given, except where the name says so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from caplab.proxy.hooks import Headers

#: RFC 9110 token characters (tchar): a field name, a media type, a coding, a parameter.
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN = re.compile(_TCHAR + rb"+")
#: A field value may not hold CR, LF or NUL (nor other controls but tab).
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: One element of a comma-separated list, quoted strings kept whole.
_ELEMENT = re.compile(rb'(?:[^,"]|"(?:[^"\\]|\\.)*"?)+')
#: A media type and its parameters.
_MEDIA_TYPE = re.compile(rb"\s*(" + _TCHAR + rb"+/" + _TCHAR + rb"+)\s*")
_PARAMETER = re.compile(rb"\s*;\s*(" + _TCHAR + rb'+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)\s*')

#: Fields a transformed body makes false: its length and digests of the original bytes.
STALE_WHEN_TRANSFORMED = frozenset(
    {
        b"content-length",
        b"content-md5",
        b"digest",
        b"repr-digest",
        b"content-digest",
    }
)


#: What L{markTransformed} removes.
_DROPPED_WHEN_TRANSFORMED = STALE_WHEN_TRANSFORMED | {b"accept-ranges", b"content-encoding"}


def isToken(text: bytes) -> bool:
    """
    Whether C{text} is an RFC 9110 token (a valid field name).
    """
    return _TOKEN.fullmatch(text) is not None


def isFieldValue(value: bytes) -> bool:
    """
    Whether C{value} may be sent as a field value: no CR, LF, NUL or other control byte.
    """
    return _BAD_VALUE.search(value) is None


def fieldValues(headers: Headers, name: bytes) -> list[bytes]:
    """
    Every value of field C{name} (lower-case), in order.
    """
    size = len(name)
    return [v for n, v in headers if len(n) == size and n.lower() == name]


def firstField(headers: Headers, name: bytes) -> bytes | None:
    """
    The first value of field C{name} (lower-case), or None.
    """
    size = len(name)
    for n, v in headers:
        if len(n) == size and n.lower() == name:
            return v
    return None


def removeFields(headers: Headers, names: frozenset[bytes]) -> int:
    """
    Remove the fields named in C{names} (lower-case) from C{headers} in place; how many.
    """
    before = len(headers)
    headers[:] = [(n, v) for n, v in headers if n.lower() not in names]
    return before - len(headers)


def setField(headers: Headers, name: bytes, value: bytes) -> None:
    """
    Make C{value} the only value of field C{name}, in place: the first occurrence is
    replaced (keeping its place), later ones removed; appended if there was none.
    """
    lower = name.lower()
    found = False
    kept: Headers = []
    for n, v in headers:
        if n.lower() == lower:
            if not found:
                kept.append((n, value))
                found = True
            continue
        kept.append((n, v))
    if not found:
        kept.append((name, value))
    headers[:] = kept


def listElements(values: Iterable[bytes]) -> list[bytes]:
    """
    The elements of comma-separated list fields (RFC 9110 §5.6.1), stripped, empty ones
    dropped; quoted strings are not split.
    """
    out = []
    for value in values:
        for match in _ELEMENT.finditer(value):
            element = match.group().strip()
            if element:
                out.append(element)
    return out


def hasNoTransform(headers: Headers) -> bool:
    """
    Whether C{Cache-Control} says C{no-transform} (RFC 9110 §7.7, RFC 9111 §5.2).
    """
    values = fieldValues(headers, b"cache-control")
    if not values:
        return False
    return any(e.split(b"=", 1)[0].strip().lower() == b"no-transform" for e in listElements(values))


def parseContentType(headers: Headers) -> tuple[str | None, str | None]:
    """
    The media type (lower-case) and charset parameter (lower-case, unquoted) of the one
    C{Content-Type} field; (None, None) when there is none, several, or a malformed one.
    """
    values = fieldValues(headers, b"content-type")
    if len(values) != 1:
        return None, None
    return parseMediaType(values[0])


def parseMediaType(value: bytes) -> tuple[str | None, str | None]:
    """
    The media type and charset of one C{Content-Type} value (see L{parseContentType}).
    """
    match = _MEDIA_TYPE.match(value)
    if match is None:
        return None, None
    mediaType = match.group(1).decode("ascii").lower()
    charset = None
    position = match.end()
    while position < len(value):
        parameter = _PARAMETER.match(value, position)
        if parameter is None:
            break
        position = parameter.end()
        if parameter.group(1).lower() == b"charset" and charset is None:
            raw = parameter.group(2)
            if raw.startswith(b'"'):
                raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
            if raw and isToken(raw):
                charset = raw.decode("ascii").lower()
    return mediaType, charset


def contentCodings(headers: Headers) -> list[str]:
    """
    The content codings applied to the body, in the order they were applied (lower-case,
    C{identity} left out; C{x-gzip} is C{gzip}).
    """
    codings = []
    for element in listElements(fieldValues(headers, b"content-encoding")):
        coding = element.decode("latin-1").lower()
        if coding == "identity":
            continue
        codings.append("gzip" if coding == "x-gzip" else coding)
    return codings


def weakETag(value: bytes) -> bytes:
    """
    C{value} as a weak entity tag: a transformed body is no longer byte-for-byte the one
    a strong tag promised (RFC 9110 §8.8.3).
    """
    value = value.strip()
    if value[:2] in (b"W/", b"w/"):
        return value
    return b"W/" + value


def markTransformed(headers: Headers) -> None:
    """
    Edit C{headers} in place for a body the proxy transforms as it streams (decoded from
    its content codings, sent as identity): no C{Content-Length} (the client gets it
    chunked, or close-delimited), no digests, no C{Content-Encoding}, a weak C{ETag},
    C{Accept-Ranges: none} (a range of the transformed bytes cannot be served).
    """
    removeFields(headers, _DROPPED_WHEN_TRANSFORMED)
    weakenETags(headers)
    headers.append((b"Accept-Ranges", b"none"))


def weakenETags(headers: Headers) -> None:
    """
    Make every C{ETag} in C{headers} weak, in place (a bodiless response that stands for
    a transformed one: a C{304}, a C{HEAD}).
    """
    for index, (name, value) in enumerate(headers):
        if len(name) == 4 and name.lower() == b"etag":
            headers[index] = (name, weakETag(value))
