"""
Tests for L{caplab.proxy.exchange} and L{caplab.proxy.answer} through the channel on a
L{StringTransport}: interim responses, C{Expect}, half-closing clients, pipelining, HTTP/1.0
keep-alive, the request-body limit, protocol switches, and answers cut off.
"""

from __future__ import annotations

import socket
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from caplab.proxy.answer import Answer
from caplab.proxy.body import WholeBody
from caplab.proxy.hooks import DeliverBody, UpstreamResponse
from tests.test_proxy_channel import CLIENT, Harness, Producer


class Sink:
    """
    A body sink that records what it gets.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.done: list[bool] = []

    def bodyStarted(self, producer: Any) -> None:
        pass

    def bodyData(self, data: bytes) -> None:
        self.data.append(data)

    def bodyDone(self, complete: bool) -> None:
        self.done.append(complete)


class InterimTests(Harness):
    """
    Interim (1xx) responses of the origin.
    """

    def test_relayedToHttp11(self) -> None:
        """
        An interim response reaches an HTTP/1.1 client before the final one, hop-by-hop
        fields removed; C{100 Continue} from the origin is not relayed.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        [(request, _, _)] = self.fetcher.calls
        assert request.interim is not None
        request.interim(100, b"Continue", [])
        request.interim(103, b"Early Hints", [(b"Link", b"</a>"), (b"Connection", b"x")])
        self.fetcher.answer(200, [(b"Content-Length", b"2")], [b"ok"])
        self.assertTrue(
            transport.value().startswith(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n"
            ),
            transport.value(),
        )

    def test_notToHttp10(self) -> None:
        """
        An HTTP/1.0 client cannot take interim responses: none is asked for.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.0\r\n\r\n")
        self.assertIsNone(self.fetcher.calls[0][0].interim)


class ExpectTests(Harness):
    """
    C{Expect: 100-continue}, answered after admission.
    """

    head = b"PUT http://h/ HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"

    def test_continueWhenBodyWanted(self) -> None:
        """
        C{100 Continue} goes out when the upstream leg starts streaming the body, not
        before.
        """
        channel, transport = self.connect()
        channel.dataReceived(self.head + b"\r\n")
        [(request, body, _)] = self.fetcher.calls
        self.assertNotIn(b"expect", [n.lower() for n, _ in request.headers])
        self.assertEqual(transport.value(), b"")
        body.startStreaming(Sink())
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")

    def test_notBeforeAuthentication(self) -> None:
        """
        Without credentials the answer is a 407, and no C{100 Continue} ever.
        """

        class Authenticator:
            realm = "lab"

            def authenticate(
                self, credentials: bytes | None, client: str | None = None
            ) -> Deferred[str | None]:
                return succeed(None)

        channel, transport = self.connect(authenticator=Authenticator())
        channel.dataReceived(self.head + b"\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 407 "))
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertEqual(self.fetcher.calls, [])

    def test_otherExpectation417(self) -> None:
        """
        An expectation other than C{100-continue} is a 417.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 417 "))


class HalfCloseTests(Harness):
    """
    Clients that shut down their sending side after the request.
    """

    def test_answeredThenClosed(self) -> None:
        """
        A client that half-closes after its request still gets the answer, then the
        connection closes.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        channel.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        self.fetcher.answer(200, [(b"Content-Length", b"2")], [b"ok"])
        self.assertTrue(transport.value().endswith(b"\r\n\r\nok"))
        self.assertIn(b"Connection: close", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_idleHalfCloseCloses(self) -> None:
        """
        A half-close between requests closes the connection.
        """
        channel, transport = self.connect()
        channel.readConnectionLost()
        self.assertTrue(transport.disconnecting)

    def test_partialHead400(self) -> None:
        """
        A half-close in the middle of a head gets a 400 (the client may still read).
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHo")
        channel.readConnectionLost()
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))

    def test_pipelinedPartialHead400(self) -> None:
        """
        A client that pipelines a second request, cuts it short and half-closes gets the
        first answered, then a 400 for the second at once (not a 408 after the header
        timeout), and the connection closes.
        """
        channel, transport = self.connect(headerTimeout=30)
        channel.dataReceived(
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\nGET http://h/2 HTTP/1.1\r\nHo"
        )
        channel.readConnectionLost()
        self.fetcher.answer(200, [(b"Content-Length", b"2")], [b"hi"])
        first, _, second = transport.value().partition(b"\r\n\r\nhi")
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK\r\n"), first)
        self.assertTrue(second.startswith(b"HTTP/1.1 400 "), second)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.fetcher.calls), 1)

    def test_pipelinedPartialBody(self) -> None:
        """
        The same for a pipelined request whose body the half-close cut short: its fetch is
        dropped and the client told so (400), at once.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n"
            b"PUT http://h/2 HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nabc"
        )
        channel.readConnectionLost()
        self.fetcher.answer(200, [(b"Content-Length", b"2")], [b"hi"])
        self.assertEqual(self.fetcher.cancelled, 1)
        second = transport.value().partition(b"\r\n\r\nhi")[2]
        self.assertTrue(second.startswith(b"HTTP/1.1 400 "), second)
        self.assertTrue(transport.disconnecting)

    def test_pipelinedWholeThenHalfClose(self) -> None:
        """
        Pipelined requests sent whole before the half-close are all answered, then the
        connection closes.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n" * 2 + b"\r\n")
        channel.readConnectionLost()
        for _ in range(2):
            self.assertFalse(transport.disconnecting)
            self.fetcher.answer(200, [(b"Content-Length", b"2")], [b"hi"])
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertTrue(transport.disconnecting)

    def test_goneClientFound(self) -> None:
        """
        A second after the half-close, with no answer begun, the client is sent an interim
        C{100 Continue}; if its socket then shows a reset, the connection is aborted and
        the fetch cancelled.
        """

        class Socket:
            error = 0

            def getsockopt(self, level: int, option: int) -> int:
                assert (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR)
                return self.error

        sock = Socket()
        channel, transport = self.connect()
        transport.getHandle = lambda: sock  # type: ignore[attr-defined]
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        channel.readConnectionLost()
        self.clock.advance(1.5)
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.clock.advance(1)
        self.assertFalse(transport.disconnecting)
        sock.error = 32
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.fetcher.cancelled, 1)


class PipelineTests(Harness):
    """
    Requests sent before the previous one is answered.
    """

    def test_servedInOrder(self) -> None:
        """
        Two requests in one read are served one after the other.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"GET http://h/1 HTTP/1.1\r\nHost: h\r\n\r\nGET http://h/2 HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        self.assertEqual(len(self.fetcher.calls), 1)
        self.fetcher.answer(200, [(b"Content-Length", b"1")], [b"1"])
        self.assertEqual([c[0].target.path for c in self.fetcher.calls], [b"/1", b"/2"])
        self.fetcher.answer(200, [(b"Content-Length", b"1")], [b"2"])
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 2)

    def test_manyAnsweredAtOnce(self) -> None:
        """
        Hundreds of pipelined requests answered synchronously (as cache hits are) are served
        in a loop, not a recursion.
        """

        class Immediate:
            def fetch(self, request: Any, body: Any) -> Deferred[UpstreamResponse]:
                def deliver(sink: Any) -> None:
                    sink.bodyStarted(Producer())
                    sink.bodyData(b"x")
                    sink.bodyDone(True)

                return succeed(UpstreamResponse(200, b"OK", [(b"Content-Length", b"1")], deliver))

        channel, transport = self.connect()
        self.factory.settings.fetcher = Immediate()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n" * 3000)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 3000)

    def test_readAheadBounded(self) -> None:
        """
        Past 64 KiB of pipelined requests the client is not read until the one in hand is
        answered.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n" * 3000)
        self.assertEqual(transport.producerState, "paused")
        self.fetcher.answer(200, [(b"Content-Length", b"0")])
        self.assertEqual(transport.producerState, "producing")


class SlowClient(StringTransport):
    """
    A transport whose client reads nothing: once it holds more than C{limit} bytes it
    pauses its producer (the channel), as a TCP transport does when its buffer fills.
    """

    limit = 1000

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.limit and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        """
        The client read everything: the transport resumes its producer.
        """
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()


class PipelineBackPressureTests(Harness):
    """
    A client that pipelines requests and reads no answers makes the proxy stop answering and
    reading, however the answers are made (cache hits held whole, the proxy's own pages).
    """

    def connectSlow(self, **kwargs: Any) -> tuple[Any, SlowClient]:
        channel, plain = self.connect(**kwargs)
        transport = SlowClient(hostAddress=plain.getHost(), peerAddress=plain.getPeer())
        channel.makeConnection(transport)
        return channel, transport

    def test_stopsWhileClientNotReading(self) -> None:
        """
        Thousands of pipelined GETs answered on the spot (stored bodies held whole) to a
        client that reads nothing: a bounded number is answered and reading is paused; each
        time the client reads, a few more; in the end all of them, in order.
        """

        class Hits:
            def fetch(self, request: Any, body: Any) -> Deferred[UpstreamResponse]:
                content = request.target.path
                return succeed(
                    UpstreamResponse(
                        200,
                        b"OK",
                        [(b"Content-Length", b"%d" % len(content))],
                        WholeBody(content),
                    )
                )

        channel, transport = self.connectSlow()
        self.factory.settings.fetcher = Hits()
        count = 3000
        channel.dataReceived(
            b"".join(b"GET http://h/%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(count))
        )
        answered = transport.value().count(b"HTTP/1.1 200 OK")
        self.assertLess(answered, 20)
        self.assertEqual(transport.producerState, "paused")
        bodies: list[bytes] = []
        for _ in range(count):
            answers = transport.value().split(b"HTTP/1.1 ")[1:]
            bodies += [answer.rpartition(b"\r\n\r\n")[2] for answer in answers]
            if len(bodies) == count:
                break
            transport.drain()
            self.assertLess(transport.value().count(b"HTTP/1.1 200 OK"), 20)
        self.assertEqual(bodies, [b"/%d" % i for i in range(count)])
        self.assertEqual(transport.producerState, "producing")
        self.assertFalse(transport.disconnecting)

    def test_ownPagesHeldToo(self) -> None:
        """
        The proxy's own answers (here C{OPTIONS *}) are held back the same way, and a client
        that half-closed after its requests still gets them all, then the connection closes.
        """
        channel, transport = self.connectSlow()
        channel.dataReceived(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n" * 500)
        channel.readConnectionLost()
        answered = transport.value().count(b"HTTP/1.1 200 OK")
        self.assertLess(answered, 20)
        self.assertFalse(transport.disconnecting)
        total = answered
        for _ in range(500):
            transport.drain()
            total += transport.value().count(b"HTTP/1.1 200 OK")
            if transport.disconnecting:
                break
        self.assertEqual(total, 500)
        self.assertTrue(transport.disconnecting)

    def test_stalledClientCutOff(self) -> None:
        """
        A client held back this way that takes nothing for the stall timeout is cut off
        (the idle timeout does not apply: it is owed answers).
        """
        channel, transport = self.connectSlow(idleTimeout=5, stallTimeout=100)
        channel.dataReceived(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n" * 500)
        self.clock.advance(50)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(60)
        self.assertTrue(transport.disconnected)


class Http10Tests(Harness):
    """
    HTTP/1.0 clients.
    """

    def test_keepAliveAsked(self) -> None:
        """
        An HTTP/1.0 client that asks for keep-alive keeps its connection (said in the answer)
        when the response has a length.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.fetcher.answer(200, [(b"Content-Length", b"1")], [b"x"])
        self.assertIn(b"\r\nConnection: keep-alive\r\n", transport.value())
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(b"GET http://h/2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.assertEqual(len(self.fetcher.calls), 2)

    def test_keepAliveWithoutLength(self) -> None:
        """
        A body without length ends with the connection for an HTTP/1.0 client, keep-alive
        or not.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        self.fetcher.answer(200, [], [b"x"])
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_cutCloseDelimitedIsReset(self) -> None:
        """
        A body cut off that an HTTP/1.0 client reads until the connection closes is ended by
        an abort (a reset), never a close that would make it look whole.
        """
        channel, transport = self.connect()
        channel.dataReceived(b"GET http://h/ HTTP/1.0\r\n\r\n")
        self.fetcher.answer(200, [], [b"part"], complete=False)
        self.assertTrue(transport.disconnected)


class BodyLimitTests(Harness):
    """
    C{--max-request-body}.
    """

    def test_declaredTooLarge(self) -> None:
        """
        A declared length over the limit is a 413 before anything is fetched.
        """
        channel, transport = self.connect(maxRequestBody=10)
        channel.dataReceived(b"PUT http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertEqual(self.fetcher.calls, [])

    def test_chunkedCrossing(self) -> None:
        """
        A chunked body that grows past the limit cancels the fetch and is answered 413.
        """
        channel, transport = self.connect(maxRequestBody=10)
        channel.dataReceived(
            b"PUT http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n"
        )
        self.assertEqual(len(self.fetcher.calls), 1)
        channel.dataReceived(b"8\r\n12345678\r\n")
        self.assertEqual(self.fetcher.cancelled, 1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(transport.disconnecting)


class SwitchTests(Harness):
    """
    A request that asks to upgrade, and the origin's 101.
    """

    def test_upgradeForwardedPastFilters(self) -> None:
        """
        The C{Upgrade} field goes upstream as the request's C{upgrade} (the writer adds the
        hop-by-hop fields), through the chain without the cache.
        """
        uncached = type(self.fetcher)()
        channel, transport = self.connect(upstream=uncached)
        channel.dataReceived(
            b"GET ws://h/chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n"
        )
        self.assertEqual(self.fetcher.calls, [])
        [(request, _, _)] = uncached.calls
        self.assertEqual(request.upgrade, b"websocket")
        self.assertEqual(request.target.uri, "http://h/chat")
        self.assertNotIn(b"upgrade", [n.lower() for n, _ in request.headers])

    def test_switchedIsATunnel(self) -> None:
        """
        After a 101 the client and the origin's connection exchange bytes untouched.
        """
        originTransport = StringTransport()

        class Switched:
            transport = originTransport
            leftover = b"first"
            side: Any = None

            def attach(self, side: Any) -> None:
                Switched.side = side

        channel, transport = self.connect()
        channel.dataReceived(
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nearly"
        )
        # cast: a stand-in deliverBody; a switched response has no body to deliver
        noBody = cast(DeliverBody, Sink().bodyDone)
        response = UpstreamResponse(
            101, b"Switching Protocols", [(b"Upgrade", b"x")], noBody, switched=Switched()
        )
        self.fetcher.calls[0][2].callback(response)
        self.assertTrue(
            transport.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n")
        )
        self.assertTrue(transport.value().endswith(b"\r\n\r\nfirst"))
        self.assertEqual(originTransport.value(), b"early")
        channel.dataReceived(b"up")
        Switched.side.dataReceived(b"down")
        self.assertEqual(originTransport.value(), b"earlyup")
        self.assertTrue(transport.value().endswith(b"firstdown"))
        Switched.side.connectionLost()
        self.assertTrue(transport.disconnecting)


class FilterTests(Harness):
    """
    The filter chain around the cache (C{settings.filters}).
    """

    def test_oneChainPerRequest(self) -> None:
        """
        The request is filtered (with the client's address) before it is fetched, and its
        response with the same chain, even if a reload put another in force meanwhile.
        """
        calls: list[tuple[str, Any]] = []

        class Chain:
            def __init__(self, name: str) -> None:
                self.name = name

            def filterRequest(self, request: Any, client: str) -> Any:
                calls.append((self.name, client))
                request.headers.append((b"X-Filtered", self.name.encode()))
                return request

            def filterResponse(self, request: Any, response: Any) -> Any:
                calls.append((self.name, response.code))
                response.headers.append((b"X-Seen-By", self.name.encode()))
                return response

        class Reloadable:
            current = Chain("first")

        reloadable = Reloadable()
        channel, transport = self.connect(filters=reloadable)
        channel.dataReceived(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        [(request, _, _)] = self.fetcher.calls
        self.assertIn((b"X-Filtered", b"first"), request.headers)
        reloadable.current = Chain("second")
        self.fetcher.answer(200, [(b"Content-Length", b"0")])
        self.assertEqual(calls, [("first", "127.0.0.1"), ("first", 200)])
        self.assertIn(b"\r\nX-Seen-By: first\r\n", transport.value())

    def test_upgradesNotFiltered(self) -> None:
        """
        A protocol upgrade passes no filter: what follows is not HTTP.
        """

        class Refusing:
            def filterRequest(self, request: Any, client: str) -> Any:
                raise AssertionError("filtered")

            filterResponse = filterRequest

        channel, transport = self.connect(filters=Refusing())
        channel.dataReceived(
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
        )
        self.fetcher.answer(426, [(b"Content-Length", b"0")])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 426 "))


class MetricsTests(Harness):
    """
    What the proxy counts into its metrics itself, with nothing wrapped around it.
    """

    def test_receivedAndRefused(self) -> None:
        """
        Every byte a client sends is counted, the head and the body and a tunnel's alike;
        a connection over the cap is counted as refused.
        """
        from caplab.metrics import Metrics

        metrics = Metrics()
        channel, transport = self.connect(metrics=metrics, maxConnections=1)
        request = b"PUT http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
        channel.dataReceived(request)
        channel.dataReceived(b"abc")
        self.assertEqual(metrics.receivedTotal, len(request) + 3)
        self.assertIsNone(self.factory.buildProtocol(CLIENT))
        self.assertEqual(metrics.refusedTotal, 1)


class WholeBodyTests(Harness):
    """
    A body held whole (L{WholeBody}, a stored one) leaves with its head in one write, framed
    exactly as the same body streamed would be.
    """

    CASES = [
        (b"GET", b"HTTP/1.1", [(b"Content-Length", b"5")], b"hello"),
        (b"GET", b"HTTP/1.1", [], b"hello"),  # chunked
        (b"GET", b"HTTP/1.1", [], b""),  # chunked, empty
        (b"GET", b"HTTP/1.0", [], b"hello"),  # until the connection closes
        (b"GET", b"HTTP/1.0", [(b"Content-Length", b"5")], b"hello"),
        (b"HEAD", b"HTTP/1.1", [(b"Content-Length", b"5")], b""),
    ]

    def answered(
        self, method: bytes, version: bytes, headers: Any, deliver: Any
    ) -> tuple[bytes, bool, int]:
        channel, transport = self.connect()
        writes: list[bytes] = []
        write = transport.write
        transport.write = lambda data: (writes.append(data), write(data))  # type: ignore[method-assign, func-returns-value]
        channel.dataReceived(method + b" http://h/ " + version + b"\r\nHost: h\r\n\r\n")
        self.fetcher.calls[-1][2].callback(
            UpstreamResponse(200, b"OK", list(headers), deliver, "caplab; hit")
        )
        return transport.value(), transport.disconnecting, len(writes)

    def test_sameBytesOneWrite(self) -> None:
        for method, version, headers, content in self.CASES:
            whole, wholeClosed, wholeWrites = self.answered(
                method, version, headers, WholeBody(content)
            )

            def streamed(sink: Any, content: bytes = content) -> None:
                sink.bodyStarted(Producer())
                if content:
                    sink.bodyData(content)
                sink.bodyDone(True)

            expected, closed, _ = self.answered(method, version, headers, streamed)
            self.assertEqual(whole, expected, (version, headers, content))
            self.assertEqual(wholeClosed, closed)
            self.assertEqual(wholeWrites, 1)
            self.assertTrue(whole.endswith(content) or b"0\r\n\r\n" in whole)

    def test_clientGoneFirst(self) -> None:
        """
        Nothing is sent for an answer already over (its client gone).
        """
        sent: list[bytes] = []

        class Client:
            clientDone = False
            readAhead = 0
            send = sent.append

            def setResponseProducer(self, producer: Any) -> None:
                pass

        finished: list[int] = []
        answer = Answer(Client(), b"GET", b"HTTP/1.1", True, b"caplab", lambda: finished.append(1))  # type: ignore[arg-type]
        answer.clientGone()
        answer.relay(UpstreamResponse(200, b"OK", [], WholeBody(b"late")))
        self.assertEqual((sent, finished), ([], []))
