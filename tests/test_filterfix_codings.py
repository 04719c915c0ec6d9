"""
Tests for the content codings the filters decode (L{caplab.proxy.filters.coding}) as the
chain uses them: how many are decoded for one body, and what ends a stream.
"""

from __future__ import annotations

import gzip

from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.chain import FilterChain
from caplab.proxy.filters.coding import MAX_CODINGS
from caplab.proxy.filters.config import buildChain, parseFilterConfig
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
