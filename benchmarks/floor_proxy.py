#!/usr/bin/env python3
"""
The floor of a forward proxy on Twisted: the least work any proxy built on Twisted's reactor
can do per request, as a measuring stick for caplab's (not a product: no checks at all).

It reads a request head in absolute form, rewrites its request line to origin form, writes
it to a persistent connection to the origin (one per client connection) and relays the
response bytes as they come, framed by C{Content-Length} only.  No parsing beyond that, no
header rules, no pool, no policy, no metrics, no logging.  Whatever caplab does on top of
this costs time; this costs only Twisted's reactor, the transports and the four system calls
a proxied request needs.

    .venv/bin/python benchmarks/floor_proxy.py PORT
    .venv/bin/python benchmarks/proxy.py --floor     # it against proxy.py and squid

Only for the shared harness's requests (C{GET}, one at a time per connection, responses with
a C{Content-Length}); anything else closes the connection.
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol


class OriginSide(Protocol):
    """
    The connection to the origin of one client connection: relays each response whole.
    """

    def __init__(self, client: ClientSide) -> None:
        self.client = client
        self.head = b""
        self.remaining = -1  # body bytes still to relay; -1: reading a head

    def dataReceived(self, data: bytes) -> None:
        client = self.client.transport
        assert client is not None
        if self.remaining < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[: end + 4], self.head[end + 4 :]
            self.head = b""
            at = head.lower().find(b"\r\ncontent-length:")
            if at < 0:
                client.loseConnection()
                return
            self.remaining = int(head[at + 17 : head.find(b"\r\n", at + 2)])
            client.write(head)
        self.remaining -= len(data)
        client.write(data)
        if self.remaining <= 0:
            self.remaining = -1
            self.client.responseDone()

    def connectionLost(self, reason: object = None) -> None:
        if self.client.transport is not None:
            self.client.transport.loseConnection()


class ClientSide(Protocol):
    """
    One client connection: a request at a time, sent to its origin.
    """

    origin: OriginSide | None = None

    def __init__(self) -> None:
        self.buffer = b""
        self.busy = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
        lineEnd = head.find(b"\r\n")
        method, target, version = head[:lineEnd].split(b" ")
        if not target.startswith(b"http://"):
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        slash = target.find(b"/", 7)
        authority, path = target[7:slash], target[slash:]
        request = b"%s %s %s%s" % (method, path, version, head[lineEnd:])
        self.busy = True
        if self.origin is not None:
            self.origin.transport.write(request)  # type: ignore[union-attr]
            return
        host, _, port = authority.partition(b":")
        endpoint = TCP4ClientEndpoint(reactor, host.decode(), int(port or 80))
        origin = OriginSide(self)
        d = connectProtocol(endpoint, origin)

        def connected(_: object) -> None:
            self.origin = origin
            origin.transport.write(request)  # type: ignore[union-attr]

        d.addCallbacks(connected, lambda _: self.transport.loseConnection())  # type: ignore[union-attr]

    def responseDone(self) -> None:
        self.busy = False
        self._next()

    def connectionLost(self, reason: object = None) -> None:
        if self.origin is not None and self.origin.transport is not None:
            self.origin.transport.loseConnection()


def main() -> None:
    port = int(sys.argv[1])
    TCP4ServerEndpoint(reactor, port, backlog=1024, interface="127.0.0.1").listen(
        Factory.forProtocol(ClientSide)
    )
    reactor.run()


if __name__ == "__main__":
    main()
