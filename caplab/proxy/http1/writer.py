"""
Writing HTTP/1.1 messages: every head, chunk and error response the proxy sends is made here.

Field values the proxy relays were validated when they were read (L{caplab.proxy.http1.fields}),
but fields may also come from the proxy's own code, the cache, or a filter plugin: every head
is checked once more as a whole before it leaves (its CR, LF and NUL bytes must be exactly
one CRLF per line), which costs one scan of a few hundred bytes and makes header injection
impossible whatever a field's source.
"""

from __future__ import annotations

from collections.abc import Iterable

from caplab.proxy.pages import reason

Headers = list[tuple[bytes, bytes]]

#: The end of a chunked body (no trailers).
LAST_CHUNK = b"0\r\n\r\n"


class UnsafeHead(ValueError):
    """
    A head that would carry a control byte (a field value with CR, LF or NUL): never sent.
    """


#: Every byte but CR, LF and NUL: deleted from a head, they leave its line ends alone.
_NOT_LINE_ENDS = bytes(b for b in range(256) if b not in b"\r\n\0")


def _checked(head: bytes, lines: int) -> bytes:
    if head.translate(None, _NOT_LINE_ENDS) != b"\r\n" * lines:
        raise UnsafeHead("a field name or value holds a control character")
    return head


def _head(startLine: list[bytes], headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    lines = startLine
    count = 2
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
        count += 1
    lines.append(b"\r\n")
    return _checked(b"".join(lines), count)


def requestHead(method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """
    A request's head: the request line, C{headers} as given (framing fields included by the
    caller), and the empty line.
    """
    return _head([method, b" ", target, b" HTTP/1.1\r\n"], headers)


def responseHead(code: int, phrase: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """
    A response's head in HTTP/1.1: status line, C{headers} as given, the empty line.
    """
    return _head([b"HTTP/1.1 %d " % code, phrase, b"\r\n"], headers)


def chunk(data: bytes) -> bytes:
    """
    C{data} as one chunk of a chunked body (never empty: that would end the body).
    """
    return b"%x\r\n%s\r\n" % (len(data), data)


def completeResponse(
    code: int, headers: Headers, body: bytes, close: bool, withBody: bool = True
) -> bytes:
    """
    A whole response of the proxy's own (an error page, a status page, a 407): status with
    its standard phrase, C{headers}, C{Content-Length}, C{Connection: close} if C{close},
    and the body unless C{withBody} is False (a response to HEAD).
    """
    fields = [*headers, (b"Content-Length", b"%d" % len(body))]
    if close:
        fields.append((b"Connection", b"close"))
    head = responseHead(code, reason(code), fields)
    return head + body if withBody else head
