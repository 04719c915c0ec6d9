"""
Tests for L{caplab.proxy.filters.chain}: which responses are transformed and how their fields
change, content codings end to end, nothing touched where no filter applies, failing
filters, and the reloadable chain.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import brotli
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.chain import MAX_WINDOW, FilterChain, ReloadableFilterChain
from caplab.proxy.filters.config import buildChain, parseFilterConfig
from caplab.proxy.filters.hosts import HostSelector
from caplab.proxy.filters.interfaces import ResponseFilter, ResponseHead
from caplab.proxy.filters.reporting import LOG_INTERVAL, FilterCounters, filterLog
from caplab.proxy.hooks import Headers, UpstreamRequest
from caplab.proxy.policy import HostList, HostPolicy
from tests.test_filters_support import makeRequest, makeResponse, receive, splitAt

HTML = [(b"Content-Type", b"text/html; charset=utf-8")]
PAGE = b"<p>hello world</p><img src=//ads.example/x.png><p>hello again</p>"
FILTERED = b"<p>HOWDY world</p><p>HOWDY again</p>"


def chain(table: dict[str, Any] | None = None, **kwargs: Any) -> FilterChain:
    blocked = HostList()
    blocked.addLines(["ads.example"], "blocked")
    table = (
        table
        if table is not None
        else {
            "rewrite": ["example.com s/hello/HOWDY/g"],
            "block-elements": ["example.com"],
        }
    )
    return buildChain(parseFilterConfig(table), HostPolicy(blocked, HostList()), **kwargs)


def names(headers: Headers) -> list[bytes]:
    return [n.lower() for n, _ in headers]


class TransformedResponseTests(SynchronousTestCase):
    def test_transformed(self) -> None:
        """
        A page is rewritten and cleaned as it streams; its length, digests and ranges go,
        its C{ETag} becomes weak; other fields stay in order.
        """
        headers = [
            *HTML,
            (b"Content-Length", b"%d" % len(PAGE)),
            (b"ETag", b'"v1"'),
            (b"Content-MD5", b"x"),
            (b"Digest", b"sha-256=x"),
            (b"Repr-Digest", b"sha-256=:x:"),
            (b"Content-Digest", b"sha-256=:x:"),
            (b"Accept-Ranges", b"bytes"),
            (b"Cache-Control", b"max-age=60"),
        ]
        response, _ = makeResponse(headers, splitAt(PAGE, range(0, len(PAGE), 5)))
        filters = chain()
        filtered = filters.filterResponse(makeRequest(), response)
        self.assertEqual(
            filtered.headers,
            [
                *HTML,
                (b"ETag", b'W/"v1"'),
                (b"Cache-Control", b"max-age=60"),
                (b"Accept-Ranges", b"none"),
            ],
        )
        self.assertEqual(response.headers, headers, "the cache's copy is not touched")
        sink = receive(filtered)
        self.assertEqual(sink.body, FILTERED)
        self.assertIs(sink.done, True)
        self.assertEqual(filters.counters["responses-transformed"], 1)
        self.assertEqual(filters.counters["elements-blocked"], 1)
        self.assertEqual(filters.counters["rewrites"], 1)

    def test_weakETagStaysWeak(self) -> None:
        response, _ = makeResponse([*HTML, (b"ETag", b'W/"v1"')], [PAGE])
        filtered = chain().filterResponse(makeRequest(), response)
        self.assertIn((b"ETag", b'W/"v1"'), filtered.headers)

    def test_codings(self) -> None:
        """
        gzip, deflate, br and stacked codings are decoded for the filters; the result is
        sent as identity.
        """
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        rawDeflate = compressor.compress(PAGE) + compressor.flush()
        for coding, body in [
            (b"gzip", gzip.compress(PAGE)),
            (b"x-gzip", gzip.compress(PAGE)),
            (b"deflate", zlib.compress(PAGE)),
            (b"deflate", rawDeflate),
            (b"br", brotli.compress(PAGE)),
            (b"deflate, gzip", gzip.compress(zlib.compress(PAGE))),
            (b"identity", PAGE),
        ]:
            headers = [*HTML, (b"Content-Encoding", coding), (b"Vary", b"Accept-Encoding")]
            response, _ = makeResponse(headers, splitAt(body, range(0, len(body), 9)))
            filtered = chain().filterResponse(makeRequest(), response)
            self.assertNotIn(b"content-encoding", names(filtered.headers), coding)
            self.assertIn((b"Vary", b"Accept-Encoding"), filtered.headers)
            sink = receive(filtered)
            self.assertEqual(sink.body, FILTERED, coding)
            self.assertIs(sink.done, True)

    def test_brokenBodyIsCutOffAndLogged(self) -> None:
        """
        A body that is not the gzip it claims ends incomplete, is counted and logged in one
        line.
        """
        filters = chain(log=filterLog(Clock()))
        response, source = makeResponse(
            [*HTML, (b"Content-Encoding", b"gzip")], [b"not gzip at all"]
        )
        with capturedLogs() as events:
            sink = receive(filters.filterResponse(makeRequest(), response))
        self.assertIs(sink.done, False)
        self.assertEqual(filters.counters["broken-bodies"], 1)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertIn("http://example.com/", events[0]["uri"])


class UntransformedTests(SynchronousTestCase):
    def assertUntouched(
        self,
        request: UpstreamRequest,
        headers: Headers,
        code: int = 200,
        counter: str | None = None,
    ) -> None:
        response, _ = makeResponse(headers, [PAGE], code)
        filters = chain()
        filtered = filters.filterResponse(request, response)
        self.assertIs(filtered.deliverBody, response.deliverBody)
        self.assertEqual(filtered.headers, headers)
        if counter is not None:
            self.assertEqual(filters.counters[counter], 1, counter)
        self.assertEqual(receive(filtered).body, PAGE)

    def test_noTransform(self) -> None:
        """
        C{Cache-Control: no-transform}, in the response or the request, is honoured.
        """
        self.assertUntouched(
            makeRequest(),
            [*HTML, (b"Cache-Control", b"public, No-Transform")],
            counter="untransformed-no-transform",
        )
        self.assertUntouched(
            makeRequest(headers=[(b"Cache-Control", b"no-transform")]),
            HTML,
            counter="untransformed-no-transform",
        )

    def test_partialContent(self) -> None:
        """
        A 206 passes untransformed.
        """
        self.assertUntouched(
            makeRequest(),
            [*HTML, (b"Content-Range", b"bytes 0-9/100")],
            206,
            "untransformed-partial",
        )

    def test_unknownCoding(self) -> None:
        for coding in (b"compress", b"zstd", b"gzip, zstd"):
            self.assertUntouched(
                makeRequest(),
                [*HTML, (b"Content-Encoding", coding)],
                counter="untransformed-coding",
            )

    def test_otherTypesAndHosts(self) -> None:
        self.assertUntouched(makeRequest(), [(b"Content-Type", b"image/png")])
        self.assertUntouched(makeRequest(), [])
        self.assertUntouched(makeRequest(), [*HTML, (b"Content-Type", b"text/plain")])
        self.assertUntouched(makeRequest("other.example"), HTML)

    def test_bodiless(self) -> None:
        for code in (101, 103, 204):
            self.assertUntouched(makeRequest(), [*HTML, (b"ETag", b'"x"')], code)

    def test_notModified(self) -> None:
        """
        A 304 for a host whose pages may be transformed gets a weak C{ETag}, matching the
        one the client stored; its body is not wrapped.
        """
        response, _ = makeResponse([(b"ETag", b'"v1"')], [], 304)
        filtered = chain().filterResponse(makeRequest(), response)
        self.assertEqual(filtered.headers, [(b"ETag", b'W/"v1"')])
        self.assertIs(filtered.deliverBody, response.deliverBody)
        headerOnly = chain({"response-header": ["* remove Server"]})
        self.assertEqual(
            headerOnly.filterResponse(makeRequest(), response).headers, [(b"ETag", b'"v1"')]
        )

    def test_head(self) -> None:
        """
        The response to HEAD gets the fields the GET would get, and no wrapping.
        """
        response, _ = makeResponse(
            [*HTML, (b"Content-Length", b"99"), (b"ETag", b'"a"'), (b"Content-Encoding", b"gzip")],
            [],
        )
        filtered = chain().filterResponse(makeRequest(method=b"HEAD"), response)
        self.assertEqual(
            filtered.headers, [*HTML, (b"ETag", b'W/"a"'), (b"Accept-Ranges", b"none")]
        )
        self.assertIs(filtered.deliverBody, response.deliverBody)


class ZeroOverheadTests(SynchronousTestCase):
    def test_nothingSelected(self) -> None:
        """
        Where no filter is selected, request and response are returned as they came.
        """
        filters = chain(
            {"rewrite": ["example.com s/a/b/"], "request-header": ["example.com add X: 1"]}
        )
        request = makeRequest("example.org")
        self.assertIs(filters.filterRequest(request, "c"), request)
        response, _ = makeResponse(HTML, [PAGE])
        self.assertIs(filters.filterResponse(request, response), response)

    def test_headOnlyNotWrapped(self) -> None:
        """
        A filter that changes only fields does not wrap the body.
        """
        filters = chain({"response-header": ["* remove Server", "* add X-Filtered: yes"]})
        response, _ = makeResponse([*HTML, (b"Server", b"nginx")], [PAGE])
        filtered = filters.filterResponse(makeRequest(), response)
        self.assertEqual(filtered.headers, [*HTML, (b"X-Filtered", b"yes")])
        self.assertIs(filtered.deliverBody, response.deliverBody)

    def test_noRuleApplies(self) -> None:
        """
        A selected filter that applies to nothing in this response leaves it as it is.
        """
        filters = chain({"rewrite": ["* s/a/b/"]})
        response, _ = makeResponse([(b"Content-Type", b"image/png")], [b"\x89PNG"])
        self.assertIs(filters.filterResponse(makeRequest(), response), response)


class Exploding(ResponseFilter):
    name = "exploding"

    def __init__(self, where: str) -> None:
        self.where = where

    def filterHead(self, request: UpstreamRequest, head: ResponseHead) -> None:
        if self.where == "head":
            raise KeyError("boom")

    def transformBody(self, request: UpstreamRequest, head: ResponseHead) -> Any:
        if self.where == "body":
            raise KeyError("boom")
        if self.where == "window":

            class Greedy:
                window = MAX_WINDOW + 1

            return Greedy()
        return None

    def filterRequest(self, request: UpstreamRequest, client: str) -> UpstreamRequest:
        raise KeyError("boom")


class FailingFilterTests(SynchronousTestCase):
    def test_failingFiltersAreSkipped(self) -> None:
        """
        A filter that raises, or declares too large a window, is skipped for that message
        and logged, rate-limited: its first failure at once, those of the next
        L{LOG_INTERVAL} seconds in one line, and a summary once it stops failing; the
        others still run.
        """
        everything = HostSelector(["*"])
        base = chain({"response-header": ["* add X-Other: 1"]})
        for where in ("head", "body", "window"):
            clock = Clock()
            filters = FilterChain(
                [(everything, Exploding(where))],
                [(everything, Exploding(where)), *base.responseFilters],
                log=filterLog(clock),
            )
            response, _ = makeResponse(HTML, [PAGE])
            with capturedLogs() as events:
                filtered = filters.filterResponse(makeRequest(), response)
                filters.filterRequest(makeRequest(), "c")  # within the interval: held back
                filters.filterRequest(makeRequest(), "c")
                clock.advance(LOG_INTERVAL)
                clock.advance(LOG_INTERVAL)
            self.assertIn((b"X-Other", b"1"), filtered.headers)
            self.assertIs(filtered.deliverBody, response.deliverBody)
            lines = [formatEvent(event) for event in events]
            self.assertEqual(len(lines), 3, (where, lines))
            self.assertIn("caplab filter exploding failed on a response", lines[0])
            self.assertIn("and was skipped", lines[0])
            self.assertIn(
                "caplab filter exploding failed 2 times in the last 10s, the latest on a "
                "request: KeyError: 'boom' (3 so far)",
                lines[1],
            )
            self.assertEqual(lines[2], "caplab filter exploding failed 3 times in 0s (3 so far)")
            self.assertEqual(clock.getDelayedCalls(), [])

    def test_filtersApart(self) -> None:
        """
        The failures of one filter do not hide another's: each is logged at once.
        """

        class Other(Exploding):
            name = "other"

        everything = HostSelector(["*"])
        filters = FilterChain(
            [(everything, Exploding("head")), (everything, Other("head"))],
            log=filterLog(Clock()),
        )
        with capturedLogs() as events:
            for _ in range(100):
                filters.filterRequest(makeRequest(), "c")
        self.assertEqual([event["name"] for event in events], ["exploding", "other"])


class ReloadTests(SynchronousTestCase):
    def test_swap(self) -> None:
        """
        A reload builds a new chain and swaps it in; a request that took the old one keeps
        it; a failed build changes nothing.
        """
        tables = [{"rewrite": ["* s/hello/one/g"]}]
        reloadable = ReloadableFilterChain(lambda: chain(tables[-1]))
        taken = reloadable.current
        tables.append({"rewrite": ["* s/hello/two/g"]})
        loaded = reloadable.load()
        self.assertIs(reloadable.current, taken)
        self.assertEqual(reloadable.use(loaded), "1 rewrite rules")
        for filters, word in ((taken, b"one"), (reloadable, b"two")):
            response, _ = makeResponse([(b"Content-Type", b"text/plain")], [b"hello"])
            self.assertEqual(receive(filters.filterResponse(makeRequest(), response)).body, word)
        tables.append({"rewrite": ["* s/(/x/"]})
        with self.assertRaises(ValueError):
            reloadable.load()
        self.assertIs(reloadable.current, loaded)

    def test_countersKept(self) -> None:
        counters = FilterCounters()
        one = chain({"rewrite": ["* s/a/b/g"]}, counters=counters)
        two = chain({"rewrite": ["* s/a/c/g"]}, counters=counters)
        for filters in (one, two):
            response, _ = makeResponse([(b"Content-Type", b"text/plain")], [b"aa"])
            receive(filters.filterResponse(makeRequest(), response))
        self.assertEqual(counters["rewrites"], 2)
