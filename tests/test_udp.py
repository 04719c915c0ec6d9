"""
Unit tests of the UDP uppercase service, L{caplab.udp}, on a fake datagram transport.
"""

from __future__ import annotations

import errno
import io
import socket
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import MessageLengthError
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase

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


#: What a send may do in L{test_batchSameAsSingle}: succeed, or fail as a transport's write
#: or a socket's sendto can.
SEND_OUTCOMES = [
    None,
    None,
    None,
    OSError(errno.EAGAIN, "Resource temporarily unavailable"),
    OSError(errno.ENOBUFS, "No buffer space available"),
    OSError(errno.EMSGSIZE, "Message too long"),
    OSError(errno.ECONNREFUSED, "Connection refused"),
    MessageLengthError("message too long"),
]


class ScriptedTransport(FakeDatagramTransport):
    """
    A datagram transport whose Nth write does what C{outcomes[N]} says (None: succeeds).
    """

    def __init__(self, outcomes: list[Exception | None]) -> None:
        super().__init__()
        self.outcomes = list(outcomes)

    def write(self, packet: bytes, addr: object = FakeDatagramTransport.noAddr) -> None:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        super().write(packet, addr)


@given(
    exchanges=st.lists(
        st.tuples(
            st.one_of(st.binary(max_size=40), st.text(max_size=12).map(str.encode)),
            st.integers(1024, 1030),
            st.sampled_from(SEND_OUTCOMES),
        ),
        max_size=40,
    ),
    unicode=st.booleans(),
    traced=st.booleans(),
    split=st.integers(0, 40),
)
def test_batchSameAsSingle(
    exchanges: list[tuple[bytes, int, Exception | None]], unicode: bool, traced: bool, split: int
) -> None:
    """
    Answering datagrams in batches (as a UDP port that reads every waiting datagram at once
    hands them over) does exactly what answering them one by one does: the same replies to
    the same senders, the same counts, the same trace and the same (rate-limited) warnings,
    whatever the sends do.
    """

    def run(batched: bool) -> tuple[object, ...]:
        output = io.StringIO()
        tracer = Tracer(output, now=lambda: "T") if traced else None
        protocol = UppercaseDatagramProtocol(unicode=unicode, tracer=tracer, clock=Clock())
        transport = ScriptedTransport([outcome for _, _, outcome in exchanges])
        protocol.makeConnection(transport)
        datagrams = [(data, ("127.0.0.1", port)) for data, port, _ in exchanges]
        with capturedLogs() as events:
            if batched:
                protocol.datagramsReceived(iter(datagrams[:split]))
                protocol.datagramsReceived(iter(datagrams[split:]))
            else:
                for datagram, addr in datagrams:
                    protocol.datagramReceived(datagram, addr)
        counts = (protocol.received, protocol.answered, protocol.failed)
        return transport.written, counts, output.getvalue(), [formatEvent(e) for e in events]

    assert run(batched=True) == run(batched=False)


def test_batchCounted() -> None:
    """
    A batch is counted in C{received} and C{answered} like single datagrams; a refused
    send (which Twisted's own write ignores) counts as answered, a failed one as failed.
    """
    transport = ScriptedTransport([None, OSError(errno.ECONNREFUSED, "refused"), None])
    transport.outcomes.insert(2, OSError(errno.ENOBUFS, "No buffer space"))
    protocol = UppercaseDatagramProtocol(clock=Clock())
    protocol.makeConnection(transport)
    with capturedLogs():
        protocol.datagramsReceived(iter([(b"d%d" % i, SENDER) for i in range(4)]))
    assert transport.written == [(b"D0", SENDER), (b"D3", SENDER)]
    assert (protocol.received, protocol.answered, protocol.failed) == (4, 3, 1)


def test_rawMessageTooLong() -> None:
    """
    C{EMSGSIZE} from a socket's own C{sendto} is reported as Twisted's write reports it.
    """
    protocol, _ = listening()
    protocol._send = FailingTransport(OSError(errno.EMSGSIZE, "Message too long")).write
    with capturedLogs() as events:
        protocol.datagramReceived(b"x", SENDER)
    assert [formatEvent(e) for e in events] == [
        "caplab udp could not answer 127.0.0.1:40123: Message is too long to send: "
        "message too long. (1 replies failed so far)"
    ]


def test_batchSeenByInstanceWrapper() -> None:
    """
    A C{datagramReceived} set on the instance (a wrapper that counts, say) sees every
    datagram of a batch, and each is still answered.
    """
    protocol, transport = listening()
    seen: list[bytes] = []
    answer = protocol.datagramReceived

    def counting(datagram: bytes, addr: tuple[str, int]) -> None:
        seen.append(datagram)
        answer(datagram, addr)

    protocol.datagramReceived = counting  # type: ignore[method-assign]
    protocol.datagramsReceived(iter([(b"a", SENDER), (b"b", SENDER)]))
    assert seen == [b"a", b"b"]
    assert transport.written == [(b"A", SENDER), (b"B", SENDER)]


class RealPortTests(TestCase):
    """
    The protocol on a real loopback UDP port, which reads in batches.
    """

    timeout = 20

    async def test_queuedBurstAnswered(self) -> None:
        """
        Datagrams queued before the port reads are read in a batch and each is answered, in
        order, to its sender; the counts include them all.
        """
        protocol = UppercaseDatagramProtocol()
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1", maxPacketSize=65535)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.assertIn("doRead", vars(port))  # the batch reader is installed
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind(("127.0.0.1", 0))
        client.settimeout(5)
        port.stopReading()
        for i in range(50):
            client.sendto(b"burst %d" % i, ("127.0.0.1", port.getHost().port))
        port.startReading()

        def receiveAll() -> list[bytes]:
            return [client.recv(65535) for _ in range(50)]

        replies: Deferred[list[bytes]] = deferToThread(receiveAll)
        self.assertEqual(await replies, [b"BURST %d" % i for i in range(50)])
        self.assertEqual((protocol.received, protocol.answered), (50, 50))

    async def test_sendFailureLogged(self) -> None:
        """
        A reply the socket refuses (too long for it) is logged and counted as failed, and
        the next datagram is answered.
        """
        protocol = UppercaseDatagramProtocol()
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1", maxPacketSize=65535)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        sent: list[Any] = []
        real = protocol._send

        def send(reply: bytes, addr: Any) -> object:
            sent.append(reply)
            # A reply the kernel cannot send: an IPv4 UDP payload over 65,507 bytes.
            return real(reply * 70000 if reply == b"BIG" else reply, addr)  # type: ignore[misc]

        protocol._send = send
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind(("127.0.0.1", 0))
        client.settimeout(5)
        with capturedLogs() as events:
            client.sendto(b"big", ("127.0.0.1", port.getHost().port))
            client.sendto(b"small", ("127.0.0.1", port.getHost().port))
            self.assertEqual(await deferToThread(client.recv, 65535), b"SMALL")
        assert (protocol.received, protocol.answered, protocol.failed) == (2, 1, 1)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        assert len(warnings) == 1 and "message too long" in warnings[0], warnings
