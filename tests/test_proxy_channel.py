"""
Tests for L{caplab.proxy.channel} and L{caplab.proxy.factory}: the client side of the proxy on
a L{StringTransport}, with a fake fetcher, policy, authenticator and a L{Clock}.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.accesslog import AccessLog
from caplab.proxy.cache.sinks import Discard
from caplab.proxy.channel import ProxySettings
from caplab.proxy.factory import ProxyFactory
from caplab.proxy.hooks import (
    PageRequest,
    PageResponse,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
    Verdict,
)

PROXY = IPv4Address("TCP", "127.0.0.1", 8080)
CLIENT = IPv4Address("TCP", "127.0.0.1", 50000)


class Producer:
    def __init__(self) -> None:
        self.state = "producing"

    def pauseProducing(self) -> None:
        self.state = "paused"

    def resumeProducing(self) -> None:
        self.state = "producing"

    def stopProducing(self) -> None:
        self.state = "stopped"


class FakeFetcher:
    """
    Records each fetch and answers it when the test says so.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[UpstreamRequest, Any, Deferred[UpstreamResponse]]] = []
        self.cancelled = 0

    def fetch(self, request: UpstreamRequest, body: Any) -> Deferred[UpstreamResponse]:
        def cancel(d: Deferred[UpstreamResponse]) -> None:
            self.cancelled += 1

        d: Deferred[UpstreamResponse] = Deferred(cancel)
        self.calls.append((request, body, d))
        return d

    def answer(
        self,
        code: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: list[bytes] | None = None,
        complete: bool = True,
        cacheStatus: str | None = None,
    ) -> Producer:
        producer = Producer()

        def deliverBody(sink: Any) -> None:
            sink.bodyStarted(producer)
            for data in body or []:
                sink.bodyData(data)
            sink.bodyDone(complete)

        response = UpstreamResponse(
            code, b"OK", headers if headers is not None else [], deliverBody, cacheStatus
        )
        self.calls[-1][2].callback(response)
        return producer


class Harness(SynchronousTestCase):
    """
    Builds a proxy channel connected to a L{StringTransport}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.fetcher = FakeFetcher()
        self.logged: list[tuple[Any, ...]] = []

    def settings(self, **kwargs: Any) -> ProxySettings:
        return ProxySettings(fetcher=self.fetcher, clock=self.clock, **kwargs)

    def connect(self, client: Any = CLIENT, **kwargs: Any) -> tuple[Any, StringTransport]:
        accessLog = AccessLog("-", self.clock)
        accessLog.record = lambda *a, **k: self.logged.append(a)  # type: ignore[method-assign]
        self.factory = ProxyFactory(self.settings(**kwargs), accessLog)
        protocol = self.factory.buildProtocol(client)
        assert protocol is not None
        transport = StringTransport(hostAddress=PROXY, peerAddress=client)
        protocol.makeConnection(transport)
        return protocol, transport


class ForwardingTests(Harness):
    """
    Plain requests go to the fetcher, and responses come back.
    """

    def test_getForwarded(self) -> None:
        """
        An absolute-form GET becomes an upstream request with its target, end-to-end headers,
        C{Host} from the target and a C{Via}; the response is relayed with its headers.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"GET http://Example.COM:8000/a?b HTTP/1.1\r\nHost: wrong\r\nAccept: x\r\n"
            b"Accept: y\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\n"
            b"Connection: X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\n\r\n"
        )
        [(request, body, d)] = self.fetcher.calls
        self.assertEqual(request.method, b"GET")
        self.assertEqual(request.target.uri, "http://example.com:8000/a?b")
        names = [name.lower() for name, _ in request.headers]
        self.assertEqual(dict(request.headers)[b"Host"], b"example.com:8000")
        self.assertEqual([v for n, v in request.headers if n == b"Accept"], [b"x", b"y"])
        for hop in (b"proxy-connection", b"proxy-authorization", b"connection", b"x-hop", b"te"):
            self.assertNotIn(hop, names)
        self.assertIn(b"via", names)
        self.fetcher.answer(200, [(b"Content-Length", b"2"), (b"X-R", b"1")], [b"hi"])
        reply = transport.value()
        self.assertTrue(reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply)
        self.assertIn(b"\r\nX-R: 1\r\n", reply)
        self.assertIn(b"\r\nVia: 1.1 caplab\r\n", reply)
        self.assertTrue(reply.endswith(b"\r\n\r\nhi"))
        self.assertFalse(transport.disconnecting)

    def test_keepAlive(self) -> None:
        """
        A second request on the same connection is served after the first.
        """
        channel, transport = self.connect()
        for path in (b"/1", b"/2"):
            channel.dataReceived(b"GET http://h" + path + b" HTTP/1.1\r\nHost: h\r\n\r\n")
            self.fetcher.answer(200, [(b"Content-Length", b"1")], [b"x"])
        self.assertEqual(len(self.fetcher.calls), 2)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)

    def test_chunkedWhenNoLength(self) -> None:
        """
        A response without Content-Length goes to an HTTP/1.1 client chunked, once.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.fetcher.answer(200, [], [b"ab", b"cde"])
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertEqual(body, b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")

    def test_http10ClientCloseDelimited(self) -> None:
        """
        An HTTP/1.0 client gets a body without length delimited by the connection's close.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.0\r\n\r\n")
        self.fetcher.answer(200, [], [b"abc"])
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertNotIn(b"chunked", head)
        self.assertIn(b"Connection: close", head)
        self.assertEqual(body, b"abc")
        self.assertTrue(transport.disconnecting)

    def test_headResponse(self) -> None:
        """
        A HEAD response keeps the origin's Content-Length and has no body.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"HEAD http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.fetcher.answer(200, [(b"Content-Length", b"1000")], [])
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 1000", head)
        self.assertEqual(body, b"")

    def test_cacheStatus(self) -> None:
        """
        A response's C{cacheStatus} becomes its C{Cache-Status} header and is in the access
        log line.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.fetcher.answer(200, [(b"Content-Length", b"0")], [], cacheStatus="caplab; hit")
        self.assertIn(b"\r\nCache-Status: caplab; hit\r\n", transport.value())
        [line] = self.logged
        self.assertEqual(line[-1], "caplab; hit")
        self.assertEqual(line[2:6], (b"GET", b"http://h/", b"HTTP/1.1", 200))

    def test_upstreamError(self) -> None:
        """
        A fetch failing with L{UpstreamError} is answered with that status and an HTML page
        naming the reason.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.fetcher.calls[0][2].errback(UpstreamError(504, "Gateway Timeout", "h is slow"))
        reply = transport.value()
        self.assertTrue(reply.startswith(b"HTTP/1.1 504 "))
        self.assertIn(b"text/html", reply)
        self.assertIn(b"h is slow", reply)

    def test_originDiedMidBody(self) -> None:
        """
        A body that ends incomplete closes the client connection without completing the
        framing (no last chunk).
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.fetcher.answer(200, [], [b"part"], complete=False)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.value().endswith(b"0\r\n\r\n"))
        self.assertEqual(self.logged, [])

    def test_clientGoneCancelsFetch(self) -> None:
        """
        A client that disconnects before the response cancels the fetch at once.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.fetcher.cancelled, 1)

    def test_clientGoneStopsBody(self) -> None:
        """
        A client that disconnects mid-body stops the upstream producer.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        producer = Producer()
        sinks: list[Any] = []
        response = UpstreamResponse(200, b"OK", [], sinks.append)
        self.fetcher.calls[0][2].callback(response)
        sink = sinks[0]
        sink.bodyStarted(producer)
        sink.bodyData(b"x")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(producer.state, "stopped")

    def test_responseBackPressure(self) -> None:
        """
        The client transport pausing the channel pauses the upstream producer.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        sinks: list[Any] = []
        self.fetcher.calls[0][2].callback(UpstreamResponse(200, b"OK", [], sinks.append))
        producer = Producer()
        sinks[0].bodyStarted(producer)
        channel.pauseProducing()
        self.assertEqual(producer.state, "paused")
        channel.resumeProducing()
        self.assertEqual(producer.state, "producing")

    def test_xForwardedFor(self) -> None:
        """
        C{X-Forwarded-For} is only added when switched on.
        """
        for on in (False, True):
            self.fetcher.calls.clear()
            channel, transport = self.connect(forwardedFor=on)
            channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
            headers = dict(self.fetcher.calls[0][0].headers)
            self.assertEqual(headers.get(b"X-Forwarded-For"), b"127.0.0.1" if on else None)

    def test_maxForwards(self) -> None:
        """
        OPTIONS with C{Max-Forwards: 0} is answered by the proxy; a higher value is
        decremented and forwarded.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"OPTIONS http://h/ HTTP/1.1\r\nHost: h\r\nMax-Forwards: 0\r\n\r\n")
        self.assertEqual(self.fetcher.calls, [])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertIn(b"Allow:", transport.value())
        channel.dataReceived(b"TRACE http://h/ HTTP/1.1\r\nHost: h\r\nMax-Forwards: 3\r\n\r\n")
        self.assertEqual(dict(self.fetcher.calls[0][0].headers)[b"Max-Forwards"], b"2")


class StreamingUploadTests(Harness):
    """
    Request bodies are streamed to the fetcher, not buffered.
    """

    def test_fetchStartsAtHeaders(self) -> None:
        """
        The fetch starts as soon as the header block is in; the body follows in pieces with
        its length, and ends complete.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"POST http://h/up HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n")
        [(request, body, d)] = self.fetcher.calls
        self.assertEqual((request.bodyLength, body.length), (6, 6))
        self.assertNotIn(b"content-length", [n.lower() for n, _ in request.headers])
        channel.dataReceived(b"abc")
        received: list[bytes] = []
        done: list[bool] = []

        class Sink:
            def bodyStarted(self, producer: Any) -> None:
                pass

            def bodyData(self, data: bytes) -> None:
                received.append(data)

            def bodyDone(self, complete: bool) -> None:
                done.append(complete)

        body.startStreaming(Sink())
        channel.dataReceived(b"def")
        self.assertEqual((b"".join(received), done), (b"abcdef", [True]))
        self.fetcher.answer(201, [(b"Content-Length", b"0")])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 201 "))
        self.assertFalse(transport.disconnecting)

    def test_chunkedUpload(self) -> None:
        """
        A chunked upload has no length: it is passed on de-chunked with length None.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"PUT http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        [(request, body, d)] = self.fetcher.calls
        self.assertIsNone(body.length)
        self.assertIsNone(request.bodyLength)

    def test_clientPausedUntilUpstreamReady(self) -> None:
        """
        Body bytes that arrive before the upstream leg is ready pause the client, and the
        upstream leg's back-pressure pauses it too.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nabc")
        body = self.fetcher.calls[0][1]
        self.assertEqual(transport.producerState, "paused")

        body.startStreaming(Discard())
        self.assertEqual(transport.producerState, "producing")
        body.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        body.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_refusedBeforeBody(self) -> None:
        """
        A request refused at its headers (here: a 501 scheme) is answered with
        C{Connection: close}, and the body still arriving is ignored.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"POST ftp://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 501 "))
        self.assertIn(b"Connection: close", transport.value())
        channel.dataReceived(b"cde")
        self.assertTrue(transport.disconnecting)


class AdmissionTests(Harness):
    """
    Clients, targets and limits.
    """

    def test_clientNotAllowed(self) -> None:
        """
        A client outside the C{--allow} networks gets a 403 page that says how to allow it.
        """
        channel, transport = self.connect(
            client=IPv4Address("TCP", "192.0.2.9", 1), allow=(ipaddress.ip_network("10.0.0.0/8"),)
        )
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        reply = transport.value()
        self.assertTrue(reply.startswith(b"HTTP/1.1 403 "))
        self.assertIn(b"--allow", reply)
        self.assertEqual(self.fetcher.calls, [])

    def test_loopbackAllowedByDefault(self) -> None:
        """
        Without C{--allow}, loopback clients are served and others are not.
        """
        settings = self.settings()
        self.assertTrue(settings.allowed("127.0.0.1"))
        self.assertTrue(settings.allowed("::1"))
        self.assertTrue(settings.allowed("::ffff:127.0.0.1"))
        self.assertFalse(settings.allowed("192.168.1.2"))

    def test_unsupportedScheme(self) -> None:
        """
        C{file://} and C{ftp://} are 501.
        """
        for uri in (b"ftp://h/x", b"file:///etc/passwd"):
            channel, transport = self.connect()
            channel.dataReceived(b"GET " + uri + b" HTTP/1.1\r\nHost: h\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 501 "), uri)

    def test_badTarget400(self) -> None:
        """
        A target without a host is a 400.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))

    def test_loopToItself(self) -> None:
        """
        A request to the proxy's own address, or one whose C{Via} shows it came through this
        proxy, is refused with 508.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://127.0.0.1:8080/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 508 "))
        channel, transport = self.connect(pseudonym=b"caplab-7")
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\nVia: 1.1 caplab-7\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 508 "))
        self.assertEqual(self.fetcher.calls, [])

    def test_ownPages(self) -> None:
        """
        A request in origin form (C{GET /stats?x}) is answered by the page registered for its
        path, which is given the request's parts, the client and the address it connected
        to; HEAD gets the head alone; another path is a 404; another method a 400.
        """
        rendered: list[PageRequest] = []

        class Page:
            def render(self, request: PageRequest) -> PageResponse:
                rendered.append(request)
                return PageResponse(200, [(b"Content-Type", b"text/plain")], b"figures")

        channel, transport = self.connect(idleTimeout=0, pages={b"/stats": Page()})
        channel.dataReceived(b"GET /stats?window=60 HTTP/1.1\r\nHost: proxy\r\n\r\n")
        [request] = rendered
        self.assertEqual(
            (request.method, request.path, request.query, request.client, request.local),
            (b"GET", b"/stats", b"window=60", "127.0.0.1", ("127.0.0.1", 8080)),
        )
        self.assertEqual(request.headers, [(b"Host", b"proxy")])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(transport.value().endswith(b"\r\nContent-Length: 7\r\n\r\nfigures"))
        transport.clear()
        channel.dataReceived(b"HEAD /stats HTTP/1.1\r\nHost: proxy\r\n\r\n")
        self.assertTrue(transport.value().endswith(b"\r\nContent-Length: 7\r\n\r\n"))
        transport.clear()
        channel.dataReceived(b"GET /nope HTTP/1.1\r\nHost: proxy\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "))
        transport.clear()
        channel.dataReceived(b"POST /stats HTTP/1.1\r\nHost: proxy\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))

    def test_requestLineTooLong414(self) -> None:
        """
        An over-long request line is a 414 and the connection closes.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/" + b"a" * 9000 + b" HTTP/1.1\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 414 "))
        self.assertTrue(transport.disconnecting)

    def test_headerBlockTooLarge431(self) -> None:
        """
        A header block over the limit, or too many header fields, is a 431.
        """
        channel, transport = self.connect(maxHeaderBlock=4096)
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\n")
        channel.dataReceived(b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(50)))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))
        channel, transport = self.connect(maxHeaders=5)
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\n")
        channel.dataReceived(b"".join(b"X-%d: v\r\n" % i for i in range(6)))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))

    def test_malformed400(self) -> None:
        """
        A request line that is not HTTP is a 400 with a page.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"HELLO\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))
        self.assertIn(b"text/html", transport.value())

    def test_headerTimeout(self) -> None:
        """
        A header block trickling in for longer than the header timeout is cut off (408),
        however often bytes arrive; a complete one in time is not.
        """
        channel, transport = self.connect(headerTimeout=10)
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\n")
        for _ in range(9):
            self.clock.advance(1)
            channel.dataReceived(b"X: y\r\n")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertTrue(transport.disconnecting)

    def test_idleKeepAliveTimeout(self) -> None:
        """
        An idle connection between requests is closed after the idle timeout, but not while
        a request is in flight.
        """
        channel, transport = self.connect(idleTimeout=5, headerTimeout=0)
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.clock.advance(20)
        self.assertFalse(transport.disconnecting)
        self.fetcher.answer(200, [(b"Content-Length", b"0")])
        self.clock.advance(6)
        self.assertTrue(transport.disconnecting)

    def test_maxConnections(self) -> None:
        """
        Connections over C{maxConnections} are refused (no protocol).
        """
        channel, transport = self.connect(maxConnections=1)
        self.assertIsNone(self.factory.buildProtocol(CLIENT))
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.factory.buildProtocol(CLIENT))


class PolicyTests(Harness):
    """
    The host policy and authenticator hook points.
    """

    def test_hostPolicyBlocks(self) -> None:
        """
        A blocked host is a 403 naming the rule, for plain requests and CONNECT.
        """

        class Policy:
            def check(self, host: str) -> Verdict | None:
                return Verdict("ads.test", "block.txt:3") if host == "ads.test" else None

        channel, transport = self.connect(hostPolicy=Policy(), tunnels=object())
        channel.dataReceived(b"GET http://ads.test/ HTTP/1.1\r\nHost: ads.test\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "))
        self.assertIn(b"block.txt:3", transport.value())
        channel, transport = self.connect(hostPolicy=Policy(), tunnels=object())
        channel.dataReceived(b"CONNECT ads.test:443 HTTP/1.1\r\nHost: ads.test:443\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "))
        self.assertEqual(self.fetcher.calls, [])

    def test_authentication(self) -> None:
        """
        Without good credentials the answer is 407 with C{Proxy-Authenticate}; with them the
        request is forwarded (without C{Proxy-Authorization}) and the user is logged.
        """

        class Authenticator:
            realm = "lab"

            def authenticate(
                self, credentials: bytes | None, client: str | None = None
            ) -> Deferred[str | None]:
                return succeed("alice" if credentials == b"Basic good" else None)

        channel, transport = self.connect(authenticator=Authenticator())
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 407 "))
        self.assertIn(b'\r\nProxy-Authenticate: Basic realm="lab"\r\n', transport.value())
        channel.dataReceived(
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic good\r\n\r\n"
        )
        [(request, _, _)] = self.fetcher.calls
        self.assertNotIn(b"proxy-authorization", [n.lower() for n, _ in request.headers])
        self.fetcher.answer(200, [(b"Content-Length", b"0")])
        self.assertEqual(self.logged[-1][1], "alice")


class ConnectTests(Harness):
    """
    CONNECT requests.
    """

    def test_portNotAllowed(self) -> None:
        """
        CONNECT to a port outside C{connectPorts} is a 403 naming the allowed ports.
        """
        channel, transport = self.connect(tunnels=object(), connectPorts=frozenset({443}))
        channel.dataReceived(b"CONNECT h:22 HTTP/1.1\r\nHost: h:22\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "))
        self.assertIn(b"443", transport.value())

    def test_tunnelRelays(self) -> None:
        """
        An allowed CONNECT is answered 200 once the origin is connected; bytes then flow both
        ways untouched, each side the other's producer, and the tunnel is logged when it
        closes.
        """

        from caplab.proxy.tunnel import TunnelOpener

        origins: list[tuple[Any, Deferred[Any]]] = []

        class Connector:
            def endpoint(self, host: str, port: int) -> Any:
                class Endpoint:
                    def connect(self, factory: Any) -> Deferred[Any]:
                        d: Deferred[Any] = Deferred()
                        origins.append((factory, d))
                        return d

                return Endpoint()

        channel, transport = self.connect(connectPorts=frozenset({443}))
        self.factory.settings.tunnels = TunnelOpener(Connector(), self.clock)
        channel.dataReceived(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\nHELLO")
        self.assertEqual(transport.value(), b"")
        factory, d = origins[0]
        origin = factory.buildProtocol(None)
        originTransport = StringTransport()
        origin.makeConnection(originTransport)
        d.callback(origin)
        self.assertEqual(transport.value(), b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.assertEqual(originTransport.value(), b"HELLO")
        channel.dataReceived(b"more")
        origin.dataReceived(b"reply")
        self.assertEqual(originTransport.value(), b"HELLOmore")
        self.assertTrue(transport.value().endswith(b"reply"))
        self.assertIs(originTransport.producer, transport)
        channel.pauseProducing()
        self.assertEqual(originTransport.producerState, "paused")
        origin.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(transport.disconnecting)
        [line] = self.logged
        self.assertEqual(line[2:6], (b"CONNECT", b"[::1]:443", b"HTTP/1.1", 200))


class LongUploadTests(Harness):
    """
    A long upload is a request in progress, not a slow header block nor an idle connection.
    """

    def test_uploadOutlastsTimeouts(self) -> None:
        """
        A body that keeps streaming (or is held back by the origin) for longer than the
        header and idle timeouts is not cut off.
        """
        channel, transport = self.connect(headerTimeout=10, idleTimeout=5)
        channel.dataReceived(b"PUT http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n")
        for _ in range(30):
            self.clock.advance(1)
            channel.dataReceived(b"x")
        self.clock.advance(20)  # paused by a slow origin
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")


class SlowReaderTests(Harness):
    """
    Back-pressure already in force when a response starts.
    """

    def test_producerPausedAtOnce(self) -> None:
        """
        A response whose client is not reading (the transport has paused the channel) has
        its upstream producer paused as soon as the body starts.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        channel.pauseProducing()
        sinks: list[Any] = []
        self.fetcher.calls[0][2].callback(UpstreamResponse(200, b"OK", [], sinks.append))
        producer = Producer()
        sinks[0].bodyStarted(producer)
        self.assertEqual(producer.state, "paused")

    def test_connectWithBody400(self) -> None:
        """
        A CONNECT request with a body is a 400.
        """
        channel, transport = self.connect(tunnels=object())
        channel.dataReceived(b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))


class CookieTests(Harness):
    """
    Cookies pass through.
    """

    def test_cookiesForwardedNotParsed(self) -> None:
        """
        C{Cookie} fields reach the origin unchanged (all of them), and the proxy does not
        parse them for itself.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\nCookie: a=1; b=2\r\nCookie: c=3\r\n\r\n"
        )
        [(request, _, _)] = self.fetcher.calls
        self.assertEqual(
            [v for n, v in request.headers if n.lower() == b"cookie"], [b"a=1; b=2", b"c=3"]
        )


class InternalErrorTests(Harness):
    """
    A bug while relaying is logged and answered, never left hanging.
    """

    def test_brokenResponse500(self) -> None:
        """
        A response the proxy cannot relay (here: its body delivery raises) is a logged
        error and a 500 page for the client.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")

        def broken(sink: Any) -> None:
            raise RuntimeError("bug")

        with capturedLogs() as events:
            self.fetcher.calls[0][2].callback(UpstreamResponse(200, b"OK", [], broken))
        self.assertTrue(any(e.get("log_failure") is not None for e in events))
        self.flushLoggedErrors(RuntimeError)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 500 "), transport.value())


class TunnelIdleTests(Harness):
    """
    Tunnels that relay nothing are not kept forever.
    """

    def test_idleTunnelClosed(self) -> None:
        """
        A tunnel with traffic stays open past the tunnel idle timeout; one silent for
        longer is closed on both sides.
        """
        from twisted.internet.protocol import Protocol

        from caplab.proxy.tunnel import TunnelOpener

        attempts: list[tuple[Any, Deferred[Any]]] = []

        class Endpoint:
            def connect(self, factory: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                attempts.append((factory, d))
                return d

        class Connector:
            def endpoint(self, host: str, port: int) -> Any:
                return Endpoint()

        channel, transport = self.connect(tunnelIdleTimeout=100, headerTimeout=0)
        self.factory.settings.tunnels = TunnelOpener(Connector(), self.clock)
        channel.dataReceived(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")
        factory, d = attempts[0]
        origin: Protocol = factory.buildProtocol(None)
        originTransport = StringTransport()
        origin.makeConnection(originTransport)
        d.callback(origin)
        for _ in range(3):
            self.clock.advance(60)
            channel.dataReceived(b"ping")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(102)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(originTransport.disconnecting)
