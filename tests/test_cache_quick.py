"""
Tests for L{caplab.proxy.cache.quick.QuickHits}, the simplest hits' short way: it answers
exactly what the general way (L{CachingFetcher.fetch} with the upstream request) answers,
and leaves everything else to it.
"""

from __future__ import annotations

from typing import Any

from caplab.proxy.body import WholeBody
from caplab.proxy.cache.quick import QuickHits
from caplab.proxy.headers import upstreamRequestHeaders
from caplab.proxy.hooks import Headers, UpstreamRequest
from tests.test_cache_fetcher import TARGET, FetcherTestCase, Result, Sink

#: The client's fields of a plain browser GET (hop-by-hop ones included, as sent).
BROWSER: Headers = [
    (b"Host", b"example.com"),
    (b"User-Agent", b"test"),
    (b"Accept", b"text/html"),
    (b"Accept-Encoding", b"gzip, br"),
    (b"Proxy-Connection", b"keep-alive"),
]


class QuickHitTests(FetcherTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.quick = QuickHits(self.cache)
        self.metrics = self.cache.metrics = Counting()

    def keep(self, headers: Headers, body: bytes = b"hello", request: Headers = BROWSER) -> None:
        """
        Have the origin's response to a GET with the client's C{request} fields stored.
        """
        result = self.fetch(self.upstream(request))
        self.origin.respond(200, headers, body)
        self.assertEqual(result.read(), body)
        self.assertIn("stored", result.status or "")

    def upstream(self, client: Headers, connection: list[bytes] | None = None) -> UpstreamRequest:
        """
        The upstream request the exchange makes of a client's GET of L{TARGET}.
        """
        fields = upstreamRequestHeaders(client, b"example.com", b"1.1 caplab", None, connection)
        return UpstreamRequest(b"GET", TARGET, fields)

    def both(self, client: Headers, connection: list[bytes] | None = None) -> tuple[Any, Result]:
        """
        The short way's answer and the general way's, to the same client request.
        """
        quick = self.quick.answer(TARGET.uri, client, connection or [])
        general = self.fetch(self.upstream(client, connection))
        return quick, general

    def assertSame(self, client: Headers, connection: list[bytes] | None = None) -> None:
        hits = self.metrics.hits
        quick, general = self.both(client, connection)
        self.assertIsNotNone(quick, "the short way declined")
        assert general.response is not None
        self.assertEqual(
            (quick.code, quick.phrase, quick.headers, quick.cacheStatus),
            (general.code, general.response.phrase, general.response.headers, general.status),
        )
        self.assertEqual(self.read(quick), self.read(general.response))
        self.assertEqual(self.metrics.hits, hits + 2)  # one hit counted each way

    def read(self, response: Any) -> bytes:
        """
        The whole body of C{response}, however it is delivered (at once, or one stored
        piece per reactor turn).
        """
        sink = Sink()
        response.deliverBody(sink)
        for _ in range(100):
            if sink.done is not None:
                break
            self.clock.advance(0)
        self.assertIs(sink.done, True)
        return b"".join(sink.data)

    def assertDeclined(self, client: Headers, connection: list[bytes] | None = None) -> None:
        self.assertIsNone(self.quick.answer(TARGET.uri, client, connection or []))

    def test_sameAsGeneral(self) -> None:
        """
        A fresh stored response answers the same both ways: status, fields (stored ones,
        C{Content-Length}, C{Age}), C{Cache-Status} and body, and it is counted a hit.
        """
        self.keep([(b"Cache-Control", b"max-age=600"), (b"X-A", b"1"), (b"Age", b"7")])
        self.clock.advance(30)
        self.assertSame(BROWSER)
        self.assertSame([(b"Host", b"other"), (b"Connection", b"keep-alive")], [b"keep-alive"])

    def test_varyOnEndToEndField(self) -> None:
        """
        A response that varies on a field the client's request carries unchanged upstream is
        selected the same by the client's fields; another variant is no hit either way.
        """
        self.keep([(b"Cache-Control", b"max-age=600"), (b"Vary", b"Accept-Encoding")])
        self.assertSame(BROWSER)
        other = [(n, b"identity" if n == b"Accept-Encoding" else v) for n, v in BROWSER]
        self.assertDeclined(other)

    def test_varyOnChangedField(self) -> None:
        """
        A response that varies on a field the proxy changes on its way upstream (C{Via},
        C{Host}, a hop-by-hop field, one that C{Connection} names) takes the general way.
        """
        for name in (b"Via", b"Host", b"Proxy-Connection", b"X-Hop"):
            self.successResultOf(self.cache.purge(TARGET.uri))
            self.keep([(b"Cache-Control", b"max-age=600"), (b"Vary", name)])
            client = [*BROWSER, (b"Connection", b"x-hop"), (b"X-Hop", b"1")]
            self.assertDeclined(client, [b"x-hop"])
            self.assertIn("hit", self.fetch(self.upstream(client, [b"x-hop"])).status or "")

    def test_generalWayCases(self) -> None:
        """
        A range, preconditions, the client's own directives, a stale entry and no entry at
        all are left to the general way.
        """
        self.assertDeclined(BROWSER)  # nothing stored
        self.keep([(b"Cache-Control", b"max-age=60"), (b"ETag", b'"v"')])
        for extra in (
            (b"Range", b"bytes=0-1"),
            (b"If-None-Match", b'"v"'),
            (b"Cache-Control", b"max-age=0"),
            (b"Pragma", b"no-cache"),
        ):
            self.assertDeclined([*BROWSER, extra])
        self.clock.advance(61)
        self.assertDeclined(BROWSER)

    def test_bodyInPieces(self) -> None:
        """
        A body stored in pieces (larger than one block) is streamed the same both ways; one
        held whole is delivered as a L{WholeBody}, which the answer sends with its head.
        """
        self.keep([(b"Cache-Control", b"max-age=600")], bytes(range(256)) * 512)
        self.assertSame(BROWSER)
        self.successResultOf(self.cache.purge(TARGET.uri))
        self.keep([(b"Cache-Control", b"max-age=600")], b"small")
        quick = self.quick.answer(TARGET.uri, BROWSER, [])
        assert quick is not None
        self.assertIs(type(quick.deliverBody), WholeBody)


class Counting:
    """
    The cache's metrics, as far as hits and misses go.
    """

    def __init__(self) -> None:
        self.hits = self.misses = 0

    def cacheHit(self) -> None:
        self.hits += 1

    def cacheMiss(self) -> None:
        self.misses += 1

    def cacheStoredBytes(self, count: int) -> None:
        pass
