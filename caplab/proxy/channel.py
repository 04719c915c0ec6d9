"""
The client side of the proxy: one connection from a browser or a tool.

L{CaplabProxy} is a L{twisted.web.proxy.Proxy} (so it is what Twisted calls a web proxy, as
the design asks), but it reads requests with caplab's own sans-I/O reader
(L{caplab.proxy.http1.RequestReader}) instead of L{HTTPChannel}'s line parser, whose private
state a proxy would otherwise have to steer (half-closing clients, HTTP/1.0 keep-alive,
C{Expect: 100-continue} decided after admission, protocol switches, request-body limits, and
the speed of the hot path).  It only moves bytes: the reader parses them, an
L{caplab.proxy.exchange.Exchange} serves each request, a L{caplab.proxy.tunnel.Relay}
carries a tunnel.

The connection's state is explicit (L{ConnectionState}):

    IDLE --first byte--> HEAD --head read--> BUSY --exchange done--> IDLE (keep-alive)
                                              |                  \\--> CLOSING
                                              \\--CONNECT, 101--> TUNNEL

A client that pipelines requests is read at most L{MAX_READ_AHEAD} bytes ahead of the request
being served; one that takes no answers (the transport paused the channel) is neither read nor
served until it does: the connection stays IDLE, held, so that answers made on the spot (cache
hits held whole, the proxy's own pages) never pile up in memory.

Deadlines (the header block's, keep-alive idleness, a client that stops reading, a closing
connection's last output, a silent tunnel) are checked by the factory's one periodic sweep
(L{checkDeadlines}), not by a timer per connection.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.proxy import Proxy
from zope.interface import implementer

from caplab.internals import sendNow
from caplab.proxy.admission import LOOPBACK, clientAllowed
from caplab.proxy.exchange import Exchange
from caplab.proxy.hooks import (
    IAuthenticator,
    ICacheAdmin,
    IFetcher,
    IFilterChain,
    IHostPolicy,
    IPage,
    IQuickHits,
)
from caplab.proxy.http1 import (
    END,
    MessageError,
    ReaderState,
    RequestHead,
    RequestReader,
    completeResponse,
)
from caplab.proxy.pages import errorPage, reason

if TYPE_CHECKING:
    from caplab.proxy.tunnel import Relay

log = Logger(namespace="caplab.proxy")

#: Bytes of pipelined requests read ahead while a request is served; then reading pauses.
MAX_READ_AHEAD = 65536

#: Seconds after a client's half-close, with its response not begun, before the proxy makes
#: sure it is still there (see L{CaplabProxy.checkDeadlines}).
HALF_CLOSE_PROBE = 1.0


@dataclass
class ProxySettings:
    """
    What the proxy's connections need: limits, rules and collaborators.

    @ivar fetcher: the L{IFetcher} chain plain requests go to (the cache, if any, in front).
    @ivar upstream: the chain without the cache, for requests the cache must not see
        (protocol upgrades); None: C{fetcher}.
    @ivar tunnels: opens CONNECT tunnels (L{caplab.proxy.tunnel.TunnelOpener}); None: 501.
    @ivar pseudonym: this proxy's name in C{Via}, unique per process (loop detection).
    @ivar pages: the proxy's own pages by path (C{/}, C{/stats}, C{/proxy.pac}).
    @ivar maxRequestBody: the largest request body forwarded (413 beyond); None: no limit.
    @ivar stallTimeout: how long a client may take no response data at all before it is cut
        off (its response would otherwise hold an origin connection).
    """

    fetcher: IFetcher
    clock: Any
    upstream: IFetcher | None = None
    tunnels: Any = None
    hostPolicy: IHostPolicy | None = None
    authenticator: IAuthenticator | None = None
    cacheAdmin: ICacheAdmin | None = None
    hits: IQuickHits | None = None
    filters: IFilterChain | None = None
    metrics: Any = None
    allow: Sequence[Any] = LOOPBACK
    connectPorts: frozenset[int] = frozenset({443})
    forwardedFor: bool = False
    pseudonym: bytes = b"caplab"
    headerTimeout: float = 30.0
    tunnelIdleTimeout: float = 600.0
    idleTimeout: float = 60.0
    stallTimeout: float = 300.0
    abortTimeout: float = 15.0
    maxConnections: int = 1000
    maxRequestLine: int = 8192
    maxHeaderBlock: int = 65536
    maxHeaders: int = 100
    maxRequestBody: int | None = None
    pages: dict[bytes, IPage] = field(default_factory=dict)

    def allowed(self, host: str) -> bool:
        """
        Whether a client at address C{host} may use the proxy.
        """
        return clientAllowed(self.allow, host)


class ConnectionState(enum.Enum):
    """
    Where a client connection is.
    """

    IDLE = "waiting for a request"
    HEAD = "reading a request's head"
    BUSY = "serving a request"
    TUNNEL = "relaying a tunnel"
    CLOSING = "closing"


IDLE = ConnectionState.IDLE
HEAD = ConnectionState.HEAD
BUSY = ConnectionState.BUSY
TUNNEL = ConnectionState.TUNNEL
CLOSING = ConnectionState.CLOSING


@implementer(IHalfCloseableProtocol, IPushProducer)
class CaplabProxy(Proxy):
    """
    One client connection of the proxy (see the module docstring).

    @ivar clientHost: the client's address, for logs and the allow-list.
    @ivar clientDone: the client has sent all it will send (it half-closed, or closed).
    """

    factory: Any
    transport: Any
    state = IDLE
    exchange: Exchange | None = None
    relay: Relay | None = None
    clientHost = "-"
    clientAllowed = True
    clientDone = False
    peerAddress: Any = None
    localAddress: Any = None
    closingSince: float | None = None
    halfClosedAt: float | None = None
    probedAt: float | None = None
    _pausedAt = 0.0
    _aborted = False
    # The request body's progress (bytes) when the sweep last saw it move, and when.
    _bodySeen = -1
    _bodySeenAt = 0.0

    def __init__(self, settings: ProxySettings) -> None:
        super().__init__()
        self.settings = settings
        self.reader = RequestReader(
            settings.maxRequestLine, settings.maxHeaderBlock, settings.maxHeaders
        )
        self.since = 0.0  # when the current state's deadline started
        self._writePaused = False
        self._responseProducer: IPushProducer | None = None
        self._readPauses = 0
        self._held = False
        self._handling = False
        self._queued: list[Any] = []

    # Connection life

    def connectionMade(self) -> None:
        transport = self.transport
        self.peerAddress = peer = transport.getPeer()
        self.localAddress = transport.getHost()
        self.clientHost = getattr(peer, "host", "-")
        self.clientAllowed = self.settings.allowed(self.clientHost)
        setNoDelay = getattr(transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            try:
                setNoDelay(True)
            except OSError:
                pass
        transport.registerProducer(self, True)
        self.since = self.settings.clock.seconds()
        self.factory.channelOpened(self)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.state = CLOSING
        self.clientDone = True
        self.factory.channelClosed(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.clientGone()
        relay, self.relay = self.relay, None
        if relay is not None:
            relay.clientLost()
        self._responseProducer = None

    def readConnectionLost(self) -> None:
        """
        The client half-closed: it sends nothing more, but reads what it is owed.
        """
        self.clientDone = True
        self.halfClosedAt = self.settings.clock.seconds()
        if self.relay is not None:
            self.relay.clientHalfClosed()
            return
        if self.state is CLOSING or self._held:
            return  # held: the requests read ahead are served first (L{_nextRequest})
        self._handle(self.reader.receiveEOF())
        if self.state is IDLE:
            self.close()

    def writeConnectionLost(self) -> None:
        """
        Our sending side is shut (a tunnel passed an origin's half-close on).
        """
        if self.relay is None:
            self.close()

    @property
    def readAhead(self) -> int:
        """
        Bytes of further (pipelined) requests received and not read yet.
        """
        return self.reader.buffered

    def getPeer(self) -> Any:
        return self.peerAddress

    def getHost(self) -> Any:
        return self.localAddress

    # Bytes in

    def dataReceived(self, data: bytes) -> None:
        metrics = self.settings.metrics
        if metrics is not None:
            metrics.receivedTotal += len(data)
        relay = self.relay
        if relay is not None:
            relay.fromClient(data)
            return
        state = self.state
        reader = self.reader
        if state is IDLE:
            if self._held:
                reader.receive(data)  # kept, not read: the reader waits for nextMessage
                self._boundReadAhead()
                return
            self.state = HEAD
            self.since = self.settings.clock.seconds()
        elif state is CLOSING:
            return
        self._handle(reader.receive(data))
        if reader.buffered > MAX_READ_AHEAD:
            self._boundReadAhead()

    def _boundReadAhead(self) -> None:
        """
        Stop reading while more than L{MAX_READ_AHEAD} bytes of further (pipelined) requests
        wait behind a complete one: they are read once it is served.
        """
        reader = self.reader
        if (
            reader.buffered > MAX_READ_AHEAD
            and reader.state is ReaderState.DONE
            and self.state is not CLOSING
        ):
            self.pauseReading()

    def _handle(self, events: list[Any]) -> None:
        """
        Act on the reader's events.  Requests read ahead are taken up once the one in hand
        is served (L{exchangeDone}); events read while this runs are queued behind the ones
        in hand, so however many requests are pipelined this is a loop, not a recursion.
        """
        if self._handling:
            self._queued.extend(events)
            return
        self._handling = True
        try:
            while True:
                for event in events:
                    if self.state is CLOSING:
                        break  # answered already; what the client still sends is moot
                    if type(event) is bytes:
                        if self.exchange is not None:
                            self.exchange.bodyReceived(event)
                    elif event is END:
                        if self.exchange is not None:
                            self.exchange.bodyComplete()
                    elif type(event) is RequestHead:
                        self._serve(event)
                    elif type(event) is MessageError:
                        self._malformed(event)
                if not self._queued:
                    break
                events, self._queued = self._queued, []
        finally:
            self._handling = False

    def _serve(self, head: RequestHead) -> None:
        self.state = BUSY
        self._bodySeen = -1
        exchange = self.exchange = Exchange(self, head)
        try:
            exchange.start()
        except Exception:
            # A bug in a dispatch (a page, the cache's short way, a fetcher): a 500 and its
            # log line, never an exception out of dataReceived (the connection would die
            # without an answer, and the requests behind it with it).
            exchange.internalError(Failure())

    def _malformed(self, error: MessageError) -> None:
        """
        The client sent something that is not a valid request (400, 414, 431, 505 ...), or
        closed in the middle of one.
        """
        exchange = self.exchange
        if exchange is not None:
            # Mid-body: the request cannot be completed.
            exchange.bodyAborted(error)
            return
        self.refuse(error.code, error.detail)

    # Answers outside any exchange

    def refuse(self, code: int, detail: str) -> None:
        """
        Answer a request that could not be read (or took too long) with C{code}, and close.
        """
        if self.state is CLOSING:
            return
        body = errorPage(code, reason(code).decode("ascii"), detail)
        self.send(
            completeResponse(code, [(b"Content-Type", b"text/html; charset=utf-8")], body, True)
        )
        self.factory.logRefusal(self, code, len(body))
        self.close()

    # Used by the exchange

    def send(self, data: bytes) -> None:
        """
        Write C{data} to the client now (or as soon as the transport can take it).
        """
        sendNow(self.transport, data)

    def exchangeDone(self, exchange: Exchange, keepAlive: bool) -> None:
        """
        C{exchange} is over (response sent, request read): read the next request, or close.
        """
        if self.exchange is not exchange:
            return
        self.exchange = None
        self.probedAt = None
        if not keepAlive or self.state is not BUSY:
            self.close()
            return
        self.state = IDLE
        if self._writePaused:
            # The client is not taking what it was sent: serve nothing more (an answer made
            # on the spot would pile up in the transport) and read nothing more, until it
            # takes it (resumeProducing).
            self._held = True
            if not self._readPauses:
                self.pauseReading()
            return
        self._nextRequest()

    def _nextRequest(self) -> None:
        """
        Go on after an exchange: read the next request if the client sent (some of) it
        already, or close if the client has sent all it will.
        """
        self._held = False
        self.since = self.settings.clock.seconds()
        reader = self.reader
        reader.nextMessage()
        if self._readPauses:
            self._readPauses = 0  # the pauses of the exchange over (or of the hold)
            self.transport.resumeProducing()
        if reader.buffered:
            self.state = HEAD
            events = reader.receive(b"")
            if self.clientDone:
                # The client sent all it will: a request it cut short is answered now (400),
                # not after the header timeout.
                events += reader.receiveEOF()
                if not events:
                    self.close()  # nothing but empty lines
                    return
            self._handle(events)
        elif self.clientDone:
            self.close()

    def close(self) -> None:
        """
        Close once what was written is sent (aborted if the client does not take it within
        C{abortTimeout}).
        """
        if self.closingSince is not None:
            return
        self.state = CLOSING
        self.closingSince = self.settings.clock.seconds()
        self.transport.loseConnection()

    def abort(self) -> None:
        """
        Drop the connection at once (a response that cannot be completed: the client must
        see it cut off, never complete-looking).
        """
        if self._aborted:
            return
        self._aborted = True
        self.state = CLOSING
        if self.closingSince is None:
            self.closingSince = self.settings.clock.seconds()
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()

    def startTunnel(self, relay: Relay) -> bytes:
        """
        From now on this connection is a tunnel: every byte goes to C{relay}.  Returns the
        bytes the client already sent past the request (the tunnel's first).
        """
        self.state = TUNNEL
        self.exchange = None
        self.relay = relay
        self._responseProducer = None
        if self._readPauses:
            self._readPauses = 0
            self.transport.resumeProducing()
        return self.reader.switch()

    # Back-pressure

    def setResponseProducer(self, producer: IPushProducer | None) -> None:
        """
        The producer of what is sent to the client (the origin connection, a stored body, a
        tunnel's origin transport): the client's transport pauses it through this channel.
        """
        self._responseProducer = producer
        if producer is not None and self._writePaused:
            producer.pauseProducing()

    def pauseReading(self) -> None:
        """
        Stop reading from the client (a request body nobody can take yet); counted, so that
        each pause is undone by its own L{resumeReading}.
        """
        self._readPauses += 1
        if self._readPauses == 1:
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        if self._readPauses:
            self._readPauses -= 1
            if not self._readPauses:
                self.transport.resumeProducing()

    # IPushProducer: the client's transport pauses the response when the client is slow

    def pauseProducing(self) -> None:
        if not self._writePaused:
            self._writePaused = True
            self._pausedAt = self.settings.clock.seconds()
            if self._responseProducer is not None:
                self._responseProducer.pauseProducing()

    def resumeProducing(self) -> None:
        if self._writePaused:
            self._writePaused = False
            if self._responseProducer is not None:
                self._responseProducer.resumeProducing()
            if self._held and self.state is IDLE and self.exchange is None:
                self._nextRequest()

    def stopProducing(self) -> None:
        producer, self._responseProducer = self._responseProducer, None
        if producer is not None:
            producer.stopProducing()

    def _resetByPeer(self) -> bool:
        """
        Whether the client answered with a reset: the socket's pending error (C{SO_ERROR}),
        read through the transport's public C{getHandle}.  A half-closed socket reads as
        end-of-file either way, so reading would not tell.
        """
        getHandle = getattr(self.transport, "getHandle", None)
        if getHandle is None:
            return False
        try:
            return bool(getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        except (OSError, AttributeError):
            return False

    # Deadlines, checked by the factory's sweep

    def _checkStall(self, now: float) -> None:
        """
        Cut off a client that has taken no response data for C{stallTimeout}.
        """
        limit = self.settings.stallTimeout
        if limit and now - self._pausedAt > limit:
            log.info(
                "{client}: took no response data for {timeout} s; closing",
                client=self.clientHost,
                timeout=limit,
            )
            self.abort()

    def _bodyStalled(self, exchange: Exchange, now: float) -> bool:
        """
        End C{exchange} if its client has sent none of the request body it owes for
        C{idleTimeout} (time it was paused by the proxy does not count); return whether it
        did.
        """
        limit = self.settings.idleTimeout
        if not limit or self._readPauses or self.clientDone or not exchange.readingBody:
            self._bodySeen = -1
            return False
        if exchange.received != self._bodySeen:
            self._bodySeen = exchange.received
            self._bodySeenAt = now
            return False
        if now - self._bodySeenAt <= limit:
            return False
        self._bodySeen = -1
        log.info(
            "{client}: request body stalled for {timeout} s; closing",
            client=self.clientHost,
            timeout=limit,
        )
        exchange.bodyStalled(limit)
        return True

    def checkDeadlines(self, now: float) -> None:
        """
        Close the connection if it overstayed its state: a header block that takes too long
        (slow-loris, 408), a request body that stalls (408), keep-alive idleness, a client
        that takes no response data, a closing connection whose client does not take its
        last bytes, a silent tunnel.
        """
        settings = self.settings
        state = self.state
        if state is IDLE:
            if self._writePaused:
                self._checkStall(now)
            elif settings.idleTimeout and now - self.since > settings.idleTimeout:
                self.close()
        elif state is HEAD:
            if settings.headerTimeout and now - self.since > settings.headerTimeout:
                log.info(
                    "{client}: header block not complete within {timeout} s; closing",
                    client=self.clientHost,
                    timeout=settings.headerTimeout,
                )
                self.refuse(408, "the request header block took too long")
        elif state is BUSY:
            exchange = self.exchange
            if exchange is not None and self._bodyStalled(exchange, now):
                return
            if exchange is not None and self.halfClosedAt is not None:
                # A FIN is a half-close (socat, nc -N: they still read) or a client gone for
                # good: only a write tells.  The exchange sends an interim response, which a
                # client that is gone answers with a reset; the next sweep looks for it, and
                # drops the origin request if it came.
                if self.probedAt is not None:
                    if self._resetByPeer():
                        log.info("{client}: gone while waiting; closing", client=self.clientHost)
                        self.abort()
                        return
                elif now - self.halfClosedAt >= HALF_CLOSE_PROBE:
                    self.probedAt = now
                    exchange.probeClient()
            if self._writePaused:
                self._checkStall(now)
        elif state is TUNNEL:
            relay = self.relay
            limit = settings.tunnelIdleTimeout
            if relay is not None and limit and now - relay.lastActivity > limit:
                log.info(
                    "{client}: tunnel to {target} idle for {timeout} s; closing",
                    client=self.clientHost,
                    target=relay.target,
                    timeout=limit,
                )
                relay.close()
        elif (
            self.closingSince is not None
            and settings.abortTimeout
            and now - self.closingSince > settings.abortTimeout
        ):
            self.abort()
