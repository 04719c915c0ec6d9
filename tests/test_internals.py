"""
Pins every Twisted internal that L{caplab.internals} relies on, on real loopback TCP
connections: if a Twisted release renames or changes one of them, a test here fails by name.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from caplab.internals import nothingQueued, observePortLog, sendNow


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
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        client = _Collect()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
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

    def test_otherTransports(self) -> None:
        """
        Anything but a plain TCP transport (a test's L{StringTransport}, TLS, a wrapper) is
        written to with its own C{write}.
        """
        transport = StringTransport()
        self.assertFalse(nothingQueued(transport))
        sendNow(transport, b"data")
        self.assertEqual(transport.value(), b"data")


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
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")  # type: ignore[attr-defined]
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
