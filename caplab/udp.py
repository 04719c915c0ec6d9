"""
The UDP uppercase service: one datagram in, one uppercased datagram back to its sender.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from caplab.address import hostPort
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

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        reply = upperDatagram(datagram, True) if self.unicode else datagram.upper()
        if self.tracer is not None:
            self.tracer.datagram(addr, datagram, reply)
        try:
            self.transport.write(reply, addr)  # type: ignore[union-attr]
        except (OSError, MessageLengthError) as e:
            # MessageLengthError (EMSGSIZE) is not an OSError in Twisted.
            self._sendFailed(addr, e)
            return
        self.answered += 1

    def _sendFailed(self, addr: tuple[str, int], error: Exception) -> None:
        self.failed += 1
        self._failures.event(peer=hostPort(str(addr[0]), int(addr[1])), error=error)

    def stopProtocol(self) -> None:
        self._failures.stop()

    def connectionRefused(self) -> None:
        """
        An ICMP error for an earlier reply; nothing to do for an unconnected socket.
        """
