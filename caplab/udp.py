"""
The UDP uppercase service: one datagram in, one uppercased datagram back to its sender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from caplab.address import hostPort
from caplab.internals import datagramSender, readInBatches, sendtoError
from caplab.ratelimit import LogThrottle
from caplab.upper import upperDatagram

if TYPE_CHECKING:
    from caplab.trace import Tracer

#: The largest UDP payload over IPv4 (65,535 - 8 byte UDP header - 20 byte IP header).
MAX_DATAGRAM = 65507


class UppercaseDatagramProtocol(DatagramProtocol):
    """
    Answers each datagram with its uppercase, to the sender's address and port.

    The reply is never larger than the request (see L{upperDatagram}), so the service cannot
    amplify a spoofed request.  An empty datagram gets an empty reply.  Errors while sending
    (a full socket buffer under a burst, an unreachable sender) are logged and the service
    goes on with the next datagram.  So that a flood cannot flood the log as well, at most
    one such warning is logged per L{errorLogInterval} seconds; it says how many replies
    have failed so far, and a summary follows a burst (L{LogThrottle}).

    On a plain UDP port the datagrams waiting at each turn of the reactor come to
    L{datagramsReceived} in one call (each read from the socket as the one before it is
    answered) and replies go out through the socket's own C{sendto}: per datagram that is
    less than half the work of Twisted's C{datagramReceived} and C{write}, which matters
    when the service is busy.

    @ivar received: datagrams received so far.
    @ivar answered: replies sent so far.
    @ivar failed: replies that could not be sent so far.
    """

    log = Logger()
    noisy = False
    #: Seconds between two warnings about replies that could not be sent.
    errorLogInterval = 1.0

    def __init__(
        self,
        unicode: bool = False,
        tracer: Tracer | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.clock: IReactorTime = clock
        self.unicode = unicode
        self.tracer = tracer
        self.received = 0
        self.answered = 0
        self.failed = 0
        self._failures = LogThrottle(
            self.log,
            clock,
            "caplab udp could not answer {peer}: {error} ({total} replies failed so far)",
            summary="caplab udp could not answer {burst} datagrams in {duration}s "
            "({total} replies failed so far)",
            interval=self.errorLogInterval,
        )
        self._send: Callable[[bytes, Any], object] | None = None

    def startProtocol(self) -> None:
        # The port's write checks every address, at more cost than the reply itself; a
        # reply goes to the address the socket itself reported.
        transport: Any = self.transport
        self._send = datagramSender(transport) or transport.write
        readInBatches(transport, self.datagramsReceived)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self._answer([(datagram, addr)])

    def datagramsReceived(self, datagrams: Iterable[tuple[bytes, tuple[str, int]]]) -> None:
        """
        Answer each of C{datagrams} in turn, exactly as if each had come to
        L{datagramReceived}, with less work per datagram.

        A C{datagramReceived} set on the instance (a wrapper that counts, say) still sees
        every datagram.
        """
        received = self.__dict__.get("datagramReceived")
        if received is not None:
            for datagram, addr in datagrams:
                received(datagram, addr)
        else:
            self._answer(datagrams)

    def _answer(self, datagrams: Iterable[tuple[bytes, tuple[str, int]]]) -> None:
        send = self._send
        assert send is not None
        unicode = self.unicode
        tracer = self.tracer
        received = answered = 0
        try:
            for datagram, addr in datagrams:
                received += 1
                reply = upperDatagram(datagram, True) if unicode else datagram.upper()
                if tracer is not None:
                    tracer.datagram(addr, datagram, reply)
                try:
                    send(reply, addr)
                except OSError as e:
                    error = sendtoError(e)
                    if error is not None:
                        self._sendFailed(addr, error)
                        continue
                except MessageLengthError as e:
                    # MessageLengthError (EMSGSIZE from a transport's write) is no OSError.
                    self._sendFailed(addr, e)
                    continue
                answered += 1
        finally:
            # Counted once per batch, not per datagram.
            self.received += received
            self.answered += answered

    def _sendFailed(self, addr: tuple[str, int], error: Exception) -> None:
        self.failed += 1
        self._failures.event(peer=hostPort(str(addr[0]), int(addr[1])), error=error)

    def stopProtocol(self) -> None:
        self._send = None
        self._failures.stop()

    def connectionRefused(self) -> None:
        """
        An ICMP error for an earlier reply; nothing to do for an unconnected socket.
        """
