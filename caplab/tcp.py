"""
The TCP uppercase service: a streaming, half-close aware, back-pressured echo that uppercases.
"""

from __future__ import annotations

from operator import methodcaller
from typing import Any

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from caplab.address import describeAddress
from caplab.idle import IdleSweeper
from caplab.internals import (
    DEFAULT_BUFFER,
    nothingQueued,
    readInLargerPieces,
    readWaiting,
    sendNow,
)
from caplab.ratelimit import LogThrottle
from caplab.upper import StreamTransform, streamTransform


@implementer(IHalfCloseableProtocol)
class UppercaseProtocol(Protocol):
    """
    Writes back every chunk it receives, uppercased, as soon as it arrives.

    The connection stays open until the peer closes it.  After the peer half-closes (shuts
    down its write side), the rest of the output is written and then the connection is
    closed.  The transport is registered as the producer of its own write buffer, so while
    the peer does not read, and the buffer is full, the service stops reading from it:
    memory stays bounded whatever the peer sends.  Once a read fills Twisted's 64 KiB
    buffer (the peer streams), the connection reads, and buffers, 128 KiB at a time.

    After C{idleTimeout} seconds without input the connection is closed gracefully (the
    peer gets what was already written, then an end of stream); a peer that does not take
    that output within L{abortTimeout} seconds more is cut off.  The timer keeps running
    after a half-close, so a peer that half-closes and then never reads the rest of its
    output cannot hold the connection (and its buffered output) forever either.  The timers
    are the factory's L{IdleSweeper}s, one for all its connections.
    """

    factory: UppercaseFactory
    #: The connection: an ITCPTransport that is also an IConsumer and an IPushProducer.
    transport: Any
    log = Logger()
    #: Seconds a closing connection has to take its remaining output before it is aborted.
    abortTimeout = 15.0

    def __init__(self) -> None:
        self._transform: StreamTransform | None = None
        self._closing = False
        self._streaming = False
        # The sweeper timing this connection out (idle, then closing), if any.
        self._timer: IdleSweeper[UppercaseProtocol] | None = None

    def connectionMade(self) -> None:
        factory = self.factory
        self._transform = streamTransform(factory.unicode)
        factory.active += 1
        self.transport.registerProducer(self.transport, True)
        self._timer = factory.idle
        if self._timer is not None:
            self._timer.add(self)
        # The lab's client sends as soon as it has connected: answer what is there already
        # rather than at the reactor's next turn, which costs more than the answer.
        readWaiting(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.touch(self)
        if len(data) >= DEFAULT_BUFFER and not self._streaming:
            # A read that filled Twisted's buffer: the peer streams.  Larger reads cost
            # half the CPU time per byte (fewer, fuller TCP segments each way).
            self._streaming = True
            readInLargerPieces(self.transport)
        assert self._transform is not None
        out = self._transform.feed(data)
        if out:
            # Sent at once when nothing is queued (no loop turn, no epoll_ctl per reply).
            sendNow(self.transport, out)

    def readConnectionLost(self) -> None:
        """
        The peer half-closed: finish writing, then close.
        """
        assert self._transform is not None
        tail = self._transform.flush()
        if tail:
            self.transport.write(tail)
        elif not self._closing and nothingQueued(self.transport):
            # Everything is sent already (the lab's pattern: the client read its reply and
            # closed): close at once, as Twisted does for a protocol without half-close,
            # instead of a loseConnection that waits a loop turn for an empty buffer.
            self._closing = True
            self.transport.unregisterProducer()
            # Twisted's shared connectionDone: building a Failure here cost about 23,000
            # instructions, a tenth of a short connection.
            self.transport.connectionLost(connectionDone)
            return
        self._close()

    def _close(self) -> None:
        """
        Stop producing and close once everything written has been sent (once only).
        """
        if self._closing:
            return
        self._closing = True
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        We never half-close our side; nothing to do.
        """

    def timeoutConnection(self) -> None:
        """
        Time is up: close an idle connection, or abort one that is closing already.
        """
        self._timer = None
        peer = describeAddress(self.transport.getPeer())
        if self._closing:
            self.log.info("caplab tcp aborting connection from {peer}: output not taken", peer=peer)
            self.transport.abortConnection()
            return
        self.log.info("caplab tcp closing idle connection from {peer}", peer=peer)
        self._close()
        self._timer = self.factory.closing
        self._timer.add(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._timer is not None:
            self._timer.remove(self)
            self._timer = None
        self.factory.active -= 1


class UppercaseFactory(Factory):
    """
    Builds L{UppercaseProtocol}s and enforces the cap on concurrent connections.

    @ivar unicode: full Unicode uppercasing instead of the lab's ASCII-only rule.
    @ivar idleTimeout: seconds without input before a connection is closed (None: never).
    @ivar maxConnections: connections over this number are closed at once and logged (at
        most one line per L{refusalLogInterval} seconds, so that a flood of connections
        does not flood the log too; each line counts the refusals so far, and a summary
        follows a burst: L{LogThrottle}).
    @ivar clock: schedules idle timeouts (the global reactor unless given).
    @ivar idle: times connections out after C{idleTimeout} seconds without input (None
        without an idle timeout).
    @ivar closing: aborts a connection closed for being idle that has not taken its output
        after the protocol's C{abortTimeout} seconds more.
    @ivar active: connections open now.
    @ivar accepted: connections accepted so far.
    @ivar refused: connections refused so far.
    """

    protocol = UppercaseProtocol  # type: ignore[assignment]
    noisy = False
    log = Logger()
    #: Seconds between two log lines about refused connections.
    refusalLogInterval = 1.0

    def __init__(
        self,
        unicode: bool = False,
        idleTimeout: float | None = 300.0,
        maxConnections: int = 1000,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.clock: IReactorTime = clock
        self.unicode = unicode
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        expire = methodcaller("timeoutConnection")
        self.idle: IdleSweeper[UppercaseProtocol] | None = None
        if idleTimeout is not None:
            self.idle = IdleSweeper(clock, idleTimeout, expire)
        self.closing: IdleSweeper[UppercaseProtocol] = IdleSweeper(
            clock, self.protocol.abortTimeout, expire
        )
        self.active = 0
        self.accepted = 0
        self.refused = 0
        self._refusals = LogThrottle(
            self.log,
            clock,
            "caplab tcp refusing connection from {peer}: {active} connections open "
            "(--max-connections {limit}; {total} refused so far)",
            summary="caplab tcp refused {burst} connections in {duration}s "
            "(--max-connections {limit}; {total} refused so far)",
            interval=self.refusalLogInterval,
        )

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        if self.active >= self.maxConnections:
            self._refuse(addr)
            return None
        self.accepted += 1
        return super().buildProtocol(addr)  # type: ignore[return-value]

    def _refuse(self, addr: IAddress | None) -> None:
        self.refused += 1
        self._refusals.event(
            peer=describeAddress(addr), active=self.active, limit=self.maxConnections
        )

    def stopFactory(self) -> None:
        self._refusals.stop()
