"""
Tests for L{caplab.proxy.http1}: the sans-I/O HTTP/1.1 readers and writer, on bytes alone.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caplab.proxy.http1 import (
    END,
    InterimResponse,
    MessageError,
    ReaderState,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    UnsafeHead,
    chunk,
    completeResponse,
    parseFields,
    responseHead,
)
from caplab.proxy.http1.fields import FieldError


def _events(reader: RequestReader | ResponseReader, *pieces: bytes, eof: bool = False) -> list:
    events: list = []
    for piece in pieces:
        events += reader.receive(piece)
    if eof:
        events += reader.receiveEOF()
    return events


def _joined(events: list) -> list:
    """
    C{events} with consecutive body data joined (how data is split is not a difference).
    """
    out: list = []
    for event in events:
        if type(event) is bytes and out and type(out[-1]) is bytes:
            out[-1] += event
        else:
            out.append(event)
    return out


def _request(data: bytes, **kwargs: int) -> list:
    return _events(RequestReader(**kwargs), data)


def _error(events: list) -> MessageError:
    assert events and isinstance(events[-1], MessageError), events
    return events[-1]


# Fields


def test_fieldsParsed() -> None:
    """
    Field lines become raw pairs: names as sent, values without surrounding whitespace,
    inner whitespace and obs-text kept.
    """
    block = b"Host: h\r\nX-A:\t a  b \t\r\nEmpty:\r\nUtf: caf\xc3\xa9\r\n"
    assert parseFields(block) == [
        (b"Host", b"h"),
        (b"X-A", b"a  b"),
        (b"Empty", b""),
        (b"Utf", b"caf\xc3\xa9"),
    ]


_FIELD_BYTES = st.sampled_from(
    [
        b"a",
        b"Z",
        b"-",
        b":",
        b" ",
        b"\t",
        b"\r",
        b"\n",
        b"\r\n",
        b"\x00",
        b"\x7f",
        b"\xc3\xa9",
        b'"',
        b"(",
        b"X-A: ",
    ]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.lists(_FIELD_BYTES, max_size=8).map(b"".join), min_size=1, max_size=4))
def test_fieldsReadAlikeEitherWay(lines: list[bytes]) -> None:
    """
    L{parseFields}'s single pass over a block (one match per line start, counted against
    the lines) gives the same fields or the same refusal as reading it line by line, for
    blocks of tokens, colons, whitespace, stray CR and LF, NUL, DEL and obs-text.
    """
    from caplab.proxy.http1.fields import _parseSlowly

    block = b"".join(line + b"\r\n" for line in lines)
    for lenient in (False, True):
        try:
            expected: object = _parseSlowly(block, lenient)
        except FieldError:
            expected = FieldError
        try:
            got: object = parseFields(block, lenient)
        except FieldError:
            got = FieldError
        assert got == expected, (block, lenient)


@pytest.mark.parametrize(
    "block",
    [
        b"X-A: foo\nSet-Cookie: injected=1\r\n",
        b"X-A: foo\rbar\r\n",
        b"X-A: a\x00b\r\n",
        b"X-A: a\x01b\r\n",
        b"X A: b\r\n",
        b"X-A : b\r\n",
        b"NoColon\r\n",
        b" folded\r\n",
        b"X: a\r\n folded\r\n",
    ],
)
def test_fieldsRefusedInRequests(block: bytes) -> None:
    """
    A request's field with a control byte in its value, a bad name, whitespace before the
    colon, no colon, or obsolete folding is an error.
    """
    with pytest.raises(FieldError):
        parseFields(block)


def test_fieldsMendedInResponses() -> None:
    """
    In a response, control bytes inside a value become SP and folded lines are joined; a
    bare LF never starts a field of its own.
    """
    fields = parseFields(
        b"X-A: foo\nSet-Cookie: injected=1\r\nX-B: a\x00b\rc\r\nX-C: one\r\n  two\r\n",
        lenient=True,
    )
    assert fields == [
        (b"X-A", b"foo Set-Cookie: injected=1"),
        (b"X-B", b"a b c"),
        (b"X-C", b"one two"),
    ]
    with pytest.raises(FieldError):
        parseFields(b"Bad Name: x\r\n", lenient=True)


# Requests


def test_simpleRequest() -> None:
    """
    A GET without body: its head, then the end; the reader pauses until told to go on.
    """
    reader = RequestReader()
    events = _events(reader, b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\nGET http://h/y")
    assert events == [
        RequestHead(b"GET", b"http://h/x", b"HTTP/1.1", [(b"Host", b"h")], 0, True, []),
        END,
    ]
    assert reader.state is ReaderState.DONE
    assert reader.buffered == len(b"GET http://h/y")
    reader.nextMessage()
    assert _events(reader, b" HTTP/1.1\r\nHost: h\r\n\r\n")[0].target == b"http://h/y"


def test_leadingEmptyLines() -> None:
    """
    Empty lines before a request line are skipped (RFC 9112 section 2.2), a few of them.
    """
    assert isinstance(_request(b"\r\n\r\nGET / HTTP/1.0\r\n\r\n")[0], RequestHead)
    assert _error(_request(b"\r\n" * 40 + b"GET / HTTP/1.0\r\n\r\n")).code == 400


def test_persistence() -> None:
    """
    HTTP/1.1 is persistent unless C{Connection: close}; HTTP/1.0 only with keep-alive.
    """
    cases = {
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n": True,
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n": False,
        b"GET / HTTP/1.0\r\n\r\n": False,
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n": True,
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n": False,
    }
    for data, keepAlive in cases.items():
        assert _request(data)[0].keepAlive is keepAlive, data


def test_bodies() -> None:
    """
    Content-Length and chunked bodies (extensions and trailers skipped) become data and an
    end; a list of the same length is that length.
    """
    events = _request(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabcGET")
    assert events[0].bodyLength == 3 and _joined(events[1:]) == [b"abc", END]
    events = _request(
        b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;name=value\r\nabc\r\n1 \r\nd\r\n0\r\nTrailer: x\r\n\r\n"
    )
    assert events[0].bodyLength is None and _joined(events[1:]) == [b"abcd", END]


def test_tinyChunksOneEvent() -> None:
    """
    The data of the chunks that came in one piece is one event, however small the chunks:
    a body of 1-byte chunks must not cost an event (and a write downstream) per chunk.
    """
    body = b"".join(b"1\r\n%c\r\n" % c for c in b"abcdefghij")
    events = _request(
        b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"
    )
    assert events[1:] == [b"abcdefghij", END]
    reader = ResponseReader()
    reader.expect(b"GET")
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert reader.receive(head + body)[1:] == [b"abcdefghij"]
    assert reader.receive(body + b"1\r\n") == [b"abcdefghij"]
    assert reader.receive(b"z\r\n1\r\nq\r\nzz\r\n")[:1] == [b"zq"]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"HELLO\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1e3\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: h\n\n\r\n\r\n", 400),
        (b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n", 400),
    ],
)
def test_requestErrors(data: bytes, code: int) -> None:
    """
    Malformed or ambiguous requests get the status a server owes, and nothing more is read.
    """
    reader = RequestReader()
    error = _error(_events(reader, data))
    assert error.code == code, error
    assert reader.state is ReaderState.FAILED
    assert reader.receive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n") == []


def test_limits() -> None:
    """
    An over-long request line is 414, as soon as it is too long; a large head or too many
    fields 431.
    """
    assert _error(_request(b"GET /" + b"a" * 9000, maxRequestLine=8192)).code == 414
    assert _error(_request(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n", maxRequestLine=50)).code == 414
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(10))
    assert _error(_request(b"GET / HTTP/1.1\r\n" + fields, maxHead=64)).code == 431
    data = b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n"
    assert _error(_request(data, maxFields=5)).code == 431
    assert isinstance(_request(data, maxFields=11)[0], RequestHead)


def test_eofMidMessage() -> None:
    """
    A client closing in the middle of a head or body: an incomplete message; between
    messages: nothing.
    """
    assert _events(RequestReader(), b"", eof=True) == []
    assert _error(_events(RequestReader(), b"GET / HT", eof=True)).incomplete
    reader = RequestReader()
    events = _events(reader, b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab", eof=True)
    assert events[1] == b"ab" and _error(events).incomplete


# Responses


def _response(data: bytes, method: bytes = b"GET", eof: bool = False, upgrade: bool = False):
    reader = ResponseReader()
    reader.expect(method, upgrade)
    return _events(reader, data, eof=eof)


def test_responseFraming() -> None:
    """
    Length, chunked, close-delimited, and no body for HEAD, 204 and 304.
    """
    events = _response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    assert events[0].bodyLength == 2 and events[0].keepAlive and events[1:] == [b"hi", END]
    events = _response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    assert events[0].bodyLength is None and not events[0].closeDelimited
    assert _joined(events[1:]) == [b"hi", END]
    events = _response(b"HTTP/1.1 200 OK\r\n\r\nuntil close", eof=True)
    assert events[0].closeDelimited and not events[0].keepAlive
    assert events[1:] == [b"until close", END]
    for data, method in [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"HEAD"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", b"GET"),
        (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", b"GET"),
    ]:
        assert _response(data, method)[1:] == [END], data


def test_bodilessResponseAnnouncingBodyCloses() -> None:
    """
    A response that has no body (to HEAD, a 204, a 304) but whose fields announce one ends
    its connection: a body the origin sends anyway must not be read as the next response.
    One that announces none stays open.
    """
    for data, method, keepAlive in [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"HEAD", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"HEAD", False),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", b"GET", False),
        (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", b"GET", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"HEAD", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"GET", True),
        (b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n', b"GET", True),
    ]:
        head = _response(data, method)[0]
        assert head.keepAlive is keepAlive, data


def test_closeDelimitedNeedsOrderlyClose() -> None:
    """
    A close-delimited body ends only with C{receiveEOF} (the I/O layer calls it for a FIN,
    never for a reset): without it no end event comes.
    """
    events = _response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 50000)
    assert END not in events


def test_responseLengthWins() -> None:
    """
    Chunked wins over Content-Length, which is dropped and makes the connection unreusable;
    a repeated equal length is passed on once.
    """
    events = _response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert events[0].bodyLength is None and not events[0].keepAlive
    assert b"content-length" not in [n.lower() for n, _ in events[0].headers]
    events = _response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi")
    assert [v for n, v in events[0].headers if n == b"Content-Length"] == [b"2"]


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ],
)
def test_responseErrors(data: bytes) -> None:
    """
    Faulty framing, an unrequested 101, or something that is not HTTP/1.1 is a 502.
    """
    assert _error(_response(data)).code == 502


def test_notHttpAtOnce() -> None:
    """
    A peer whose first bytes are not HTTP, or whose lines end in a bare LF, is refused
    without waiting for a whole head (that would never come).
    """
    assert _error(_response(b"SSH-2.0-OpenSSH")).code == 502
    assert _error(_response(b"HTTP/1.1 200 OK\nServer: x\n\n")).code == 502


@pytest.mark.parametrize(
    ("line", "code", "phrase"),
    [
        (b"HTTP/1.1 200 OK", 200, b"OK"),
        (b"HTTP/1.1 404", 404, b""),
        (b"HTTP/1.1 404 ", 404, b""),
        (b"HTTP/1.0 200 Tr\xe8s bien\tici", 200, b"Tr\xe8s bien\tici"),
        (b"HTTP/1.1 200 O\x00K\x1b[2J\x7f", 200, b"O K [2J "),
    ],
)
def test_statusLines(line: bytes, code: int, phrase: bytes) -> None:
    """
    A status line's code and reason phrase: obs-text and HTAB kept, control bytes mended
    to SP (never relayed raw), no phrase read as an empty one.
    """
    [head, *_] = _response(line + b"\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(head, ResponseHead)
    assert (head.code, head.phrase) == (code, phrase)


def test_bareLineFeedsRefusedAtOnce() -> None:
    """
    A request whose lines end in a bare LF is a 400 as soon as one arrives.
    """
    assert _error(_request(b"GET / HTTP/1.1\n")).code == 400
    assert _error(_request(b"GET / HTTP/1.1\r\nHost: h\n")).code == 400


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\nServer: x\n\n",
        b"HTTP/1.1 200 OK\r\nServer: x\n\nContent-Length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\n\nX: y\r\n\r\n",
    ],
)
def test_responseHeadEndingInBareLineFeeds(data: bytes) -> None:
    """
    A response head that ends at an empty line of bare LFs is refused (502) as one, even
    when a CRLF CRLF comes later; a lone bare LF inside a value is mended, not refused.
    """
    error = _error(_response(data))
    assert (error.code, error.detail) == (502, "a head whose lines end in LF, not CRLF")
    [head, *_] = _response(b"HTTP/1.1 200 OK\r\nX-A: a\nb\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(head, ResponseHead)
    assert head.headers[0] == (b"X-A", b"a b")


def test_tooManyFieldsRefusedBeforeReading(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A whole head of thousands of tiny field lines, come in one piece, is a 431 for the
    price of counting its lines: its fields are never read into pairs.
    """
    from caplab.proxy.http1 import requests

    def unread(block: bytes) -> None:
        raise AssertionError("the fields were read")

    monkeypatch.setattr(requests, "quickFields", unread)
    data = b"GET http://h/ HTTP/1.1\r\nHost: h\r\n" + b"a:\r\n" * 16000 + b"\r\n"
    assert _error(_request(data)).code == 431


def test_tooManyMalformedFields() -> None:
    """
    Too many field lines are a 431 whether or not they are well-formed.
    """
    fields = b"".join(b"X %d: v\r\n" % i for i in range(10))
    assert (
        _error(_request(b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n", maxFields=5)).code
        == 431
    )


def test_interimResponses() -> None:
    """
    1xx responses (but 101) come as interim events before the final one, with their fields.
    """
    events = _response(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    assert events[0] == InterimResponse(100, b"Continue", [])
    assert events[1] == InterimResponse(103, b"Early Hints", [(b"Link", b"</s.css>")])
    assert isinstance(events[2], ResponseHead) and events[3] is END


def test_switching() -> None:
    """
    A 101 to a request that asked to upgrade, or a 2xx to CONNECT, switches the connection:
    the bytes after the head belong to the new protocol.
    """
    reader = ResponseReader()
    reader.expect(b"GET", upgrade=True)
    events = reader.receive(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81")
    assert isinstance(events[0], ResponseHead)
    assert events[0].switched and reader.state is ReaderState.SWITCHED
    assert reader.switch() == b"\x81"
    assert reader.receive(b"more") == []
    reader = ResponseReader()
    reader.expect(b"CONNECT")
    head = reader.receive(b"HTTP/1.1 200 Connection established\r\n\r\nTLS")[0]
    assert isinstance(head, ResponseHead)
    assert head.switched


def test_eofBeforeResponse() -> None:
    """
    A connection closed before any response is an incomplete message of its own kind.
    """
    error = _error(_response(b"", eof=True))
    assert error.incomplete and "without a response" in error.detail
    assert _error(_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", eof=True)).incomplete


# Any split of the same bytes gives the same events


_REQUESTS = (
    b"GET http://h/ HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"
    b"PUT http://h/u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    b"POST http://h/c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;x=1\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n"
    b"GET http://h/bad HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n"
)

_RESPONSES = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nX-A: a\nb\r\n\r\nuntil the end"
)


def _splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.integers(0, len(data)), max_size=20).map(
        lambda cuts: [
            data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)
        ]
    )


def _readAll(
    reader: RequestReader | ResponseReader, pieces: list[bytes], methods: list[bytes]
) -> list:
    """
    Feed C{pieces}, going on to the next message after each end (telling a response reader
    which method each response answers).
    """
    events: list = []
    pending = list(methods)
    if isinstance(reader, ResponseReader):
        reader.expect(pending.pop(0))
    for piece in pieces:
        got = reader.receive(piece)
        while got and got[-1] is END:
            events += got
            if isinstance(reader, ResponseReader):
                reader.expect(pending.pop(0) if pending else b"GET")
            else:
                reader.nextMessage()
            got = reader.receive(b"")
        events += got
    return _joined(events + reader.receiveEOF())


@settings(max_examples=300, deadline=None)
@given(_splits(_REQUESTS))
def test_requestSplitsAreEquivalent(pieces: list[bytes]) -> None:
    """
    However the same request bytes are split, the reader gives the same events.
    """
    assert _readAll(RequestReader(), pieces, []) == _readAll(RequestReader(), [_REQUESTS], [])


@settings(max_examples=300, deadline=None)
@given(_splits(_RESPONSES))
def test_responseSplitsAreEquivalent(pieces: list[bytes]) -> None:
    """
    However the same response bytes are split, the reader gives the same events.
    """
    methods = [b"GET", b"GET", b"GET"]
    whole = _readAll(ResponseReader(), [_RESPONSES], methods)
    assert whole[-1] is END and len([e for e in whole if isinstance(e, ResponseHead)]) == 3
    assert _readAll(ResponseReader(), pieces, methods) == whole


def _readHeld(
    reader: RequestReader | ResponseReader, pieces: list[bytes], methods: list[bytes]
) -> list:
    """
    Feed every one of C{pieces} first (a reader that ends a message holds what follows,
    as a channel that is not ready for the next request does), then go on message by
    message.
    """
    pending = list(methods)
    if isinstance(reader, ResponseReader):
        reader.expect(pending.pop(0))
    events: list = []
    for piece in pieces:
        events += reader.receive(piece)
    while events and events[-1] is END:
        if isinstance(reader, ResponseReader):
            reader.expect(pending.pop(0) if pending else b"GET")
        else:
            reader.nextMessage()
        got = reader.receive(b"")
        if not got:
            break
        events += got
    return _joined(events + reader.receiveEOF())


def test_byteByByte() -> None:
    """
    Messages that come a byte at a time (heads, chunk sizes, trailers, read-ahead held
    while the reader waits for the caller) read as they do whole; a head grows in place,
    and at most its limit is held.
    """
    requests = [_REQUESTS[i : i + 1] for i in range(len(_REQUESTS))]
    whole = _readAll(RequestReader(), [_REQUESTS], [])
    assert _readAll(RequestReader(), requests, []) == whole
    assert _readHeld(RequestReader(), requests, []) == whole
    responses = [_RESPONSES[i : i + 1] for i in range(len(_RESPONSES))]
    methods = [b"GET", b"GET", b"GET"]
    whole = _readAll(ResponseReader(), [_RESPONSES], methods)
    assert _readAll(ResponseReader(), responses, methods) == whole
    assert _readHeld(ResponseReader(), responses, methods) == whole

    reader = RequestReader(maxHead=4096)
    head = b"GET http://h/ HTTP/1.1\r\n" + b"X-Long: " + b"a" * 5000
    events: list = []
    for i in range(len(head)):
        events += reader.receive(head[i : i + 1])
        if events:
            break
    assert _error(events).code == 431 and i == 4096
    assert reader.buffered == 0

    reader2 = ResponseReader(maxHead=4096)
    reader2.expect(b"GET")
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 5000
    events = []
    for i in range(len(head)):
        events += reader2.receive(head[i : i + 1])
        if events:
            break
    assert _error(events).code == 502 and i == 4096


# Writer


def test_writer() -> None:
    """
    Heads and chunks as bytes; a complete response with its length and close.
    """
    assert responseHead(200, b"OK", [(b"A", b"1")]) == b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n"
    assert chunk(b"abc") == b"3\r\nabc\r\n"
    assert completeResponse(404, [(b"X", b"y")], b"gone", close=True) == (
        b"HTTP/1.1 404 Not Found\r\nX: y\r\nContent-Length: 4\r\nConnection: close\r\n\r\ngone"
    )
    assert completeResponse(200, [], b"body", False, withBody=False).endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X", b"a\r\nSet-Cookie: x")],
        [(b"X", b"a\nb")],
        [(b"X", b"a\rb")],
        [(b"X", b"a\n\rb")],
        [(b"X", b"a\x00")],
        [(b"X\r\nY", b"1")],
    ],
)
def test_writerRefusesInjection(headers: list[tuple[bytes, bytes]]) -> None:
    """
    A head whose fields carry CR, LF or NUL (whatever their source) is never made.
    """
    with pytest.raises(UnsafeHead):
        responseHead(200, b"OK", headers)
