"""
Tests for the content codings the filters decode (L{caplab.proxy.filters.coding}) as the
chain uses them: how many are decoded for one body, and what ends a stream; and plugin
transforms the chain can or cannot use.
"""

from __future__ import annotations

import gzip
from typing import Any

import brotli
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.chain import FilterChain
from caplab.proxy.filters.coding import MAX_CODINGS, BrotliDecoder, DecodeError
from caplab.proxy.filters.config import buildChain, parseFilterConfig
from caplab.proxy.filters.hosts import HostSelector
from caplab.proxy.filters.interfaces import ResponseFilter, ResponseHead
from caplab.proxy.filters.reporting import filterLog
from caplab.proxy.hooks import UpstreamRequest
from tests.test_filters_support import makeRequest, makeResponse, receive

PAGE = b"<p>hello world</p>"


def rewriting() -> FilterChain:
    return buildChain(parseFilterConfig({"rewrite": ["* s/hello/HOWDY/g"]}))


class StackedCodingsTests(SynchronousTestCase):
    def test_atMostTwo(self) -> None:
        """
        Up to L{MAX_CODINGS} (two) stacked codings are decoded for the filters; a body with
        more, in one field or several, passes untransformed and is counted: no decoder is
        made for each of a thousand C{gzip}s.
        """
        self.assertEqual(MAX_CODINGS, 2)
        for count, fields, transformed in [
            (1, [b"gzip"], True),
            (2, [b"gzip, gzip"], True),
            (3, [b"gzip, gzip, gzip"], False),
            (3, [b"gzip", b"gzip, gzip"], False),
            (1000, [b", ".join([b"gzip"] * 1000)], False),
        ]:
            body = PAGE
            for _ in range(count):
                body = gzip.compress(body)
            headers = [(b"Content-Type", b"text/html"), *((b"Content-Encoding", f) for f in fields)]
            response, _ = makeResponse(headers, [body])
            filters = rewriting()
            filtered = filters.filterResponse(makeRequest(), response)
            got = receive(filtered)
            if transformed:
                self.assertEqual(got.body, b"<p>HOWDY world</p>", count)
                self.assertEqual(filters.counters["untransformed-coding"], 0)
            else:
                self.assertIs(filtered, response, count)
                self.assertEqual(got.body, body, count)
                self.assertEqual(filters.counters["untransformed-coding"], 1, count)


class BrotliEndTests(SynchronousTestCase):
    def test_bytesAfterTheEnd(self) -> None:
        """
        Bytes after the end of a C{br} stream make the body corrupt, whether they come in
        the piece the stream ends in or in a later one; the client's body ends incomplete.
        """
        encoded = brotli.compress(PAGE)
        for pieces in (
            [encoded + b"junk"],
            [encoded, b"junk"],
            [encoded[:5], encoded[5:], b"", b"j"],
        ):
            decoder = BrotliDecoder()
            with self.assertRaises(DecodeError) as raised:
                for piece in pieces:
                    list(decoder.decode(piece))
            self.assertIn("br data is corrupt", str(raised.exception))
            headers = [(b"Content-Type", b"text/html"), (b"Content-Encoding", b"br")]
            response, _ = makeResponse(headers, pieces)
            got = receive(rewriting().filterResponse(makeRequest(), response))
            self.assertIs(got.done, False, pieces)

    def test_wholeStream(self) -> None:
        """
        A stream with nothing after its end, however cut, is decoded whole.
        """
        encoded = brotli.compress(PAGE)
        for cut in range(len(encoded) + 1):
            decoder = BrotliDecoder()
            out = b"".join(
                b"".join(decoder.decode(piece)) for piece in (encoded[:cut], encoded[cut:], b"")
            )
            self.assertEqual(out + b"".join(decoder.flush()), PAGE, cut)


class Windowless:
    """
    A plugin's transform that declares no window.
    """

    def feed(self, data: bytes) -> bytes:
        return data.upper()

    def finish(self) -> bytes:
        return b""


class PluginTransformTests(SynchronousTestCase):
    def chainWith(self, transform: object) -> FilterChain:
        class Plugin(ResponseFilter):
            name = "plugin"

            def transformBody(self, request: UpstreamRequest, head: ResponseHead) -> Any:
                return transform

        return FilterChain([], [(HostSelector(["*"]), Plugin())], log=filterLog(Clock()))

    def test_noWindow(self) -> None:
        """
        A transform without a C{window} holds nothing back: it is used (it made a 500).
        """
        response, _ = makeResponse([(b"Content-Type", b"text/plain")], [b"hello"])
        with capturedLogs() as events:
            got = receive(self.chainWith(Windowless()).filterResponse(makeRequest(), response))
        self.assertEqual(got.body, b"HELLO")
        self.assertEqual(list(events), [])

    def test_unusable(self) -> None:
        """
        A transform whose window is not a number of bytes, or that cannot feed, is skipped
        and logged: the body passes as it came.
        """

        class Negative(Windowless):
            window = -1

        class Text(Windowless):
            window = "64"

        class NoFeed:
            window = 0

        for transform, reason in [
            (Negative(), "window -1 is not"),
            (Text(), "window '64' is not"),
            (NoFeed(), "which has no feed and finish"),
        ]:
            response, _ = makeResponse([(b"Content-Type", b"text/plain")], [b"hello"])
            with capturedLogs() as events:
                filtered = self.chainWith(transform).filterResponse(makeRequest(), response)
            self.assertIs(filtered, response)
            lines = [formatEvent(event) for event in events]
            self.assertEqual(len(lines), 1)
            self.assertIn(reason, lines[0])
