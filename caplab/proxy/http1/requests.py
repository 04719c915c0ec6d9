"""
Reading requests (RFC 9112 sections 3, 5, 6): the proxy's client side, sans-I/O.

L{RequestReader} turns the bytes a client sends into L{RequestHead}, body data and
L{END} events, one request at a time, and refuses with the status a server owes:

  - 400: a malformed request line, field or chunk; a request whose framing could be read two
    ways (C{Content-Length} with C{Transfer-Encoding}, differing or malformed lengths, a
    length beyond 63 bits, C{Transfer-Encoding} in HTTP/1.0 or not ending in chunked); an
    HTTP/1.1 request without exactly one C{Host} (RFC 9112 section 3.2);
  - 414: a request line over C{maxRequestLine}; 431: a head over C{maxHead} or more than
    C{maxFields} field lines; 501: a transfer coding other than chunked; 505: an HTTP
    version other than 1.0 and 1.1.

After the error the reader reads nothing more: the connection is to be closed.
"""

from __future__ import annotations

import re

from caplab.proxy.http1.events import Event, RequestHead
from caplab.proxy.http1.fields import FieldError, framingFields, parseFields, tokens
from caplab.proxy.http1.reader import MessageReader

_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])")
_OTHER_VERSION = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/[0-9]+(\.[0-9]+)?")

#: Lengths beyond this (19 digits) are refused: no body is that long, and the integer must fit
#: in 63 bits wherever it goes next.
MAX_LENGTH_DIGITS = 18

#: Empty lines a client may send before a request line (RFC 9112 section 2.2: "at least one").
_MAX_LEADING_CRLF = 8


class RequestReader(MessageReader):
    """
    Reads a client's requests.

    @ivar maxRequestLine: the longest request line accepted (414 beyond).
    @ivar maxFields: the most field lines a head may have (431 beyond).
    """

    errorCode = 400
    lenient = False

    def __init__(
        self, maxRequestLine: int = 8192, maxHead: int = 65536, maxFields: int = 100
    ) -> None:
        super().__init__(maxHead)
        self.maxRequestLine = maxRequestLine
        self.maxFields = maxFields

    def _readHead(self, events: list[Event]) -> bool:
        buffer = self._buffer
        if buffer[:2] == b"\r\n":
            stripped = buffer.lstrip(b"\r\n")
            if len(buffer) - len(stripped) > 2 * _MAX_LEADING_CRLF:
                events.append(self._fail("too many empty lines before the request line"))
                return False
            buffer = self._buffer = stripped
            if not buffer:
                return False
        end = buffer.find(b"\r\n\r\n")
        lineEnd = buffer.find(b"\r\n", 0, end + 2 if end >= 0 else len(buffer))
        if lineEnd < 0:
            if len(buffer) > self.maxRequestLine:
                events.append(self._fail("the request line is too long", code=414))
            elif b"\n" in buffer:
                events.append(self._fail("a line ending that is not CRLF"))
            return False
        if lineEnd > self.maxRequestLine:
            events.append(self._fail("the request line is too long", code=414))
            return False
        line = buffer[:lineEnd]
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:
            if _OTHER_VERSION.fullmatch(line) is not None:
                events.append(self._fail("only HTTP/1.0 and HTTP/1.1 are supported", code=505))
            else:
                events.append(self._fail("the request line is not HTTP/1.1"))
            return False
        if end < 0:
            if len(buffer) > self.maxHead:
                events.append(self._fail("the header block is too large", code=431))
            elif buffer.count(b"\n") != buffer.count(b"\r\n"):
                events.append(self._fail("a line ending that is not CRLF"))
            elif buffer.count(b"\r\n") - 1 > self.maxFields:
                events.append(self._fail("too many header fields", code=431))
            return False
        if end + 4 > self.maxHead:
            events.append(self._fail("the header block is too large", code=431))
            return False
        block = buffer[lineEnd + 2 : end + 2]
        if block.count(b"\r\n") > self.maxFields:
            events.append(self._fail("too many header fields", code=431))
            return False
        try:
            headers = parseFields(block)
        except FieldError as e:
            events.append(self._fail(f"a malformed header field: {e}"))
            return False
        self._buffer = buffer[end + 4 :]
        method, target, minor = match.groups()
        try:
            head = frameRequest(method, target, minor == b"1", headers)
        except FramingError as e:
            events.append(self._fail(e.detail, code=e.code))
            return False
        events.append(head)
        self._startBody(head.bodyLength, False, events)
        return True


class FramingError(Exception):
    """
    A request whose framing is refused: C{code} to answer, C{detail} for a person.
    """

    def __init__(self, detail: str, code: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code


def frameRequest(
    method: bytes, target: bytes, http11: bool, headers: list[tuple[bytes, bytes]]
) -> RequestHead:
    """
    The request's head with its body framing and persistence decided (RFC 9112 section 6.3,
    9.3).

    @raise FramingError: the framing is ambiguous or not supported.
    """
    lengths, codings, connection, hosts = framingFields(headers)
    if hosts > 1 or (http11 and hosts != 1):
        raise FramingError("an HTTP/1.1 request needs exactly one Host field")
    bodyLength: int | None = 0
    if codings:
        if lengths:
            raise FramingError("both Content-Length and Transfer-Encoding")
        if not http11:
            raise FramingError("Transfer-Encoding in an HTTP/1.0 request")
        coding = tokens(codings)
        if not coding or coding[-1] != b"chunked":
            raise FramingError("a Transfer-Encoding that does not end in chunked")
        if len(coding) > 1:
            raise FramingError("transfer codings other than chunked are not supported", 501)
        bodyLength = None
    elif lengths:
        parsed = contentLength(lengths)
        if parsed is None:
            raise FramingError("a malformed, conflicting or absurd Content-Length")
        bodyLength = parsed
    options = tokens(connection) if connection else []
    if http11:
        keepAlive = b"close" not in options
    else:
        keepAlive = b"keep-alive" in options and b"close" not in options
    return RequestHead(
        method,
        target,
        b"HTTP/1.1" if http11 else b"HTTP/1.0",
        headers,
        bodyLength,
        keepAlive,
        options,
    )


def contentLength(values: list[bytes]) -> int | None:
    """
    The length that C{Content-Length} field values give (a list of the same number is that
    number, RFC 9110 section 8.6), or None if they are malformed, differ, or exceed
    L{MAX_LENGTH_DIGITS} digits.
    """
    if len(values) == 1:
        value = values[0]
        if value.isdigit() and len(value) <= MAX_LENGTH_DIGITS:
            return int(value)  # the common case: one plain number
    found: bytes | None = None
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if not item.isdigit() or len(item) > MAX_LENGTH_DIGITS:
                return None
            item = item.lstrip(b"0") or b"0"
            if found is None:
                found = item
            elif item != found:
                return None
    return int(found) if found is not None else None
