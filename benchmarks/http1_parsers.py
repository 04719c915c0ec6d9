"""
How fast and how strict caplab's HTTP/1.1 readers are, against h11 and httptools (llhttp), on
the inputs a forward proxy reads: a browser's request head, a small response (head and 1 KiB
body), a chunked response; and a corpus of malformed and ambiguous messages (smuggling
vectors, control bytes in fields, absurd lengths) that each parser should refuse.

    .venv/bin/pip install h11 httptools      # the peers (not caplab dependencies)
    .venv/bin/python benchmarks/http1_parsers.py [--rounds N]

Prints microseconds per message (best of 5 runs) and, for the corpus, which parser accepted
what (a strict parser refuses every line of it; "mended" is caplab's RFC 9110 section 5.5
choice for an origin's control bytes: replaced by SP, never relayed raw).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import cast

from caplab.proxy.http1 import (
    END,
    MessageError,
    RequestReader,
    ResponseHead,
    ResponseReader,
)

REQUEST = (
    b"GET http://www.example.com/path/to/page.html?query=1 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=abcdef0123456789; theme=dark\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n\r\n"
)

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: text/html\r\nContent-Length: 1024\r\n"
    b"Last-Modified: Mon, 30 Nov 2026 11:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "5f1c-400"\r\nAccept-Ranges: bytes\r\n\r\n' + b"x" * 1024
)

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"400\r\n" + b"y" * 1024 + b"\r\n" for _ in range(16))
    + b"0\r\n\r\n"
)

#: Requests a strict server refuses (each is a smuggling vector or a grammar violation).
BAD_REQUESTS = {
    "CL and TE both": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two different CL": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
    b"Content-Length: 5\r\n\r\n",
    "CL beyond 63 bits": b"POST / HTTP/1.1\r\nHost: h\r\n"
    b"Content-Length: 99999999999999999999\r\n\r\n",
    "negative CL": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    "TE not ending in chunked": b"POST / HTTP/1.1\r\nHost: h\r\n"
    b"Transfer-Encoding: chunked, gzip\r\n\r\n",
    "TE in HTTP/1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    "NUL in a value": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    "bare CR in a value": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
    "bare LF line ends": b"GET / HTTP/1.1\nHost: h\nX: a\n\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
    "no Host in 1.1": b"GET / HTTP/1.1\r\nX: a\r\n\r\n",
    "two Hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "space in target": b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "HTTP/2.0 line": b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
}

#: Responses an origin might send that must never be relayed raw.
BAD_RESPONSES = {
    "LF injection in a value": b"HTTP/1.1 200 OK\r\nX-A: foo\nSet-Cookie: x=1\r\n"
    b"Content-Length: 0\r\n\r\n",
    "NUL in a value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "two different CL": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
    "bad CL": b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nx",
    "unrequested 101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    "space in a field name": b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
}


# caplab


def caplabRequest(data: bytes) -> str:
    events = RequestReader().receive(data)
    if any(isinstance(e, MessageError) for e in events):
        return "refused"
    return "accepted" if END in events else "incomplete"


def caplabResponse(data: bytes) -> str:
    reader = ResponseReader()
    reader.expect(b"GET")
    events = reader.receive(data)
    if any(isinstance(e, MessageError) for e in events):
        return "refused"
    heads = [e for e in events if isinstance(e, ResponseHead)]
    if heads and any(
        v != data.split(n + b":", 1)[-1].split(b"\r\n", 1)[0].strip() for n, v in heads[0].headers
    ):
        return "mended"
    return "accepted" if heads else "incomplete"


def caplabParse(data: bytes, response: bool) -> None:
    if response:
        reader: RequestReader | ResponseReader = ResponseReader()
        reader.expect(b"GET")  # type: ignore[union-attr]
    else:
        reader = RequestReader()
    events = reader.receive(data)
    assert events[-1] is END, events


# h11


def h11Parse(data: bytes, response: bool) -> str:
    import h11

    connection = h11.Connection(h11.CLIENT if response else h11.SERVER)
    if response:
        connection.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
        connection.send(h11.EndOfMessage())
    connection.receive_data(data)
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return "incomplete"
            if isinstance(event, h11.EndOfMessage):
                return "accepted"
    except h11.RemoteProtocolError:
        return "refused"


def h11Whole(data: bytes, response: bool) -> None:
    import h11

    connection = h11.Connection(h11.CLIENT if response else h11.SERVER)
    if response:
        connection.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
        connection.send(h11.EndOfMessage())
    connection.receive_data(data)
    while True:
        event = connection.next_event()
        if isinstance(event, h11.EndOfMessage):
            return


# httptools


class _Callbacks:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.head = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head = True

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        self.complete = True


def httptoolsParse(data: bytes, response: bool) -> str:
    import httptools

    callbacks = _Callbacks()
    parser = (httptools.HttpResponseParser if response else httptools.HttpRequestParser)(callbacks)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return "refused"
    return "accepted" if callbacks.complete else "incomplete"


def httptoolsWhole(data: bytes, response: bool) -> None:
    import httptools

    callbacks = _Callbacks()
    parser = (httptools.HttpResponseParser if response else httptools.HttpRequestParser)(callbacks)
    parser.feed_data(data)
    assert callbacks.complete


Timed = Callable[[], object]


def _microseconds(function: Timed, rounds: int) -> float:
    return min(timeit.repeat(function, number=rounds, repeat=5)) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20000)
    options = parser.parse_args()
    peers: dict[str, Callable[[bytes, bool], object]] = {"caplab": caplabParse}
    checks: dict[str, Callable[[bytes, bool], str]] = {}
    try:
        import h11  # noqa: F401

        peers["h11"] = h11Whole
        checks["h11"] = h11Parse
    except ImportError:
        print("h11 not installed: skipped")
    try:
        import httptools  # noqa: F401

        peers["httptools"] = httptoolsWhole
        checks["httptools"] = httptoolsParse
    except ImportError:
        print("httptools not installed: skipped")

    print("\nspeed (microseconds per message, best of 5):")
    print(f"{'message':<28}" + "".join(f"{name:>12}" for name in peers))
    for label, data, response in (
        ("browser request head", REQUEST, False),
        ("response, 1 KiB body", RESPONSE, True),
        ("chunked response, 16 KiB", CHUNKED, True),
    ):
        # cast: mypy cannot type a lambda with default arguments (python/mypy#15459)
        row = [
            _microseconds(cast(Timed, lambda p=p, d=data, r=response: p(d, r)), options.rounds)
            for p in peers.values()
        ]
        print(f"{label:<28}" + "".join(f"{value:>12.1f}" for value in row))

    print("\nstrictness (what each parser does with a bad message):")
    names = ["caplab", *checks]
    print(f"{'request':<28}" + "".join(f"{name:>12}" for name in names))
    for label, data in BAD_REQUESTS.items():
        verdicts = [caplabRequest(data), *(check(data, False) for check in checks.values())]
        print(f"{label:<28}" + "".join(f"{value:>12}" for value in verdicts))
    print(f"{'response':<28}" + "".join(f"{name:>12}" for name in names))
    for label, data in BAD_RESPONSES.items():
        verdicts = [caplabResponse(data), *(check(data, True) for check in checks.values())]
        print(f"{label:<28}" + "".join(f"{value:>12}" for value in verdicts))


if __name__ == "__main__":
    main()
