"""
Unit tests of the TCP uppercase service, L{caplab.tcp}, on in-memory transports.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import TestCase

from caplab.internals import DEFAULT_BUFFER, STREAM_BUFFER
from caplab.tcp import UppercaseFactory, UppercaseProtocol

PEER = IPv4Address("TCP", "127.0.0.1", 40123)


class BufferingTransport(StringTransport):
    """
    A L{StringTransport} that behaves like a real transport's write buffer: once more than
    C{bufferSize} bytes are waiting, it pauses its streaming producer; L{drain} empties the
    buffer and resumes it.  L{pauseProducing}/L{resumeProducing} calls are recorded.
    """

    bufferSize = 1000

    def __init__(self) -> None:
        super().__init__(peerAddress=PEER)
        self.pauses = 0
        self.resumes = 0

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming and len(self.value()) > self.bufferSize:
            self.producer.pauseProducing()

    def pauseProducing(self) -> None:
        self.pauses += 1
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.resumes += 1
        super().resumeProducing()

    def drain(self) -> bytes:
        data = self.value()
        self.clear()
        if self.producer is not None and self.producerState == "paused":
            self.producer.resumeProducing()
        return data


def connect(
    factory: UppercaseFactory, transport: StringTransport | None = None
) -> tuple[UppercaseProtocol, StringTransport]:
    """
    Build a protocol from C{factory} as a listening port would and connect it.
    """
    protocol = factory.buildProtocol(PEER)
    assert isinstance(protocol, UppercaseProtocol)
    if transport is None:
        transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    return protocol, transport


def close(protocol: Protocol, transport: StringTransport) -> None:
    """
    Deliver the end of the connection, as the reactor would after C{loseConnection}.
    """
    transport.connected = False
    protocol.connectionLost(Failure(ConnectionError("closed")))


def test_eachChunkEchoedAtOnce() -> None:
    """
    Every chunk is uppercased and written back as soon as it arrives, and the connection
    stays open after a reply.
    """
    protocol, transport = connect(UppercaseFactory(clock=Clock()))
    protocol.dataReceived(b"welcome to ")
    assert transport.value() == b"WELCOME TO "
    protocol.dataReceived(b"cn lab, &*! \x00\xc3\xa9")
    assert transport.value() == b"WELCOME TO CN LAB, &*! \x00\xc3\xa9"
    assert not transport.disconnecting


def test_emptyChunkWritesNothing() -> None:
    """
    An empty read (which transports may deliver) writes nothing.
    """
    protocol, transport = connect(UppercaseFactory(clock=Clock()))
    written: list[bytes] = []
    transport.write = written.append  # type: ignore[method-assign]
    protocol.dataReceived(b"")
    assert written == []


def test_unicodeSplitCharacter() -> None:
    """
    With C{unicode}, a character split across reads is uppercased once it is complete.
    """
    protocol, transport = connect(UppercaseFactory(unicode=True, clock=Clock()))
    protocol.dataReceived(b"stra" + "ß".encode()[:1])
    assert transport.value() == b"STRA"
    protocol.dataReceived("ß".encode()[1:] + "e é".encode())
    assert transport.value() == "STRASSE É".encode()


def test_asciiModeLeavesMultibyteAlone() -> None:
    """
    Without C{unicode}, C{é} and C{ß} come back unchanged (the lab's ASCII rule).
    """
    protocol, transport = connect(UppercaseFactory(clock=Clock()))
    protocol.dataReceived("straße é".encode())
    assert transport.value() == "STRAßE é".encode()


def test_halfCloseable() -> None:
    """
    The protocol provides L{IHalfCloseableProtocol}, so a transport tells it about a
    half-close instead of closing the connection.
    """
    assert IHalfCloseableProtocol.providedBy(UppercaseProtocol())


def test_halfCloseFinishesThenCloses() -> None:
    """
    When the peer half-closes, what was held back is written and then the connection is
    closed (after the transport has written everything).
    """
    protocol, transport = connect(UppercaseFactory(unicode=True, clock=Clock()))
    protocol.dataReceived(b"abc\xe2\x82")  # an incomplete character at the end
    assert transport.value() == b"ABC"
    assert not transport.disconnecting
    protocol.readConnectionLost()
    assert transport.value() == b"ABC\xe2\x82"
    assert transport.disconnecting
    assert not transport.disconnected  # a graceful close, not an abort
    assert transport.producer is None


def test_halfCloseWithNothingPending() -> None:
    """
    A half-close with nothing held back just closes, writing nothing more.
    """
    protocol, transport = connect(UppercaseFactory(clock=Clock()))
    protocol.dataReceived(b"abc")
    protocol.readConnectionLost()
    assert transport.value() == b"ABC"
    assert transport.disconnecting


def test_halfCloseAfterIdleClose() -> None:
    """
    A half-close arriving after the idle timeout started closing the connection does not
    close it twice (the producer is unregistered once).
    """
    clock = Clock()
    protocol, transport = connect(UppercaseFactory(idleTimeout=5, clock=clock))
    clock.advance(5)
    assert transport.disconnecting
    protocol.readConnectionLost()  # StringTransport raises on a second unregisterProducer
    assert transport.producer is None


def test_writeConnectionLostIgnored() -> None:
    """
    C{writeConnectionLost} (the service never half-closes itself) changes nothing.
    """
    protocol, transport = connect(UppercaseFactory(clock=Clock()))
    protocol.writeConnectionLost()
    assert not transport.disconnecting


def test_transportIsItsOwnStreamingProducer() -> None:
    """
    The transport is registered as the streaming producer of its own write buffer.
    """
    protocol, transport = connect(UppercaseFactory(clock=Clock()))
    assert transport.producer is transport
    assert transport.streaming is True


def test_fullWriteBufferPausesReading() -> None:
    """
    A peer that sends but does not read fills the write buffer; the transport then pauses
    reading from the peer, and resumes once the buffer has drained.
    """
    transport = BufferingTransport()
    protocol, _ = connect(UppercaseFactory(clock=Clock()), transport)
    protocol.dataReceived(b"a" * 600)
    assert transport.pauses == 0
    protocol.dataReceived(b"b" * 600)
    assert transport.pauses == 1
    assert transport.producerState == "paused"
    assert transport.drain() == b"A" * 600 + b"B" * 600
    assert transport.resumes == 1
    assert transport.producerState == "producing"


def test_iosimConversation() -> None:
    """
    Over an in-memory connection a client gets back each sentence, uppercased, in order.
    """

    class Client(Protocol):
        received = b""

        def dataReceived(self, data: bytes) -> None:
            self.received += data

    server = UppercaseFactory(clock=Clock()).buildProtocol(PEER)
    client = Client()
    pump = iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client))
    assert client.transport is not None
    for sentence in (b"hi this is nitish, ", b"welcome to cn lab\n", b"\x00bin\xffary"):
        client.transport.write(sentence)
        pump.flush()
    assert client.received == b"HI THIS IS NITISH, WELCOME TO CN LAB\n\x00BIN\xffARY"


def test_idleTimeoutCloses() -> None:
    """
    A connection without input for C{idleTimeout} seconds is closed gracefully (not aborted:
    what was written still reaches the peer) and logged.
    """
    clock = Clock()
    factory = UppercaseFactory(idleTimeout=300, clock=clock)
    protocol, transport = connect(factory, None)
    clock.advance(299.9)
    assert not transport.disconnecting
    with capturedLogs() as events:
        clock.advance(0.1)
    assert transport.disconnecting and not transport.disconnected
    assert transport.producer is None
    messages = [formatEvent(e) for e in events]
    assert messages == ["caplab tcp closing idle connection from 127.0.0.1:40123"]
    close(protocol, transport)
    # Nothing is left to time the closed connection out: the factory's timer runs dry.
    assert protocol not in factory.closing
    with capturedLogs() as events:
        clock.advance(protocol.abortTimeout)
    assert events == [] and not transport.disconnected
    assert clock.getDelayedCalls() == []


def test_idleCloseAbortsWhenOutputNotTaken() -> None:
    """
    A timed-out connection whose peer does not take the remaining output within
    C{abortTimeout} seconds is aborted.
    """
    clock = Clock()
    protocol, transport = connect(UppercaseFactory(idleTimeout=300, clock=clock), None)
    clock.advance(300)
    clock.advance(protocol.abortTimeout - 0.1)
    assert not transport.disconnected
    with capturedLogs() as events:
        clock.advance(0.1)
    assert transport.disconnected
    assert [formatEvent(e) for e in events] == [
        "caplab tcp aborting connection from 127.0.0.1:40123: output not taken"
    ]


def test_inputResetsIdleTimeout() -> None:
    """
    Each chunk of input restarts the idle timeout.
    """
    clock = Clock()
    protocol, transport = connect(UppercaseFactory(idleTimeout=10, clock=clock))
    for _ in range(5):
        clock.advance(9)
        protocol.dataReceived(b"x")
    assert not transport.disconnecting
    clock.advance(10)
    assert transport.disconnecting


def test_noIdleTimeout() -> None:
    """
    With C{idleTimeout=None} nothing is scheduled and the connection never times out.
    """
    clock = Clock()
    protocol, transport = connect(UppercaseFactory(idleTimeout=None, clock=clock))
    assert clock.getDelayedCalls() == []
    clock.advance(10**6)
    assert not transport.disconnecting


def test_idleTimeoutAfterHalfClose() -> None:
    """
    A peer that half-closes and then never reads its output cannot hold the connection open
    forever: the idle timeout, still running, aborts it.
    """
    clock = Clock()
    protocol, transport = connect(UppercaseFactory(idleTimeout=30, clock=clock))
    protocol.dataReceived(b"x")
    protocol.readConnectionLost()
    assert transport.disconnecting and not transport.disconnected
    clock.advance(30)
    assert transport.disconnected


def test_connectionLostCancelsTimeout() -> None:
    """
    Once the connection is gone nothing times it out, and once the factory's one timer has
    run (and found nothing to do) nothing is left scheduled.
    """
    clock = Clock()
    factory = UppercaseFactory(idleTimeout=30, clock=clock)
    protocol, transport = connect(factory)
    close(protocol, transport)
    assert factory.idle is not None and protocol not in factory.idle
    with capturedLogs() as events:
        clock.advance(30)
    assert events == [] and not transport.disconnecting
    assert clock.getDelayedCalls() == []


def test_oneTimerForAllConnections() -> None:
    """
    The factory times all its connections out with one delayed call, not one each, and
    each connection still closes after its own idle time.
    """
    clock = Clock()
    factory = UppercaseFactory(idleTimeout=30, clock=clock)
    connections = []
    for _ in range(100):  # one every 0.25 s: deadlines 30, 30.25, ...
        connections.append(connect(factory))
        clock.advance(0.25)
    assert len(clock.getDelayedCalls()) == 1
    connections[0][0].dataReceived(b"still here")  # at 25: its deadline is 55 now
    clock.advance(5.25)
    assert not connections[0][1].disconnecting
    assert connections[1][1].disconnecting and not connections[2][1].disconnecting
    clock.advance(0.25)
    assert connections[2][1].disconnecting and not connections[3][1].disconnecting
    assert len(clock.getDelayedCalls()) == 2  # the idle timer and the closing one


def test_defaultClockIsGlobalReactor() -> None:
    """
    Without a clock the factory schedules on the global reactor.
    """
    from twisted.internet import reactor

    assert UppercaseFactory().clock is reactor


def test_maxConnections() -> None:
    """
    Connections over C{maxConnections} are refused (no protocol, so the port closes them at
    once) and logged with the peer; once one closes, a new connection is accepted.
    """
    factory = UppercaseFactory(maxConnections=2, clock=Clock())
    first = connect(factory)
    connect(factory)
    assert factory.active == 2
    with capturedLogs() as events:
        assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000)) is None
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert warnings == [
        "caplab tcp refusing connection from 127.0.0.1:50000: 2 connections open "
        "(--max-connections 2; 1 refused so far)"
    ]
    close(*first)
    assert factory.active == 1
    assert isinstance(factory.buildProtocol(PEER), UppercaseProtocol)


def test_refusalLogRateLimited() -> None:
    """
    A flood of connections over the cap logs at most one line per C{refusalLogInterval}
    seconds, each with the running count, and a summary of the burst once it is over.
    """
    clock = Clock()
    factory = UppercaseFactory(maxConnections=1, clock=clock)
    connect(factory)
    with capturedLogs() as events:
        for _ in range(500):
            assert factory.buildProtocol(PEER) is None
        clock.advance(factory.refusalLogInterval)
        assert factory.buildProtocol(PEER) is None
        clock.pump([factory.refusalLogInterval] * 3)
    warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 4
    assert warnings[0].endswith("(--max-connections 1; 1 refused so far)")
    assert warnings[1].endswith("(--max-connections 1; 500 refused so far)")
    assert warnings[2].endswith("(--max-connections 1; 501 refused so far)")
    assert warnings[3] == (
        "caplab tcp refused 501 connections in 1s (--max-connections 1; 501 refused so far)"
    )
    assert factory.refused == 501


def test_activeCountsConnections() -> None:
    """
    C{active} counts made connections, not built protocols, and goes back to zero.
    """
    factory = UppercaseFactory(clock=Clock())
    connections: list[Any] = [connect(factory) for _ in range(3)]
    assert factory.active == 3
    for connection in connections:
        close(*connection)
    assert factory.active == 0


def test_acceptedCountsConnections() -> None:
    """
    C{accepted} counts the connections the factory accepted, not the ones it refused (so
    that metrics can read it at scrape time instead of counting on every connection).
    """
    factory = UppercaseFactory(maxConnections=2, clock=Clock())
    first = connect(factory)
    connect(factory)
    with capturedLogs():
        assert factory.buildProtocol(PEER) is None
    close(*first)
    connect(factory)
    assert (factory.accepted, factory.refused) == (3, 1)


class Collect(Protocol):
    """
    A client that collects what it receives and fires C{done} once it has C{want} bytes.
    """

    def __init__(self, want: int) -> None:
        self.want = want
        self.received = b""
        self.done: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.want and not self.done.called:
            self.done.callback(self.received)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class RealConnectionTests(TestCase):
    """
    The service on real loopback TCP connections.
    """

    timeout = 20

    async def _exchange(self, payload: bytes) -> tuple[bytes, UppercaseProtocol]:
        """
        Send C{payload} on a new connection and return what comes back, and the server's
        protocol; the connection is closed (both ends) when the test ends.
        """
        factory = UppercaseFactory(clock=Clock())
        built: list[UppercaseProtocol] = []
        closed: Deferred[None] = Deferred()
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> Any:
            protocol = build(addr)
            assert isinstance(protocol, UppercaseProtocol)
            lost = protocol.connectionLost

            def connectionLost(reason: Any = None) -> None:
                lost(reason)
                closed.callback(None)

            protocol.connectionLost = connectionLost  # type: ignore[method-assign]
            built.append(protocol)
            return protocol

        factory.buildProtocol = buildProtocol  # type: ignore[method-assign]
        # cast: Twisted annotates listenTCP's factory as a ServerFactory; any factory works
        port = reactor.listenTCP(0, cast(ServerFactory, factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = Collect(len(payload))
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        await connectProtocol(endpoint, client)

        def close() -> Deferred[list[None]]:
            client.transport.loseConnection()  # type: ignore[union-attr]
            return gatherResults([closed, client.lost])

        self.addCleanup(close)
        client.transport.write(payload)  # type: ignore[union-attr]
        return await client.done, built[0]

    async def test_streamingReadsLarger(self) -> None:
        """
        A connection that streams (a read fills Twisted's 64 KiB buffer) is read 128 KiB at
        a time from then on, and every byte still comes back uppercased, in order.
        """
        payload = bytes(range(256)) * 4096  # 1 MiB
        echoed, protocol = await self._exchange(payload)
        self.assertEqual(echoed, payload.upper())
        self.assertEqual(protocol.transport.bufferSize, STREAM_BUFFER)

    async def test_shortExchangeKeepsDefault(self) -> None:
        """
        A connection that exchanges a sentence keeps Twisted's default read size.
        """
        echoed, protocol = await self._exchange(b"hi this is nitish\n")
        self.assertEqual(echoed, b"HI THIS IS NITISH\n")
        self.assertEqual(protocol.transport.bufferSize, DEFAULT_BUFFER)

    async def test_sentBeforeAccept(self) -> None:
        """
        A client that sends its sentence and half-closes before the connection is even
        accepted (C{nc -N}, the lab's client on a busy server) gets the whole reply and then
        the end of the stream.
        """
        factory = UppercaseFactory(clock=Clock())
        # cast: Twisted annotates listenTCP's factory as a ServerFactory; any factory works
        port = reactor.listenTCP(0, cast(ServerFactory, factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        client = socket.create_connection(("127.0.0.1", address.port), timeout=5)
        self.addCleanup(client.close)
        client.sendall(b"welcome to cn lab, &*!\n")
        client.shutdown(socket.SHUT_WR)

        def readAll() -> bytes:
            chunks = []
            while chunk := client.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

        self.assertEqual(await deferToThread(readAll), b"WELCOME TO CN LAB, &*!\n")
        self.assertEqual((factory.accepted, factory.active), (1, 0))
