"""
Tests for L{caplab.proxy.cache.fetcher.CachingFetcher} with a fake origin fetcher, an
in-memory (or disk) store and L{Clock}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from caplab.proxy.cache.disk import DiskStore
from caplab.proxy.cache.fetcher import CachingFetcher
from caplab.proxy.cache.rules import formatHTTPDate
from caplab.proxy.cache.storage import MemoryStore
from caplab.proxy.hooks import (
    Headers,
    Target,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)

NOW = 1_700_000_000.0
TARGET = Target("http", "example.com", 80, b"/a")


@implementer(IPushProducer)
class OriginProducer:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class OriginBody:
    """
    A response body the test hands out piece by piece.
    """

    def __init__(self) -> None:
        self.sink: Any = None
        self.producer = OriginProducer()

    def deliverBody(self, sink: Any) -> None:
        self.sink = sink
        sink.bodyStarted(self.producer)

    def write(self, data: bytes) -> None:
        self.sink.bodyData(data)

    def end(self, complete: bool = True) -> None:
        self.sink.bodyDone(complete)


class FakeOrigin:
    """
    An L{IFetcher} that records requests; each is answered by the test.
    """

    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []
        self.pending: list[Deferred[UpstreamResponse]] = []
        self.cancelled = 0

    def fetch(self, request: UpstreamRequest, body: Any) -> Deferred[UpstreamResponse]:
        self.requests.append(request)

        def cancel(_: Deferred[UpstreamResponse]) -> None:
            self.cancelled += 1

        d: Deferred[UpstreamResponse] = Deferred(cancel)
        self.pending.append(d)
        return d

    def respond(
        self,
        code: int = 200,
        headers: Headers | None = None,
        body: bytes | None = b"hello",
        index: int = -1,
    ) -> OriginBody:
        """
        Answer a pending request; with C{body} the whole body is delivered as soon as
        asked for, else the returned L{OriginBody} streams it.
        """
        d = self.pending.pop(index)
        stream = OriginBody()
        headers = list(headers or [])
        if body is not None:
            headers.append((b"Content-Length", b"%d" % len(body)))

            def deliver(sink: Any) -> None:
                stream.deliverBody(sink)
                if body:
                    stream.write(body)
                stream.end()

            d.callback(UpstreamResponse(code, b"X", headers, deliver))
        else:
            d.callback(UpstreamResponse(code, b"X", headers, stream.deliverBody))
        return stream

    def headerOf(self, index: int, name: bytes) -> bytes | None:
        for key, value in self.requests[index].headers:
            if key.lower() == name:
                return value
        return None


class Sink:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.done: bool | None = None

    def bodyStarted(self, producer: IPushProducer) -> None:
        pass

    def bodyData(self, data: bytes) -> None:
        self.data.append(data)

    def bodyDone(self, complete: bool) -> None:
        self.done = complete


class Result:
    """
    What a client got: the response head and, once delivered, its body.
    """

    def __init__(self, d: Deferred[UpstreamResponse]) -> None:
        self.response: UpstreamResponse | None = None
        self.failure: Any = None
        self.sink = Sink()
        d.addCallbacks(self._got, self._failed)

    def _got(self, response: UpstreamResponse) -> None:
        self.response = response

    def _failed(self, failure: Any) -> None:
        self.failure = failure

    def read(self) -> bytes:
        assert self.response is not None, self.failure
        self.response.deliverBody(self.sink)
        return b"".join(self.sink.data)

    @property
    def code(self) -> int:
        assert self.response is not None, self.failure
        return self.response.code

    @property
    def status(self) -> str | None:
        assert self.response is not None, self.failure
        return self.response.cacheStatus

    def header(self, name: bytes) -> bytes | None:
        assert self.response is not None, self.failure
        for key, value in self.response.headers:
            if key.lower() == name:
                return value
        return None


def get(
    *headers: tuple[bytes, bytes], method: bytes = b"GET", target: Target = TARGET
) -> UpstreamRequest:
    return UpstreamRequest(method, target, list(headers))


class FetcherTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.origin = FakeOrigin()
        self.store = MemoryStore(1 << 20, 1 << 18, callLater=self.clock.callLater)
        self.cache = CachingFetcher(self.origin, self.store, self.clock, collapseTimeout=5)

    def fetch(self, request: UpstreamRequest | None = None, body: Any = None) -> Result:
        return Result(self.cache.fetch(request or get(), body))

    def prime(
        self, headers: Headers, body: bytes = b"hello", request: UpstreamRequest | None = None
    ) -> Result:
        """
        A miss answered and read whole, so that it is stored if it may be.
        """
        first = self.fetch(request)
        self.origin.respond(200, [(b"Date", formatHTTPDate(self.clock.seconds())), *headers], body)
        self.assertEqual(first.read(), body)
        return first


class HitMissTests(FetcherTestCase):
    """
    Misses are stored while they stream; hits skip the origin.
    """

    def test_missThenHit(self) -> None:
        """
        A storable response is stored; the next request is a hit with an C{Age} that grows,
        and the origin sees one request.
        """
        first = self.prime([(b"Cache-Control", b"max-age=60")])
        self.assertEqual(first.status, "caplab; fwd=miss; stored")
        self.clock.advance(10)
        second = self.fetch()
        self.assertEqual(second.read(), b"hello")
        self.assertEqual(second.status, "caplab; hit; ttl=50")
        self.assertEqual(second.header(b"age"), b"10")
        self.assertEqual(second.header(b"content-length"), b"5")
        self.assertEqual(len(self.origin.requests), 1)

    def test_streamedWhileStored(self) -> None:
        """
        The client gets each piece as it arrives; the entry exists only once the body ends.
        """
        first = self.fetch()
        stream = self.origin.respond(200, [(b"Cache-Control", b"max-age=60")], body=None)
        assert first.response is not None
        first.response.deliverBody(first.sink)
        stream.write(b"one ")
        self.assertEqual(first.sink.data, [b"one "])
        self.assertEqual(self.store.lookup(TARGET.uri), [])
        stream.write(b"two")
        stream.end()
        self.assertEqual(self.fetch().read(), b"one two")
        self.assertEqual(len(self.origin.requests), 1)

    def test_cutOffNeverStored(self) -> None:
        """
        A body that ends incomplete, or shorter than its Content-Length, is not stored.
        """
        first = self.fetch()
        stream = self.origin.respond(200, [(b"Cache-Control", b"max-age=60")], body=None)
        assert first.response is not None
        first.response.deliverBody(first.sink)
        stream.write(b"part")
        stream.end(complete=False)
        self.assertEqual(self.store.lookup(TARGET.uri), [])
        second = self.fetch()
        stream = self.origin.respond(
            200, [(b"Cache-Control", b"max-age=60"), (b"Content-Length", b"10")], body=None
        )
        assert second.response is not None
        second.response.deliverBody(second.sink)
        stream.write(b"short")
        stream.end()
        self.assertEqual(self.store.lookup(TARGET.uri), [])
        self.assertEqual(len(self.origin.requests), 2)

    def test_tooLargeStreamedNotStored(self) -> None:
        """
        A body over the object limit reaches the client whole and is not stored.
        """
        body = b"x" * (self.store.maxObjectSize + 1)
        first = self.fetch()
        stream = self.origin.respond(200, [(b"Cache-Control", b"max-age=60")], body=None)
        assert first.response is not None
        first.response.deliverBody(first.sink)
        stream.write(body[:1000])
        stream.write(body[1000:])
        stream.end()
        self.assertEqual(b"".join(first.sink.data), body)
        self.assertEqual(self.store.lookup(TARGET.uri), [])

    def test_privateAndNoStore(self) -> None:
        """
        C{private} and C{no-store} responses never reach another client.
        """
        for directive in (b"private, max-age=60", b"no-store"):
            self.store.invalidate(TARGET.uri)
            before = len(self.origin.requests)
            first = self.prime([(b"Cache-Control", directive)], body=b"secret")
            self.assertEqual(first.status, "caplab; fwd=miss")
            second = self.fetch()
            self.assertEqual(len(self.origin.requests), before + 2, directive)
            self.origin.respond(200, [], b"other")
            self.assertEqual(second.read(), b"other")

    def test_authorization(self) -> None:
        """
        A response to an authorized request is stored only with C{public} (and friends).
        """
        auth = get((b"Authorization", b"Basic eDp5"))
        self.prime([(b"Cache-Control", b"max-age=60")], request=auth)
        self.fetch()
        self.assertEqual(len(self.origin.requests), 2)
        self.origin.respond(200, [(b"Cache-Control", b"public, max-age=60")])
        self.fetch()
        self.assertEqual(len(self.origin.requests), 2)

    def test_heuristic(self) -> None:
        """
        A 200 with only C{Last-Modified} is fresh for a tenth of its age.
        """
        lastModified = formatHTTPDate(NOW - 1000)
        self.prime([(b"Last-Modified", lastModified)])
        self.clock.advance(90)
        self.assertEqual(self.fetch().status, "caplab; hit; ttl=10")
        self.clock.advance(20)
        self.fetch()
        self.assertEqual(len(self.origin.requests), 2)
        self.assertEqual(self.origin.headerOf(1, b"if-modified-since"), lastModified)

    def test_head(self) -> None:
        """
        HEAD is answered from a stored GET, with its length and no body.
        """
        self.prime([(b"Cache-Control", b"max-age=60")])
        head = self.fetch(get(method=b"HEAD"))
        self.assertEqual(head.status, "caplab; hit; ttl=60")
        self.assertEqual(head.header(b"content-length"), b"5")
        self.assertEqual(head.read(), b"")
        self.assertTrue(head.sink.done)
        self.assertEqual(len(self.origin.requests), 1)

    def test_headMissNotStored(self) -> None:
        """
        A HEAD miss goes to the origin as HEAD and stores nothing.
        """
        head = self.fetch(get(method=b"HEAD"))
        self.origin.respond(200, [(b"Cache-Control", b"max-age=60")], b"")
        self.assertEqual(self.origin.requests[0].method, b"HEAD")
        head.read()
        self.assertEqual(self.store.lookup(TARGET.uri), [])

    def test_clientConditional(self) -> None:
        """
        A client's conditional request that the stored response satisfies gets a 304 from
        the cache; one that it does not gets the full response.
        """
        self.prime([(b"Cache-Control", b"max-age=60"), (b"ETag", b'"v1"')])
        notModified = self.fetch(get((b"If-None-Match", b'"v1"')))
        self.assertEqual(notModified.code, 304)
        self.assertEqual(notModified.header(b"etag"), b'"v1"')
        self.assertEqual(notModified.read(), b"")
        full = self.fetch(get((b"If-None-Match", b'"v0"')))
        self.assertEqual((full.code, full.read()), (200, b"hello"))
        self.assertEqual(len(self.origin.requests), 1)

    def test_onlyIfCached(self) -> None:
        """
        C{only-if-cached} with nothing usable stored is a 504 without asking the origin.
        """
        result = self.fetch(get((b"Cache-Control", b"only-if-cached")))
        self.assertEqual(result.failure.value.code, 504)
        self.assertEqual(self.origin.requests, [])

    def test_rangeFromStore(self) -> None:
        """
        A single range of a fresh stored 200 is answered 206 from the cache.
        """
        self.prime([(b"Cache-Control", b"max-age=60")], b"0123456789")
        for value, body, contentRange in [
            (b"bytes=2-4", b"234", b"bytes 2-4/10"),
            (b"bytes=7-", b"789", b"bytes 7-9/10"),
            (b"bytes=-2", b"89", b"bytes 8-9/10"),
        ]:
            result = self.fetch(get((b"Range", value)))
            self.assertEqual((result.code, result.read()), (206, body))
            self.assertEqual(result.header(b"content-range"), contentRange)
            self.assertEqual(result.header(b"content-length"), b"%d" % len(body))
            self.assertTrue(result.sink.done)
            self.assertEqual(result.status, "caplab; hit; ttl=60; detail=range")
        self.assertEqual(len(self.origin.requests), 1)

    def test_rangeNotFromStore(self) -> None:
        """
        Several ranges go to the origin; an C{If-Range} that does not match (no strong
        validator stored) gets the whole stored response; a range past the end is 416 from
        the cache; a stale entry without validator is fetched again.
        """
        self.prime([(b"Cache-Control", b"max-age=60")], b"0123456789")
        several = self.fetch(get((b"Range", b"bytes=0-1,4-5")))
        self.assertEqual(len(self.origin.requests), 2)
        self.origin.respond(206, [], b"multipart")
        self.assertEqual(several.status, "caplab; fwd=bypass; detail=range")
        whole = self.fetch(get((b"Range", b"bytes=0-1"), (b"If-Range", b'"x"')))
        self.assertEqual((whole.code, whole.read()), (200, b"0123456789"))
        past = self.fetch(get((b"Range", b"bytes=20-")))
        self.assertEqual((past.code, past.header(b"content-range")), (416, b"bytes */10"))
        self.assertEqual(len(self.origin.requests), 2)
        self.clock.advance(100)
        self.fetch(get((b"Range", b"bytes=0-1")))
        self.assertEqual(len(self.origin.requests), 3)

    def test_ifRangeStrongValidator(self) -> None:
        """
        An C{If-Range} with the stored strong C{ETag} (or strong C{Last-Modified}) gets the
        range; a weak one gets the whole response.
        """
        lastModified = formatHTTPDate(NOW - 3600)
        self.prime(
            [
                (b"Cache-Control", b"max-age=60"),
                (b"ETag", b'"v1"'),
                (b"Last-Modified", lastModified),
            ],
            b"0123456789",
        )
        for ifRange, expected in (
            (b'"v1"', (206, b"23")),
            (lastModified, (206, b"23")),
            (b'W/"v1"', (200, b"0123456789")),
            (b'"v2"', (200, b"0123456789")),
        ):
            result = self.fetch(get((b"Range", b"bytes=2-3"), (b"If-Range", ifRange)))
            self.assertEqual((result.code, result.read()), expected, ifRange)
        self.assertEqual(len(self.origin.requests), 1)

    def test_range(self) -> None:
        """
        A range request that misses goes to the origin; a 206 without a usable
        C{Content-Range} is not stored.
        """
        result = self.fetch(get((b"Range", b"bytes=0-1")))
        self.origin.respond(206, [(b"Cache-Control", b"max-age=60")], b"he")
        self.assertEqual(result.status, "caplab; fwd=miss")
        self.assertEqual(result.read(), b"he")
        self.assertEqual(self.store.lookup(TARGET.uri), [])
        self.assertEqual(self.store.parts(TARGET.uri), [])


class PartialContentTests(FetcherTestCase):
    """
    206 responses to single-range requests are stored as parts; later ranges inside a part
    are served from it; parts that hold everything become one complete response (issue 12
    item 4).
    """

    def part(self, first: int, last: int, body: bytes, etag: bytes = b'"v1"') -> Result:
        result = self.fetch(get((b"Range", b"bytes=%d-%d" % (first, last))))
        self.origin.respond(
            206,
            [
                (b"Date", formatHTTPDate(self.clock.seconds())),
                (b"Cache-Control", b"max-age=60"),
                (b"ETag", etag),
                (b"Content-Range", b"bytes %d-%d/10" % (first, last)),
            ],
            body,
        )
        self.assertEqual(result.read(), body)
        return result

    def test_partStoredAndServed(self) -> None:
        stored = self.part(0, 4, b"01234")
        self.assertEqual(stored.status, "caplab; fwd=miss; stored")
        inside = self.fetch(get((b"Range", b"bytes=1-3")))
        self.assertEqual((inside.code, inside.read()), (206, b"123"))
        self.assertEqual(inside.header(b"content-range"), b"bytes 1-3/10")
        self.assertEqual(inside.status, "caplab; hit; ttl=60; detail=range")
        self.assertEqual(len(self.origin.requests), 1)
        outside = self.fetch(get((b"Range", b"bytes=3-6")))
        self.assertEqual(len(self.origin.requests), 2)
        self.assertIsNone(outside.response)
        whole = self.fetch()
        self.assertEqual(len(self.origin.requests), 3, "a part never answers a whole GET")
        self.assertIsNone(whole.response)

    def test_partsCombined(self) -> None:
        """
        Parts with the same strong validator that cover the representation become one
        complete stored response, and the parts go.
        """
        self.part(0, 4, b"01234")
        self.part(3, 9, b"3456789")
        [complete] = self.store.lookup(TARGET.uri)
        self.assertEqual((complete.head.code, complete.bodyLength), (200, 10))
        self.assertEqual(self.store.parts(TARGET.uri), [])
        whole = self.fetch()
        self.assertEqual((whole.code, whole.read()), (200, b"0123456789"))
        self.assertEqual(whole.header(b"content-length"), b"10")
        self.assertIsNone(whole.header(b"content-range"))
        self.assertEqual(len(self.origin.requests), 2)

    def test_otherValidatorsNotCombined(self) -> None:
        self.part(0, 4, b"01234", b'"v1"')
        self.part(5, 9, b"56789", b'"v2"')
        self.assertEqual(self.store.lookup(TARGET.uri), [])
        self.part(2, 9, b"23456789", b'W/"v1"')
        self.assertEqual(self.store.lookup(TARGET.uri), [])

    def test_revalidatedRangeFromStoredWhole(self) -> None:
        """
        A range request for a stale stored response is revalidated with the range kept;
        the 304 lets the range be cut from the stored response.
        """
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"')], b"0123456789")
        self.clock.advance(20)
        result = self.fetch(get((b"Range", b"bytes=-3")))
        self.assertEqual(self.origin.headerOf(1, b"range"), b"bytes=-3")
        self.assertEqual(self.origin.headerOf(1, b"if-none-match"), b'"v1"')
        self.origin.respond(304, [(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=60")], b"")
        self.assertEqual((result.code, result.read()), (206, b"789"))

    def test_sameValidator206UpdatesStored(self) -> None:
        """
        A 206 with the stored response's strong validator refreshes it (its fields, per-
        client ones excepted); one with another validator removes it.
        """
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"')], b"0123456789")
        self.clock.advance(20)
        result = self.fetch(get((b"Range", b"bytes=0-1")))
        self.origin.respond(
            206,
            [
                (b"Cache-Control", b"max-age=100"),
                (b"ETag", b'"v1"'),
                (b"X-New", b"1"),
                (b"Set-Cookie", b"s=1"),
                (b"Content-Range", b"bytes 0-1/10"),
            ],
            b"01",
        )
        self.assertEqual(result.read(), b"01")
        hit = self.fetch()
        self.assertEqual(hit.status, "caplab; hit; ttl=100")
        self.assertEqual((hit.header(b"x-new"), hit.header(b"set-cookie")), (b"1", None))
        self.clock.advance(200)
        again = self.fetch(get((b"Range", b"bytes=0-1")))
        self.origin.respond(
            206,
            [
                (b"Cache-Control", b"max-age=100"),
                (b"ETag", b'"v2"'),
                (b"Content-Range", b"bytes 0-1/10"),
            ],
            b"ab",
        )
        self.assertEqual(again.read(), b"ab")
        self.assertEqual(self.store.lookup(TARGET.uri), [])
        self.assertEqual(len(self.store.parts(TARGET.uri)), 1)


class VaryTests(FetcherTestCase):
    """
    Several variants per URI, chosen by the request fields C{Vary} names.
    """

    def test_tooManyNamesNotStored(self) -> None:
        """
        A response that varies on more than L{rules.MAX_VARY_NAMES} fields reaches its
        client and is not stored.
        """
        vary = b",".join(b"h%d" % i for i in range(10000))
        first = self.prime([(b"Cache-Control", b"max-age=60"), (b"Vary", vary)])
        self.assertEqual(first.status, "caplab; fwd=miss")
        self.assertEqual(self.store.lookup(TARGET.uri), [])

    def test_variants(self) -> None:
        """
        Each variant is stored and served to requests that match it; another value is a
        C{vary-miss}.
        """
        vary = [(b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept")]
        html = get((b"Accept", b"text/html"))
        json = get((b"Accept", b"application/json"))
        self.prime(vary, b"<p>", request=html)
        miss = self.prime(vary, b"{}", request=json)
        self.assertEqual(miss.status, "caplab; fwd=vary-miss; stored")
        self.assertEqual(self.fetch(get((b"accept", b"text/html"))).read(), b"<p>")
        self.assertEqual(self.fetch(json).read(), b"{}")
        self.assertEqual(len(self.origin.requests), 2)
        self.fetch(get())
        self.assertEqual(len(self.origin.requests), 3)

    def test_varyStar(self) -> None:
        """
        C{Vary: *} is never served from the cache.
        """
        self.prime([(b"Cache-Control", b"max-age=60"), (b"Vary", b"*")])
        self.fetch()
        self.assertEqual(len(self.origin.requests), 2)


class RevalidationTests(FetcherTestCase):
    """
    Stale entries are revalidated with the stored validators.
    """

    def test_notModified(self) -> None:
        """
        A stale entry is revalidated with If-None-Match and If-Modified-Since; a 304
        refreshes its head and the client is served from the cache.
        """
        lastModified = formatHTTPDate(NOW - 3600)
        self.prime(
            [
                (b"Cache-Control", b"max-age=10"),
                (b"ETag", b'"v1"'),
                (b"Last-Modified", lastModified),
            ]
        )
        self.clock.advance(20)
        second = self.fetch(get((b"If-None-Match", b'"client"')))
        self.assertEqual(self.origin.headerOf(1, b"if-none-match"), b'"v1"')
        self.assertEqual(self.origin.headerOf(1, b"if-modified-since"), lastModified)
        self.origin.respond(
            304,
            [
                (b"Cache-Control", b"max-age=100"),
                (b"ETag", b'"v1"'),
                (b"Date", formatHTTPDate(self.clock.seconds())),
            ],
            b"",
        )
        self.assertEqual(second.status, "caplab; fwd=stale; fwd-status=304")
        self.assertEqual((second.code, second.read()), (200, b"hello"))
        self.assertEqual(second.header(b"cache-control"), b"max-age=100")
        self.clock.advance(50)
        self.assertEqual(self.fetch().status, "caplab; hit; ttl=50")
        self.assertEqual(len(self.origin.requests), 2)

    def test_notModifiedCookieGoesToOneClientOnly(self) -> None:
        """
        A 304 that carries C{Set-Cookie} (and other per-client fields) refreshes the stored
        response without them: the client whose request was revalidated gets them, later
        clients served from the refreshed entry never do.
        """
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"')])
        self.clock.advance(20)
        revalidated = self.fetch()
        self.origin.respond(
            304,
            [
                (b"Cache-Control", b"max-age=100"),
                (b"ETag", b'"v1"'),
                (b"Date", formatHTTPDate(self.clock.seconds())),
                (b"Set-Cookie", b"session=alice"),
                (b"Authentication-Info", b'nextnonce="n"'),
            ],
            b"",
        )
        self.assertEqual(revalidated.read(), b"hello")
        self.assertEqual(revalidated.header(b"set-cookie"), b"session=alice")
        self.assertEqual(revalidated.header(b"authentication-info"), b'nextnonce="n"')
        later = self.fetch()
        self.assertEqual(later.status, "caplab; hit; ttl=100")
        self.assertEqual(later.read(), b"hello")
        self.assertIsNone(later.header(b"set-cookie"))
        self.assertIsNone(later.header(b"authentication-info"))
        self.assertNotIn(b"session=alice", repr(self.store.lookup(TARGET.uri)).encode())

    def test_backgroundNotModifiedCookieDropped(self) -> None:
        """
        A background revalidation's 304 has no client: its C{Set-Cookie} goes nowhere.
        """
        self.prime(
            [(b"Cache-Control", b"max-age=10, stale-while-revalidate=60"), (b"ETag", b'"v"')]
        )
        self.clock.advance(20)
        self.fetch().read()
        self.origin.respond(
            304,
            [
                (b"Cache-Control", b"max-age=100"),
                (b"Date", formatHTTPDate(self.clock.seconds())),
                (b"Set-Cookie", b"s=bob"),
            ],
            b"",
        )
        later = self.fetch()
        self.assertEqual(later.status, "caplab; hit; ttl=100")
        self.assertIsNone(later.header(b"set-cookie"))

    def test_requestMaxAgeZero(self) -> None:
        """
        C{Cache-Control: max-age=0} from the client revalidates a fresh entry.
        """
        self.prime([(b"Cache-Control", b"max-age=60"), (b"ETag", b'"v1"')])
        result = self.fetch(get((b"Cache-Control", b"max-age=0")))
        self.assertEqual(self.origin.headerOf(1, b"if-none-match"), b'"v1"')
        self.origin.respond(304, [(b"ETag", b'"v1"')], b"")
        self.assertEqual(result.status, "caplab; fwd=request; fwd-status=304")
        self.assertEqual(result.read(), b"hello")

    def test_newContent(self) -> None:
        """
        A 200 to a revalidation replaces the stored response.
        """
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"')])
        self.clock.advance(20)
        second = self.fetch()
        self.origin.respond(200, [(b"Cache-Control", b"max-age=60"), (b"ETag", b'"v2"')], b"new")
        self.assertEqual(second.status, "caplab; fwd=stale; fwd-status=200; stored")
        self.assertEqual(second.read(), b"new")
        self.assertEqual(self.fetch().read(), b"new")
        self.assertEqual(len(self.origin.requests), 2)

    def test_otherValidator(self) -> None:
        """
        A 304 with another strong ETag does not refresh: the request is sent again
        unconditionally.
        """
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"')])
        self.clock.advance(20)
        second = self.fetch()
        self.origin.respond(304, [(b"ETag", b'"v9"')], b"")
        self.assertEqual(len(self.origin.requests), 3)
        self.assertIsNone(self.origin.headerOf(2, b"if-none-match"))
        self.origin.respond(200, [(b"Cache-Control", b"max-age=60"), (b"ETag", b'"v9"')], b"v9")
        self.assertEqual(second.read(), b"v9")

    def test_noValidator(self) -> None:
        """
        A stale entry without validators is fetched again, unconditionally.
        """
        self.prime([(b"Cache-Control", b"max-age=10")])
        self.clock.advance(20)
        second = self.fetch()
        self.assertIsNone(self.origin.headerOf(1, b"if-none-match"))
        self.origin.respond(200, [(b"Cache-Control", b"max-age=10")], b"again")
        self.assertEqual(second.status, "caplab; fwd=stale; stored")

    def test_mustRevalidateWithoutValidator(self) -> None:
        """
        C{max-stale} does not serve a stale C{must-revalidate} response.
        """
        self.prime([(b"Cache-Control", b"max-age=10, must-revalidate"), (b"ETag", b'"v"')])
        self.clock.advance(20)
        self.fetch(get((b"Cache-Control", b"max-stale")))
        self.assertEqual(len(self.origin.requests), 2)

    def test_mustRevalidateOriginDown(self) -> None:
        """
        A stale C{must-revalidate} response is not served when the origin cannot be
        reached: the client gets the error.
        """
        self.prime([(b"Cache-Control", b"max-age=10, must-revalidate"), (b"ETag", b'"v"')])
        self.clock.advance(20)
        result = self.fetch(get((b"Cache-Control", b"max-stale, stale-if-error=600")))
        self.origin.pending.pop().errback(UpstreamError(504, "Timeout", "slow"))
        self.assertEqual(result.failure.value.code, 504)

    def test_staleWhileRevalidate(self) -> None:
        """
        Within C{stale-while-revalidate} the stale response is served at once and one
        background revalidation refreshes it.
        """
        self.prime(
            [(b"Cache-Control", b"max-age=10, stale-while-revalidate=60"), (b"ETag", b'"v"')]
        )
        self.clock.advance(20)
        first = self.fetch()
        second = self.fetch()
        self.assertEqual(first.status, "caplab; hit; ttl=-10; detail=stale-while-revalidate")
        self.assertEqual(second.read(), b"hello")
        self.assertEqual(len(self.origin.requests), 2)
        self.assertEqual(self.origin.headerOf(1, b"if-none-match"), b'"v"')
        self.origin.respond(
            304,
            [
                (b"Cache-Control", b"max-age=100"),
                (b"ETag", b'"v"'),
                (b"Date", formatHTTPDate(self.clock.seconds())),
            ],
            b"",
        )
        self.assertEqual(self.fetch().status, "caplab; hit; ttl=100")

    def test_staleIfError(self) -> None:
        """
        Within C{stale-if-error} an origin error (a 5xx or no answer) is hidden by the
        stale response; beyond it the error is relayed.
        """
        self.prime([(b"Cache-Control", b"max-age=10, stale-if-error=60"), (b"ETag", b'"v"')])
        self.clock.advance(20)
        first = self.fetch()
        self.origin.respond(503, [], b"down")
        self.assertEqual(first.read(), b"hello")
        self.assertEqual(first.status, "caplab; fwd=stale; fwd-status=503; detail=stale-if-error")
        second = self.fetch()
        self.origin.pending.pop().errback(UpstreamError(502, "Bad gateway", "refused"))
        self.assertEqual(second.read(), b"hello")
        self.clock.advance(100)
        third = self.fetch()
        self.origin.respond(503, [], b"down")
        self.assertEqual((third.code, third.read()), (503, b"down"))


class InvalidationTests(FetcherTestCase):
    """
    Unsafe methods invalidate (RFC 9111 section 4.4).
    """

    def test_post(self) -> None:
        """
        A successful POST invalidates its target and a same-origin C{Location}.
        """
        other = Target("http", "example.com", 80, b"/b")
        self.prime([(b"Cache-Control", b"max-age=60")])
        self.prime([(b"Cache-Control", b"max-age=60")], request=get(target=other))
        post = self.fetch(get(method=b"POST"))
        self.origin.respond(201, [(b"Location", b"/b")], b"")
        self.assertEqual(post.status, "caplab; fwd=method")
        self.assertEqual(self.store.lookup(TARGET.uri), [])
        self.assertEqual(self.store.lookup(other.uri), [])

    def test_failedUnsafe(self) -> None:
        """
        An unsafe request that fails invalidates nothing.
        """
        self.prime([(b"Cache-Control", b"max-age=60")])
        self.fetch(get(method=b"DELETE"))
        self.origin.respond(500, [], b"")
        self.assertEqual(len(self.store.lookup(TARGET.uri)), 1)


class CollapsingTests(FetcherTestCase):
    """
    Concurrent misses for one URI make one origin request.
    """

    def test_collapsed(self) -> None:
        """
        Requests arriving while a miss is in flight wait for it and are served from what it
        stored.
        """
        leader = self.fetch()
        waiters = [self.fetch() for _ in range(3)]
        self.assertEqual(len(self.origin.requests), 1)
        stream = self.origin.respond(200, [(b"Cache-Control", b"max-age=60")], body=None)
        assert leader.response is not None
        leader.response.deliverBody(leader.sink)
        stream.write(b"shared")
        self.assertIsNone(waiters[0].response)
        stream.end()
        for waiter in waiters:
            self.assertEqual(waiter.read(), b"shared")
            self.assertEqual(waiter.status, "caplab; hit; ttl=60")
        self.assertEqual(len(self.origin.requests), 1)

    def test_revalidationCollapsed(self) -> None:
        """
        Concurrent requests for a stale entry make one conditional request; its 304 serves
        them all.
        """
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v"')])
        self.clock.advance(20)
        results = [self.fetch() for _ in range(3)]
        self.assertEqual(len(self.origin.requests), 2)
        self.origin.respond(
            304,
            [(b"ETag", b'"v"'), (b"Date", formatHTTPDate(self.clock.seconds()))],
            b"",
        )
        self.assertEqual([r.read() for r in results], [b"hello"] * 3)
        self.assertEqual(results[0].status, "caplab; fwd=stale; fwd-status=304")
        self.assertEqual(results[1].status, "caplab; hit; ttl=10")

    def test_notStorableReleases(self) -> None:
        """
        When the response is not storable (C{private}), every waiter asks the origin itself.
        """
        self.fetch()
        waiters = [self.fetch() for _ in range(2)]
        self.origin.respond(200, [(b"Cache-Control", b"private")], b"alice")
        self.assertEqual(len(self.origin.requests), 3)
        self.origin.respond(200, [], b"bob")
        self.origin.respond(200, [], b"carol")
        self.assertEqual(sorted(w.read() for w in waiters), [b"bob", b"carol"])
        self.assertEqual(waiters[0].status, "caplab; fwd=miss; collapsed")

    def test_timeout(self) -> None:
        """
        A waiter goes to the origin itself once C{collapseTimeout} has passed.
        """
        self.fetch()
        waiter = self.fetch()
        self.clock.advance(4)
        self.assertEqual(len(self.origin.requests), 1)
        self.clock.advance(1)
        self.assertEqual(len(self.origin.requests), 2)
        self.origin.respond(200, [], b"own")
        self.assertEqual(waiter.read(), b"own")

    def test_leaderFails(self) -> None:
        """
        When the leader's request fails, the waiters ask the origin themselves.
        """
        leader = self.fetch()
        waiter = self.fetch()
        self.origin.pending.pop().errback(UpstreamError(502, "Bad gateway", "refused"))
        self.assertEqual(leader.failure.value.code, 502)
        self.assertEqual(len(self.origin.requests), 2)
        self.origin.respond(200, [], b"ok")
        self.assertEqual(waiter.read(), b"ok")

    def test_cancelWaiter(self) -> None:
        """
        A waiter whose client went away is forgotten; cancelling after it was forwarded
        cancels its origin request.
        """
        self.fetch()
        d = self.cache.fetch(get(), None)
        d.addErrback(lambda f: None)
        d.cancel()
        self.origin.respond(200, [(b"Cache-Control", b"private")], b"x")
        self.assertEqual(len(self.origin.requests), 1)
        self.fetch()
        d = self.cache.fetch(get(), None)
        d.addErrback(lambda f: None)
        self.clock.advance(5)
        d.cancel()
        self.assertEqual(self.origin.cancelled, 1)


class FlightEndsTests(FetcherTestCase):
    """
    No failure, not even a bug, leaves a collapsing flight behind (later requests for the
    URI would wait on it for nothing).
    """

    def test_errbackEndsFlight(self) -> None:
        """
        A bug while the leader's response is handled fails its client and ends the flight:
        the next request goes to the origin at once.
        """

        def broken(head: Any) -> None:
            raise RuntimeError("a bug in the store")

        self.store.writer = broken  # type: ignore[method-assign]
        leader = self.fetch()
        waiter = self.fetch()
        self.origin.respond(200, [(b"Cache-Control", b"max-age=60")], b"x")
        self.assertTrue(leader.failure.check(RuntimeError))
        self.assertEqual(self.cache._flights, {})
        self.assertEqual(len(self.origin.requests), 2)
        self.origin.respond(200, [], b"own")
        self.assertEqual(waiter.read(), b"own")
        self.fetch()
        self.assertEqual(len(self.origin.requests), 3)

    def test_synchronousExceptionEndsFlight(self) -> None:
        """
        An origin fetcher that raises instead of failing its Deferred fails the request
        (C{fetch} never raises) and ends the flight.
        """
        fetch = self.origin.fetch

        def raising(request: UpstreamRequest, body: Any) -> Deferred[UpstreamResponse]:
            raise RuntimeError("a bug upstream")

        self.origin.fetch = raising  # type: ignore[method-assign]
        first = self.fetch()
        self.assertTrue(first.failure.check(RuntimeError))
        self.assertEqual(self.cache._flights, {})
        self.origin.fetch = fetch  # type: ignore[method-assign]
        self.fetch()
        self.assertEqual(len(self.origin.requests), 1)


class HugeNumberTests(FetcherTestCase):
    """
    Numbers of thousands of digits (more than Python's C{int()} reads) from a client or an
    origin are read as RFC 9111 says, never an exception.
    """

    huge = b"9" * 5000

    def test_clientRange(self) -> None:
        """
        A C{Range} with a position of 5,000 digits is left to the origin.
        """
        self.prime([(b"Cache-Control", b"max-age=60")])
        result = self.fetch(get((b"Range", b"bytes=" + self.huge + b"-")))
        self.assertIsNone(result.failure)
        self.assertEqual(len(self.origin.requests), 2)
        self.origin.respond(416, [], b"")
        self.assertEqual(result.code, 416)
        self.assertEqual(result.status, "caplab; fwd=bypass; detail=range")

    def test_clientMaxAge(self) -> None:
        """
        A request's C{max-age} of 5,000 digits is 2^31: a fresh stored response answers.
        """
        self.prime([(b"Cache-Control", b"max-age=60")])
        result = self.fetch(get((b"Cache-Control", b"max-age=" + self.huge)))
        self.assertEqual(result.read(), b"hello")
        self.assertEqual(result.status, "caplab; hit; ttl=60")

    def test_originAge(self) -> None:
        """
        An origin's C{Age} of 5,000 digits is 2^31 (stale at once): the response reaches
        its client, is stored (it has a validator), and the flight ends.
        """
        result = self.prime(
            [(b"Cache-Control", b"max-age=60"), (b"ETag", b'"e"'), (b"Age", self.huge)]
        )
        self.assertEqual(result.status, "caplab; fwd=miss; stored")
        self.assertEqual(self.cache._flights, {})
        [entry] = self.store.lookup(TARGET.uri)
        self.assertEqual(entry.head.age, float(2**31))
        self.fetch()
        self.assertEqual(self.origin.headerOf(1, b"if-none-match"), b'"e"')

    def test_originMaxAge(self) -> None:
        """
        An origin's C{max-age} of 5,000 digits is 2^31 seconds of freshness.
        """
        self.prime([(b"Cache-Control", b"max-age=" + self.huge)])
        self.assertEqual(self.fetch().status, f"caplab; hit; ttl={2**31}")


class PassThroughTests(FetcherTestCase):
    """
    What the cache leaves alone.
    """

    def test_requestNoStore(self) -> None:
        """
        The request's C{no-store} keeps the response out of the store.
        """
        self.prime(
            [(b"Cache-Control", b"max-age=60")], request=get((b"Cache-Control", b"no-store"))
        )
        self.assertEqual(self.store.lookup(TARGET.uri), [])

    def test_requestWithBody(self) -> None:
        """
        A GET with a body is passed through.
        """

        class Body:
            length = 3

        result = self.fetch(body=Body())
        self.origin.respond(200, [(b"Cache-Control", b"max-age=60")], b"x")
        self.assertEqual(result.status, "caplab; fwd=bypass")

    def test_errorsPropagate(self) -> None:
        """
        An origin failure on a miss reaches the client.
        """
        self.origin.fetch = lambda request, body: fail(  # type: ignore[method-assign]
            UpstreamError(504, "Timeout", "slow")
        )
        self.assertEqual(self.fetch().failure.value.code, 504)


class DiskFetcherTests(FetcherTestCase):
    """
    The same cache over a L{DiskStore}.
    """

    def setUp(self) -> None:
        super().setUp()
        directory = tempfile.mkdtemp(prefix="caplab-cache-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        self.store = DiskStore(  # type: ignore[assignment]
            directory,
            runInThread=lambda f: succeed(f()),
            clock=self.clock,
        )
        self.cache = CachingFetcher(self.origin, self.store, self.clock)

    def test_rangeFromDisk(self) -> None:
        """
        A range in the middle of a multi-block file is cut out of it.
        """
        body = bytes(range(256)) * 1000
        self.prime([(b"Cache-Control", b"max-age=60")], body)
        partial = self.fetch(get((b"Range", b"bytes=70000-140000")))
        assert partial.response is not None
        partial.response.deliverBody(partial.sink)
        while partial.sink.done is None and self.clock.getDelayedCalls():
            self.clock.advance(0)
        self.assertEqual(partial.code, 206)
        self.assertEqual(
            (b"".join(partial.sink.data), partial.sink.done), (body[70000:140001], True)
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_hitFromDisk(self) -> None:
        """
        A stored response is served from its file, in blocks.
        """
        body = bytes(range(256)) * 1000
        self.prime([(b"Cache-Control", b"max-age=60")], body)
        hit = self.fetch()
        assert hit.response is not None
        hit.response.deliverBody(hit.sink)
        while hit.sink.done is None and self.clock.getDelayedCalls():
            self.clock.advance(0)
        self.assertEqual((b"".join(hit.sink.data), hit.sink.done), (body, True))
        self.assertEqual(hit.status, "caplab; hit; ttl=60")
        self.assertEqual(len(self.origin.requests), 1)


class OptionsTests(SynchronousTestCase):
    """
    L{caplab.proxy.cache.options}: sizes, checks, and the cache they build.
    """

    def parse(self, *args: str) -> Any:
        from twisted.python import usage

        from caplab.proxy.cache.options import CacheOptions

        class Options(CacheOptions, usage.Options):
            optParameters = [["workers", None, 1, "", int]]

            def postOptions(self) -> None:
                self.checkCacheOptions()

        options = Options()
        options.parseOptions(list(args))
        return options

    def test_sizes(self) -> None:
        """
        Sizes take binary suffixes; the default is 64 MiB.
        """
        from caplab.proxy.cache.options import byteSize

        self.assertEqual(self.parse()["cache-size"], 64 << 20)
        self.assertEqual(self.parse("--cache-size", "64M")["cache-size"], 64 << 20)
        self.assertEqual(byteSize("512k"), 512 << 10)
        self.assertEqual(byteSize("1GiB"), 1 << 30)
        self.assertEqual(byteSize("1.5M"), 3 << 19)
        self.assertEqual(byteSize("1000"), 1000)
        self.assertRaises(ValueError, byteSize, "lots")

    def test_checks(self) -> None:
        """
        Contradictions and an unusable directory are usage errors.
        """
        from twisted.python import usage

        self.assertRaises(
            usage.UsageError, self.parse, "--cache-size", "1M", "--cache-max-object", "2M"
        )
        self.assertRaises(usage.UsageError, self.parse, "--no-cache", "--cache-dir", "x")
        self.assertRaises(
            usage.UsageError, self.parse, "--cache-dir", tempfile.gettempdir(), "--workers", "2"
        )
        blocker = tempfile.mktemp()
        open(blocker, "w").close()
        self.addCleanup(os.unlink, blocker)
        self.assertRaises(usage.UsageError, self.parse, "--cache-dir", os.path.join(blocker, "sub"))


class MetricsTests(FetcherTestCase):
    """
    The cache reports hits, misses and stored bytes to its metrics.
    """

    def test_counts(self) -> None:
        """
        A miss, then a hit; the stored bytes after the store.
        """
        from caplab.metrics import Metrics, sums

        metrics = Metrics()
        self.cache.metrics = metrics
        self.prime([(b"Cache-Control", b"max-age=60")])
        self.fetch()
        totals = sums(metrics.families())
        self.assertEqual(totals["caplab_cache_misses_total"], 1)
        self.assertEqual(totals["caplab_cache_hits_total"], 1)
        self.assertEqual(totals["caplab_cache_stored_bytes"], self.store.size)


class ModelTests(SynchronousTestCase):
    """
    Random sequences of requests, origin answers and passing time: the cache never shares
    what it must not and never mixes variants.
    """

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([0, 1, 30, 120]),
                st.sampled_from(
                    [
                        b"max-age=60",
                        b"private, max-age=60",
                        b"no-store",
                        b"no-cache",
                        b"max-age=10, must-revalidate",
                        b"s-maxage=60",
                    ]
                ),
                st.booleans(),
                st.sampled_from([b"text/html", b"application/json"]),
                st.sampled_from([None, b"no-cache", b"max-age=0", b"max-stale"]),
            ),
            min_size=1,
            max_size=25,
        )
    )
    def test_model(self, steps: list[tuple[int, bytes, bool, bytes, bytes | None]]) -> None:
        clock = Clock()
        clock.advance(NOW)
        produced: dict[bytes, tuple[bytes, bool, bytes]] = {}
        served: dict[bytes, int] = {}
        answer: dict[str, Any] = {}

        class Origin:
            def fetch(self, request: UpstreamRequest, body: Any) -> Deferred[UpstreamResponse]:
                token = b"body-%d" % len(produced)
                accept = dict((n.lower(), v) for n, v in request.headers).get(b"accept", b"")
                produced[token] = (answer["cc"], answer["vary"], accept)
                headers = [
                    (b"Cache-Control", answer["cc"]),
                    (b"Date", formatHTTPDate(clock.seconds())),
                    (b"ETag", b'"%s"' % token),
                    (b"Content-Length", b"%d" % len(token)),
                ]
                if answer["vary"]:
                    headers.append((b"Vary", b"Accept"))

                def deliver(sink: Any) -> None:
                    sink.bodyStarted(OriginProducer())
                    sink.bodyData(token)
                    sink.bodyDone(True)

                return succeed(UpstreamResponse(200, b"OK", headers, deliver))

        store = MemoryStore(1 << 20, 1 << 18, callLater=clock.callLater)
        cache = CachingFetcher(Origin(), store, clock)
        for advance, cc, vary, accept, directive in steps:
            clock.advance(advance)
            answer.update(cc=cc, vary=vary)
            headers = [(b"Accept", accept)]
            if directive is not None:
                headers.append((b"Cache-Control", directive))
            result = Result(cache.fetch(get(*headers), None))
            body = result.read()
            self.assertEqual(result.code, 200, result.status)
            served[body] = served.get(body, 0) + 1
            origCC, origVary, origAccept = produced[body]
            if b"private" in origCC or b"no-store" in origCC:
                self.assertEqual(served[body], 1, "a private or no-store response was shared")
            if origVary:
                self.assertEqual(origAccept, accept, "a variant reached the wrong request")
            status = result.status or ""
            if status.startswith("caplab; hit"):
                ttl = int(status.split("ttl=")[1].split(";")[0])
                self.assertNotIn(b"no-cache", origCC, "no-cache served without revalidation")
                self.assertNotIn(directive, (b"no-cache", b"max-age=0"), status)
                if ttl < 0:
                    self.assertEqual(directive, b"max-stale", status)
                    self.assertNotIn(b"must-revalidate", origCC, status)
                    self.assertNotIn(b"s-maxage", origCC, status)


class StaleWhenUnreachableTests(FetcherTestCase):
    """
    When the origin cannot be reached at all, a stale stored response is served unless it
    forbids that; C{Cache-Status} says so (issue 12 item 3).
    """

    def test_revalidationUnreachable(self) -> None:
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v"')])
        self.clock.advance(30)
        result = self.fetch()
        self.origin.pending.pop().errback(UpstreamError(502, "Bad gateway", "refused"))
        self.assertEqual((result.code, result.read()), (200, b"hello"))
        self.assertEqual(result.status, "caplab; fwd=stale; ttl=-20; detail=origin-unreachable")

    def test_loggedRateLimited(self) -> None:
        """
        Every request of an outage is served stale; the log says so once a minute, counted.
        """
        from twisted.logger import capturedLogs, formatEvent

        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v"')])
        self.clock.advance(30)
        with capturedLogs() as events:
            for _ in range(50):
                result = self.fetch()
                self.origin.pending.pop().errback(UpstreamError(502, "Bad gateway", "refused"))
                self.assertEqual(result.read(), b"hello")
            self.clock.advance(60)
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("served stale: the origin is unreachable", lines[0])
        self.assertIn("(49 times in the last 60 s, 50 in this burst)", lines[1])

    def test_noValidatorUnreachable(self) -> None:
        """
        A stale response without validator (re-fetched, not revalidated) is served too.
        """
        self.prime([(b"Cache-Control", b"max-age=10, stale-if-error=5")])
        self.clock.advance(30)
        result = self.fetch()
        self.origin.pending.pop().errback(UpstreamError(504, "Timeout", "no answer"))
        self.assertEqual(result.read(), b"hello")
        self.assertIn("detail=origin-unreachable", result.status or "")

    def test_forbidden(self) -> None:
        """
        C{must-revalidate} (or C{proxy-revalidate}, C{no-cache}, C{s-maxage}) forbids it:
        the error is relayed.
        """
        for directives in (
            b"max-age=10, must-revalidate",
            b"max-age=10, proxy-revalidate",
            b"no-cache",
            b"s-maxage=10",
        ):
            self.store = MemoryStore(1 << 20, 1 << 18, callLater=self.clock.callLater)
            self.cache = CachingFetcher(self.origin, self.store, self.clock)
            self.prime([(b"Cache-Control", directives), (b"ETag", b'"v"')])
            self.clock.advance(30)
            result = self.fetch()
            self.origin.pending.pop().errback(UpstreamError(502, "Bad gateway", "refused"))
            self.assertEqual(result.failure.value.code, 502, directives)

    def test_clientGoneIsNotAnError(self) -> None:
        """
        A cancelled request (the client went away) is not an unreachable origin.
        """
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v"')])
        self.clock.advance(30)
        d = self.cache.fetch(get(), None)
        failures: list[Any] = []
        d.addErrback(failures.append)
        d.cancel()
        self.assertEqual(len(failures), 1)
        self.assertIsNone(failures[0].check(UpstreamError))


class HeadUpdateTests(FetcherTestCase):
    """
    A HEAD response updates or invalidates the stored GET response (issue 12 item 5).
    """

    def test_sameValidatorRefreshes(self) -> None:
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"')])
        self.clock.advance(20)
        head = self.fetch(get(method=b"HEAD"))
        self.assertEqual(self.origin.requests[-1].method, b"HEAD")
        self.origin.respond(
            200,
            [
                (b"Cache-Control", b"max-age=100"),
                (b"ETag", b'"v1"'),
                (b"Content-Type", b"text/x-new"),
                (b"Set-Cookie", b"s=1"),
            ],
            None,
        )
        self.assertEqual(head.status, "caplab; fwd=stale; fwd-status=200")
        hit = self.fetch()
        self.assertEqual(hit.status, "caplab; hit; ttl=100")
        self.assertEqual((hit.read(), hit.header(b"content-type")), (b"hello", b"text/x-new"))
        self.assertIsNone(hit.header(b"set-cookie"))

    def test_otherValidatorInvalidates(self) -> None:
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"')])
        self.clock.advance(20)
        self.fetch(get(method=b"HEAD"))
        self.origin.respond(200, [(b"ETag", b'"v2"')], None)
        self.assertEqual(self.store.lookup(TARGET.uri), [])

    def test_otherLengthInvalidates(self) -> None:
        self.prime([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"')])
        self.clock.advance(20)
        self.fetch(get(method=b"HEAD"))
        self.origin.respond(200, [(b"ETag", b'"v1"'), (b"Content-Length", b"99")], None)
        self.assertEqual(self.store.lookup(TARGET.uri), [])


class NotModifiedUpdateTests(FetcherTestCase):
    """
    What a 304 updates in the stored response (issue 12 item 5).
    """

    def test_bodyMetadataAndDate(self) -> None:
        """
        C{Content-Type} and C{Content-Encoding} of a 304 replace the stored ones; a 304
        without C{Date} gets the time it arrived, so its freshness starts then.
        """
        self.prime(
            [(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v1"'), (b"Content-Type", b"text/a")]
        )
        self.clock.advance(20)
        first = self.fetch()
        self.origin.respond(
            304,
            [
                (b"ETag", b'"v1"'),
                (b"Cache-Control", b"max-age=100"),
                (b"Content-Type", b"text/b"),
                (b"Content-Encoding", b"identity"),
                (b"Content-Length", b"0"),
            ],
            b"",
        )
        self.assertEqual((first.read(), first.header(b"content-type")), (b"hello", b"text/b"))
        hit = self.fetch()
        self.assertEqual(hit.status, "caplab; hit; ttl=100")
        self.assertEqual(hit.header(b"content-encoding"), b"identity")
        self.assertEqual(hit.header(b"content-length"), b"5")
        self.assertEqual(hit.header(b"date"), formatHTTPDate(self.clock.seconds()))


class UnstorableUpdateTests(FetcherTestCase):
    """
    An update (a 304, a HEAD response, a 206, a background 304) is checked as a new
    response would be: one that brings C{private}, C{no-store} or other C{Vary} names
    removes the stored response; the client it answers is answered, no one after it.
    """

    UPDATES = {
        "private": [(b"Cache-Control", b"private, max-age=600")],
        "no-store": [(b"Cache-Control", b"no-store, max-age=600")],
        "vary": [(b"Cache-Control", b"max-age=600"), (b"Vary", b"Cookie")],
    }

    def stale(self) -> None:
        self.prime([(b"Cache-Control", b"max-age=0"), (b"ETag", b'"a"')])
        self.clock.advance(1)

    def test_notModified(self) -> None:
        """
        The 304's client gets the stored body with the updated fields; the next client's
        request goes to the origin (and waiters collapsed on the revalidation too).
        """
        for label, fields in self.UPDATES.items():
            self.setUp()
            self.stale()
            alice = self.fetch(get((b"Cookie", b"session=alice")))
            waiter = self.fetch(get((b"Cookie", b"session=carol")))
            self.origin.respond(304, [(b"ETag", b'"a"'), (b"Set-Cookie", b"s=a"), *fields], b"")
            self.assertEqual((alice.code, alice.read()), (200, b"hello"), label)
            self.assertEqual(alice.header(b"cache-control"), dict(fields)[b"Cache-Control"])
            self.assertEqual(alice.header(b"set-cookie"), b"s=a")
            self.assertEqual(self.store.lookup(TARGET.uri), [], label)
            self.assertEqual(len(self.origin.requests), 3, label)  # the waiter's own
            self.origin.respond(200, [], b"carol's")
            self.assertEqual(waiter.read(), b"carol's")
            bob = self.fetch(get((b"Cookie", b"session=bob")))
            self.assertEqual(len(self.origin.requests), 4, label)
            self.origin.respond(200, [], b"bob's")
            self.assertEqual(bob.read(), b"bob's")

    def test_notModifiedClientPrecondition(self) -> None:
        """
        The 304's client's own precondition is answered from the updated response even
        though it is not kept.
        """
        self.stale()
        alice = self.fetch(get((b"If-None-Match", b'"a"')))
        self.origin.respond(304, [(b"ETag", b'"a"'), *self.UPDATES["private"]], b"")
        self.assertEqual(alice.code, 304)
        self.assertEqual(alice.header(b"cache-control"), b"private, max-age=600")
        self.assertEqual(self.store.lookup(TARGET.uri), [])

    def test_head(self) -> None:
        """
        A HEAD response with the same validators that brings any of them removes the
        stored GET response.
        """
        for label, fields in self.UPDATES.items():
            self.setUp()
            self.stale()
            head = self.fetch(get(method=b"HEAD"))
            self.origin.respond(200, [(b"ETag", b'"a"'), *fields], None)
            self.assertEqual(head.code, 200)
            self.assertEqual(self.store.lookup(TARGET.uri), [], label)

    def test_partialContent(self) -> None:
        """
        A 206 with the stored response's strong validator that brings any of them removes
        the stored response; the 206 reaches its client and is not stored either.
        """
        for label, fields in self.UPDATES.items():
            self.setUp()
            self.prime([(b"Cache-Control", b"max-age=0"), (b"ETag", b'"a"')], b"0123456789")
            self.clock.advance(1)
            part = self.fetch(get((b"Range", b"bytes=0-1")))
            self.origin.respond(
                206, [(b"ETag", b'"a"'), (b"Content-Range", b"bytes 0-1/10"), *fields], b"01"
            )
            self.assertEqual((part.code, part.read()), (206, b"01"), label)
            self.assertEqual(self.store.lookup(TARGET.uri), [], label)
            self.assertEqual(self.store.parts(TARGET.uri), [], label)

    def test_background(self) -> None:
        """
        A background revalidation's 304 that brings any of them removes the stored
        response.
        """
        for label, fields in self.UPDATES.items():
            self.setUp()
            self.prime(
                [(b"Cache-Control", b"max-age=0, stale-while-revalidate=60"), (b"ETag", b'"a"')]
            )
            self.clock.advance(1)
            self.assertEqual(self.fetch().read(), b"hello")
            self.origin.respond(304, [(b"ETag", b'"a"'), *fields], b"")
            self.assertEqual(self.store.lookup(TARGET.uri), [], label)

    def test_sameVaryKept(self) -> None:
        """
        An update that repeats the stored C{Vary} (in another order or case) keeps it.
        """
        self.prime(
            [(b"Cache-Control", b"max-age=0"), (b"ETag", b'"a"'), (b"Vary", b"Accept, Cookie")]
        )
        self.clock.advance(1)
        first = self.fetch()
        self.origin.respond(
            304,
            [(b"ETag", b'"a"'), (b"Cache-Control", b"max-age=60"), (b"Vary", b"cookie, accept")],
            b"",
        )
        self.assertEqual(first.read(), b"hello")
        self.assertEqual(self.fetch().status, "caplab; hit; ttl=60")

    def test_diskStore(self) -> None:
        """
        With the disk store, the 304's client reads the body of the file being removed.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.store = DiskStore(  # type: ignore[assignment]
            directory, 1 << 20, 1 << 18, clock=self.clock, runInThread=lambda f: succeed(f())
        )
        self.cache = CachingFetcher(self.origin, self.store, self.clock, collapseTimeout=5)
        self.stale()
        self.assertEqual(len(os.listdir(directory)), 1)
        alice = self.fetch()
        self.origin.respond(304, [(b"ETag", b'"a"'), *self.UPDATES["private"]], b"")
        self.assertEqual(os.listdir(directory), [])
        self.assertEqual(alice.read(), b"hello")


class PerClientFieldTests(FetcherTestCase):
    """
    Per-client fields (C{Set-Cookie} ...) are never stored, even with C{public} or
    C{s-maxage}: the client whose request brought them gets them, later hits do not.
    """

    def test_sharedResponseCookieNotStored(self) -> None:
        for directive in (b"public, max-age=60", b"s-maxage=60"):
            self.setUp()
            cookie = (b"Set-Cookie", b"session=alice-secret")
            alice = self.prime(
                [(b"Cache-Control", directive), cookie, (b"Authentication-Info", b"x")],
                request=get((b"Cookie", b"x=alice")),
            )
            self.assertEqual(alice.status, "caplab; fwd=miss; stored")
            self.assertEqual(alice.header(b"set-cookie"), b"session=alice-secret")
            bob = self.fetch(get((b"Cookie", b"x=bob")))
            self.assertEqual(bob.status, "caplab; hit; ttl=60")
            self.assertIsNone(bob.header(b"set-cookie"), directive)
            self.assertIsNone(bob.header(b"authentication-info"), directive)
            self.assertNotIn(b"alice-secret", repr(self.store.lookup(TARGET.uri)).encode())


class ClientPreconditionTests(FetcherTestCase):
    """
    The client's own preconditions answered from a fresh stored response (issue 12 item 6).
    """

    def test_answers(self) -> None:
        self.prime([(b"Cache-Control", b"max-age=60"), (b"ETag", b'"v1"')])
        star = self.fetch(get((b"If-None-Match", b"*")))
        self.assertEqual(star.code, 304)
        self.assertEqual(star.header(b"etag"), b'"v1"')
        self.assertEqual(star.header(b"cache-control"), b"max-age=60")
        self.assertIsNotNone(star.header(b"date"))
        weak = self.fetch(get((b"If-None-Match", b'"x", W/"v1"')))
        self.assertEqual(weak.code, 304)
        failed = self.fetch(get((b"If-Match", b'"v2"')))
        self.assertEqual(failed.code, 412)
        other = self.fetch(get((b"If-None-Match", b'"v2"'), (b"If-Modified-Since", b"x")))
        self.assertEqual((other.code, other.read()), (200, b"hello"))
        self.assertEqual(len(self.origin.requests), 1)


class NonSuccessPreconditionTests(FetcherTestCase):
    """
    The client's preconditions are evaluated only against a stored 2xx (RFC 9110 section
    13.2.1): a stored 404 or redirect is sent as it is.
    """

    def test_storedNotFound(self) -> None:
        first = self.fetch()
        self.origin.respond(
            404,
            [
                (b"Cache-Control", b"max-age=60"),
                (b"ETag", b'"e"'),
                (b"Date", formatHTTPDate(self.clock.seconds())),
            ],
            b"gone",
        )
        self.assertEqual(first.read(), b"gone")
        for field in (
            (b"If-None-Match", b"*"),
            (b"If-None-Match", b'"e"'),
            (b"If-Match", b'"zzz"'),
            (b"If-Modified-Since", formatHTTPDate(NOW + 10)),
            (b"If-Unmodified-Since", formatHTTPDate(NOW - 1000)),
        ):
            result = self.fetch(get(field))
            self.assertEqual((result.code, result.read()), (404, b"gone"), field)
            self.assertEqual(result.status, "caplab; hit; ttl=60")
        self.assertEqual(len(self.origin.requests), 1)

    def test_storedRedirect(self) -> None:
        first = self.fetch()
        self.origin.respond(
            301, [(b"Cache-Control", b"max-age=60"), (b"Location", b"/b"), (b"ETag", b'"e"')], b""
        )
        first.read()
        result = self.fetch(get((b"If-None-Match", b'"e"')))
        self.assertEqual((result.code, result.header(b"location")), (301, b"/b"))


class InterimTests(FetcherTestCase):
    """
    1xx responses are never stored nor relayed to a client that is not waiting (issue 12
    item 2).
    """

    def test_interimNeverStored(self) -> None:
        """
        Were an interim response handed over as final, it is relayed but never stored.
        """
        first = self.fetch()
        self.origin.respond(103, [(b"Cache-Control", b"max-age=60"), (b"Link", b"</a>")], b"")
        self.assertEqual((first.code, first.status), (103, "caplab; fwd=miss"))
        self.assertEqual(self.store.lookup(TARGET.uri), [])

    def test_backgroundRequestHasNoInterimHandler(self) -> None:
        """
        A background revalidation has no client: its interim responses go nowhere, and it
        asks for the whole response even if the stale hit was a range request.
        """
        self.prime(
            [(b"Cache-Control", b"max-age=10, stale-while-revalidate=60"), (b"ETag", b'"v"')],
            b"0123456789",
        )
        self.clock.advance(20)
        seen: list[int] = []
        request = replace(
            get((b"Range", b"bytes=0-1")), interim=lambda code, phrase, headers: seen.append(code)
        )
        result = self.fetch(request)
        self.assertEqual((result.code, result.read()), (206, b"01"))
        background = self.origin.requests[-1]
        self.assertIsNone(background.interim)
        self.assertIsNone(self.origin.headerOf(-1, b"range"))


class VaryNormalisationTests(FetcherTestCase):
    """
    Accept-Language values that differ in order, case or whitespace hit the same variant.
    """

    def test_sameVariant(self) -> None:
        self.prime(
            [(b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept-Language")],
            request=get((b"Accept-Language", b"en-US, fr;q=0.5")),
        )
        again = self.fetch(get((b"Accept-Language", b"FR;q=0.5,en-us")))
        self.assertEqual(again.status, "caplab; hit; ttl=60")
        self.assertEqual(len(self.origin.requests), 1)


class AdminTests(FetcherTestCase):
    """
    L{CachingFetcher.purge} and L{CachingFetcher.flush} (the L{ICacheAdmin} seam).
    """

    def test_purgeEveryVariant(self) -> None:
        for language in (b"en", b"fr"):
            self.prime(
                [(b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept-Language")],
                request=get((b"Accept-Language", language)),
            )
        other = Target("http", "example.com", 80, b"/b")
        self.prime([(b"Cache-Control", b"max-age=60")], request=get(target=other))
        purged: list[int] = []
        self.cache.purge(TARGET.uri).addCallback(purged.append)
        self.assertEqual(purged, [2])
        self.assertEqual(self.store.lookup(TARGET.uri), [])
        self.assertEqual(len(self.store.lookup(other.uri)), 1)
        self.cache.purge(TARGET.uri).addCallback(purged.append)
        self.assertEqual(purged, [2, 0])
        self.cache.purge("HTTP://Example.COM:80/b").addCallback(purged.append)
        self.assertEqual(purged, [2, 0, 1])
        self.cache.purge("http://[::1:bad").addCallback(purged.append)
        self.assertEqual(purged, [2, 0, 1, 0])

    def test_purgeReadsAsTargets(self) -> None:
        """
        A purge's URI is read as the proxy reads request targets: an international name
        or a trailing dot purges the key the requests for it were stored under.
        """
        idn = Target("http", "xn--bcher-kva.example", 80, b"/a")
        self.prime([(b"Cache-Control", b"max-age=60")], request=get(target=idn))
        plain = Target("http", "example.com", 80, b"/b")
        self.prime([(b"Cache-Control", b"max-age=60")], request=get(target=plain))
        purged: list[int] = []
        self.cache.purge("http://Bücher.example/a").addCallback(purged.append)
        self.cache.purge("http://example.com./b#x").addCallback(purged.append)
        self.assertEqual(purged, [1, 1])

    def test_flush(self) -> None:
        for path in (b"/a", b"/b", b"/c"):
            self.prime(
                [(b"Cache-Control", b"max-age=60")],
                request=get(target=Target("http", "example.com", 80, path)),
            )
        flushed: list[int] = []
        self.cache.flush().addCallback(flushed.append)
        self.assertEqual(flushed, [3])
        self.assertEqual(len(self.store), 0)
        self.assertEqual(self.store.size, 0)
