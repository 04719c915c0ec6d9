"""
One persistent HTTP/1.1 connection to an origin: a small client protocol that carries one
exchange at a time, parses the response from one buffer, and streams both bodies with
back-pressure.  L{caplab.proxy.forward.Forwarder} pools these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from caplab.internals import sendNow
from caplab.proxy.errors import tlsFailure
from caplab.proxy.headers import parseFields
from caplab.proxy.hooks import (
    IBodySink,
    IRequestBody,
    Target,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)

if TYPE_CHECKING:
    from caplab.proxy.forward import Forwarder

log = Logger()

#: The longest response head (status line and fields) accepted from an origin.
MAX_HEAD = 65536

_NO_BODY_CODES = frozenset({204, 304})

# Body framing of the response being read.
_HEAD, _LENGTH, _CHUNKED, _CLOSE, _DONE = range(5)
# Chunked decoder states.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


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


class Transfer:
    """
    One request/response exchange on an L{UpstreamConnection}: the fetch Deferred, the
    response body's sink, and the request body being sent.
    """

    __slots__ = (
        "request",
        "body",
        "deferred",
        "sink",
        "pending",
        "complete",
        "bodySent",
        "retried",
        "response",
        "head",
        "connection",
        "attempt",
    )

    def __init__(self, request: UpstreamRequest, body: IRequestBody | None, head: bytes):
        self.request = request
        self.body = body
        self.head = head
        self.deferred: Deferred[UpstreamResponse] | None = None
        self.sink: IBodySink | None = None
        self.pending: list[bytes] | None = None
        self.complete: bool | None = None
        self.bodySent = body is None
        self.retried = False
        self.response: UpstreamResponse | None = None
        self.connection: UpstreamConnection | None = None
        self.attempt: Deferred[Any] | None = None


@implementer(IPushProducer)
class UpstreamConnection(Protocol):
    """
    A persistent HTTP/1.1 connection to one origin, carrying one exchange at a time.

    The response head fires the fetch Deferred with an L{UpstreamResponse}; its body goes
    to the L{IBodySink} given to C{deliverBody}, which may pause this connection.
    """

    transport: Any

    def __init__(self, pool: Forwarder, key: tuple[str, str, int], target: Target) -> None:
        self.pool = pool
        self.key = key
        self.target = target
        self.transfer: Transfer | None = None
        self.connected = False
        self.reused = False
        self.closed = False
        self._buffer = b""
        self._state = _HEAD
        self._remaining = 0
        self._chunkState = _SIZE
        self._keepAlive = True
        self._gotBytes = False
        self._paused = False
        self._timer: IDelayedCall | None = None
        self._active = False
        self.lastUsed = 0.0

    # Connection life

    def connectionMade(self) -> None:
        self.connected = True
        noDelay(self.transport)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.connected = False
        self.closed = True
        self._cancelTimer()
        self.pool._lost(self)
        transfer = self.transfer
        if transfer is None:
            return
        self.transfer = None
        if self._state == _CLOSE:
            self._state = _DONE
            self._finishBody(transfer, True)
            return
        if transfer.response is not None:
            # Died mid-body: the client connection must be aborted, not ended.
            self._finishBody(transfer, False)
            return
        d = transfer.deferred
        if d is None or d.called:
            return
        if self.reused and not self._gotBytes and transfer.bodySent and not transfer.retried:
            # A pooled connection the origin closed just before we used it: try once more
            # on a fresh one.
            if transfer.body is None or transfer.body.length == 0:
                transfer.retried = True
                self.pool._send(transfer, retry=True)
                return
        error = tlsFailure(reason, self.target)
        if error is None:
            error = UpstreamError(
                502,
                "Bad Gateway",
                f"{self.target.authority} closed the connection without a response",
            )
        transfer.deferred = None
        d.errback(error)

    # Sending

    def send(self, transfer: Transfer) -> None:
        """
        Start C{transfer} on this (idle, connected) connection.
        """
        self.transfer = transfer
        self._state = _HEAD
        self._buffer = b""
        self._gotBytes = False
        self._keepAlive = True
        self._active = True
        self._startTimer()
        sendNow(self.transport, transfer.head)
        body = transfer.body
        if body is not None:
            body.startStreaming(_BodyWriter(self, transfer, body.length is None))

    # Timeouts

    def _startTimer(self) -> None:
        timeout = self.pool.timeout
        if timeout:
            clock = self.pool.clock
            self.lastUsed = clock.seconds()
            if self._timer is None:
                self._timer = clock.callLater(timeout, self._timedOut)

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timedOut(self) -> None:
        self._timer = None
        if not self._active or self.transfer is None:
            return
        clock = self.pool.clock
        idle = clock.seconds() - self.lastUsed
        if self._paused or idle < self.pool.timeout:
            # Data flowed since (or the client is the slow one): look again later.
            self._timer = clock.callLater(
                max(self.pool.timeout - idle, 0.01) if not self._paused else self.pool.timeout,
                self._timedOut,
            )
            return
        transfer = self.transfer
        d = transfer.deferred
        if d is not None and not d.called:
            transfer.deferred = None
            self.transfer = None
            d.errback(
                UpstreamError(
                    504,
                    "Gateway Timeout",
                    f"{self.target.authority} did not answer within {self.pool.timeout:g} seconds",
                )
            )
        else:
            log.warn(
                "{origin} stalled mid-body for {timeout} seconds: aborting",
                origin=self.target.authority,
                timeout=self.pool.timeout,
            )
        self.transport.abortConnection()

    # Receiving

    def dataReceived(self, data: bytes) -> None:
        transfer = self.transfer
        if transfer is None:
            # Bytes from an idle connection: the origin is confused; do not reuse it.
            self._keepAlive = False
            self.transport.loseConnection()
            return
        self._gotBytes = True
        if self.pool.timeout:
            self.lastUsed = self.pool.clock.seconds()
        state = self._state
        if state == _LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                self._deliver(transfer, data)
                return
            self._remaining = 0
            extra = data[remaining:]
            if remaining:
                self._deliver(transfer, data[:remaining] if extra else data)
            if extra:
                self._keepAlive = False
            self._bodyComplete(transfer)
            return
        if state == _CLOSE:
            self._deliver(transfer, data)
            return
        if state == _CHUNKED:
            self._chunked(transfer, data)
            return
        if state == _HEAD:
            self._buffer += data
            self._parseHead(transfer)
            return
        # _DONE: bytes after a complete response
        self._keepAlive = False
        self.transport.loseConnection()

    def _parseHead(self, transfer: Transfer) -> None:
        rest = b""
        fieldBlock = b""
        while True:
            buffer = self._buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._fail(transfer, "an over-long response head")
                return
            head = buffer[:end]
            rest = buffer[end + 4 :]
            self._buffer = b""
            statusEnd = head.find(b"\r\n")
            if statusEnd < 0:
                status, fieldBlock = head, b""
            else:
                status, fieldBlock = head[:statusEnd], head[statusEnd + 2 :] + b"\r\n"
            if not status.startswith(b"HTTP/1."):
                self._fail(transfer, "a malformed status line")
                return
            version = status[5:8]
            codeText = status[9:12]
            if not codeText.isdigit():
                self._fail(transfer, "a malformed status line")
                return
            code = int(codeText)
            phrase = status[13:]
            if 100 <= code < 200:
                if code == 101:
                    self._fail(transfer, "an unrequested protocol switch (101)")
                    return
                self._buffer = rest  # interim response: skip it
                continue
            break
        parsed = parseFields(fieldBlock)
        if isinstance(parsed, str):
            self._fail(transfer, parsed)
            return
        headers, length, chunked, connectionTokens = parsed
        if connectionTokens and b"close" in connectionTokens:
            self._keepAlive = False
        if version == b"1.0" and b"keep-alive" not in connectionTokens:
            self._keepAlive = False
        if transfer.request.method == b"HEAD" or code in _NO_BODY_CODES:
            state = _DONE
        elif chunked:
            state = _CHUNKED
            self._chunkState = _SIZE
            if length is not None:
                headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
        elif length is not None:
            state = _LENGTH if length else _DONE
            self._remaining = length
        else:
            state = _CLOSE
            self._keepAlive = False
        self._state = state
        response = UpstreamResponse(code, phrase, headers, self._deliverBodyFor(transfer))
        transfer.response = response
        transfer.pending = []
        if state == _LENGTH and rest:
            # Body bytes that came with the head: handed over with it, so that a small
            # response is relayed in one go.
            piece = rest[: self._remaining]
            rest = rest[len(piece) :]
            self._remaining -= len(piece)
            transfer.pending.append(piece)
            if not self._remaining:
                state = self._state = _DONE
        d = transfer.deferred
        transfer.deferred = None
        if d is not None:
            d.callback(response)
        if self.transfer is not transfer:
            return  # cancelled or aborted in the callback
        if state == _DONE:
            if rest:
                self._keepAlive = False
            self._bodyComplete(transfer)
        elif rest:
            self.dataReceived(rest)

    def _chunked(self, transfer: Transfer, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        position = 0
        size = len(buffer)
        while position < size:
            state = self._chunkState
            if state == _DATA:
                take = min(self._remaining, size - position)
                self._deliver(transfer, buffer[position : position + take])
                if self.transfer is not transfer:
                    return
                position += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunkState = _DATA_END
                continue
            end = buffer.find(b"\r\n", position)
            if end < 0:
                self._buffer = buffer[position:]
                if len(self._buffer) > 4096:
                    self._fail(transfer, "a malformed chunked body")
                return
            line = buffer[position:end]
            position = end + 2
            if state == _SIZE:
                sizeText = line.split(b";", 1)[0].strip()
                try:
                    chunkSize = int(sizeText, 16)
                except ValueError:
                    self._fail(transfer, "a malformed chunk size")
                    return
                if chunkSize < 0:
                    self._fail(transfer, "a malformed chunk size")
                    return
                if chunkSize == 0:
                    self._chunkState = _TRAILER
                else:
                    self._remaining = chunkSize
                    self._chunkState = _DATA
            elif state == _DATA_END:
                if line:
                    self._fail(transfer, "a malformed chunked body")
                    return
                self._chunkState = _SIZE
            else:  # _TRAILER: skip trailer fields up to the empty line
                if not line:
                    if position < size:
                        self._keepAlive = False
                    self._state = _DONE
                    self._bodyComplete(transfer)
                    return

    def _fail(self, transfer: Transfer, what: str) -> None:
        """
        The origin sent something that is not HTTP/1.1: a 502 if the client has no response
        yet, else an aborted body.
        """
        log.warn("{origin} sent {what}", origin=self.target.authority, what=what)
        self._keepAlive = False
        d = transfer.deferred
        if d is not None and not d.called:
            transfer.deferred = None
            self.transfer = None
            d.errback(UpstreamError(502, "Bad Gateway", f"{self.target.authority} sent {what}"))
        self.transport.abortConnection()

    # Body delivery

    def _deliverBodyFor(self, transfer: Transfer) -> Callable[[IBodySink], None]:
        def deliverBody(sink: IBodySink) -> None:
            transfer.sink = sink
            sink.bodyStarted(self)
            pending = transfer.pending
            transfer.pending = None
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
        if transfer.sink is not None:
            transfer.sink.bodyDone(complete)
        else:
            transfer.complete = complete

    def _bodyComplete(self, transfer: Transfer) -> None:
        self._active = False
        self._state = _DONE
        self.transfer = None
        if self._paused and self.connected:
            # The client held the last piece back; the next exchange starts unpaused.
            self._paused = False
            self.transport.resumeProducing()
        if not transfer.bodySent:
            self._keepAlive = False
        if self._keepAlive and self.connected:
            self.pool._release(self)
        else:
            self.transport.loseConnection()
        self._finishBody(transfer, True)

    # IPushProducer, for the sink

    def pauseProducing(self) -> None:
        if not self._paused and self.connected:
            self._paused = True
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self._paused and self.connected:
            self._paused = False
            if self.pool.timeout:
                self.lastUsed = self.pool.clock.seconds()
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        The client went away: drop this exchange and its connection at once.
        """
        if self.transfer is not None:
            self.transfer = None
            self._keepAlive = False
            self.transport.abortConnection()

    def cancel(self, transfer: Transfer) -> None:
        """
        The fetch was cancelled before the response head: abort.
        """
        if self.transfer is transfer:
            self.transfer = None
            self._keepAlive = False
            self.transport.abortConnection()


class _BodyWriter:
    """
    The L{IBodySink} the client's request body is streamed into: writes it upstream, framed
    with C{Content-Length} as given or chunked, with the upstream transport pausing the
    client.
    """

    __slots__ = ("connection", "transfer", "chunked", "producer")

    def __init__(self, connection: UpstreamConnection, transfer: Transfer, chunked: bool):
        self.connection = connection
        self.transfer = transfer
        self.chunked = chunked
        self.producer: IPushProducer | None = None

    def bodyStarted(self, producer: IPushProducer) -> None:
        connection = self.connection
        if connection.connected and connection.transfer is self.transfer:
            self.producer = producer
            connection.transport.registerProducer(producer, True)

    def bodyData(self, data: bytes) -> None:
        connection = self.connection
        if not data or not connection.connected:
            return
        if self.chunked:
            connection.transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            connection.transport.write(data)

    def bodyDone(self, complete: bool) -> None:
        connection = self.connection
        if self.producer is not None and connection.connected:
            connection.transport.unregisterProducer()
        self.producer = None
        if not connection.connected:
            return
        if not complete:
            connection.stopProducing()
            return
        self.transfer.bodySent = True
        if self.chunked:
            connection.transport.write(b"0\r\n\r\n")
