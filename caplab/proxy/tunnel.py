"""
Tunnels: after C{200 Connection established} (CONNECT) or C{101 Switching Protocols} (an
upgraded request, a WebSocket), the client's and the origin's bytes are relayed both ways
untouched, each transport the producer of the other (the two-socket pattern of
L{twisted.protocols.portforward}), so neither side can make the proxy buffer without bound.
A half-close is passed on (each direction ends on its own); the tunnel is over when both
connections are.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from caplab.proxy.connect import connectQuietly
from caplab.proxy.errors import describeConnectFailure
from caplab.proxy.hooks import ISwitchedConnection, Target, UpstreamError
from caplab.proxy.origin import noDelay

log = Logger(namespace="caplab.proxy.tunnel")


def _closeWriting(transport: Any) -> None:
    """
    Half-close C{transport} (send a FIN, keep reading), or close it if it cannot.
    """
    loseWrite = getattr(transport, "loseWriteConnection", None)
    if loseWrite is not None:
        loseWrite()
    else:
        transport.loseConnection()


class TunnelClient(TypingProtocol):
    """
    What a tunnel needs of the request that opened it (L{caplab.proxy.exchange.Exchange}).
    """

    channel: Any
    settings: Any
    gone: bool

    def tunnelEstablished(self, relay: Relay) -> bytes: ...

    def tunnelFailed(self, error: UpstreamError) -> None: ...

    def tunnelClosed(self, received: int) -> None: ...


class Relay:
    """
    One tunnel between a client's connection (the exchange's channel) and an origin's.

    @ivar target: what the tunnel reaches, for logs.
    @ivar received: bytes from the origin (the access log's size).
    """

    def __init__(self, exchange: TunnelClient, target: str, onClosed: Any = None) -> None:
        self.exchange = exchange
        self.channel = exchange.channel
        self.target = target
        self.clock = exchange.settings.clock
        self.lastActivity = self.clock.seconds()
        self.origin: Any = None
        self.received = 0
        self.closed = False
        self._onClosed = onClosed
        self._clientReading = True
        self._originReading = True

    # Starting

    def startConnected(self, origin: Any, fromClient: bytes) -> None:
        """
        Relay between the channel and C{origin}'s transport (a fresh connection).
        """
        self.origin = origin
        origin.registerProducer(self.channel.transport, True)
        self.channel.setResponseProducer(origin)
        if fromClient:
            self.fromClient(fromClient)
        if self.channel.clientDone:
            # The client half-closed while the tunnel was opening: its FIN follows its bytes.
            self.clientHalfClosed()

    def startSwitched(self, switched: ISwitchedConnection, fromClient: bytes) -> None:
        """
        Relay between the channel and an origin connection that switched protocols.
        """
        leftover = switched.leftover
        switched.attach(_OriginEvents(self))
        self.startConnected(switched.transport, fromClient)
        if leftover:
            self.fromOrigin(leftover)

    # Bytes

    def fromClient(self, data: bytes) -> None:
        if self.origin is not None and not self.closed:
            self.lastActivity = self.clock.seconds()
            self.origin.write(data)

    def fromOrigin(self, data: bytes) -> None:
        if not self.closed:
            self.received += len(data)
            self.lastActivity = self.clock.seconds()
            self.channel.transport.write(data)

    # Ends

    def clientHalfClosed(self) -> None:
        self._clientReading = False
        if self.origin is not None:
            _closeWriting(self.origin)
        if not self._originReading:
            self.close()

    def originHalfClosed(self) -> None:
        self._originReading = False
        _closeWriting(self.channel.transport)
        if not self._clientReading:
            self.close()

    def clientLost(self) -> None:
        if self.origin is not None:
            self.origin.loseConnection()
        self._closed()

    def originLost(self) -> None:
        self.channel.transport.loseConnection()
        self._closed()

    def close(self) -> None:
        """
        End the tunnel from the proxy's side (idle too long, or both sides done).
        """
        if self.origin is not None:
            self.origin.loseConnection()
        self.channel.transport.loseConnection()

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._onClosed is not None:
            self._onClosed(self)
        self.exchange.tunnelClosed(self.received)


class _OriginEvents:
    """
    What a switched origin connection reports, passed to its L{Relay}.
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def dataReceived(self, data: bytes) -> None:
        self.relay.fromOrigin(data)

    def readConnectionLost(self) -> None:
        self.relay.originHalfClosed()

    def connectionLost(self) -> None:
        self.relay.originLost()


@implementer(IHalfCloseableProtocol)
class _OriginSide(Protocol):
    """
    The origin's end of a CONNECT tunnel.
    """

    relay: Relay | None = None

    def connectionMade(self) -> None:
        noDelay(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.fromOrigin(data)

    def readConnectionLost(self) -> None:
        if self.relay is not None:
            self.relay.originHalfClosed()
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if self.relay is not None:
            self.relay.originLost()


class PendingTunnel:
    """
    A CONNECT whose origin connection is being made.
    """

    def __init__(self, attempt: Deferred[Any]) -> None:
        self.attempt = attempt

    def clientLost(self) -> None:
        if not self.attempt.called:
            self.attempt.cancel()


class TunnelOpener:
    """
    Opens CONNECT tunnels with a connector's endpoints (C{--resolve} and the parent proxy
    apply), and tells the metrics of each opened and closed.
    """

    def __init__(self, connector: Any, clock: Any = None, metrics: Any = None) -> None:
        self.connector = connector
        self.clock = clock
        self.metrics = metrics

    def open(self, exchange: TunnelClient, host: str, port: int) -> PendingTunnel:
        """
        Connect to C{host:port} for C{exchange}; answer it when connected or failed.
        """
        target = Target("tunnel", host, port, b"")
        side = _OriginSide()
        attempt = connectQuietly(self.connector.endpoint(host, port), side)
        pending = PendingTunnel(attempt)

        def connected(_: object) -> None:
            if exchange.gone:
                side.transport.loseConnection()  # type: ignore[union-attr]
                return
            relay = side.relay = Relay(exchange, target.authority, self._closed)
            if self.metrics is not None:
                self.metrics.tunnelOpened()
            relay.startConnected(side.transport, exchange.tunnelEstablished(relay))

        def failed(reason: Failure) -> None:
            if not exchange.gone:
                exchange.tunnelFailed(describeConnectFailure(reason, target))

        attempt.addCallbacks(connected, failed)
        return pending

    def _closed(self, relay: Relay) -> None:
        if self.metrics is not None:
            self.metrics.tunnelClosed()
