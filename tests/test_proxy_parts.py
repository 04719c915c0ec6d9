"""
Tests for the proxy's smaller parts: L{caplab.proxy.connect} (how origins are reached),
L{caplab.proxy.options}, L{caplab.proxy.body}, L{caplab.proxy.sendnow},
L{caplab.proxy.tunnel}'s failures (the wiring is tested in tests/test_wiring.py).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IReactorPluggableNameResolver
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from caplab.internals import sendNow
from caplab.proxy.body import StreamedBody
from caplab.proxy.cache.sinks import Discard
from caplab.proxy.channel import CaplabProxy
from caplab.proxy.connect import EndpointConnector, parseResolve
from caplab.proxy.options import ProxyOptions, portList


@implementer(IReactorPluggableNameResolver)
class ResolvingMemoryReactor(MemoryReactorClock):
    """
    A memory reactor with a name resolver, which L{HostnameEndpoint} asks for (Twisted's own
    L{MemoryReactorClock} provides one only from Twisted 25 on; 24.7 warns without it).
    """

    nameResolver: Any = None  # no name is resolved in these tests


class ConnectorTests(SynchronousTestCase):
    """
    L{EndpointConnector}: which endpoint reaches a host.
    """

    def test_endpointKinds(self) -> None:
        """
        IPv4 and IPv6 addresses connect directly; names go through the resolver, unless
        C{resolve} maps them to an address.
        """
        connector = EndpointConnector(
            ResolvingMemoryReactor(), resolve={"origin.test": "127.0.0.1", "six.test": "::1"}
        )
        self.assertIsInstance(connector.endpoint("192.0.2.1", 80), TCP4ClientEndpoint)
        self.assertIsInstance(connector.endpoint("2001:db8::1", 80), TCP6ClientEndpoint)
        self.assertIsInstance(connector.endpoint("example.com", 80), HostnameEndpoint)
        self.assertIsInstance(connector.endpoint("origin.test", 80), TCP4ClientEndpoint)
        self.assertIsInstance(connector.endpoint("six.test", 80), TCP6ClientEndpoint)

    def test_resolvedConnection(self) -> None:
        """
        A mapped name is connected to at its address and port.
        """
        reactor = MemoryReactorClock()
        connector = EndpointConnector(reactor, resolve={"origin.test": "127.0.0.1"})
        from twisted.internet.protocol import Protocol

        from caplab.proxy.hooks import Target

        connector.connect(Target("http", "origin.test", 8000, b"/"), Protocol())
        host, port = reactor.tcpClients[0][:2]
        self.assertEqual((host, port), ("127.0.0.1", 8000))

    def test_tlsWrapped(self) -> None:
        """
        A TLS endpoint verifies the origin's name (the options are made for the host).
        """
        connector = EndpointConnector(ResolvingMemoryReactor())
        endpoint = connector.endpoint("example.com", 443, tls=True)
        self.assertNotIsInstance(endpoint, HostnameEndpoint)
        self.assertIn("example.com", connector._tlsOptions)

    def test_parseResolve(self) -> None:
        """
        C{HOST=ADDRESS}: the host normalised, the address checked.
        """
        self.assertEqual(
            parseResolve("Origin.Caplab.TEST=127.0.0.1"), ("origin.caplab.test", "127.0.0.1")
        )
        self.assertEqual(parseResolve("six.test=[::1]"), ("six.test", "::1"))
        for bad in ("nohost", "=127.0.0.1", "h=notanaddress"):
            self.assertRaises(ValueError, parseResolve, bad)


class Options(ProxyOptions, usage.Options):
    pass


class OptionsTests(SynchronousTestCase):
    """
    L{ProxyOptions}.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        options.checkProxyOptions()
        return options

    def test_defaults(self) -> None:
        """
        By default: no extra networks, CONNECT to 443 only, timeouts 30/60/60 s, no
        X-Forwarded-For, no access log.
        """
        options = self.parse()
        self.assertEqual(options["allow"], [])
        self.assertEqual(options["connect-ports"], frozenset({443}))
        self.assertEqual(
            (options["header-timeout"], options["keep-alive-timeout"], options["upstream-timeout"]),
            (30.0, 60.0, 60.0),
        )
        self.assertFalse(options["x-forwarded-for"])
        self.assertIsNone(options["access-log"])

    def test_repeatable(self) -> None:
        """
        C{--allow} and C{--resolve} may be given several times.
        """
        options = self.parse(
            "--allow", "10.0.0.0/8", "--allow", "2001:db8::/32", "--resolve", "a.test=127.0.0.1",
            "--resolve", "b.test=::1", "--connect-ports", "443, 8443",
        )  # fmt: skip
        self.assertEqual(
            options["allow"],
            [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")],
        )
        self.assertEqual(options["resolve"], {"a.test": "127.0.0.1", "b.test": "::1"})
        self.assertEqual(options["connect-ports"], frozenset({443, 8443}))

    def test_badValues(self) -> None:
        """
        Bad networks, resolve entries, ports and CA files are usage errors.
        """
        for argv in (
            ["--allow", "10.0.0.0/33"],
            ["--resolve", "a.test"],
            ["--connect-ports", "0"],
            ["--connect-ports", "443,https"],
            ["--upstream-ca", "/nonexistent/ca.pem"],
            ["--header-timeout", "-1"],
        ):
            self.assertRaises((usage.UsageError, ValueError), self.parse, *argv)

    def test_portList(self) -> None:
        """
        L{portList} reads comma-separated ports.
        """
        self.assertEqual(portList("443"), frozenset({443}))
        self.assertRaises(ValueError, portList, "")


class StreamedBodyTests(SynchronousTestCase):
    """
    L{StreamedBody}.
    """

    def test_bufferedUntilStreaming(self) -> None:
        """
        Data before C{startStreaming} is kept (and the client paused), then handed over
        with the end; the client resumes.
        """
        reading = Reading()
        body = StreamedBody(reading, 5)
        body.dataReceived(b"abc")
        self.assertEqual(reading.paused, 1)
        body.dataReceived(b"de")
        body.finished(True)
        got: list[Any] = []

        class Sink:
            def bodyStarted(self, producer: Any) -> None:
                got.append(("started", producer))

            def bodyData(self, data: bytes) -> None:
                got.append(data)

            def bodyDone(self, complete: bool) -> None:
                got.append(complete)

        body.startStreaming(Sink())
        self.assertEqual(got, [("started", body), b"abc", b"de", True])
        self.assertEqual(body.received, 5)
        self.assertEqual(reading.paused, 0)

    def test_upstreamBackPressure(self) -> None:
        """
        The upstream leg pausing the body pauses reading from the client, once however often
        it is asked, and resuming undoes it; C{onStart} is called when streaming starts.
        """
        reading = Reading()
        started: list[bool] = []
        body = StreamedBody(reading, None, lambda: started.append(True))

        body.startStreaming(Discard())
        self.assertEqual(started, [True])
        body.pauseProducing()
        body.pauseProducing()
        self.assertEqual(reading.paused, 1)
        body.resumeProducing()
        self.assertEqual(reading.paused, 0)


class Reading:
    """
    Counts pauses of reading from the client, as the channel does.
    """

    def __init__(self) -> None:
        self.paused = 0

    def pauseReading(self) -> None:
        self.paused += 1

    def resumeReading(self) -> None:
        self.paused -= 1


class SendNowTests(SynchronousTestCase):
    """
    L{sendNow} on transports other than plain TCP.
    """

    def test_otherTransports(self) -> None:
        """
        Any transport that is not a plain TCP connection gets an ordinary write.
        """
        transport = StringTransport()
        sendNow(transport, b"data")
        self.assertEqual(transport.value(), b"data")


class TunnelFailureTests(SynchronousTestCase):
    """
    A CONNECT whose origin cannot be reached.
    """

    def test_refusedAndUnknown(self) -> None:
        """
        A refused connection or an unknown name is a 502 that names the target.
        """
        from caplab.proxy.channel import ProxySettings
        from caplab.proxy.factory import ProxyFactory
        from caplab.proxy.tunnel import TunnelOpener

        for failure, text in (
            (ConnectionRefusedError(), b"refused"),
            (DNSLookupError(), b"not found"),
        ):

            class Endpoint:
                def __init__(self, error: Exception) -> None:
                    self.error = error

                def connect(self, factory: Any) -> Deferred[Any]:
                    return fail(Failure(self.error))

            class Connector:
                def __init__(self, error: Exception) -> None:
                    self.error = error

                def endpoint(self, host: str, port: int) -> Any:
                    return Endpoint(self.error)

            reactor = MemoryReactorClock()
            settings = ProxySettings(fetcher=None, clock=reactor)  # type: ignore[arg-type]
            factory = ProxyFactory(settings)
            settings.tunnels = TunnelOpener(Connector(failure), reactor)
            channel = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
            assert isinstance(channel, CaplabProxy)
            transport = StringTransport(
                peerAddress=IPv4Address("TCP", "127.0.0.1", 1),
                hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            )
            channel.makeConnection(transport)
            channel.dataReceived(b"CONNECT origin.test:443 HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = transport.value()
            self.assertTrue(reply.startswith(b"HTTP/1.1 502 "), reply)
            self.assertIn(text, reply)
            self.assertIn(b"origin.test", reply)
