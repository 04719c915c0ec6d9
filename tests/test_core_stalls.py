"""
Tests for the deadlines of a request body in L{caplab.proxy.channel}: a client that sends a
request head and part of its body, then nothing, is answered 408 (or cut off) and its
upstream request dropped, rather than holding the channel and an origin connection for good.
"""

from __future__ import annotations

from typing import Any

from caplab.proxy.hooks import UpstreamResponse
from tests.test_proxy_channel import Harness, Producer
from tests.test_proxy_exchange import Sink


class StalledBodyTests(Harness):
    """
    A request body that stops coming.
    """

    def _stalled(self, head: bytes, part: bytes) -> tuple[Any, Any, Sink]:
        channel, transport = self.connect(idleTimeout=10, headerTimeout=4)
        channel.dataReceived(head)
        [(request, body, d)] = self.fetcher.calls
        sink = Sink()
        body.startStreaming(sink)
        channel.dataReceived(part)
        return channel, transport, sink

    def test_lengthBody408(self) -> None:
        """
        A Content-Length body that stalls longer than the idle timeout, before any answer:
        a 408 with C{Connection: close}, the connection closed, the fetch cancelled and the
        upstream body ended incomplete.
        """
        channel, transport, sink = self._stalled(
            b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n", b"abc"
        )
        self.clock.pump([1] * 10)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        self.clock.pump([1] * 3)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "), transport.value())
        self.assertIn(b"Connection: close", transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.fetcher.cancelled, 1)
        self.assertEqual((sink.data, sink.done), ([b"abc"], [False]))
        self.assertEqual(self.logged[0][2:6], (b"POST", b"http://h/", b"HTTP/1.1", 408))

    def test_chunkedBody408(self) -> None:
        """
        A chunked body that stalls mid-chunk is answered 408 the same way.
        """
        channel, transport, sink = self._stalled(
            b"PUT http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nab",
        )
        self.clock.pump([1] * 13)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "), transport.value())
        self.assertTrue(transport.disconnecting)

    def test_answerStartedCutOff(self) -> None:
        """
        When the response has begun already, a stalled body cuts the connection off (never
        a 408 inside another answer).
        """
        channel, transport, sink = self._stalled(
            b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n", b"abc"
        )
        sinks: list[Any] = []
        self.fetcher.calls[0][2].callback(
            UpstreamResponse(200, b"OK", [(b"Content-Length", b"5")], sinks.append)
        )
        sinks[0].bodyStarted(Producer())
        sinks[0].bodyData(b"he")
        sent = transport.value()
        self.clock.pump([1] * 13)
        self.assertTrue(sent.startswith(b"HTTP/1.1 200 "), sent)
        self.assertNotIn(b"408", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_slowBodyNotCut(self) -> None:
        """
        A body that keeps coming, however slowly, is not a stall; nor is a body the proxy
        itself holds back (the client paused by the upstream leg).
        """
        channel, transport, sink = self._stalled(
            b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n", b"a"
        )
        for _ in range(5):
            self.clock.pump([1] * 8)
            channel.dataReceived(b"b")
        channel.pauseReading()
        self.clock.pump([1] * 30)
        self.assertFalse(transport.disconnecting)
        channel.resumeReading()
        self.clock.pump([1] * 8)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.clock.pump([1] * 5)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))

    def test_notWantedNotCounted(self) -> None:
        """
        A body the upstream leg does not want yet (connecting; a client waiting for
        C{100 Continue}) is not the client's stall: the upstream timeouts apply.
        """
        channel, transport = self.connect(idleTimeout=10, headerTimeout=4)
        channel.dataReceived(
            b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        self.clock.pump([1] * 30)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_nextRequestStartsAfresh(self) -> None:
        """
        The stall of one request's body is not counted against the next one's: a body that
        waited almost the idle timeout, then came whole, leaves the next request (pipelined
        behind it) its own full idle timeout.
        """
        channel, transport, sink = self._stalled(
            b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n", b""
        )
        self.clock.pump([1] * 10)
        channel.dataReceived(
            b"abc" + b"POST http://h/2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
        )
        self.fetcher.answer(204)
        [_, (request, body, d)] = self.fetcher.calls
        body.startStreaming(Sink())
        self.clock.pump([1] * 5)
        self.assertNotIn(b" 408 ", transport.value())
        self.assertFalse(transport.disconnecting)
        self.clock.pump([1] * 8)
        self.assertIn(b" 408 ", transport.value())
