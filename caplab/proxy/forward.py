"""
The upstream leg: the L{IFetcher} at the end of the fetcher chain (the cache wraps it), with
a bounded pool of persistent HTTP/1.1 connections per origin
(L{caplab.proxy.origin.OriginConnection}).

Its hot path is deliberately lean: one L{Deferred} per request, header lists of byte pairs,
the request head written in one piece and the response read from one buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from caplab.proxy.errors import describeConnectFailure
from caplab.proxy.hooks import (
    IRequestBody,
    Target,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from caplab.proxy.http1 import requestHead
from caplab.proxy.origin import FetchReceiver, OriginConnection, Transfer

_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_FRAMING_LENGTHS = frozenset(len(name) for name in _FRAMING)


class Connector(TypingProtocol):
    """
    Opens connections to origins: C{connect(target, protocol)} returns a Deferred that fires
    once the protocol is connected (TLS for C{https} targets).

    The default is L{caplab.proxy.connect.EndpointConnector}; tests give a fake.
    """

    def connect(self, target: Target, protocol: Protocol) -> Deferred[Any]: ...


def upstreamHead(request: UpstreamRequest, body: IRequestBody | None) -> bytes:
    """
    The head to send for C{request}: its target's path, its fields, the framing of C{body}
    (a length, or chunked when it has none), and the protocol switch it asks for.
    """
    # The fields came through upstreamRequestHeaders, which drops the framing ones; a
    # filter or the cache may have added some back.  Only names of their lengths are
    # lowered to be compared.
    lengths = _FRAMING_LENGTHS
    headers = [
        (n, v) for n, v in request.headers if len(n) not in lengths or n.lower() not in _FRAMING
    ]
    length = None if body is None else body.length
    if body is not None and length is None:
        headers.append((b"Transfer-Encoding", b"chunked"))
    elif length:
        headers.append((b"Content-Length", b"%d" % (length,)))
    elif request.method in _BODY_METHODS:
        headers.append((b"Content-Length", b"0"))
    if request.upgrade is not None:
        headers += [(b"Connection", b"upgrade"), (b"Upgrade", request.upgrade)]
    return requestHead(request.method, request.target.path, headers)


class _Firing:
    """
    The L{FetchReceiver} of L{Forwarder.fetch}: fires its Deferred.
    """

    __slots__ = ("deferred",)

    def __init__(self, deferred: Deferred[UpstreamResponse]) -> None:
        self.deferred = deferred

    def fetched(self, response: UpstreamResponse) -> None:
        self.deferred.callback(response)

    def fetchFailed(self, reason: Failure) -> None:
        self.deferred.errback(reason)


class Forwarder:
    """
    The L{IFetcher} that asks the origin, over pooled persistent HTTP/1.1 connections; the
    L{caplab.proxy.origin.ConnectionOwner} of those connections.

    @ivar timeout: seconds an origin may take to answer (connect, then the response head),
        and may stall mid-body; 0 for none.
    @ivar maxIdlePerOrigin: idle connections kept per origin; @ivar maxIdle: in all.
    """

    def __init__(
        self,
        clock: IReactorTime,
        connector: Connector,
        timeout: float = 60.0,
        maxIdlePerOrigin: int = 64,
        maxIdle: int = 1024,
        idleTimeout: float = 60.0,
        latency: Callable[[float], None] | None = None,
    ) -> None:
        """
        @param latency: told how long each origin took to answer (from the fetch, connecting
            included, to the response head), in seconds, for the metrics.
        """
        self.clock = clock
        self.latency = latency
        self.connector = connector
        self.timeout = timeout
        self.maxIdlePerOrigin = maxIdlePerOrigin
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self._idle: dict[tuple[str, str, int], list[OriginConnection]] = {}
        self._idleCount = 0
        self._sweep: IDelayedCall | None = None

    def fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        """
        Send C{request} (and stream C{body}) to its origin; fire with the response head.
        """
        d: Deferred[UpstreamResponse] = Deferred(lambda d: self._cancel(transfer))
        transfer = self.fetchInto(request, body, _Firing(d))
        return d

    def fetchInto(
        self, request: UpstreamRequest, body: IRequestBody | None, receiver: FetchReceiver
    ) -> Transfer:
        """
        L{fetch}, reporting to C{receiver} instead of a Deferred: its C{fetched} is told the
        response head, or its C{fetchFailed} why there is none, once (never after the
        returned transfer's C{cancel}).
        """
        transfer = Transfer(request, body, upstreamHead(request, body))
        transfer.receiver = receiver
        transfer.canceller = self._cancel
        if self.latency is not None:
            transfer.started = self.clock.seconds()
        self._send(transfer)
        return transfer

    def _send(self, transfer: Transfer, fresh: bool = False) -> None:
        target = transfer.request.target
        key = (target.scheme, target.host, target.port)
        if not fresh:
            idle = self._idle.get(key)
            while idle:
                connection = idle.pop()
                self._idleCount -= 1
                if connection.usable:
                    transfer.attempt = None
                    connection.send(transfer)
                    return
        self._connect(transfer, OriginConnection(self, key, target))

    def _connect(self, transfer: Transfer, connection: OriginConnection) -> None:
        """
        Open C{connection} and send C{transfer} on it; 504 if connecting takes longer than
        the timeout.
        """
        target = transfer.request.target
        transfer.connection = connection
        timer: IDelayedCall | None = None

        def connected(_: object) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            if transfer.receiver is None:
                connection.close()
                return
            connection.send(transfer)

        def failed(reason: Failure) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            if not reason.check(CancelledError):
                transfer.fail(describeConnectFailure(reason, target))

        def timedOut() -> None:
            transfer.fail(
                UpstreamError(
                    504,
                    "Gateway Timeout",
                    f"connecting to {target.authority} took more than {self.timeout:g} seconds",
                )
            )
            attempt.cancel()

        attempt = transfer.attempt = self.connector.connect(target, connection)
        if self.timeout and not attempt.called:
            timer = self.clock.callLater(self.timeout, timedOut)
        attempt.addCallbacks(connected, failed)

    def _cancel(self, transfer: Transfer) -> None:
        """
        The fetch was cancelled (the client went away): stop connecting, or abort the
        exchange; the receiver is told nothing (a Deferred then fails with
        L{CancelledError}).
        """
        transfer.receiver = None
        connection = transfer.connection
        if connection is not None and connection.transfer is transfer:
            connection.cancel(transfer)
        elif transfer.attempt is not None and not transfer.attempt.called:
            transfer.attempt.cancel()

    # ConnectionOwner

    def connectionIdle(self, connection: OriginConnection) -> None:
        """
        Keep C{connection} for the next request to its origin, if the pool has room.
        """
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self.maxIdlePerOrigin or self._idleCount >= self.maxIdle:
            connection.close()
            return
        connection.lastUsed = self.clock.seconds()
        idle.append(connection)
        self._idleCount += 1
        if self._sweep is None and self.idleTimeout:
            self._sweep = self.clock.callLater(self.idleTimeout, self._sweepIdle)

    def connectionClosed(self, connection: OriginConnection) -> None:
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)
            self._idleCount -= 1

    def resend(self, transfer: Transfer) -> None:
        self._send(transfer, fresh=True)

    # Idle connections

    def _sweepIdle(self) -> None:
        """
        Close pooled connections idle for longer than C{idleTimeout}.
        """
        self._sweep = None
        limit = self.clock.seconds() - self.idleTimeout
        for key, idle in list(self._idle.items()):
            for connection in [c for c in idle if c.lastUsed <= limit]:
                idle.remove(connection)
                self._idleCount -= 1
                connection.close()
            if not idle:
                del self._idle[key]
        if self._idleCount:
            self._sweep = self.clock.callLater(self.idleTimeout, self._sweepIdle)

    def closeIdle(self) -> None:
        """
        Close every pooled connection (at shutdown).
        """
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        self._idleCount = 0
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
