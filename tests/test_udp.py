"""
Unit tests of the UDP uppercase service, L{caplab.udp}, on a fake datagram transport.
"""

from __future__ import annotations

import errno
import io

from twisted.internet.error import MessageLengthError
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent

from caplab.trace import Tracer
from caplab.udp import MAX_DATAGRAM, UppercaseDatagramProtocol

SENDER = ("127.0.0.1", 40123)


def listening(**kwargs: object) -> tuple[UppercaseDatagramProtocol, FakeDatagramTransport]:
    protocol = UppercaseDatagramProtocol(clock=Clock(), **kwargs)  # type: ignore[arg-type]
    transport = FakeDatagramTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class FailingTransport(FakeDatagramTransport):
    """
    A datagram transport whose writes fail with C{errors} (one per write) until they run out.
    """

    def __init__(self, *errors: Exception) -> None:
        super().__init__()
        self.errors = list(errors)

    def write(self, packet: bytes, addr: object = FakeDatagramTransport.noAddr) -> None:
        if self.errors:
            raise self.errors.pop(0)
        super().write(packet, addr)


def test_replyToSender() -> None:
    """
    Each datagram is answered with its uppercase, to the sender's address and port.
    """
    protocol, transport = listening()
    protocol.datagramReceived(b"hi this is nitish, welcome to cn lab", SENDER)
    protocol.datagramReceived(b"second", ("127.0.0.2", 9))
    assert transport.written == [
        (b"HI THIS IS NITISH, WELCOME TO CN LAB", SENDER),
        (b"SECOND", ("127.0.0.2", 9)),
    ]
    assert (protocol.received, protocol.answered) == (2, 2)


def test_ipv6Sender() -> None:
    """
    An IPv6 sender (a 4-tuple address) is answered at that address.
    """
    protocol, transport = listening()
    sender = ("::1", 5555, 0, 0)
    protocol.datagramReceived(b"v6", sender)  # type: ignore[arg-type]
    assert transport.written == [(b"V6", sender)]


def test_emptyDatagram() -> None:
    """
    An empty datagram gets an empty reply.
    """
    protocol, transport = listening()
    protocol.datagramReceived(b"", SENDER)
    assert transport.written == [(b"", SENDER)]


def test_largestDatagram() -> None:
    """
    A datagram of the 65,507-byte IPv4 maximum is answered in full.
    """
    protocol, transport = listening()
    data = bytes(range(256)) * (MAX_DATAGRAM // 256) + b"z" * (MAX_DATAGRAM % 256)
    assert len(data) == MAX_DATAGRAM == 65507
    protocol.datagramReceived(data, SENDER)
    assert transport.written == [(data.upper(), SENDER)]


def test_asciiModeIsLabRule() -> None:
    """
    By default only C{a}-C{z} change; C{é} is returned unchanged.
    """
    protocol, transport = listening()
    protocol.datagramReceived("café".encode(), SENDER)
    assert transport.written == [("CAFé".encode(), SENDER)]


def test_unicodeMode() -> None:
    """
    With C{unicode}, text is uppercased by the full Unicode rules when that does not grow it.
    """
    protocol, transport = listening(unicode=True)
    protocol.datagramReceived("café straße".encode(), SENDER)
    assert transport.written == [("CAFÉ STRASSE".encode(), SENDER)]


def test_unicodeGrowthFallsBackToASCII() -> None:
    """
    With C{unicode}, a datagram whose Unicode uppercase would be larger is answered with the
    ASCII uppercase, so the reply is never larger than the request.
    """
    protocol, transport = listening(unicode=True)
    request = "ŉ é".encode()
    protocol.datagramReceived(request, SENDER)
    [(reply, _)] = transport.written
    assert reply == "ŉ é".encode().upper()
    assert len(reply) <= len(request)


def test_writeErrorLoggedAndNextAnswered() -> None:
    """
    A reply that cannot be sent is logged, not raised, and the next datagram is answered.
    """
    protocol = UppercaseDatagramProtocol(clock=Clock())
    transport = FailingTransport(OSError(errno.EAGAIN, "Resource temporarily unavailable"))
    protocol.makeConnection(transport)
    with capturedLogs() as events:
        protocol.datagramReceived(b"first", SENDER)
        protocol.datagramReceived(b"second", SENDER)
    assert transport.written == [(b"SECOND", SENDER)]
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert warnings == [
        "caplab udp could not answer 127.0.0.1:40123: [Errno 11] Resource temporarily "
        "unavailable (1 replies failed so far)"
    ]
    assert (protocol.received, protocol.answered, protocol.failed) == (2, 1, 1)


def test_messageTooLongLogged() -> None:
    """
    Twisted's L{MessageLengthError} (EMSGSIZE), which is not an L{OSError}, is logged too.
    """
    protocol = UppercaseDatagramProtocol(clock=Clock())
    transport = FailingTransport(MessageLengthError("message too long"))
    protocol.makeConnection(transport)
    with capturedLogs() as events:
        protocol.datagramReceived(b"x", SENDER)
    assert [e for e in events if e["log_level"] == LogLevel.warn]
    assert protocol.failed == 1


def test_errorWarningsRateLimited() -> None:
    """
    Under a flood of failing sends at most one warning per C{errorLogInterval} is logged,
    each with the running count of failures, and a summary follows the burst.
    """
    clock = Clock()
    protocol = UppercaseDatagramProtocol(clock=clock)
    transport = FailingTransport(*[OSError(errno.ENOBUFS, "No buffer space")] * 1000)
    protocol.makeConnection(transport)
    with capturedLogs() as events:
        for _ in range(500):
            protocol.datagramReceived(b"x", SENDER)
        clock.advance(protocol.errorLogInterval)
        for _ in range(500):
            protocol.datagramReceived(b"x", SENDER)
        clock.pump([protocol.errorLogInterval] * 3)
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 4
    assert warnings[1].endswith("(500 replies failed so far)")
    assert warnings[2].endswith("(1000 replies failed so far)")
    assert warnings[3] == (
        "caplab udp could not answer 1000 datagrams in 1s (1000 replies failed so far)"
    )
    protocol.datagramReceived(b"ok", SENDER)
    assert transport.written == [(b"OK", SENDER)]


def test_burstOfThousands() -> None:
    """
    A burst of thousands of datagrams from many senders is answered one for one, in order.
    """
    protocol, transport = listening()
    expected = []
    for i in range(5000):
        sender = ("127.0.0.1", 1024 + i % 100)
        protocol.datagramReceived(b"msg %d" % i, sender)
        expected.append((b"MSG %d" % i, sender))
    assert transport.written == expected
    assert protocol.answered == 5000


def test_traced() -> None:
    """
    With a tracer, each exchange is recorded as a received and a sent datagram.
    """
    output = io.StringIO()
    protocol, transport = listening(tracer=Tracer(output, now=lambda: "T"))
    protocol.datagramReceived(b"hi", SENDER)
    assert output.getvalue() == (
        "T udp#1 127.0.0.1:40123 recv 2 b'hi'\nT udp#1 127.0.0.1:40123 send 2 b'HI'\n"
    )
