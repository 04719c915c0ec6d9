"""
One persistent HTTP/1.1 connection to an origin (or a parent proxy): a client protocol that
carries one exchange at a time.  It only moves bytes: the response is read by
L{caplab.proxy.http1.ResponseReader}, the request head written by its writer; bodies stream
both ways with back-pressure.

The connection and its pool (L{caplab.proxy.forward.Forwarder}) talk through
L{ConnectionOwner}, given at construction: the connection says when it is idle (reusable),
closed, or needs its exchange sent again on a new connection (a pooled connection the origin
closed just before it was used).

A response body ends only by its framing: a length, the last chunk, or, for a body that lasts
until the connection closes, an orderly close (a FIN).  A reset, an abort or a timeout cuts
the body short, and the client's connection is then cut too: never a truncated body relayed
(or stored) as whole.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from caplab.internals import readInLargerPieces, sendNow
from caplab.proxy.errors import tlsFailure
from caplab.proxy.headers import HOP_BY_HOP, endToEnd
from caplab.proxy.hooks import (
    IBodySink,
    IRequestBody,
    ITunnelSide,
    Target,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from caplab.proxy.http1 import (
    END,
    LAST_CHUNK,
    InterimResponse,
    MessageError,
    ResponseHead,
    ResponseReader,
    chunk,
)

log = Logger(namespace="caplab.proxy")

#: The longest response head (status line and fields) accepted from an origin.
MAX_HEAD = 65536

_SWITCH_DROP = HOP_BY_HOP - {b"upgrade"}

#: The methods a request may be sent again with, on its own, when a reused connection was
#: closed before any response (RFC 9110 section 9.2.2: idempotent methods only).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def noDelay(transport: Any) -> None:
    """
    Switch Nagle's algorithm off on C{transport}, if it is TCP: a request head and its body
    go out in separate writes, and the second must not wait for the first's acknowledgement.
    """
    setTcpNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setTcpNoDelay is not None:
        try:
            setTcpNoDelay(True)
        except OSError:
            pass


class FetchReceiver(TypingProtocol):
    """
    What a L{Transfer} reports to, once: its response's head, or why there is none.

    L{caplab.proxy.forward.Forwarder.fetch} makes one that fires a Deferred; the exchange
    is one itself (L{caplab.proxy.forward.Forwarder.fetchInto}), which spares every request
    a Deferred's machinery.
    """

    def fetched(self, response: UpstreamResponse) -> None: ...

    def fetchFailed(self, reason: Failure) -> None: ...


class Transfer:
    """
    One request/response exchange: the request and its head's bytes, what the response is
    reported to, whether it came, and the sink its body goes to.
    """

    __slots__ = (
        "request",
        "body",
        "head",
        "receiver",
        "sink",
        "pending",
        "complete",
        "bodySent",
        "retried",
        "answered",
        "connection",
        "attempt",
        "started",
        "canceller",
    )

    def __init__(self, request: UpstreamRequest, body: IRequestBody | None, head: bytes):
        self.request = request
        self.body = body
        self.head = head
        self.receiver: FetchReceiver | None = None  # None: answered, failed or cancelled
        self.sink: IBodySink | None = None
        self.pending: list[bytes] | None = None
        self.complete: bool | None = None
        self.bodySent = body is None
        self.retried = False
        self.answered = False  # the response head came (kept as a flag: the response
        # holds its body's delivery, which holds this transfer; no reference cycle)
        self.connection: OriginConnection | None = None
        self.attempt: Deferred[Any] | None = None
        self.started = 0.0
        self.canceller: Callable[[Transfer], None] | None = None

    def fail(self, error: UpstreamError) -> None:
        """
        Fail the fetch with C{error}, if it is still waiting for a response.
        """
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.fetchFailed(Failure(error))

    @property
    def waiting(self) -> bool:
        """
        Whether the receiver is still to be told (no response, failure or cancel yet).
        """
        return self.receiver is not None

    def cancel(self) -> None:
        """
        Stop the fetch (the client went away): its receiver is told nothing more.
        """
        if self.canceller is not None:
            self.canceller(self)
        self.receiver = None

    def respond(self, response: UpstreamResponse) -> None:
        """
        Hand C{response} (its head) to the receiver, if it is still waiting for one.
        """
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.fetched(response)


class ConnectionOwner(TypingProtocol):
    """
    What an L{OriginConnection} tells the pool that made it.

    @ivar latency: told how long each response head took (None: nobody asks).
    """

    clock: IReactorTime
    timeout: float
    latency: Callable[[float], None] | None

    def connectionIdle(self, connection: OriginConnection) -> None:
        """
        The exchange is over and the connection may carry another: keep it or close it.
        """

    def connectionClosed(self, connection: OriginConnection) -> None:
        """
        The connection is gone (forget it if it was kept).
        """

    def resend(self, transfer: Transfer) -> None:
        """
        Send C{transfer} again on a new connection: this one (a pooled one) was closed by
        the origin before it answered anything.
        """


class ConnectionState(enum.Enum):
    CONNECTING = "connecting"
    IDLE = "idle"
    BUSY = "carrying an exchange"
    SWITCHED = "switched to another protocol"
    CLOSED = "closed"


CONNECTING = ConnectionState.CONNECTING
IDLE = ConnectionState.IDLE
BUSY = ConnectionState.BUSY
SWITCHED = ConnectionState.SWITCHED
CLOSED = ConnectionState.CLOSED


@implementer(IPushProducer, IHalfCloseableProtocol)
class OriginConnection(Protocol):
    """
    A persistent HTTP/1.1 connection to one origin, carrying one exchange at a time.

    The response head goes to the transfer's receiver as an L{UpstreamResponse}; its body
    goes to the L{IBodySink} given to C{deliverBody}, which may pause this connection.

    @ivar reused: it carried an exchange before the current one.
    @ivar lastUsed: when data last moved (the pool's idle sweep, the stall timeout).
    """

    transport: Any

    def __init__(self, owner: ConnectionOwner, key: tuple[str, str, int], target: Target) -> None:
        self.owner = owner
        self.key = key
        self.target = target
        self.state = CONNECTING
        self.reader = ResponseReader(MAX_HEAD)
        self.transfer: Transfer | None = None
        self.reused = False
        self.lastUsed = 0.0
        self._exchanges = 0
        self._reusable = True
        self._gotBytes = False
        self._paused = False
        self._timer: IDelayedCall | None = None
        self._side: ITunnelSide | None = None
        self.leftover = b""

    @property
    def usable(self) -> bool:
        """
        Whether the connection can take an exchange (connected, idle, and not condemned: an
        idle connection that sent stray bytes is closing).
        """
        return self.state is IDLE and self._reusable

    # Connection life

    def connectionMade(self) -> None:
        self.state = IDLE
        noDelay(self.transport)
        readInLargerPieces(self.transport)

    def readConnectionLost(self) -> None:
        """
        The origin closed its side in good order (a FIN): the end of a body that lasts until
        the connection closes, or of the connection.
        """
        if self._side is not None:
            self._side.readConnectionLost()
            return
        transfer = self.transfer
        if transfer is not None:
            self._handle(transfer, self.reader.receiveEOF())
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self._cancelTimer()
        state, self.state = self.state, CLOSED
        self.owner.connectionClosed(self)
        if self._side is not None:
            self._side.connectionLost()
            return
        transfer = self.transfer
        if transfer is None or state is not BUSY:
            return
        if reason.check(ConnectionDone):
            # An orderly close the transport did not report as a half-close (TLS ...).
            self._handle(transfer, self.reader.receiveEOF())
            if self.transfer is not transfer:
                return  # that ended the body, or failed the exchange
        self.transfer = None
        if transfer.answered:
            self._finishBody(transfer, False)  # cut off mid-body
            return
        if transfer.receiver is None:
            return
        if (
            self.reused
            and not self._gotBytes
            and transfer.bodySent
            and not transfer.retried
            and transfer.request.method in IDEMPOTENT
            and (transfer.body is None or transfer.body.length == 0)
        ):
            # The origin closed a kept connection as it was reused (it did not see the
            # request, most likely): sent once more, on a new connection, if that is safe.
            transfer.retried = True
            self.owner.resend(transfer)
            return
        error = tlsFailure(reason, self.target) or UpstreamError(
            502, "Bad Gateway", f"{self.target.authority} closed the connection without a response"
        )
        transfer.fail(error)

    def close(self) -> None:
        """
        Close this (idle) connection.
        """
        if self.state is not CLOSED:
            self.transport.loseConnection()

    # Sending

    def send(self, transfer: Transfer) -> None:
        """
        Start C{transfer} on this idle, connected connection.
        """
        self.state = BUSY
        self.transfer = transfer
        transfer.connection = self
        self.reused = self._exchanges > 0
        self._exchanges += 1
        self._gotBytes = False
        request = transfer.request
        self.reader.expect(request.method, request.upgrade is not None)
        if request.upgrade is not None:
            self._reusable = False
        self._startTimer()
        sendNow(self.transport, transfer.head)
        body = transfer.body
        if body is not None:
            body.startStreaming(_BodyWriter(self, transfer, body.length is None))

    # Timeouts

    def _startTimer(self) -> None:
        owner = self.owner
        if owner.timeout:
            self.lastUsed = owner.clock.seconds()
            if self._timer is None:
                self._timer = owner.clock.callLater(owner.timeout, self._timedOut)

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timedOut(self) -> None:
        """
        The origin has been silent for the upstream timeout: 504 if it has not answered,
        else cut the response off.  A body held back by a slow client is not the origin's
        silence.
        """
        self._timer = None
        transfer = self.transfer
        if self.state is not BUSY or transfer is None:
            return
        owner = self.owner
        now = owner.clock.seconds()
        quiet = now - self.lastUsed
        if self._paused or not transfer.bodySent or quiet < owner.timeout:
            delay = owner.timeout if self._paused else max(owner.timeout - quiet, 0.01)
            self._timer = owner.clock.callLater(delay, self._timedOut)
            return
        if not transfer.answered:
            transfer.fail(
                UpstreamError(
                    504,
                    "Gateway Timeout",
                    f"{self.target.authority} did not answer within {owner.timeout:g} seconds",
                )
            )
        else:
            log.warn(
                "{origin} stalled mid-body for {timeout} seconds: aborting",
                origin=self.target.authority,
                timeout=owner.timeout,
            )
        self._reusable = False
        self.transport.abortConnection()

    # Receiving

    def dataReceived(self, data: bytes) -> None:
        if self._side is not None:
            self._side.dataReceived(data)
            return
        transfer = self.transfer
        if transfer is None:
            # Bytes from an idle connection: the origin is confused; do not reuse it.
            self._reusable = False
            self.transport.loseConnection()
            return
        self._gotBytes = True
        if self.owner.timeout:
            self.lastUsed = self.owner.clock.seconds()
        self._handle(transfer, self.reader.receive(data))

    def _handle(self, transfer: Transfer, events: list[Any]) -> None:
        index = 0
        count = len(events)
        while index < count:
            if self.transfer is not transfer:
                return  # cancelled (or aborted) by a callback
            event = events[index]
            index += 1
            if type(event) is bytes:
                self._deliver(transfer, event)
            elif event is END:
                self._complete(transfer)
            elif type(event) is ResponseHead:
                # Body bytes that came with the head are handed over with it, so that a
                # small response leaves for the client in one write.
                first = index
                while index < count and type(events[index]) is bytes:
                    index += 1
                self._gotHead(transfer, event, events[first:index])
            elif type(event) is InterimResponse:
                interim = transfer.request.interim
                if interim is not None:
                    interim(event.code, event.phrase, event.headers)
            elif type(event) is MessageError:
                self._failed(transfer, event)

    def _gotHead(self, transfer: Transfer, head: ResponseHead, body: list[bytes]) -> None:
        latency = self.owner.latency
        if latency is not None:
            latency(self.owner.clock.seconds() - transfer.started)
        if not head.keepAlive:
            self._reusable = False
        if head.switched:
            self._switch(transfer, head)
            return
        response = UpstreamResponse(
            head.code,
            head.phrase,
            endToEnd(head.headers, head.connection),
            self._deliverBodyFor(transfer),
        )
        transfer.answered = True
        transfer.pending = body
        transfer.respond(response)

    def _switch(self, transfer: Transfer, head: ResponseHead) -> None:
        """
        A 101 to an upgrade request: the connection leaves HTTP (and the pool) and is
        handed over as the fetch's L{ISwitchedConnection}.
        """
        self.state = SWITCHED
        self.transfer = None
        self._cancelTimer()
        self._reusable = False
        self.leftover = self.reader.switch()
        named = {t for t in head.connection if t != b"upgrade"}
        drop = _SWITCH_DROP | named
        fields = [(n, v) for n, v in head.headers if n.lower() not in drop]
        response = UpstreamResponse(
            head.code, head.phrase, fields, _noBody, switched=_Switched(self)
        )
        transfer.respond(response)

    def attach(self, side: ITunnelSide) -> None:
        self._side = side

    def _failed(self, transfer: Transfer, error: MessageError) -> None:
        """
        The origin sent something that is not HTTP/1.1, or closed in the middle: a 502 if
        the client has no response yet, else a body cut off.
        """
        self._reusable = False
        if transfer.answered:
            if error.detail:
                log.warn("{origin}: {what}", origin=self.target.authority, what=error.detail)
            self.transfer = None
            self._finishBody(transfer, False)
            self.transport.abortConnection()
            return
        if error.incomplete and not self._gotBytes:
            return  # closed without a word: connectionLost decides (retry or 502)
        log.warn("{origin} sent {what}", origin=self.target.authority, what=error.detail)
        self.transfer = None
        transfer.fail(UpstreamError(502, "Bad Gateway", f"{self.target.authority}: {error.detail}"))
        self.transport.abortConnection()

    # Body delivery

    def _deliverBodyFor(self, transfer: Transfer) -> Any:
        def deliverBody(sink: IBodySink) -> None:
            transfer.sink = sink
            sink.bodyStarted(self)
            pending, transfer.pending = transfer.pending, None
            if pending:
                for data in pending:
                    sink.bodyData(data)
            if self._paused and self.transfer is transfer:
                self._paused = False
                self.transport.resumeProducing()
            if transfer.complete is not None:
                sink.bodyDone(transfer.complete)

        return deliverBody

    def _deliver(self, transfer: Transfer, data: bytes) -> None:
        sink = transfer.sink
        if sink is not None:
            sink.bodyData(data)
            return
        if transfer.pending is not None:
            transfer.pending.append(data)
            if not self._paused:
                self._paused = True
                self.transport.pauseProducing()

    def _finishBody(self, transfer: Transfer, complete: bool) -> None:
        transfer.complete = complete
        if transfer.sink is not None:
            transfer.sink.bodyDone(complete)

    def _complete(self, transfer: Transfer) -> None:
        """
        The response is complete: the connection goes back to the pool if it can carry
        another exchange, and the body's sink hears of the end.
        """
        self.transfer = None
        open_ = self.state is BUSY
        if open_:
            self.state = IDLE
        if self._paused and open_:
            # The client held the last piece back; the next exchange starts unpaused.
            self._paused = False
            self.transport.resumeProducing()
        if open_ and self._reusable and transfer.bodySent and not self.reader.buffered:
            self.owner.connectionIdle(self)
        else:
            self.transport.loseConnection()
        self._finishBody(transfer, True)

    # IPushProducer, for the sink

    def pauseProducing(self) -> None:
        if not self._paused and self.state is BUSY:
            self._paused = True
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._paused and self.state is BUSY:
            self._paused = False
            if self.owner.timeout:
                self.lastUsed = self.owner.clock.seconds()
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        The client went away: drop this exchange and its connection at once.
        """
        if self.transfer is not None:
            self.cancel(self.transfer)

    def cancel(self, transfer: Transfer) -> None:
        """
        Abort C{transfer} (the fetch was cancelled, or its client is gone).
        """
        if self.transfer is transfer:
            self.transfer = None
            self._reusable = False
            self.transport.abortConnection()


def _noBody(sink: IBodySink) -> None:
    sink.bodyDone(True)


class _Switched:
    """
    The L{ISwitchedConnection} of an origin connection after a 101.
    """

    def __init__(self, connection: OriginConnection) -> None:
        self.connection = connection
        self.transport = connection.transport
        self.leftover: bytes = connection.leftover

    def attach(self, side: ITunnelSide) -> None:
        self.connection.attach(side)


class _BodyWriter:
    """
    The L{IBodySink} the client's request body is streamed into: written upstream as it
    comes, framed as the head said (a length, or chunked), with the upstream transport
    pausing the client.
    """

    __slots__ = ("connection", "transfer", "chunked", "producer")

    def __init__(self, connection: OriginConnection, transfer: Transfer, chunked: bool):
        self.connection = connection
        self.transfer = transfer
        self.chunked = chunked
        self.producer: IPushProducer | None = None

    def bodyStarted(self, producer: IPushProducer) -> None:
        connection = self.connection
        if connection.state is BUSY and connection.transfer is self.transfer:
            self.producer = producer
            connection.transport.registerProducer(producer, True)

    def bodyData(self, data: bytes) -> None:
        connection = self.connection
        if not data or connection.state is not BUSY or connection.transfer is not self.transfer:
            return
        connection.transport.write(chunk(data) if self.chunked else data)

    def bodyDone(self, complete: bool) -> None:
        connection = self.connection
        live = connection.state is BUSY and connection.transfer is self.transfer
        if self.producer is not None and connection.state is not CLOSED:
            connection.transport.unregisterProducer()
        self.producer = None
        if not live:
            return
        if not complete:
            connection.cancel(self.transfer)
            return
        self.transfer.bodySent = True
        if connection.owner.timeout:
            connection.lastUsed = connection.owner.clock.seconds()
        if self.chunked:
            connection.transport.write(LAST_CHUNK)
