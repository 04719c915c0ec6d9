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

from caplab.proxy.http1.events import Event, MessageError, RequestHead
from caplab.proxy.http1.fields import (
    FieldError,
    framingFields,
    parseFields,
    quickFields,
    tokens,
)
from caplab.proxy.http1.reader import MessageReader

#: The bytes of the shortest field line (C{a:} and CRLF).
_SHORTEST_LINE = 4

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
        self._lines = 0  # CRLFs in the head being read, up to where it was searched

    def _readHead(self, events: list[Event]) -> bool:
        buffer = self._unread()
        if buffer[:2] == b"\r\n":
            count = len(buffer) - len(buffer.lstrip(b"\r\n"))
            if count > 2 * _MAX_LEADING_CRLF:
                events.append(self._fail("too many empty lines before the request line"))
                return False
            grown = self._grown
            if grown is not None:
                del grown[:count]
                if not grown:
                    self._grown = None
            else:
                self._buffer = self._buffer[count:]
            self._searched = self._lines = 0
            buffer = self._unread()
            if not buffer:
                return False
        searched = self._searched
        end = buffer.find(b"\r\n\r\n", searched - 3 if searched > 3 else 0)
        if end < 0:
            self._readingHead(buffer, events)
            return False
        buffer = self._whole()
        self._searched = self._lines = 0
        match = self._requestLine(buffer, buffer.find(b"\r\n", 0, end + 2))
        if isinstance(match, MessageError):
            events.append(match)
            return False
        lineEnd = match.end()
        if end + 4 > self.maxHead:
            events.append(self._fail("the header block is too large", code=431))
            return False
        block = buffer[lineEnd + 2 : end + 2]
        # Counted before anything is parsed (a head of thousands of tiny lines is refused for
        # the price of one scan), unless it is too short to hold too many (most heads).
        if len(block) > _SHORTEST_LINE * self.maxFields and block.count(b"\r\n") > self.maxFields:
            events.append(self._fail("too many header fields", code=431))
            return False
        headers = quickFields(block)
        if headers is None:
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

    def _readingHead(self, buffer: bytes | bytearray, events: list[Event]) -> None:
        """
        A head not whole yet: refuse it now if what came so far breaks a limit or the
        grammar, checking only the bytes new since the last look; else keep it to grow.
        """
        size = len(buffer)
        searched = self._searched
        since = searched - 1 if searched else 0  # a CRLF may straddle old and new bytes
        if not self._lines:
            lineEnd = buffer.find(b"\r\n", since)
            if lineEnd < 0:
                if size > self.maxRequestLine:
                    events.append(self._fail("the request line is too long", code=414))
                elif buffer.find(b"\n", searched) >= 0:
                    events.append(self._fail("a line ending that is not CRLF"))
                else:
                    self._searched = size
                    self._grow()
                return
            match = self._requestLine(buffer, lineEnd)
            if isinstance(match, MessageError):
                events.append(match)
                return
        if size > self.maxHead:
            events.append(self._fail("the header block is too large", code=431))
            return
        lines = buffer.count(b"\r\n", since)
        if buffer.count(b"\n", searched) != lines:
            events.append(self._fail("a line ending that is not CRLF"))
            return
        lines += self._lines
        if lines - 1 > self.maxFields:
            events.append(self._fail("too many header fields", code=431))
            return
        self._lines = lines
        self._searched = size
        self._grow()

    def _requestLine(
        self, buffer: bytes | bytearray, lineEnd: int
    ) -> re.Match[bytes] | MessageError:
        """
        The request line, the first C{lineEnd} bytes of C{buffer}, matched; or the error
        it is.
        """
        if lineEnd > self.maxRequestLine:
            return self._fail("the request line is too long", code=414)
        match = _REQUEST_LINE.fullmatch(buffer, 0, lineEnd)
        if match is not None:
            return match
        if _OTHER_VERSION.fullmatch(buffer, 0, lineEnd) is not None:
            return self._fail("only HTTP/1.0 and HTTP/1.1 are supported", code=505)
        return self._fail("the request line is not HTTP/1.1")


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
