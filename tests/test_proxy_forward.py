"""
Tests for L{caplab.proxy.forward}: the upstream HTTP/1.1 client and its connection pool, on
L{StringTransport}s and a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.forward import Forwarder
from caplab.proxy.hooks import Target, UpstreamError, UpstreamRequest, UpstreamResponse

TARGET = Target("http", "origin.test", 8000, b"/path?q=1")


class FakeConnector:
    """
    Connects every protocol to a new L{StringTransport} at once (or fails as told).
    """

    def __init__(self) -> None:
        self.protocols: list[Any] = []
        self.failure: Failure | None = None
        self.pending: Deferred[Any] | None = None

    def connect(self, target: Target, protocol: Protocol) -> Deferred[Any]:
        if self.failure is not None:
            return fail(self.failure)
        if self.pending is not None:
            self.protocols.append(protocol)  # connected by the test, when it fires pending
            return self.pending
        protocol.makeConnection(StringTransport())
        self.protocols.append(protocol)
        return succeed(protocol)


class Sink:
    """
    An L{IBodySink} that records the body.
    """

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.done: bool | None = None
        self.producer: IPushProducer | None = None

    def bodyStarted(self, producer: IPushProducer) -> None:
        self.producer = producer

    def bodyData(self, data: bytes) -> None:
        self.data.append(data)

    def bodyDone(self, complete: bool) -> None:
        self.done = complete


class Body:
    """
    An L{IRequestBody} the test feeds by hand.
    """

    def __init__(self, length: int | None) -> None:
        self.length = length
        self.sink: Any = None
        self.paused = False

    def startStreaming(self, sink: Any) -> None:
        self.sink = sink
        sink.bodyStarted(self)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


def request(method: bytes = b"GET", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return UpstreamRequest(method, TARGET, headers or [(b"Host", b"origin.test:8000")])


class ForwarderTests(SynchronousTestCase):
    """
    L{Forwarder.fetch} against a fake origin.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.connector = FakeConnector()
        self.forwarder = Forwarder(self.clock, self.connector, timeout=10)

    def fetch(self, req: Any = None, body: Any = None) -> tuple[Deferred[Any], Any]:
        d = self.forwarder.fetch(req or request(), body)
        return d, self.connector.protocols[-1] if self.connector.protocols else None

    def test_requestHead(self) -> None:
        """
        The request goes out in origin form over HTTP/1.1 with the given headers.
        """
        d, protocol = self.fetch(request(headers=[(b"Host", b"origin.test:8000"), (b"A", b"1")]))
        self.assertEqual(
            protocol.transport.value(),
            b"GET /path?q=1 HTTP/1.1\r\nHost: origin.test:8000\r\nA: 1\r\n\r\n",
        )

    def test_framingFieldsReplaced(self) -> None:
        """
        Framing fields in the request (a filter's, the cache's) are dropped, in any case of
        their names: the head carries the framing of the body actually sent.
        """
        headers = [
            (b"Host", b"origin.test:8000"),
            (b"CONTENT-LENGTH", b"99"),
            (b"transfer-Encoding", b"gzip"),
            (b"Content-Lengthy", b"kept"),
        ]
        d, protocol = self.fetch(request(b"POST", headers))
        self.assertEqual(
            protocol.transport.value(),
            b"POST /path?q=1 HTTP/1.1\r\nHost: origin.test:8000\r\nContent-Lengthy: kept\r\n"
            b"Content-Length: 0\r\n\r\n",
        )

    def test_contentLengthResponse(self) -> None:
        """
        A response with Content-Length fires the Deferred with the head; the body follows to
        the sink, and its end is complete.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhe")
        response: UpstreamResponse = self.successResultOf(d)
        self.assertEqual((response.code, response.phrase), (200, b"OK"))
        self.assertEqual(
            response.headers, [(b"Content-Length", b"5"), (b"X-A", b"1"), (b"X-A", b"2")]
        )
        sink = Sink()
        response.deliverBody(sink)
        protocol.dataReceived(b"llo")
        self.assertEqual((b"".join(sink.data), sink.done), (b"hello", True))

    def test_latencyReported(self) -> None:
        """
        The time from the fetch to its response head, connecting included, is reported to
        C{latency}.
        """
        seen: list[float] = []
        self.forwarder.latency = seen.append
        connecting: Deferred[Any] = Deferred()
        self.connector.pending = connecting
        d, origin = self.fetch()
        self.clock.advance(0.5)
        origin.makeConnection(StringTransport())
        connecting.callback(origin)
        self.clock.advance(0.25)
        origin.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.successResultOf(d)
        self.assertEqual(seen, [0.75])

    def test_bodyWithHeadHandedOverWithIt(self) -> None:
        """
        Body bytes that arrive in the same read as the head are there as soon as the body is
        asked for in the Deferred's callback (so the client gets head and body in one write),
        and the end follows.
        """
        d, protocol = self.fetch()
        seen: list[tuple[bytes, bool | None]] = []
        sink = Sink()

        def got(response: UpstreamResponse) -> None:
            response.deliverBody(sink)
            seen.append((b"".join(sink.data), sink.done))

        d.addCallback(got)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(seen, [(b"hello", None)])
        self.assertIs(sink.done, True)

    def test_chunkedResponseDecoded(self) -> None:
        """
        A chunked body is decoded (the sink gets the data, not the framing) and
        C{Transfer-Encoding} is not among the response's headers.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        response = self.successResultOf(d)
        self.assertEqual(response.headers, [])
        sink = Sink()
        response.deliverBody(sink)
        for piece in (b"5\r\nhel", b"lo\r\n", b"6;ext=1\r\n world\r\n0\r\n", b"T: x\r\n\r\n"):
            protocol.dataReceived(piece)
        self.assertEqual((b"".join(sink.data), sink.done), (b"hello world", True))

    def test_hopByHopResponseHeadersRemoved(self) -> None:
        """
        Connection, the headers it names, Keep-Alive and Proxy-Authenticate are not passed on.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(
            b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
            b"Proxy-Authenticate: Basic\r\nX-End: 2\r\nContent-Length: 0\r\n\r\n"
        )
        response = self.successResultOf(d)
        self.assertEqual(response.headers, [(b"X-End", b"2"), (b"Content-Length", b"0")])

    def test_headAndNoBodyStatuses(self) -> None:
        """
        A HEAD response and 204/304 responses have no body whatever their Content-Length;
        the connection is reused for the next request if none was announced, and closed if
        one was (see L{test_headWithLengthNotPooled}).
        """
        for length, connections in ((b"0", 1), (b"10", 2)):
            self.connector = FakeConnector()
            self.forwarder = Forwarder(self.clock, self.connector, timeout=10)
            for method, status in ((b"HEAD", b"200 OK"), (b"GET", b"204 No Content")):
                d, protocol = self.fetch(request(method))
                protocol.dataReceived(
                    b"HTTP/1.1 " + status + b"\r\nContent-Length: " + length + b"\r\n\r\n"
                )
                sink = Sink()
                self.successResultOf(d).deliverBody(sink)
                self.assertEqual((sink.data, sink.done), ([], True))
            self.assertEqual(len(self.connector.protocols), connections)

    def test_interimResponsesSkipped(self) -> None:
        """
        1xx responses (100 Continue) are skipped; the final response is the one given.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n")
        protocol.dataReceived(b"Content-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d).code, 201)

    def test_connectionReused(self) -> None:
        """
        After a complete response the connection goes back to the pool and carries the next
        request to the same origin.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.successResultOf(d).deliverBody(Sink())
        protocol.transport.clear()
        d2 = self.forwarder.fetch(request(), None)
        self.assertEqual(len(self.connector.protocols), 1)
        self.assertTrue(protocol.transport.value().startswith(b"GET /path?q=1 HTTP/1.1\r\n"))
        self.assertNoResult(d2)

    def test_connectionCloseNotReused(self) -> None:
        """
        A response with C{Connection: close} (or HTTP/1.0) ends the connection.
        """
        for version, extra in ((b"1.1", b"Connection: close\r\n"), (b"1.0", b"")):
            d, protocol = self.fetch()
            protocol.dataReceived(
                b"HTTP/" + version + b" 200 OK\r\n" + extra + b"Content-Length: 0\r\n\r\n"
            )
            self.successResultOf(d).deliverBody(Sink())
            self.assertTrue(protocol.transport.disconnecting)
        self.assertEqual(len(self.connector.protocols), 2)

    def test_poolBounded(self) -> None:
        """
        No more than C{maxIdlePerOrigin} idle connections are kept per origin.
        """
        self.forwarder.maxIdlePerOrigin = 2
        ds = [self.fetch() for _ in range(3)]
        for _d, protocol in ds:
            protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        closed = [p for _, p in ds if p.transport.disconnecting]
        self.assertEqual(len(closed), 1)

    def test_untilCloseBody(self) -> None:
        """
        A response without length is read until the origin closes; that end is complete.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nsome")
        sink = Sink()
        self.successResultOf(d).deliverBody(sink)
        protocol.dataReceived(b" body")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((b"".join(sink.data), sink.done), (b"some body", True))

    def test_originDiesMidBody(self) -> None:
        """
        An origin that closes before the announced length ends the body incomplete.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        sink = Sink()
        self.successResultOf(d).deliverBody(sink)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(sink.done, False)

    def test_closedBeforeResponse502(self) -> None:
        """
        An origin that closes without answering is a 502.
        """
        d, protocol = self.fetch()
        protocol.connectionLost(Failure(ConnectionDone()))
        error = self.failureResultOf(d, UpstreamError).value
        self.assertEqual(error.code, 502)
        self.assertIn("without a response", error.detail)

    def test_stalePooledConnectionRetried(self) -> None:
        """
        A pooled connection the origin closed just as it was reused is retried once on a new
        connection, for a request without a body.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        d2 = self.forwarder.fetch(request(), None)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.connector.protocols), 2)
        self.connector.protocols[1].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d2).code, 200)

    def test_staleRetriedOnlyIfIdempotent(self) -> None:
        """
        Only an idempotent request is sent again on its own (RFC 9110 section 9.2.2): a POST
        on a pooled connection the origin closed is a 502, never sent twice; a DELETE is
        sent again.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        d2 = self.forwarder.fetch(request(b"POST"), None)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.connector.protocols), 1)
        self.assertEqual(self.failureResultOf(d2, UpstreamError).value.code, 502)
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        d3 = self.forwarder.fetch(request(b"DELETE"), None)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.connector.protocols), 3)
        self.connector.protocols[2].dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(self.successResultOf(d3).code, 204)

    def test_staleNotRetriedAfterBytes(self) -> None:
        """
        A reused connection that closes after some of the response came is a 502: the
        origin saw the request.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        d2 = self.forwarder.fetch(request(), None)
        protocol.dataReceived(b"HTTP/1.1 2")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.connector.protocols), 1)
        self.assertEqual(self.failureResultOf(d2, UpstreamError).value.code, 502)

    def test_headWithLengthNotPooled(self) -> None:
        """
        A connection whose response to HEAD announced a body is not pooled: body bytes the
        origin sends after it would be taken for the next request's response.
        """
        d, protocol = self.fetch(request(b"HEAD"))
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        self.successResultOf(d).deliverBody(Sink())
        self.assertTrue(protocol.transport.disconnecting)
        d2 = self.forwarder.fetch(request(), None)
        protocol.dataReceived(b"HTTP/1.1 418 Smuggled\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(len(self.connector.protocols), 2)
        self.assertNoResult(d2)

    def test_strayBytesNotReused(self) -> None:
        """
        A pooled connection that sent bytes while idle is closing: the next request takes a
        new connection, even before the close is complete.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        protocol.dataReceived(b"junk")
        self.assertTrue(protocol.transport.disconnecting)
        self.forwarder.fetch(request(), None)
        self.assertEqual(len(self.connector.protocols), 2)
        self.assertEqual(protocol.transport.value().count(b"GET "), 1)

    def test_malformedResponse502(self) -> None:
        """
        Something that is not an HTTP response is a 502.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.assertEqual(self.failureResultOf(d, UpstreamError).value.code, 502)

    def test_connectFailures(self) -> None:
        """
        A refused connection and an unknown host name are 502s that say so.
        """
        self.connector.failure = Failure(ConnectionRefusedError())
        error = self.failureResultOf(self.forwarder.fetch(request(), None), UpstreamError).value
        self.assertEqual(error.code, 502)
        self.assertIn("refused", error.detail)
        self.connector.failure = Failure(DNSLookupError())
        error = self.failureResultOf(self.forwarder.fetch(request(), None), UpstreamError).value
        self.assertEqual(error.code, 502)
        self.assertIn("not found", error.detail)

    def test_timeout504(self) -> None:
        """
        An origin that does not answer within the upstream timeout is a 504, and the
        connection is aborted.
        """
        d, protocol = self.fetch()
        self.clock.advance(9)
        self.assertNoResult(d)
        self.clock.advance(2)
        self.assertEqual(self.failureResultOf(d, UpstreamError).value.code, 504)
        self.assertTrue(protocol.transport.disconnecting)

    def test_connectingTimeout504(self) -> None:
        """
        A connection attempt still pending after the upstream timeout is a 504 too.
        """
        self.connector.pending = Deferred()
        d = self.forwarder.fetch(request(), None)
        self.clock.advance(11)
        self.assertEqual(self.failureResultOf(d, UpstreamError).value.code, 504)

    def test_cancelAbortsUpstream(self) -> None:
        """
        Cancelling the fetch (the client went away) aborts the upstream connection at once.
        """
        d, protocol = self.fetch()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(protocol.transport.disconnecting)

    def test_stopProducingAbortsMidBody(self) -> None:
        """
        The sink's stopProducing (client gone mid-body) aborts the upstream connection.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        sink = Sink()
        self.successResultOf(d).deliverBody(sink)
        assert sink.producer is not None
        sink.producer.stopProducing()
        self.assertTrue(protocol.transport.disconnecting)

    def test_backPressure(self) -> None:
        """
        The sink pausing the body pauses the upstream transport; resuming resumes it. Body
        bytes before C{deliverBody} pause the transport too.
        """
        d, protocol = self.fetch()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        response = self.successResultOf(d)
        protocol.dataReceived(b"early")
        self.assertEqual(protocol.transport.producerState, "paused")
        sink = Sink()
        response.deliverBody(sink)
        self.assertEqual((sink.data, protocol.transport.producerState), ([b"early"], "producing"))
        assert sink.producer is not None
        sink.producer.pauseProducing()
        self.assertEqual(protocol.transport.producerState, "paused")
        sink.producer.resumeProducing()
        self.assertEqual(protocol.transport.producerState, "producing")

    def test_requestBodyLength(self) -> None:
        """
        A body of known length is sent with Content-Length, streamed as it arrives, and the
        upstream transport pauses the body's producer.
        """
        body = Body(6)
        d, protocol = self.fetch(request(b"POST"), body)
        body.sink.bodyData(b"abc")
        body.sink.bodyData(b"def")
        body.sink.bodyDone(True)
        head, _, sent = protocol.transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Length: 6", head)
        self.assertEqual(sent, b"abcdef")
        self.assertIs(protocol.transport.producer, None)

    def test_requestBodyChunked(self) -> None:
        """
        A body of unknown length is sent chunked.
        """
        body = Body(None)
        d, protocol = self.fetch(request(b"PUT"), body)
        self.assertIs(protocol.transport.producer, body)
        body.sink.bodyData(b"abc")
        body.sink.bodyDone(True)
        head, _, sent = protocol.transport.value().partition(b"\r\n\r\n")
        self.assertIn(b"\r\nTransfer-Encoding: chunked", head)
        self.assertEqual(sent, b"3\r\nabc\r\n0\r\n\r\n")

    def test_emptyPost(self) -> None:
        """
        A POST without a body says C{Content-Length: 0}; a GET says nothing.
        """
        d, protocol = self.fetch(request(b"POST"))
        self.assertIn(b"\r\nContent-Length: 0\r\n", protocol.transport.value())

    def test_requestBodyAbandoned(self) -> None:
        """
        A request body that ends incomplete (client gone) aborts the upstream request.
        """
        body = Body(10)
        d, protocol = self.fetch(request(b"POST"), body)
        body.sink.bodyData(b"abc")
        body.sink.bodyDone(False)
        self.assertTrue(protocol.transport.disconnecting)


class PoolReuseTests(SynchronousTestCase):
    """
    A connection goes back to the pool in a usable state.
    """

    def test_releasedUnpaused(self) -> None:
        """
        A connection whose last body piece was held back by a slow client is resumed when
        its response completes, so the next request on it gets its answer.
        """
        clock = Clock()
        connector = FakeConnector()
        forwarder = Forwarder(clock, connector, timeout=10)
        d = forwarder.fetch(request(), None)
        protocol = connector.protocols[0]
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        sink = Sink()
        self.successResultOf(d).deliverBody(sink)
        assert sink.producer is not None
        sink.producer.pauseProducing()
        protocol.dataReceived(b"body")
        self.assertEqual(sink.done, True)
        self.assertEqual(protocol.transport.producerState, "producing")
        forwarder.fetch(request(), None)
        self.assertEqual(len(connector.protocols), 1)


class StallTests(SynchronousTestCase):
    """
    An origin that stops sending in the middle of a body.
    """

    def test_stalledMidBodyAborted(self) -> None:
        """
        No body bytes for the upstream timeout: the exchange is aborted and the body ends
        incomplete; a client that is merely slow (the sink paused us) is no stall.
        """
        clock = Clock()
        connector = FakeConnector()
        forwarder = Forwarder(clock, connector, timeout=10)
        d = forwarder.fetch(request(), None)
        protocol = connector.protocols[0]
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        sink = Sink()
        self.successResultOf(d).deliverBody(sink)
        assert sink.producer is not None
        sink.producer.pauseProducing()
        clock.advance(30)
        self.assertFalse(protocol.transport.disconnecting)
        sink.producer.resumeProducing()
        clock.advance(5)
        protocol.dataReceived(b"more")
        clock.advance(9)
        self.assertFalse(protocol.transport.disconnecting)
        clock.advance(12)
        self.assertTrue(protocol.transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(sink.done, False)


class NoDelayTests(SynchronousTestCase):
    """
    Upstream connections send small writes at once.
    """

    def test_nagleOff(self) -> None:
        """
        An upstream TCP connection has Nagle's algorithm switched off, so that a request
        body written after its head is not held back waiting for an acknowledgement (a
        40 ms stall per POST with delayed ACKs).
        """

        class TCPTransport(StringTransport):
            noDelay = False

            def setTcpNoDelay(self, enabled: bool) -> None:
                self.noDelay = enabled

        class Connector(FakeConnector):
            def connect(self, target: Target, protocol: Protocol) -> Deferred[Any]:
                protocol.makeConnection(TCPTransport())
                self.protocols.append(protocol)
                return succeed(protocol)

        connector = Connector()
        Forwarder(Clock(), connector).fetch(request(), None)
        self.assertTrue(connector.protocols[0].transport.noDelay)
