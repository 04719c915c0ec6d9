"""
Tests of C{--trace}: L{caplab.trace} records every byte each service sends and receives.
"""

from __future__ import annotations

import errno
import io
from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from caplab.tcp import UppercaseFactory
from caplab.trace import Tracer, TracerService, TracingProtocol
from tests.test_tcp import BufferingTransport

PEER = IPv4Address("TCP", "127.0.0.1", 41234)


def tracer() -> tuple[Tracer, io.StringIO]:
    output = io.StringIO()
    return Tracer(output, now=lambda: "T"), output


def traced(
    wrapped: Factory, transport: StringTransport | None = None
) -> tuple[TracingProtocol, StringTransport, io.StringIO]:
    trace, output = tracer()
    protocol = trace.wrapFactory("tcp", wrapped).buildProtocol(PEER)
    assert protocol is not None
    if transport is None:
        transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    return protocol, transport, output


def test_recordFormat() -> None:
    """
    A trace line is: time, label, peer, event, and for data its length and a bytes literal.
    """
    trace, output = tracer()
    label = trace.nextConnection("tcp")
    trace.record(label, "127.0.0.1:1", "open")
    trace.record(label, "127.0.0.1:1", "recv", b"a\x00\n'")
    assert output.getvalue() == (
        'T tcp#1 127.0.0.1:1 open\nT tcp#1 127.0.0.1:1 recv 4 b"a\\x00\\n\'"\n'
    )
    assert trace.nextConnection("udp") == "udp#2"


def test_defaultTimestamp() -> None:
    """
    By default each line starts with a UTC ISO 8601 time stamp with microseconds.
    """
    output = io.StringIO()
    Tracer(output).record("tcp#1", "p", "open")
    stamp = output.getvalue().split()[0]
    assert len(stamp) == len("2026-11-24T08:01:02.345678Z") and stamp.endswith("Z")


def test_openAppendsLineBuffered(tmp_path: Path) -> None:
    """
    L{Tracer.open} appends to an existing file and each line is in the file at once.
    """
    path = tmp_path / "trace.txt"
    path.write_text("earlier\n")
    trace = Tracer.open(str(path))
    trace.record("tcp#1", "p", "open")
    assert path.read_text().splitlines()[0] == "earlier"
    assert path.read_text().splitlines()[1].endswith(" tcp#1 p open")
    trace.close()


def test_serviceClosesFile(tmp_path: Path) -> None:
    """
    L{TracerService} closes the file when the services stop; later records are dropped
    rather than raising (a draining connection may still write).
    """
    trace = Tracer.open(str(tmp_path / "t"))
    service = TracerService(trace)
    service.startService()
    service.stopService()
    trace.record("tcp#1", "p", "close")
    assert (tmp_path / "t").read_text() == ""


def test_connectionTraced() -> None:
    """
    A traced uppercase connection records open, what it received, what it sent, and close,
    and the bytes still flow through unchanged.
    """
    protocol, transport, output = traced(UppercaseFactory(clock=Clock()))
    protocol.dataReceived(b"welcome to cn lab")
    assert transport.value() == b"WELCOME TO CN LAB"
    protocol.connectionLost(Failure(ConnectionError()))
    assert output.getvalue().splitlines() == [
        "T tcp#1 127.0.0.1:41234 open",
        "T tcp#1 127.0.0.1:41234 recv 17 b'welcome to cn lab'",
        "T tcp#1 127.0.0.1:41234 send 17 b'WELCOME TO CN LAB'",
        "T tcp#1 127.0.0.1:41234 close",
    ]


def test_writeSequenceTraced() -> None:
    """
    C{writeSequence} is recorded as one send.
    """

    class Sequencer(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.writeSequence([data, data])  # type: ignore[union-attr]

    protocol, transport, output = traced(Factory.forProtocol(Sequencer))
    protocol.dataReceived(b"ab")
    assert transport.value() == b"abab"
    assert output.getvalue().splitlines()[-1] == "T tcp#1 127.0.0.1:41234 send 4 b'abab'"


def test_halfClosePassedThrough() -> None:
    """
    The tracing wrapper is half-closeable and passes a half-close to the uppercase protocol,
    which writes what it held back and then closes: tracing does not change behaviour.
    """
    protocol, transport, output = traced(UppercaseFactory(unicode=True, clock=Clock()))
    assert IHalfCloseableProtocol.providedBy(protocol)
    protocol.dataReceived(b"x\xc3")
    protocol.readConnectionLost()
    assert transport.value() == b"X\xc3"
    assert transport.disconnecting
    assert output.getvalue().splitlines()[-2:] == [
        "T tcp#1 127.0.0.1:41234 half-close",
        "T tcp#1 127.0.0.1:41234 send 1 b'\\xc3'",
    ]


def test_halfCloseOfPlainProtocolCloses() -> None:
    """
    A wrapped protocol that is not half-closeable gets the connection closed on a
    half-close, as the transport would have done.
    """
    protocol, transport, _ = traced(Factory.forProtocol(Protocol))
    protocol.readConnectionLost()
    assert transport.disconnecting


def test_backPressureThroughWrapper() -> None:
    """
    The uppercase protocol registers its transport, the tracing wrapper, as producer; the
    real transport's full buffer then pauses the real transport.
    """
    transport = BufferingTransport()
    protocol, _, _ = traced(UppercaseFactory(clock=Clock()), transport)
    assert transport.producer is protocol
    protocol.dataReceived(b"a" * 2000)
    assert transport.pauses == 1
    assert transport.producerState == "paused"
    transport.drain()
    assert transport.producerState == "producing"


def test_refusedConnectionTraced() -> None:
    """
    A connection the wrapped factory refuses (over its cap) is refused and recorded.
    """
    trace, output = tracer()
    factory = trace.wrapFactory("tcp", UppercaseFactory(maxConnections=1, clock=Clock()))
    first = factory.buildProtocol(PEER)
    assert first is not None
    first.makeConnection(StringTransport(peerAddress=PEER))
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5)) is None
    assert output.getvalue().splitlines()[-1] == "T tcp#2 127.0.0.1:5 refused"


def test_reopen(tmp_path: Path) -> None:
    """
    The reopener opens the trace's path again (logrotate moved the file away): later lines
    go to the new file, the old one is closed.
    """
    path = tmp_path / "trace.txt"
    tracer = Tracer.open(str(path))
    tracer.record("tcp#1", "127.0.0.1:1", "open")
    path.rename(tmp_path / "trace.txt.1")
    old = tracer._output
    reopener = tracer.reopener()
    assert reopener.use(reopener.load()) == f"reopened {path}"
    assert old.closed
    tracer.record("tcp#1", "127.0.0.1:1", "close")
    tracer.close()
    assert (tmp_path / "trace.txt.1").read_text().endswith("open\n")
    assert path.read_text().endswith("tcp#1 127.0.0.1:1 close\n")
    assert Tracer(io.StringIO()).reopener().use(None) == "nothing to reopen"


class FullDisk(io.StringIO):
    """
    A file whose writes fail with C{ENOSPC} while C{full} is true.
    """

    full = True

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)


def test_fullDiskDropsAndRecovers() -> None:
    """
    While the disk is full, the traced connection goes on (nothing raised into it), the
    lines are dropped and counted in one rate-limited log line and a summary; once there
    is room, new lines are written again.
    """
    clock = Clock()
    output = FullDisk()
    trace = Tracer(output, now=lambda: "T", path="trace.log", clock=clock)
    protocol = trace.wrapFactory("tcp", UppercaseFactory(clock=clock)).buildProtocol(PEER)
    assert protocol is not None
    transport = StringTransport(peerAddress=PEER)
    with capturedLogs() as events:
        protocol.makeConnection(transport)
        for _ in range(100):
            protocol.dataReceived(b"abc")
        assert transport.value() == b"ABC" * 100
        clock.advance(1)
        clock.advance(1)
        output.full = False
        protocol.dataReceived(b"x")
    lines = [formatEvent(e) for e in events]
    assert trace.dropped == 201
    assert len(lines) == 3, lines
    assert lines[0] == (
        "caplab cannot write the trace trace.log: No space left on device; 1 lines dropped so far"
    )
    assert "201 lines dropped so far" in lines[1]
    assert "201 lines dropped so far" in lines[2]
    assert output.getvalue().splitlines() == [
        "T tcp#1 127.0.0.1:41234 recv 1 b'x'",
        "T tcp#1 127.0.0.1:41234 send 1 b'X'",
    ]


def test_devFull() -> None:
    """
    A real full device (C{/dev/full}): recording and closing raise nothing; the first
    failure is logged at once, the others in one line when the trace closes.
    """
    clock = Clock()
    trace = Tracer.open("/dev/full", clock)
    with capturedLogs() as events:
        trace.record("tcp#1", "p", "recv", b"x" * 100)
        trace.record("tcp#1", "p", "close")
        trace.close()
    failures = [e for e in events if "cannot write the trace" in e["log_format"]]
    assert [e["dropped"] for e in failures] == [1, trace.dropped]
    assert trace.dropped >= 2
