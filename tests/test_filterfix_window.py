"""
Tests for the filters at the largest C{--filter-window}: every built-in transform declares
a window the chain accepts, so rewrites (regular expressions included) keep working there.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.config import buildChain, parseFilterConfig
from caplab.proxy.filters.interfaces import MAX_WINDOW, WINDOW_RANGE, ResponseHead
from caplab.proxy.filters.reporting import filterLog
from caplab.proxy.filters.text import PRESCAN
from caplab.proxy.policy import HostList, HostPolicy
from tests.test_filters_support import makeRequest, makeResponse, receive, splitAt

LARGEST = WINDOW_RANGE[1]


def chainAt(window: int, rules: list[str], **table: Any) -> Any:
    blocked = HostList()
    blocked.addLines(["ads.example"], "blocked")
    return buildChain(
        parseFilterConfig({"rewrite": rules, "window": window, **table}),
        HostPolicy(blocked, HostList()),
        log=filterLog(Clock()),
    )


class LargestWindowTests(SynchronousTestCase):
    def test_declaredWindowsFit(self) -> None:
        """
        At the largest window, each kind of rewrite (unbounded and bounded expressions, a
        plain string) in each kind of encoding (ASCII-safe, not, sniffed), and element
        blocking, declares a window no larger than L{MAX_WINDOW}.
        """
        chain = chainAt(
            LARGEST, ["* s/a+b/X/g", "* s/colou?r/C/g", "* s/hello/H/"], **{"block-elements": "*"}
        )
        for charset in ("utf-8", "cp866", "gb18030", None):
            head = ResponseHead(200, b"OK", [], "text/html", charset)
            for _, responseFilter in chain.responseFilters:
                transform = responseFilter.transformBody(makeRequest(), head)
                if transform is None:
                    continue
                self.assertLessEqual(transform.window, MAX_WINDOW, (charset, responseFilter))

    def test_sniffedWindowCoversItsTransform(self) -> None:
        """
        A body whose encoding is sniffed declares at least what the transform made for it
        holds back, with the sniffed bytes.
        """
        chain = chainAt(LARGEST, ["* s/a+b/X/g"])
        head = ResponseHead(200, b"OK", [], "text/html", None)
        _, rewrite = chain.responseFilters[0]
        sniffed = rewrite.transformBody(makeRequest(), head)
        sniffed.feed(b'<meta charset="ibm866">' + b" " * PRESCAN)
        self.assertGreaterEqual(sniffed.window, sniffed._inner.window + PRESCAN)

    def test_longMatchAtLargestWindow(self) -> None:
        """
        A regular expression still rewrites at the largest window: a match of 200,000
        characters arriving in small pieces is found, in UTF-8, in a sniffed encoding and
        in an encoding that is decoded.
        """
        text = b"<p>" + b"a" * 200000 + b"b</p>"
        for charset in (b"; charset=utf-8", b"", b"; charset=ibm866"):
            chain = chainAt(LARGEST, ["* s/a+b/X/g"])
            headers = [(b"Content-Type", b"text/html" + charset)]
            response, _ = makeResponse(headers, splitAt(text, range(0, len(text), 4096)))
            with capturedLogs() as events:
                filtered = chain.filterResponse(makeRequest(), response)
                got = receive(filtered)
            self.assertEqual(list(events), [], charset)
            self.assertEqual(got.body, b"<p>X</p>", charset)
            self.assertEqual(chain.counters["rewrites"], 1, charset)
