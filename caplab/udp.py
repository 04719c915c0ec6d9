"""
The UDP uppercase service: one datagram in, one uppercased datagram back to its sender.
"""

from __future__ import annotations

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from caplab.address import hostPort
from caplab.upper import upperDatagram

#: The largest UDP payload over IPv4 (65,535 - 8 byte UDP header - 20 byte IP header).
MAX_DATAGRAM = 65507


class UppercaseDatagramProtocol(DatagramProtocol):
    """
    Answers each datagram with its uppercase, to the sender's address and port.

    The reply is never larger than the request (see L{upperDatagram}), so the service cannot
    amplify a spoofed request.  An empty datagram gets an empty reply.  Errors while sending
    (a full socket buffer under a burst, an unreachable sender) are logged and the service
    goes on with the next datagram.

    @ivar received: datagrams received so far.
    @ivar answered: replies sent so far.
    """

    log = Logger()
    noisy = False

    def __init__(self, unicode: bool = False, tracer: object | None = None) -> None:
        self.unicode = unicode
        self.tracer = tracer
        self.received = 0
        self.answered = 0

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        reply = upperDatagram(datagram, self.unicode)
        trace = getattr(self.tracer, "datagram", None)
        if trace is not None:
            trace(addr, datagram, reply)
        try:
            self.transport.write(reply, addr)  # type: ignore[union-attr]
        except OSError as e:
            self.log.warn(
                "caplab udp could not answer {peer}: {error}",
                peer=hostPort(str(addr[0]), int(addr[1])),
                error=e,
            )
            return
        self.answered += 1

    def connectionRefused(self) -> None:
        """
        An ICMP error for an earlier reply; nothing to do for an unconnected socket.
        """
