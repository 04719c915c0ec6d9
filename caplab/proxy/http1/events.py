"""
What the readers of L{caplab.proxy.http1} hand out: the heads of messages, body data (plain
C{bytes}), the end of a message, and errors.

A reader's C{receive(data)} returns a list of these in order; body data is a C{bytes} object
(never empty), so a consumer tells events apart with C{type(event) is bytes} first, which is
the common case.
"""

from __future__ import annotations

from dataclasses import dataclass

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class RequestHead:
    """
    A request's start line and fields, with its framing decided (RFC 9112 section 6.3).

    @ivar version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar headers: every field line, raw and in order (hop-by-hop ones included).
    @ivar bodyLength: the body's length; None for a chunked body; 0 for none.
    @ivar keepAlive: whether the client asked to keep the connection (its version and
        C{Connection} field).
    @ivar connection: the C{Connection} field's options, lower-case.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: Headers
    bodyLength: int | None
    keepAlive: bool
    connection: list[bytes]


@dataclass(slots=True)
class InterimResponse:
    """
    A 1xx response other than 101 (C{100 Continue}, C{103 Early Hints}): a final one follows.
    """

    code: int
    phrase: bytes
    headers: Headers


@dataclass(slots=True)
class ResponseHead:
    """
    A final response's status line and fields, with its framing decided.

    @ivar bodyLength: the body's length; None for a chunked or close-delimited body (see
        C{closeDelimited}); 0 for none (HEAD, 204, 304 ...).
    @ivar closeDelimited: the body ends when the connection closes (no length, no chunking).
    @ivar keepAlive: whether the connection may carry another exchange afterwards.
    @ivar switched: the connection now carries another protocol (101, or 2xx to CONNECT):
        what follows is not HTTP (see the reader's C{leftover}).
    """

    code: int
    phrase: bytes
    version: bytes
    headers: Headers
    bodyLength: int | None
    closeDelimited: bool
    keepAlive: bool
    connection: list[bytes]
    switched: bool = False


class EndOfMessage:
    """
    The message (and its body, if any) is complete.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


#: The one L{EndOfMessage}.
END = EndOfMessage()


@dataclass(slots=True)
class MessageError:
    """
    The bytes are not a valid message: C{code} is the status a server answers a request with
    (400, 413, 414, 431, 501, 505), or 502 for a response; C{detail} says why, for a person.
    C{incomplete} is True when a message ended before its end (a connection closed mid-body).
    """

    code: int
    detail: str
    incomplete: bool = False


Event = RequestHead | InterimResponse | ResponseHead | EndOfMessage | MessageError | bytes
