"""
Tests that no exception of a synchronous dispatch (the cache's short way, a fetcher, a page)
or of a hostile field escapes into L{caplab.proxy.channel.CaplabProxy.dataReceived}: the
client gets a 500 (or its answer) and the log one failure.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import capturedLogs

from caplab.proxy.hooks import PageRequest, PageResponse, UpstreamRequest
from tests.test_proxy_channel import Harness


class Broken(RuntimeError):
    """
    The bug a test plants.
    """


class BrokenHits:
    def answer(self, uri: str, headers: Any, connection: Any) -> Any:
        raise Broken("hits")


class BrokenFetcher:
    def fetch(self, request: UpstreamRequest, body: Any) -> Any:
        raise Broken("fetch")


class BrokenPage:
    def render(self, request: PageRequest) -> PageResponse:
        raise Broken("page")


class DispatchErrorTests(Harness):
    """
    A dispatch that raises is a 500, and the connection goes on.
    """

    def _check500(self, channel: Any, transport: Any, request: bytes) -> None:
        with capturedLogs() as events:
            channel.dataReceived(request)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 500 "), transport.value())
        failures = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(self.flushLoggedErrors(Broken)), 1)
        self.assertEqual(self.logged[-1][5], 500)

    def test_hitsRaise(self) -> None:
        """
        The cache's short way raising while it answers a GET.
        """
        channel, transport = self.connect(hits=BrokenHits())
        self._check500(channel, transport, b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertFalse(transport.disconnecting)
        transport.clear()
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "), transport.value())

    def test_fetchRaises(self) -> None:
        """
        A fetcher whose C{fetch} raises instead of returning a Deferred.
        """
        channel, transport = self.connect()
        self.factory.settings.fetcher = BrokenFetcher()
        self._check500(channel, transport, b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")

    def test_pageRaises(self) -> None:
        """
        One of the proxy's own pages raising.
        """
        channel, transport = self.connect(pages={b"/": BrokenPage()})
        self._check500(channel, transport, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")


class MaxForwardsTests(Harness):
    """
    C{Max-Forwards} of thousands of digits.
    """

    def test_hugeMaxForwards(self) -> None:
        """
        A number past int()'s digit limit counts as very many hops: decremented from the
        cap and forwarded, not an exception.
        """
        channel, transport = self.connect()
        channel.dataReceived(
            b"OPTIONS http://h/ HTTP/1.1\r\nHost: h\r\nMax-Forwards: " + b"9" * 5000 + b"\r\n\r\n"
        )
        [(request, body, d)] = self.fetcher.calls
        self.assertEqual(dict(request.headers)[b"Max-Forwards"], b"%d" % (2**31 - 2))
