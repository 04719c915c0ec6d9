"""
Reading responses (RFC 9112 sections 4, 5, 6): the proxy's origin side, sans-I/O.

L{ResponseReader} turns an origin's bytes into L{InterimResponse}, L{ResponseHead}, body
data and L{END} events.  The framing of a response depends on the request it answers, so
the reader is told before each one (L{ResponseReader.expect}):

  - a response to HEAD, a 1xx, 204 or 304 has no body, whatever its fields say; one whose
    fields announce one (a length other than 0, chunked) ends its connection, so that a body
    sent anyway is never read as the next response;
  - a 2xx to CONNECT, or a 101 to a request that asked to upgrade, switches the connection
    to another protocol (the head says C{switched}; C{switch()} gives the bytes after it);
    a 101 nobody asked for is an error;
  - C{Transfer-Encoding: chunked} wins over C{Content-Length} (which is then dropped, and
    the connection not reused); other transfer codings are not supported (502);
  - a bad or conflicting C{Content-Length} is an error;
  - otherwise the body lasts until the connection closes, and only an orderly close
    (C{receiveEOF}) ends it: the I/O layer reports a reset or an abort as the message
    being cut short, never as its end.

Errors are L{MessageError} events with code 502.  Control bytes in field values and the
reason phrase are replaced by SP, and folded lines joined (RFC 9110 section 5.5, RFC 9112
section 5.2): mended, never relayed raw.
"""

from __future__ import annotations

import re

from caplab.proxy.http1.events import Event, InterimResponse, ResponseHead
from caplab.proxy.http1.fields import (
    UNSAFE,
    FieldError,
    framingFields,
    parseFields,
    quickFields,
    tokens,
)
from caplab.proxy.http1.reader import HEAD, SWITCHED, MessageReader
from caplab.proxy.http1.requests import contentLength

#: A status line (its reason phrase without control bytes, as nearly every one), and any
#: status line whose reason phrase may need mending.
_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_ANY_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?: ([^\r\n]*))?")

_BARE_LF = "a head whose lines end in LF, not CRLF"

#: The statuses whose responses never have a body (RFC 9110 sections 15.3.5 and 15.4.5),
#: besides 1xx and the answers to HEAD.
BODILESS_STATUSES = frozenset({204, 304})

#: Interim responses accepted before a final one: more is an origin gone wrong.
MAX_INTERIM = 16


class ResponseReader(MessageReader):
    """
    Reads an origin's responses, one per request it was told about.
    """

    errorCode = 502
    lenient = True

    def __init__(self, maxHead: int = 65536) -> None:
        super().__init__(maxHead)
        self._method = b"GET"
        self._upgrade = False
        self._interim = 0

    def expect(self, method: bytes, upgrade: bool = False) -> None:
        """
        The next response answers a C{method} request (that asked to switch protocols if
        C{upgrade}).
        """
        self._method = method
        self._upgrade = upgrade
        self._interim = 0
        self.nextMessage()

    def receiveEOF(self) -> list[Event]:
        if self.state is HEAD and not self.buffered:
            return [self._fail("the connection closed without a response", True)]
        return super().receiveEOF()

    def _readHead(self, events: list[Event]) -> bool:
        buffer = self._unread()
        searched = self._searched  # bytes looked at already: neither end is in them
        end = buffer.find(b"\r\n\r\n", searched - 3 if searched > 3 else 0)
        if end < 0:
            if buffer.find(b"\n\n", searched - 1 if searched else 0) >= 0:
                events.append(self._fail(_BARE_LF))
                return False
            size = len(buffer)
            if size > self.maxHead:
                events.append(self._fail("an over-long response head"))
            elif size >= 5 and not buffer.startswith(b"HTTP/"):
                events.append(self._fail("a response that is not HTTP/1.1"))
            else:
                self._searched = size
                self._grow()
            return False
        buffer = self._whole()
        self._searched = 0
        if end + 4 > self.maxHead:
            events.append(self._fail("an over-long response head"))
            return False
        lineEnd = buffer.find(b"\r\n")
        block = buffer[lineEnd + 2 : end + 2]
        headers = quickFields(block)
        if headers is None:
            # Not one well-formed line each: a head that ended earlier, at an empty line of
            # bare LFs, is refused; anything else is read by the general way (and mended).
            if buffer.find(b"\n\n", 0, end) >= 0:
                events.append(self._fail(_BARE_LF))
                return False
            try:
                headers = parseFields(block, lenient=True)
            except FieldError as e:
                events.append(self._fail(f"a malformed header field: {e}"))
                return False
        match = _STATUS_LINE.fullmatch(buffer, 0, lineEnd)
        if match is not None:
            minor, status, phrase = match.groups(b"")
        else:
            match = _ANY_STATUS_LINE.fullmatch(buffer, 0, lineEnd)
            if match is None:
                events.append(self._fail("a malformed status line"))
                return False
            minor, status, phrase = match.groups(b"")
            phrase = UNSAFE.sub(b" ", phrase)  # control bytes in it: mended
        self._buffer = buffer[end + 4 :]
        code = int(status)
        http11 = minor != b"0"
        if 100 <= code < 200 and code != 101:
            self._interim += 1
            if self._interim > MAX_INTERIM:
                events.append(self._fail("too many interim (1xx) responses"))
                return False
            events.append(InterimResponse(code, phrase, headers))
            return True
        try:
            head = frameResponse(code, phrase, http11, headers, self._method, self._upgrade)
        except FieldError as e:
            events.append(self._fail(str(e)))
            return False
        events.append(head)
        if head.switched:
            self.state = SWITCHED
            return False
        self._startBody(head.bodyLength, head.closeDelimited, events)
        return True


def frameResponse(
    code: int,
    phrase: bytes,
    http11: bool,
    headers: list[tuple[bytes, bytes]],
    method: bytes,
    upgrade: bool = False,
) -> ResponseHead:
    """
    The final response's head with its body framing and persistence decided (RFC 9112
    section 6.3, 9.3), answering a C{method} request.

    @raise FieldError: the framing is faulty or not supported.
    """
    lengths, codings, connection, _ = framingFields(headers)
    options = tokens(connection) if connection else []
    keepAlive = (b"close" not in options) if http11 else (b"keep-alive" in options)
    version = b"HTTP/1.1" if http11 else b"HTTP/1.0"
    if code == 101:
        if not upgrade:
            raise FieldError("a protocol switch (101) nobody asked for")
        return ResponseHead(code, phrase, version, headers, 0, False, False, options, True)
    if method == b"CONNECT" and 200 <= code < 300:
        return ResponseHead(code, phrase, version, headers, 0, False, False, options, True)
    if method == b"HEAD" or code in BODILESS_STATUSES or code < 200:
        if codings or (lengths and contentLength(lengths) != 0):
            # It announced a body it must not have: should the origin send one anyway, it
            # would be read as the next response on the connection, so none is.
            keepAlive = False
        return ResponseHead(code, phrase, version, headers, 0, False, keepAlive, options)
    if codings:
        if not http11:
            raise FieldError("Transfer-Encoding in an HTTP/1.0 response")
        coding = tokens(codings)
        if coding != [b"chunked"]:
            raise FieldError(f"an unsupported transfer coding ({b', '.join(coding).decode()})")
        if lengths:
            # RFC 9112 section 6.3: chunked wins; the length goes, and so does the connection.
            headers[:] = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            keepAlive = False
        return ResponseHead(code, phrase, version, headers, None, False, keepAlive, options)
    if lengths:
        length = contentLength(lengths)
        if length is None:
            raise FieldError("a bad or conflicting Content-Length")
        if len(lengths) > 1 or lengths[0] != b"%d" % length:
            # The same length said twice (RFC 9110 section 8.6): passed on said once.
            headers[:] = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"Content-Length", b"%d" % length))
        return ResponseHead(code, phrase, version, headers, length, False, keepAlive, options)
    return ResponseHead(code, phrase, version, headers, None, True, False, options)
