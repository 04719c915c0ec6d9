"""
CONNECT tunnels: after C{200 Connection established} the client's and the origin's bytes are
relayed both ways untouched, each transport the producer of the other (the two-socket pattern
of L{twisted.protocols.portforward}), so neither side can make the proxy buffer without bound.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from caplab.proxy.connect import connectQuietly
from caplab.proxy.errors import describeConnectFailure
from caplab.proxy.hooks import Target
from caplab.proxy.origin import noDelay

log = Logger(namespace="caplab.proxy.tunnel")


class _OriginSide(Protocol):
    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def connectionMade(self) -> None:
        noDelay(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.tunnel.fromOrigin(data)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.tunnel.originLost()


class Tunnel:
    """
    One CONNECT tunnel: the request that asked for it, and the origin connection.
    """

    def __init__(self, opener: TunnelOpener, request: Any, host: str, port: int) -> None:
        self.opener = opener
        self.target = Target("tunnel", host, port, b"")
        self.request = request
        self.origin: _OriginSide | None = None
        self.attempt: Any = None
        self.sent = 0
        self.received = 0
        self.established = False
        self.closed = False
        self.clock = opener.clock
        self.lastActivity = self.clock.seconds() if self.clock is not None else 0.0

    def connected(self, origin: _OriginSide) -> None:
        request = self.request
        if self.closed or request._disconnected:
            origin.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.origin = origin
        self.established = True
        channel = request.channel
        request.code = 200
        request.code_message = b"Connection established"
        request.startedWriting = 1
        channel.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        channel.startTunnel(self)
        # Each side pauses the other when its own send buffer is full.
        origin.transport.registerProducer(channel.transport, True)  # type: ignore[union-attr]
        channel.registerProducer(origin.transport, True)
        self.opener.opened(self)

    def failed(self, reason: Failure) -> None:
        if self.closed:
            return
        request = self.request
        if request._disconnected:
            return
        error = describeConnectFailure(reason, self.target)
        request.respondError(error.code, error.title, error.detail)

    def fromClient(self, data: bytes) -> None:
        if self.origin is not None and self.origin.transport is not None:
            self.sent += len(data)
            if self.clock is not None:
                self.lastActivity = self.clock.seconds()
            self.origin.transport.write(data)

    def fromOrigin(self, data: bytes) -> None:
        request = self.request
        if not request._disconnected:
            self.received += len(data)
            if self.clock is not None:
                self.lastActivity = self.clock.seconds()
            request.channel.transport.write(data)

    def close(self) -> None:
        """
        End the tunnel from the proxy's side (idle too long): both connections close.
        """
        request = self.request
        if self.origin is not None and self.origin.transport is not None:
            self.origin.transport.loseConnection()
        if not request._disconnected:
            request.channel.transport.loseConnection()

    def clientLost(self) -> None:
        if self.closed:
            return
        if self.origin is None:
            if self.attempt is not None and not self.attempt.called:
                self.attempt.cancel()
            self.closed = True
            return
        self.origin.transport.loseConnection()  # type: ignore[union-attr]
        self._closed()

    def originLost(self) -> None:
        request = self.request
        if not request._disconnected:
            request.channel.transport.loseConnection()
        self._closed()

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.established:
            self.request.sentLength = self.received
            self.opener.closed(self)


class TunnelOpener:
    """
    Opens tunnels with a connector's endpoints (C{--resolve} applies), counts them, and logs
    each one once it closes.
    """

    def __init__(self, connector: Any, factory: Any = None, metrics: Any = None) -> None:
        self.connector = connector
        self.factory = factory
        self.metrics = metrics
        self.clock = getattr(factory, "clock", None)
        self.open_ = 0
        self.total = 0

    def open(self, request: Any, host: str, port: int, authority: str) -> Tunnel:
        """
        Connect to C{host:port} for C{request}; answer it when connected or failed.
        """
        tunnel = Tunnel(self, request, host, port)
        endpoint = self.connector.endpoint(host, port)
        tunnel.attempt = connectQuietly(endpoint, _OriginSide(tunnel))
        tunnel.attempt.addCallbacks(tunnel.connected, tunnel.failed)
        return tunnel

    def opened(self, tunnel: Tunnel) -> None:
        self.open_ += 1
        self.total += 1
        if self.metrics is not None:
            self.metrics.tunnelOpened()

    def closed(self, tunnel: Tunnel) -> None:
        self.open_ -= 1
        if self.metrics is not None:
            self.metrics.tunnelClosed()
        if self.factory is not None:
            self.factory.log(tunnel.request)
