"""
Pins every Twisted internal that L{caplab.internals} relies on, on real loopback TCP
connections and UDP ports: if a Twisted release renames or changes one of them, a test here
fails by name.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from typing import Any, cast

from twisted.internet import reactor, tcp, udp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol, ServerFactory
from twisted.internet.task import deferLater as _deferLater
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from caplab.internals import (
    DEFAULT_BUFFER,
    datagramSender,
    nothingQueued,
    observePortLog,
    readInBatches,
    readInLargerPieces,
    readWaiting,
    sendNow,
    sendtoError,
)


class _Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.connected_: Deferred[None] = Deferred()
        self.got: Deferred[bytes] | None = None
        self.want = 0

    def connectionMade(self) -> None:
        self.connected_.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.got is not None and len(self.data) >= self.want:
            got, self.got = self.got, None
            got.callback(self.data)

    def waitFor(self, count: int) -> Deferred[bytes]:
        self.want = count
        self.got = Deferred()
        if len(self.data) >= count:
            got, self.got = self.got, None
            got.callback(self.data)
        return got if self.got is None else self.got


class InternalsTests(TestCase):
    """
    The private and undocumented names of C{twisted.internet.tcp.Connection} that
    L{sendNow} reads, and what it does with them.
    """

    timeout = 20

    async def _connected(self) -> tuple[Any, _Collect]:
        server = _Collect()
        factory = Factory.forProtocol(lambda: server)
        # cast: Twisted annotates listenTCP's factory as a ServerFactory; any factory works
        port = reactor.listenTCP(0, cast(ServerFactory, factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = _Collect()
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        await connectProtocol(endpoint, client)
        await server.connected_
        self.addCleanup(lambda: server.transport.loseConnection())  # type: ignore[union-attr]
        self.addCleanup(lambda: client.transport.loseConnection())  # type: ignore[union-attr]
        return client.transport, server

    async def test_attributesExist(self) -> None:
        """
        A plain TCP transport has C{_tempDataBuffer}, C{dataBuffer}, C{offset}, C{socket},
        C{TLS}, C{connected} and C{disconnecting}, of the kinds L{nothingQueued} expects.
        """
        transport, _ = await self._connected()
        self.assertIsInstance(transport, tcp.Client)
        self.assertEqual(transport._tempDataBuffer, [])
        self.assertEqual(transport.offset, len(transport.dataBuffer))
        self.assertFalse(transport.TLS)
        self.assertTrue(transport.connected)
        self.assertFalse(transport.disconnecting)
        self.assertTrue(callable(transport.socket.send))

    async def test_writeIsQueued(self) -> None:
        """
        C{transport.write} queues its data in C{_tempDataBuffer} until the reactor's next
        turn: L{nothingQueued} then says so, and L{sendNow} does not overtake it.
        """
        transport, server = await self._connected()
        self.assertTrue(nothingQueued(transport))
        transport.write(b"first ")
        self.assertEqual(transport._tempDataBuffer, [b"first "])
        self.assertFalse(nothingQueued(transport))
        sendNow(transport, b"second")
        self.assertEqual(await server.waitFor(12), b"first second")

    async def test_sendNowSendsAtOnce(self) -> None:
        """
        On an idle transport L{sendNow} hands the data to the socket directly: nothing is
        left queued in the transport.
        """
        transport, server = await self._connected()
        sendNow(transport, b"now")
        self.assertEqual(transport._tempDataBuffer, [])
        self.assertEqual(transport.offset, len(transport.dataBuffer))
        self.assertEqual(await server.waitFor(3), b"now")

    async def test_bufferSizeIsReadSize(self) -> None:
        """
        C{bufferSize} is Twisted's default L{DEFAULT_BUFFER}, and it is how much a TCP
        transport reads at a time: after L{readInLargerPieces} reads are larger.
        """
        transport, server = await self._connected()
        self.assertEqual(server.transport.bufferSize, DEFAULT_BUFFER)  # type: ignore[union-attr]
        readInLargerPieces(server.transport, 200_000)
        self.assertEqual(server.transport.bufferSize, 200_000)  # type: ignore[union-attr]
        sizes: list[int] = []
        received = server.dataReceived

        def recordSizes(data: bytes) -> None:
            sizes.append(len(data))
            received(data)

        server.dataReceived = recordSizes  # type: ignore[method-assign]
        server.transport.stopReading()  # type: ignore[union-attr]
        transport.write(b"x" * 300_000)
        # Let the client's write reach the kernel (bounded: all of it fits on loopback).
        for _ in range(200):
            if nothingQueued(transport):
                break
            await deferLater(0.01)
        server.transport.startReading()  # type: ignore[union-attr]
        await server.waitFor(300_000)
        self.assertLessEqual(max(sizes), 200_000)
        self.assertGreater(max(sizes), DEFAULT_BUFFER)

    async def test_bufferSizeBoundsWriteBuffer(self) -> None:
        """
        C{bufferSize} is also how much unsent output a TCP transport holds before it pauses
        its streaming producer.
        """
        transport, _ = await self._connected()
        readInLargerPieces(transport, 100_000)
        producer = StringTransport()
        transport.registerProducer(producer, True)
        self.addCleanup(transport.unregisterProducer)
        transport.write(b"x" * 100_000)
        self.assertEqual(producer.producerState, "producing")
        transport.write(b"x")
        self.assertEqual(producer.producerState, "paused")

    def test_otherTransports(self) -> None:
        """
        Anything but a plain TCP transport (a test's L{StringTransport}, TLS, a wrapper) is
        written to with its own C{write}.
        """
        transport = StringTransport()
        self.assertFalse(nothingQueued(transport))
        sendNow(transport, b"data")
        self.assertEqual(transport.value(), b"data")
        readInLargerPieces(transport)
        self.assertNotIn("bufferSize", vars(transport))


class _Early(Protocol):
    """
    Reads what is waiting from C{connectionMade} with L{readWaiting}, and records events.
    """

    def __init__(self) -> None:
        self.events: list[object] = []
        self.made: Deferred[None] = Deferred()
        self.received: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.events.append("made")
        readWaiting(self.transport)
        self.events.append("made done")
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.events.append(data)
        if not self.received.called:
            self.received.callback(None)

    def connectionLost(self, reason: object = None) -> None:
        self.events.append("lost")
        self.lost.callback(None)


class ReadWaitingTests(TestCase):
    """
    L{readWaiting} calls a plain TCP transport's C{doRead} from C{connectionMade}: what the
    client sent before the connection was accepted is read at once, and anything else is
    left for the reactor.
    """

    timeout = 20

    def _listen(self) -> tuple[_Early, int]:
        server = _Early()
        # cast: Twisted annotates listenTCP's factory as a ServerFactory; any factory works
        factory = cast(ServerFactory, Factory.forProtocol(lambda: server))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        return server, address.port

    def _client(self, port: int) -> socket.socket:
        # A blocking connect completes in the listen queue, before the reactor accepts.
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(client.close)
        return client

    async def test_arrivedDataReadAtOnce(self) -> None:
        """
        Data the client sent before the connection was accepted reaches C{dataReceived}
        from within C{connectionMade}.
        """
        server, port = self._listen()
        client = self._client(port)
        client.sendall(b"sent before accept")
        await server.made
        self.assertEqual(server.events, ["made", b"sent before accept", "made done"])
        self.assertIsInstance(server.transport, tcp.Server)
        server.transport.loseConnection()  # type: ignore[union-attr]
        await server.lost

    async def test_nothingWaiting(self) -> None:
        """
        With nothing sent yet, nothing happens, and later data comes as usual.
        """
        server, port = self._listen()
        client = self._client(port)
        await server.made
        self.assertEqual(server.events, ["made", "made done"])
        client.sendall(b"later")
        await server.received
        self.assertEqual(server.events, ["made", "made done", b"later"])
        server.transport.loseConnection()  # type: ignore[union-attr]
        await server.lost

    async def test_endOfStreamLeftToReactor(self) -> None:
        """
        A client that closed before its connection was accepted: the end of the stream is
        found again by the reactor, which closes the connection as usual.
        """
        server, port = self._listen()
        client = self._client(port)
        client.close()
        await server.made
        await server.lost
        self.assertEqual(server.events, ["made", "made done", "lost"])

    async def test_resetLeftToReactor(self) -> None:
        """
        A client that reset its connection before it was accepted: the connection is closed
        by the reactor as usual.
        """
        server, port = self._listen()
        client = self._client(port)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        await server.made
        await server.lost
        self.assertEqual(server.events, ["made", "made done", "lost"])

    def test_otherTransportsLeftAlone(self) -> None:
        """
        Any other kind of transport is not read.
        """
        protocol = _Early()
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(protocol.events, ["made", "made done"])


class _Batches(DatagramProtocol):
    """
    Records each batch L{readInBatches} hands it; with C{fail}, it raises after taking the
    first datagram of each batch.
    """

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[tuple[bytes, Any]]] = []
        self.fail = fail
        self.got: Deferred[None] | None = None
        self.want = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        raise AssertionError("a batched port does not call datagramReceived")

    def handle(self, datagrams: Iterator[tuple[bytes, Any]]) -> None:
        batch: list[tuple[bytes, Any]] = []
        self.batches.append(batch)
        try:
            for datagram, addr in datagrams:
                batch.append((datagram, addr))
                if self.fail:
                    raise RuntimeError("handler failed")
        finally:
            if self.got is not None and self.count() >= self.want:
                got, self.got = self.got, None
                # Next turn: the test goes on once this batch is over.
                reactor.callLater(0, got.callback, None)

    def count(self) -> int:
        return sum(len(batch) for batch in self.batches)

    def waitFor(self, count: int) -> Deferred[None]:
        self.want = count
        self.got = Deferred()
        return self.got


class DatagramInternalsTests(TestCase):
    """
    The undocumented names of C{twisted.internet.udp.Port} that L{datagramSender} and
    L{readInBatches} use, and that L{sendtoError} agrees with C{Port.write}.
    """

    timeout = 20

    def _listen(self, protocol: DatagramProtocol, interface: str = "127.0.0.1") -> Any:
        port = reactor.listenUDP(0, protocol, interface=interface, maxPacketSize=65535)  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return port

    def _client(self, family: int = socket.AF_INET) -> socket.socket:
        client = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        client.settimeout(5)
        return client

    def test_udpAttributesExist(self) -> None:
        """
        A listening UDP port has C{socket}, C{maxPacketSize}, C{addressFamily},
        C{_connectedAddr} (None until it is connected) and C{doRead}.
        """
        port = self._listen(DatagramProtocol())
        self.assertIs(type(port), udp.Port)
        self.assertIsInstance(port.socket, socket.socket)
        self.assertEqual(port.maxPacketSize, 65535)
        self.assertEqual(port.addressFamily, socket.AF_INET)
        self.assertIsNone(port._connectedAddr)
        self.assertTrue(callable(port.doRead))

    def test_datagramSender(self) -> None:
        """
        L{datagramSender} is the socket's own C{sendto} for a listening unconnected port,
        and None for a connected port and for any other transport.
        """
        port = self._listen(DatagramProtocol())
        self.assertEqual(datagramSender(port), port.socket.sendto)
        connected = self._listen(DatagramProtocol())
        connected.connect("127.0.0.1", port.getHost().port)
        self.assertIsNone(datagramSender(connected))
        self.assertIsNone(datagramSender(FakeDatagramTransport()))

    def test_sendtoErrorAgreesWithWrite(self) -> None:
        """
        For each error the socket's C{sendto} may raise, L{sendtoError} gives what
        C{udp.Port.write} raises for it (None when C{write} ignores it).
        """
        port = self._listen(DatagramProtocol())
        real = port.socket

        class FailingSocket:
            def __init__(self, error: OSError) -> None:
                self.error = error

            def sendto(self, data: bytes, addr: Any) -> int:
                raise self.error

        for code in (errno.EMSGSIZE, errno.ECONNREFUSED, errno.ENOBUFS, errno.EAGAIN):
            error = OSError(code, errno.errorcode[code])
            port.socket = FailingSocket(error)
            try:
                port.write(b"x", ("127.0.0.1", 9))
            except Exception as e:
                raised: Exception | None = e
            else:
                raised = None
            finally:
                port.socket = real
            expected = sendtoError(error)
            self.assertIs(type(expected), type(raised), errno.errorcode[code])
            if code == errno.EMSGSIZE:
                self.assertIsInstance(expected, MessageLengthError)
            elif expected is not None:
                self.assertIs(expected, raised)

    async def test_batchesInOrder(self) -> None:
        """
        Datagrams that are waiting when the socket becomes readable reach the handler in
        one batch, in order, with the senders' addresses, and never reach
        C{datagramReceived}.
        """
        protocol = _Batches()
        port = self._listen(protocol)
        self.assertTrue(readInBatches(port, protocol.handle))
        port.stopReading()
        client = self._client()
        target = ("127.0.0.1", port.getHost().port)
        for i in range(10):
            client.sendto(b"d%d" % i, target)
        waiting = protocol.waitFor(10)
        port.startReading()
        await waiting
        source = client.getsockname()
        self.assertEqual(protocol.batches, [[(b"d%d" % i, source) for i in range(10)]])

    async def test_batchBound(self) -> None:
        """
        A batch holds at most C{maxBatch} datagrams; the rest come in the next ones.
        """
        protocol = _Batches()
        port = self._listen(protocol)
        readInBatches(port, protocol.handle, maxBatch=4)
        port.stopReading()
        client = self._client()
        for i in range(10):
            client.sendto(b"d%d" % i, ("127.0.0.1", port.getHost().port))
        waiting = protocol.waitFor(10)
        port.startReading()
        await waiting
        self.assertEqual([len(batch) for batch in protocol.batches], [4, 4, 2])

    def test_readAsTaken(self) -> None:
        """
        The handler's iterator reads each datagram from the socket when the handler asks
        for it, so a handler can answer one before the next is read.
        """
        events: list[str] = []
        results: list[Any] = [(b"a", ("127.0.0.1", 1)), (b"b", ("127.0.0.1", 2))]
        results.append(BlockingIOError(errno.EAGAIN, "again"))

        class Socket:
            def recvfrom(self, size: int) -> Any:
                events.append("read")
                result = results.pop(0)
                if isinstance(result, Exception):
                    raise result
                return result

        def handle(datagrams: Iterator[tuple[bytes, Any]]) -> None:
            for datagram, _ in datagrams:
                events.append(f"answer {datagram.decode()}")

        port = self._listen(DatagramProtocol())
        real, port.socket = port.socket, Socket()
        try:
            readInBatches(port, handle)
        finally:
            port.socket = real
        port.doRead()
        self.assertEqual(events, ["read", "answer a", "read", "answer b", "read"])

    async def test_ipv6Addresses(self) -> None:
        """
        On an IPv6 port the addresses are C{(host, port)} pairs, as C{udp.Port.doRead} gives
        them.
        """
        protocol = _Batches()
        port = self._listen(protocol, interface="::1")
        readInBatches(port, protocol.handle)
        client = self._client(socket.AF_INET6)
        client.sendto(b"six", ("::1", port.getHost().port))
        await protocol.waitFor(1)
        self.assertEqual(protocol.batches, [[(b"six", client.getsockname()[:2])]])

    async def test_handlerErrorLogged(self) -> None:
        """
        An exception from the handler is logged, and the port goes on reading.
        """
        protocol = _Batches(fail=True)
        port = self._listen(protocol)
        readInBatches(port, protocol.handle)
        client = self._client()
        target = ("127.0.0.1", port.getHost().port)
        with capturedLogs() as events:
            client.sendto(b"first", target)
            await protocol.waitFor(1)
            client.sendto(b"second", target)
            await protocol.waitFor(2)
        failures = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 2)
        self.assertEqual(failures[0]["log_level"], LogLevel.critical)
        self.flushLoggedErrors(RuntimeError)
        self.assertTrue(port.connected)

    def test_readErrorRaisedAfterBatch(self) -> None:
        """
        A read error Twisted does not ignore is raised from C{doRead} (so that the reactor
        closes the port, as for its own C{doRead}) once the datagrams read before it are
        handled; a C{EAGAIN} just ends the batch.
        """

        class Socket:
            def __init__(self, *results: Any) -> None:
                self.results = list(results)

            def recvfrom(self, size: int) -> Any:
                result = self.results.pop(0)
                if isinstance(result, Exception):
                    raise result
                return result

        sender = ("127.0.0.1", 5000)

        def batchesFrom(*results: Any) -> tuple[Any, _Batches]:
            protocol = _Batches()
            port = self._listen(protocol)
            real = port.socket
            port.socket = Socket(*results)
            try:
                readInBatches(port, protocol.handle)
            finally:
                port.socket = real
            return port, protocol

        port, protocol = batchesFrom((b"a", sender), OSError(errno.EBADF, "Bad file"))
        with self.assertRaises(OSError) as raised:
            port.doRead()
        self.assertEqual(raised.exception.errno, errno.EBADF)
        self.assertEqual(protocol.batches, [[(b"a", sender)]])

        port, protocol = batchesFrom((b"b", sender), BlockingIOError(errno.EAGAIN, "again"))
        port.doRead()
        self.assertEqual(protocol.batches, [[(b"b", sender)]])

    def test_otherTransportsLeftAlone(self) -> None:
        """
        L{readInBatches} leaves anything but a listening unconnected UDP port alone.
        """
        transport = FakeDatagramTransport()
        self.assertFalse(readInBatches(transport, _Batches().handle))
        self.assertNotIn("doRead", vars(transport))
        connected = self._listen(DatagramProtocol())
        connected.connect("127.0.0.1", 9)
        self.assertFalse(readInBatches(connected, _Batches().handle))
        self.assertNotIn("doRead", vars(connected))


def deferLater(seconds: float) -> Deferred[None]:
    return _deferLater(reactor, seconds)


class TrustRootTests(SynchronousTestCase):
    """
    L{PlatformPlusFile} is what C{optionsForClientTLS} takes as a trust root, and Twisted
    calls the method it implements when it builds a client context.
    """

    def test_trustRootUsed(self) -> None:
        """
        Building TLS options with it (C{CertificateOptions}, as C{optionsForClientTLS}
        does) calls its C{_addCACertsToContext} with the context being made (so the file's
        CAs are added to the platform's).
        """
        from twisted.internet import ssl

        from caplab.internals import PlatformPlusFile

        calls: list[object] = []

        class Recording(PlatformPlusFile):
            def _addCACertsToContext(self, context: Any) -> None:
                calls.append(context)
                super()._addCACertsToContext(context)

        ssl.optionsForClientTLS("example.test", trustRoot=Recording(None))
        calls.clear()  # Twisted 24.7 builds that context at once, later ones when connecting
        context = ssl.CertificateOptions(trustRoot=Recording(None)).getContext()
        self.assertEqual(calls, [context])


class _AcceptFails:
    """
    Stands in for a listening socket: C{accept} gives each of C{results} in turn (an
    exception is raised), then C{EAGAIN}.
    """

    def __init__(self, real: Any, *results: Any) -> None:
        self.real = real
        self.results = list(results)

    def accept(self) -> Any:
        import errno

        result = self.results.pop(0) if self.results else OSError(errno.EAGAIN, "again")
        if isinstance(result, Exception):
            raise result
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class PortLogTests(TestCase):
    """
    L{observePortLog}: a L{tcp.Port}'s accept errors go to its C{_logger}, and an instance
    attribute of that name receives them, in the formats L{caplab.listening.AcceptErrors}
    recognises.
    """

    def listening(self) -> tuple[Any, list[dict[str, Any]]]:
        # cast: Twisted annotates listenTCP's factory as a ServerFactory; any factory works
        factory = cast(ServerFactory, Factory.forProtocol(Protocol))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        events: list[dict[str, Any]] = []
        self.assertTrue(observePortLog(port, events.append))
        return port, events

    def test_emfileRecovery(self) -> None:
        """
        C{EMFILE}: Twisted frees its reserved descriptor, accepts and closes the waiting
        connection, and logs the three steps to the port's own logger.
        """
        import errno
        import socket

        port, events = self.listening()
        real = port.socket
        waiting = socket.socket()
        port.socket = _AcceptFails(
            real, OSError(errno.EMFILE, "EMFILE"), (waiting, ("127.0.0.1", 5))
        )
        try:
            port.doRead()
        finally:
            port.socket = real
        self.assertEqual(
            [event["log_format"] for event in events],
            [
                "EMFILE encountered; releasing reserved file descriptor.",
                "EMFILE recovery: Closed socket from {address}",
                "Re-reserving EMFILE recovery file descriptor.",
            ],
        )
        self.assertEqual(waiting.fileno(), -1)  # closed

    def test_otherAcceptError(self) -> None:
        """
        Other accept errors are one event, with the error's name in C{acceptError}.
        """
        import errno

        port, events = self.listening()
        real = port.socket
        port.socket = _AcceptFails(real, OSError(errno.ENOBUFS, "ENOBUFS"))
        try:
            port.doRead()
        finally:
            port.socket = real
        self.assertEqual(
            [(e["log_format"], e["acceptError"]) for e in events],
            [("Could not accept new connection ({acceptError})", "ENOBUFS")],
        )

    def test_otherPorts(self) -> None:
        """
        Any other port is left alone.
        """
        self.assertFalse(observePortLog(object(), print))
