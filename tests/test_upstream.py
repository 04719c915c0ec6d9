"""
Tests for L{caplab.proxy.upstream}: parent proxy URLs, next-hop choice, CONNECT through a
parent.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from caplab.proxy.auth import basicCredentials
from caplab.proxy.hooks import (
    IRequestBody,
    Target,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from caplab.proxy.upstream import (
    ChainingConnector,
    ChainingFetcher,
    ConnectThroughProxyEndpoint,
    NextHop,
    ParentProxy,
    UpstreamRouter,
    authority,
    parseProxyURL,
)

PARENT = ParentProxy("parent.example", 3128, basicCredentials("u", "p@ss"))


class ParseTests(SynchronousTestCase):
    """
    C{--upstream-proxy} URLs.
    """

    def test_plain(self) -> None:
        """
        C{http://host:port} gives host and port, no credentials.
        """
        self.assertEqual(
            parseProxyURL("http://Parent.Example:3128"), ParentProxy("parent.example", 3128)
        )
        self.assertIsNone(parseProxyURL("http://127.0.0.1:8080/").authorization)

    def test_credentials(self) -> None:
        """
        Percent-encoded user and password become a Basic C{Proxy-Authorization} value, which
        no repr shows.
        """
        parent = parseProxyURL("http://al%40ice:p%3Ass%40word@[::1]:3128")
        self.assertEqual(parent.host, "::1")
        self.assertEqual(parent.address, "[::1]:3128")
        self.assertEqual(parent.authorization, basicCredentials("al@ice", "p:ss@word"))
        self.assertNotIn("Basic", repr(parent))
        assert parent.authorization is not None
        self.assertNotIn(parent.authorization.decode(), repr(parent))

    def test_refused(self) -> None:
        """
        Other schemes, a missing port or host, a path, and junk are refused without echoing
        the password.
        """
        for url, why in [
            ("https://h:1", "only http://"),
            ("socks5://h:1", "only http://"),
            ("http://h", "port"),
            ("http://:8080", "no host"),
            ("http://h:1/path", "no path"),
            ("http://u:secretpw@h:99999", "not an http://"),
            ("http://u:secretpw@h", "port"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseProxyURL(url)
            self.assertIn(why, str(caught.exception))
            self.assertNotIn("secretpw", str(caught.exception))


class RouterTests(SynchronousTestCase):
    """
    L{UpstreamRouter}: the next hop and the request head for it.
    """

    def test_noParent(self) -> None:
        """
        Without a parent every target is reached directly.
        """
        router = UpstreamRouter()
        self.assertEqual(
            router.nextHop(Target("http", "a.example", 80, b"/")), NextHop("a.example", 80)
        )

    def test_parent(self) -> None:
        """
        With a parent every target goes through it, except C{--no-upstream-for} domains and
        their subdomains (and addresses).
        """
        router = UpstreamRouter(PARENT, ["intranet.example", "*.lan", "10.0.0.1"])
        via = NextHop("parent.example", 3128, PARENT)
        self.assertEqual(router.nextHop(Target("http", "www.example.org", 80, b"/")), via)
        self.assertEqual(router.nextHop(Target("https", "x.example.org", 443, b"")), via)
        self.assertEqual(
            router.nextHop(Target("http", "wiki.intranet.example", 8000, b"/")),
            NextHop("wiki.intranet.example", 8000),
        )
        self.assertEqual(
            router.nextHop(Target("http", "nas.lan", 80, b"/")), NextHop("nas.lan", 80)
        )
        self.assertEqual(router.nextHop(Target("http", "lan", 80, b"/")), via)
        self.assertEqual(
            router.nextHop(Target("http", "10.0.0.1", 80, b"/")), NextHop("10.0.0.1", 80)
        )

    def test_badBypass(self) -> None:
        """
        A C{--no-upstream-for} entry that is not a domain is a ValueError.
        """
        self.assertRaises(ValueError, UpstreamRouter, PARENT, ["http://x/"])

    def test_requestHeadDirect(self) -> None:
        """
        To an origin: origin-form, and any C{Proxy-Authorization} dropped.
        """
        router = UpstreamRouter(PARENT, ["a.example"])
        request = UpstreamRequest(
            b"GET",
            Target("http", "a.example", 80, b"/x?y"),
            [(b"Accept", b"*/*"), (b"proxy-authorization", b"Basic Y2xpZW50OnNlY3JldA==")],
        )
        hop = router.nextHop(request.target)
        self.assertEqual(router.requestHead(hop, request), (b"/x?y", [(b"Accept", b"*/*")]))

    def test_requestHeadParent(self) -> None:
        """
        To a parent: absolute-form, with the parent's credentials instead of the client's.
        """
        router = UpstreamRouter(PARENT)
        request = UpstreamRequest(
            b"GET",
            Target("http", "b.example", 8080, b"/x"),
            [(b"Proxy-Authorization", b"Basic Y2xpZW50OnNlY3JldA=="), (b"Accept", b"*/*")],
        )
        target, headers = router.requestHead(router.nextHop(request.target), request)
        self.assertEqual(target, b"http://b.example:8080/x")
        self.assertEqual(
            headers, [(b"Accept", b"*/*"), (b"Proxy-Authorization", PARENT.authorization)]
        )
        anonymous = UpstreamRouter(ParentProxy("p", 1))
        _, headers = anonymous.requestHead(anonymous.nextHop(request.target), request)
        self.assertEqual(headers, [(b"Accept", b"*/*")])

    def test_authority(self) -> None:
        """
        CONNECT authorities bracket IPv6.
        """
        self.assertEqual(authority("::1", 443), b"[::1]:443")
        self.assertEqual(authority("a.example", 8443), b"a.example:8443")


class Recorder(Protocol):
    """
    The protocol a tunnel user would put on the connection: records what it sees.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: list[Any] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.append(reason)


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.readLost = False

    def readConnectionLost(self) -> None:
        self.readLost = True

    def writeConnectionLost(self) -> None:
        pass


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    A client endpoint that connects at once to a L{StringTransport}, or never (C{hang}).
    """

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.transport = StringTransport()
        self.protocol: Any = None
        self.cancelled = False

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        if self.hang:

            def cancel(d: Deferred[Any]) -> None:
                self.cancelled = True

            return Deferred(cancel)
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 3128))
        self.protocol.makeConnection(self.transport)
        return succeed(self.protocol)


def recorderFactory(protocol: Protocol) -> Factory:
    return Factory.forProtocol(lambda: protocol)


class ConnectEndpointTests(SynchronousTestCase):
    """
    L{ConnectThroughProxyEndpoint} on in-memory transports.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.parentEndpoint = FakeEndpoint()
        self.endpoint = ConnectThroughProxyEndpoint(
            self.parentEndpoint, "origin.example", 443, PARENT, self.clock, timeout=10
        )
        self.inner = Recorder()
        self.d = self.endpoint.connect(recorderFactory(self.inner))

    def answer(self, data: bytes) -> None:
        self.parentEndpoint.protocol.dataReceived(data)

    def test_request(self) -> None:
        """
        The parent is sent C{CONNECT host:port} with its credentials.
        """
        assert PARENT.authorization is not None
        self.assertEqual(
            self.parentEndpoint.transport.value(),
            b"CONNECT origin.example:443 HTTP/1.1\r\nHost: origin.example:443\r\n"
            b"Proxy-Authorization: " + PARENT.authorization + b"\r\n\r\n",
        )
        self.assertNoResult(self.d)

    def test_established(self) -> None:
        """
        On 200 the inner protocol gets the connection and every byte after the head, the
        head split over reads; what it writes goes to the parent connection.
        """
        self.answer(b"HTTP/1.1 200 Connection established\r")
        self.assertNoResult(self.d)
        self.answer(b"\nVia: 1.1 parent\r\n\r\nserver hello")
        self.assertIs(self.successResultOf(self.d), self.inner)
        self.assertEqual(self.inner.received, [b"server hello"])
        self.parentEndpoint.transport.clear()
        assert self.inner.transport is not None
        self.inner.transport.write(b"client hello")
        self.assertEqual(self.parentEndpoint.transport.value(), b"client hello")
        self.answer(b"more")
        self.assertEqual(self.inner.received, [b"server hello", b"more"])
        self.parentEndpoint.protocol.connectionLost(None)
        self.assertEqual(len(self.inner.lost), 1)
        self.clock.advance(60)  # the timeout was cancelled
        self.assertFalse(self.parentEndpoint.transport.disconnecting)

    def test_refused(self) -> None:
        """
        A non-2xx answer (407 here) is a 502 naming the parent and its status; the connection
        is aborted and the inner protocol never connected.
        """
        self.answer(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
        error = self.failureResultOf(self.d, UpstreamError).value
        self.assertEqual(error.code, 502)
        self.assertIn("parent.example:3128", error.detail)
        self.assertIn("407 Proxy Authentication Required", error.detail)
        self.assertTrue(self.parentEndpoint.transport.disconnected)
        self.assertIsNone(self.inner.transport)

    def test_malformed(self) -> None:
        """
        A response that is not HTTP, or a head too long, is a 502.
        """
        self.answer(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.assertEqual(self.failureResultOf(self.d, UpstreamError).value.code, 502)
        other = FakeEndpoint()
        d = ConnectThroughProxyEndpoint(other, "o", 1, PARENT, self.clock).connect(
            recorderFactory(Recorder())
        )
        other.protocol.dataReceived(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 5000)
        self.assertIn("over-long", self.failureResultOf(d, UpstreamError).value.detail)

    def test_timeout(self) -> None:
        """
        A parent that does not answer within the timeout is a 504.
        """
        self.clock.advance(9)
        self.assertNoResult(self.d)
        self.clock.advance(1)
        self.assertEqual(self.failureResultOf(self.d, UpstreamError).value.code, 504)
        self.assertTrue(self.parentEndpoint.transport.disconnected)

    def test_closedBeforeAnswer(self) -> None:
        """
        A parent that closes before answering is a 502.
        """
        self.parentEndpoint.protocol.connectionLost(None)
        error = self.failureResultOf(self.d, UpstreamError).value
        self.assertIn("closed the connection", error.detail)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelDuringConnect(self) -> None:
        """
        Cancelling while the CONNECT is unanswered aborts the connection to the parent.
        """
        self.d.cancel()
        self.failureResultOf(self.d)
        self.assertTrue(self.parentEndpoint.transport.disconnected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelBeforeConnected(self) -> None:
        """
        Cancelling before the parent's TCP connection is up cancels that attempt.
        """
        hanging = FakeEndpoint(hang=True)
        d = ConnectThroughProxyEndpoint(hanging, "o", 1, PARENT, self.clock).connect(
            recorderFactory(Recorder())
        )
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(hanging.cancelled)

    def test_halfClose(self) -> None:
        """
        An inner protocol that handles half-close gets C{readConnectionLost}.
        """
        endpoint = FakeEndpoint()
        inner = HalfCloser()
        d = ConnectThroughProxyEndpoint(endpoint, "o", 1, PARENT, self.clock).connect(
            recorderFactory(inner)
        )
        endpoint.protocol.dataReceived(b"HTTP/1.0 200 OK\r\n\r\n")
        self.successResultOf(d)
        self.assertTrue(IHalfCloseableProtocol.providedBy(endpoint.protocol))
        endpoint.protocol.readConnectionLost()
        self.assertTrue(inner.readLost)


class FakeParent(Protocol):
    """
    A minimal parent proxy on loopback: answers one CONNECT with 200 (or 407 without the
    expected credentials), then echoes upper-cased bytes as if it were the origin.
    """

    def __init__(self, expected: bytes | None) -> None:
        self.expected = expected
        self.head = b""
        self.open = False

    def dataReceived(self, data: bytes) -> None:
        if self.open:
            self.transport.write(data.upper())  # type: ignore[union-attr]
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        head, rest = self.head.split(b"\r\n\r\n", 1)
        self.factory.heads.append(head)
        if self.expected is not None and b"Proxy-Authorization: " + self.expected not in head:
            self.transport.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.open = True
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")  # type: ignore[union-attr]
        if rest:
            self.dataReceived(rest)


class Echoed(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.data.endswith(b"\n"):
            self.done.callback(self.data)


class LoopbackTests(TestCase):
    """
    Through a real (fake) parent on loopback.
    """

    timeout = 20

    def startParent(self, expected: bytes | None) -> Any:
        from twisted.internet import reactor

        factory = Factory.forProtocol(lambda: FakeParent(expected))
        factory.heads = []  # type: ignore[attr-defined]
        d = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)

        def listening(port: Any) -> Any:
            self.addCleanup(port.stopListening)
            return factory, port.getHost().port

        return d.addCallback(listening)

    async def test_tunnel(self) -> None:
        """
        Bytes written by the inner protocol reach the far side of the parent's tunnel and the
        answer comes back.
        """
        from twisted.internet import reactor

        factory, port = await self.startParent(PARENT.authorization)
        endpoint = ConnectThroughProxyEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), "origin.example", 443, PARENT, reactor
        )
        echoed = Echoed()
        protocol = await endpoint.connect(Factory.forProtocol(lambda: echoed))
        self.assertIs(protocol, echoed)
        assert echoed.transport is not None
        echoed.transport.write(b"hello through the parent\n")
        self.assertEqual(await echoed.done, b"HELLO THROUGH THE PARENT\n")
        self.assertTrue(factory.heads[0].startswith(b"CONNECT origin.example:443 HTTP/1.1"))
        echoed.transport.loseConnection()

    async def test_wrongCredentials(self) -> None:
        """
        A parent answering 407 is a 502 for the caller.
        """
        from twisted.internet import reactor

        _, port = await self.startParent(basicCredentials("other", "x"))
        endpoint = ConnectThroughProxyEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), "origin.example", 443, PARENT, reactor
        )
        with self.assertRaises(UpstreamError) as caught:
            await endpoint.connect(Factory.forProtocol(Echoed))
        self.assertIn("407", caught.exception.detail)

    async def test_parentUnreachable(self) -> None:
        """
        A parent that refuses the TCP connection is a 502 naming it.
        """
        from twisted.internet import reactor

        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
        port = listening.getHost().port
        await listening.stopListening()
        endpoint = ConnectThroughProxyEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            "o",
            1,
            ParentProxy("127.0.0.1", port),
            reactor,
        )
        with self.assertRaises(UpstreamError) as caught:
            await endpoint.connect(Factory.forProtocol(Echoed))
        self.assertIn(f"cannot reach parent proxy 127.0.0.1:{port}", caught.exception.detail)


class RecordingFetcher:
    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []
        self.pending: list[Deferred[UpstreamResponse]] = []

    def fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        self.requests.append(request)
        d: Deferred[UpstreamResponse] = Deferred()
        self.pending.append(d)
        return d


class ChainingFetcherTests(SynchronousTestCase):
    """
    L{ChainingFetcher} rewrites requests for the parent.
    """

    def test_viaParent(self) -> None:
        """
        A plain request for the parent goes out in absolute form with the parent's
        credentials; host and port stay the origin's.
        """
        inner = RecordingFetcher()
        fetcher = ChainingFetcher(inner, UpstreamRouter(PARENT, ["lan"]))
        request = UpstreamRequest(
            b"GET", Target("http", "a.example", 80, b"/p?q"), [(b"Host", b"a.example")]
        )
        fetcher.fetch(request, None)
        [sent] = inner.requests
        self.assertEqual(sent.target, Target("http", "a.example", 80, b"http://a.example/p?q"))
        self.assertEqual(
            sent.headers, [(b"Host", b"a.example"), (b"Proxy-Authorization", PARENT.authorization)]
        )
        self.assertEqual(request.target.path, b"/p?q")  # the original is left alone

    def test_parentRefusesCredentials(self) -> None:
        """
        A 407 from the parent is about this proxy's credentials: the client gets a 502
        naming the parent, and the 407's body is thrown away.
        """
        delivered: list[object] = []
        inner = RecordingFetcher()
        fetcher = ChainingFetcher(inner, UpstreamRouter(PARENT))
        d = fetcher.fetch(UpstreamRequest(b"GET", Target("http", "a", 80, b"/"), []), None)
        inner.pending[0].callback(UpstreamResponse(407, b"Proxy Auth", [], delivered.append))
        error = self.failureResultOf(d, UpstreamError).value
        self.assertEqual(error.code, 502)
        self.assertIn("parent proxy parent.example:3128 refused", error.detail)
        self.assertEqual(len(delivered), 1)
        response = UpstreamResponse(200, b"OK", [], delivered.append)
        d = fetcher.fetch(UpstreamRequest(b"GET", Target("http", "a", 80, b"/"), []), None)
        inner.pending[1].callback(response)
        self.assertIs(self.successResultOf(d), response)

    def test_direct(self) -> None:
        """
        Requests reached directly (no parent, a bypass domain) are passed on unchanged.
        """
        inner = RecordingFetcher()
        request = UpstreamRequest(b"GET", Target("http", "x.lan", 80, b"/"), [])
        ChainingFetcher(inner, UpstreamRouter(PARENT, ["lan"])).fetch(request, None)
        ChainingFetcher(inner, UpstreamRouter()).fetch(request, None)
        self.assertEqual(inner.requests, [request, request])


class FailingEndpoint:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        return fail(self.error)


class RecordingConnector:
    """
    Stands in for C{EndpointConnector}: records the endpoints asked for.
    """

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, bool]] = []
        self.connected: list[Target] = []
        self.tls: list[str] = []
        self.resolve = {"x": "y"}

    def tlsOptions(self, host: str) -> Any:
        self.tls.append(host)
        return ssl.optionsForClientTLS(host)

    def endpoint(self, host: str, port: int, tls: bool = False) -> FakeEndpoint:
        self.asked.append((host, port, tls))
        return FakeEndpoint()

    def connect(self, target: Target, protocol: Protocol) -> Deferred[object]:
        self.connected.append(target)
        return Deferred()


class FailingConnector(RecordingConnector):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def endpoint(self, host: str, port: int, tls: bool = False) -> Any:
        return FailingEndpoint(self.error)


class ChainingConnectorTests(SynchronousTestCase):
    """
    L{ChainingConnector} routes connections through the parent.
    """

    def setUp(self) -> None:
        self.inner = RecordingConnector()
        self.connector = ChainingConnector(self.inner, UpstreamRouter(PARENT, ["lan"]), Clock())

    def test_tunnelEndpoint(self) -> None:
        """
        A tunnel's endpoint is a CONNECT through the parent's endpoint.
        """
        endpoint = self.connector.endpoint("a.example", 443)
        assert isinstance(endpoint, ConnectThroughProxyEndpoint)
        self.assertEqual(
            (endpoint.host, endpoint.port, endpoint.parent), ("a.example", 443, PARENT)
        )
        self.assertEqual(self.inner.asked, [("parent.example", 3128, False)])

    def test_directEndpoint(self) -> None:
        """
        A bypass domain's endpoint is the wrapped connector's.
        """
        self.assertIsInstance(self.connector.endpoint("nas.lan", 443), FakeEndpoint)
        self.assertEqual(self.inner.asked, [("nas.lan", 443, False)])
        self.assertEqual(self.connector.resolve, {"x": "y"})  # other attributes pass through

    def test_plainToParent(self) -> None:
        """
        The forwarder's connection for an http target goes to the parent itself.
        """
        d = self.connector.connect(Target("http", "a.example", 80, b"/"), Protocol())
        self.assertEqual(self.inner.asked, [("parent.example", 3128, False)])
        self.successResultOf(d)

    def test_httpsThroughParent(self) -> None:
        """
        The forwarder's connection for an https target is TLS inside a CONNECT tunnel.
        """
        endpoint = self.connector.endpoint("a.example", 443, tls=True)
        self.assertEqual(type(endpoint).__name__, "_WrapperEndpoint")
        self.assertEqual(self.inner.asked, [("parent.example", 3128, False)])
        self.assertEqual(self.inner.tls, ["a.example"])  # the wrapped connector's options

    def test_parentUnreachable(self) -> None:
        """
        A failed connection to the parent is an error naming the parent (504 for a
        timeout), not the origin.
        """
        for error, code in [(ConnectionRefusedError(), 502), (ConnectTimeoutError(), 504)]:
            inner = FailingConnector(error)
            connector = ChainingConnector(inner, UpstreamRouter(PARENT), Clock())
            d = connector.connect(Target("http", "a.example", 80, b"/"), Protocol())
            failure = self.failureResultOf(d, UpstreamError).value
            self.assertEqual(failure.code, code)
            self.assertIn("parent proxy parent.example:3128", failure.detail)

    def test_directConnect(self) -> None:
        """
        A bypass domain's connection is the wrapped connector's.
        """
        target = Target("http", "nas.lan", 80, b"/")
        self.connector.connect(target, Protocol())
        self.assertEqual(self.inner.connected, [target])
