"""
Counting for services that do not count for themselves, by wrapping their factories (never by
changing their classes or methods), and L{LatencyFetcher}, which times the upstream leg.

  - L{ReceivedBytesFactory}: every byte the proxy's connections receive.  Its protocols stand
    on the reading side only (the transport hands them the bytes; the protocol still writes
    to the transport directly), so the write path is untouched, and bytes a protocol hands
    back to itself (a line receiver returning to line mode) are not seen twice.
  - L{CountingTCPFactory}: the uppercase TCP service's accepted connections; its open ones
    are read from the factory's own C{active} when the metrics are read.
  - The uppercase UDP protocol counts its datagrams itself:
    L{Metrics.watchDatagramProtocol} reads that count, with nothing on the datagram path.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from caplab.metrics.registry import Metrics
from caplab.proxy.hooks import IFetcher, IRequestBody, UpstreamRequest, UpstreamResponse

#: Interfaces a wrapped protocol may provide that its transport looks for on the reading side.
_PASSED_ON = (IHalfCloseableProtocol, IHandshakeListener)


@implementer(IProtocol, ILoggingContext)
class ReceivedBytesProtocol:
    """
    Counts the bytes its transport delivers, then hands them to the protocol it stands for.

    The wrapped protocol is connected to the real transport, so everything it writes goes
    there directly.  Half-close and TLS handshake notifications are passed on if it takes
    them.
    """

    def __init__(self, wrapped: IProtocol, metrics: Metrics) -> None:
        self.wrapped = wrapped
        self.metrics = metrics
        for interface in _PASSED_ON:
            if interface.providedBy(wrapped):
                alsoProvides(self, interface)

    def makeConnection(self, transport: ITransport) -> None:
        self.wrapped.makeConnection(transport)

    def connectionMade(self) -> None:
        """
        Never called: L{makeConnection} connects the wrapped protocol itself.
        """

    def dataReceived(self, data: bytes) -> None:
        self.metrics.receivedTotal += len(data)
        self.wrapped.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        self.wrapped.connectionLost(reason)

    def readConnectionLost(self) -> None:
        IHalfCloseableProtocol(self.wrapped).readConnectionLost()

    def writeConnectionLost(self) -> None:
        IHalfCloseableProtocol(self.wrapped).writeConnectionLost()

    def handshakeCompleted(self) -> None:
        IHandshakeListener(self.wrapped).handshakeCompleted()

    def logPrefix(self) -> str:
        context = ILoggingContext(self.wrapped, None)
        return context.logPrefix() if context is not None else type(self.wrapped).__name__


class ReceivedBytesFactory(WrappingFactory):
    """
    Counts every byte the connections of the factory it wraps receive (request heads,
    bodies and tunnel data alike) in C{metrics}; a connection the factory refuses
    (C{buildProtocol} returns None) is counted as refused.
    """

    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory, metrics: Metrics) -> None:
        super().__init__(wrappedFactory)
        self.metrics = metrics

    def buildProtocol(self, addr: Any) -> ReceivedBytesProtocol | None:  # type: ignore[override]
        protocol = self.wrappedFactory.buildProtocol(addr)
        if protocol is None:
            self.metrics.connectionRefused()
            return None
        return ReceivedBytesProtocol(protocol, self.metrics)


class LatencyFetcher:
    """
    An L{IFetcher} that times the fetcher it wraps: from the request to the response head,
    in the upstream latency histogram (failures are not timed).

    Put it around the forwarder (inside the cache), so that only real upstream requests
    count.
    """

    def __init__(self, inner: IFetcher, metrics: Metrics, clock: IReactorTime) -> None:
        self.inner = inner
        self.metrics = metrics
        self.seconds = clock.seconds

    def fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        return self.inner.fetch(request, body).addCallback(self._done, self.seconds())

    def _done(self, response: UpstreamResponse, started: float) -> UpstreamResponse:
        self.metrics.upstreamLatency(self.seconds() - started)
        return response
