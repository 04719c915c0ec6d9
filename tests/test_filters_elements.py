"""
Tests for element blocking in HTML (L{caplab.proxy.filters.elements}) and the URL parts it
uses (L{caplab.proxy.filters.urlhost}).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.elements import ElementBlocker, ElementBlockingFilter
from caplab.proxy.filters.interfaces import ResponseHead
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.filters.urlhost import srcsetURLs, urlHost
from caplab.proxy.hooks import Verdict
from caplab.proxy.policy import HostList, HostPolicy
from tests.test_filters_support import makeRequest, runTransform, splitAt


def policy(*rules: str) -> HostPolicy:
    blocked = HostList()
    blocked.addLines(rules, "test-blocklist")
    return HostPolicy(blocked, HostList())


POLICY = policy("ads.example", "*.tracker.example", "bücher.example", "192.0.2.7")


def block(html: bytes | list[bytes], xhtml: bool = False, encoding: str = "utf-8") -> bytes:
    pieces = [html] if isinstance(html, bytes) else html
    return runTransform(ElementBlocker(POLICY, "http", encoding, xhtml), pieces)


#: (page, the page as it should leave the proxy)
CASES = [
    # the four elements, by src/href, with their content and end tag where they have one
    (b'<p>x</p><script src="http://ads.example/a.js"></script><p>y</p>', b"<p>x</p><p>y</p>"),
    (b"a<iframe src=//x.tracker.example/f>fallback <img src=//ads.example/i></iframe >b", b"ab"),
    (b"a<img src='https://ads.example/i.png' alt=x>b", b"ab"),
    (b'a<link rel=stylesheet href="//ads.example/s.css">b', b"ab"),
    # allowed hosts, relative URLs, other schemes stay
    (
        b'<img src="//cdn.example/i.png"><img src=/local.png><img src="data:image/png;base64,AA">',
        None,
    ),
    (b'<script src="javascript:void(0)"></script><link href=mailto:a@ads.example>', None),
    # upper case, any quoting, no quotes, odd spacing, slashes
    (b"a<IMG\nSRC = 'http://ADS.EXAMPLE/i'>b<ScRiPt SrC=//ads.example/x></sCrIpT>c", b"abc"),
    (b"a<img/src=//ads.example/x/>b", b"ab"),
    # the first of repeated attributes wins, as in the HTML parser
    (b"<img src=//cdn.example/i src=//ads.example/j>", None),
    (b"a<img src=//ads.example/j src=//cdn.example/i>b", b"ab"),
    # srcset and imagesrcset
    (b'a<img src=ok.png srcset="ok-2x.png 2x, https://ads.example/big.png 3x">b', b"ab"),
    (b'a<link rel=preload as=image imagesrcset="//ads.example/a.png 1x">b', b"ab"),
    (b'<img srcset="https://cdn.example/a,b.png 1x, c.png 2x">', None),
    # comments, attributes of other elements and raw text are not elements
    (b"<!-- <img src=//ads.example/x> --><!--><img src=//cdn.example/i>", None),
    (b"<a title=\"<img src=//ads.example/x>\" data-x='<script src=//ads.example/y>'>t</a>", None),
    (b'<script>document.write("<img src=//ads.example/x>")</script>', None),
    (
        b"<style>p{}</style><textarea><img src=//ads.example/x></textarea>"
        b"<title><img src=//ads.example/t></title>",
        None,
    ),
    # a quote in a bare value is part of the value, not the start of a quoted string
    (b"a<img alt=x' src=//ads.example/y.png>b<img src=ok>", b"ab<img src=ok>"),
    # <image> is <img> to the HTML parser; SVG's <script>/<image> use href
    (b"a<image src=//ads.example/x>b<svg><image href=//ads.example/y /></svg>c", b"ab<svg></svg>c"),
    # character references, backslashes, user information, ports, percent-encoding, IDN
    (b'a<img src="//ads&#46;example/x">b<img src="http:\\\\ads.example\\x">c', b"abc"),
    (b'<img src="//cdn&#46;example/x"><img src="//{{host}}/x.png">', None),
    (
        b"a<img src=//user@ads.example:8080/x>b<img src=//ads.example@cdn.example/x>",
        b"ab<img src=//ads.example@cdn.example/x>",
    ),
    (b'a<img src=//%61ds.example/x>b<img src="//b\xc3\xbccher.example/x">c', b"abc"),
    (b"a<img src=' //ads.example/x '>b<img src='//ad\ns.example/x'>c", b"abc"),
    (
        b"a<img src=http://192.0.2.7/x>b<img src=http://[2001:db8::1]/x>",
        b"ab<img src=http://[2001:db8::1]/x>",
    ),
    # a <base> makes relative URLs another host's
    (
        b'<base href="//ads.example/">a<img src=rel.png>b<script src=x.js></script>c',
        b'<base href="//ads.example/">abc',
    ),
    # end tags: odd case, attributes, spaces
    (b'a<script src=//ads.example/x>var a = "</scrip";</SCRIPT foo="x>"  >b', b"ab"),
    # stray <, doctype, processing instructions, unclosed end of page
    (b"<!DOCTYPE html><?xml x?>a < b <3 </ > c", None),
    (b"a<img src=//ads.example/x", b"a<img src=//ads.example/x"),
]


class ElementBlockerTests(SynchronousTestCase):
    def test_cases(self) -> None:
        """
        Each page leaves the proxy as it should (see L{CASES}), whole and cut at every
        byte.
        """
        for page, want in CASES:
            want = page if want is None else want
            self.assertEqual(block(page), want, page)
            for cut in range(len(page) + 1):
                self.assertEqual(block(splitAt(page, [cut])), want, (page, cut))

    def test_fastPathNeverTakesATagThatMatters(self) -> None:
        """
        The quick alternative for other tags never starts the name of one that matters.
        """
        import re

        from caplab.proxy.filters.elements import _OTHER_START, _STOPS

        quick = re.compile(_OTHER_START)
        for name in _STOPS:
            for spelling in (name, name.upper(), name.capitalize()):
                self.assertIsNone(quick.match(spelling), spelling)
        for name in (
            b"p",
            b"a",
            b"div",
            b"span",
            b"li",
            b"b",
            b"input",
            b"table",
            b"nav",
            b"strong",
            b"section",
            b"i",
            b"template",
            b"td",
            b"bar",
        ):
            self.assertIsNotNone(quick.match(name), name)

    def test_xhtmlSelfClosing(self) -> None:
        """
        In XHTML a self-closing C{<script/>} has no content: removing it removes nothing
        more.
        """
        page = b'<script src="//ads.example/x"/><p>kept</p><script src=//ads.example/y></script>'
        self.assertEqual(block(page, xhtml=True), b"<p>kept</p>")
        self.assertEqual(block(page), b"")

    def test_plaintext(self) -> None:
        """
        After C{<plaintext>} everything is text.
        """
        page = b"<plaintext><img src=//ads.example/x>"
        self.assertEqual(block(page), page)

    def test_longTagPassesOn(self) -> None:
        """
        A tag longer than the window is not waited for: it passes as it is.
        """
        page = b"<img alt='" + b"x" * 300 + b"' src=//ads.example/x>after"
        blocker = ElementBlocker(POLICY, "http", "utf-8", window=100)
        out = runTransform(blocker, splitAt(page, range(0, len(page), 10)))
        self.assertEqual(out, page)
        self.assertEqual(block(page), b"after")

    def test_unclosedTagCostsBoundedSearches(self) -> None:
        """
        A tag that never closes costs at most two searches a piece (each reads to the end
        of what is held), not one per byte after it: at the end of the body the rest passes
        in one step, and past the window only the last window is searched again.
        """
        from caplab.proxy.filters import elements

        calls = []
        pattern = elements._NEXT

        class Counting:
            def match(self, buffer: bytes, position: int) -> object:
                calls.append(len(buffer) - position)
                return pattern.match(buffer, position)

        self.patch(elements, "_NEXT", Counting())
        for unit in (b"<a", b"<script", b"<x=", b"<!--"):
            body = unit * (262144 // len(unit))
            for window, size in ((65536, 65536), (100, 65536), (65536, 1 << 20)):
                pieces = splitAt(body, range(size, len(body), size))
                del calls[:]
                blocker = ElementBlocker(POLICY, "http", "utf-8", window=window)
                self.assertEqual(runTransform(blocker, pieces), body, (unit, window))
                self.assertLessEqual(len(calls), 2 * len(pieces) + 1, (unit, window, size))
                self.assertLessEqual(sum(calls), 4 * len(body), (unit, window, size))

    def test_counts(self) -> None:
        counters = FilterCounters()
        blocker = ElementBlocker(POLICY, "http", "utf-8", counters=counters)
        runTransform(blocker, [b"<img src=//ads.example/a><img src=//ads.example/b><img src=x>"])
        self.assertEqual(counters["elements-blocked"], 2)
        self.assertEqual(blocker.removed, 2)

    def test_policyAsked(self) -> None:
        """
        The host policy decides (its allow rules too), asked once per host.
        """
        asked: list[str] = []

        class Policy:
            def check(self, host: str) -> Verdict | None:
                asked.append(host)
                return Verdict("x", "y") if host == "ads.example" else None

        page = b"<img src=//ads.example/a><img src=//ads.example/b><img src=//ok.example/c>"
        out = runTransform(ElementBlocker(Policy(), "http", "utf-8"), [page])
        self.assertEqual(out, b"<img src=//ok.example/c>")
        self.assertEqual(asked, ["ads.example", "ok.example"])
        allowed = HostList()
        allowed.addLines(["good.ads.example"], "allow")
        blocked = HostList()
        blocked.addLines(["ads.example"], "block")
        both = HostPolicy(blocked, allowed)
        page = b"<img src=//good.ads.example/a>"
        self.assertEqual(runTransform(ElementBlocker(both, "http", "utf-8"), [page]), page)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [page for page, _ in CASES]
                + [
                    b"<",
                    b"<!--",
                    b"-->",
                    b"</script>",
                    b"<script>",
                    b'"',
                    b"'",
                    b"<img ",
                    b"src=//ads.example/x>",
                    b"text ",
                ]
            ),
            max_size=8,
        ),
        st.lists(st.integers(0, 600), max_size=6),
    )
    def test_everySplitGivesTheSameOutput(self, fragments: list[bytes], cuts: list[int]) -> None:
        """
        Any page made of these fragments comes out the same however it is cut.
        """
        page = b"".join(fragments)
        self.assertEqual(block(splitAt(page, cuts)), block(page))


class FilterTests(SynchronousTestCase):
    def test_onlyHTML(self) -> None:
        """
        The filter works on HTML and XHTML, in encodings where markup is ASCII.
        """
        blocking = ElementBlockingFilter(POLICY, FilterCounters())
        for mediaType, charset, applies in [
            ("text/html", None, True),
            ("text/html", "windows-1252", True),
            ("application/xhtml+xml", "utf-8", True),
            ("text/plain", None, False),
            ("application/javascript", None, False),
            ("text/html", "utf-16", False),
            ("text/html", "no-such-charset", False),
        ]:
            head = ResponseHead(200, b"OK", [], mediaType, charset)
            transform = blocking.transformBody(makeRequest(), head)
            self.assertEqual(transform is not None, applies, (mediaType, charset))


class URLHostTests(SynchronousTestCase):
    def test_hosts(self) -> None:
        cases = [
            ("http://a.example/x", "a.example"),
            ("HTTPS://A.Example:443/x", "a.example"),
            ("//a.example", "a.example"),
            ("//a.example?x", "a.example"),
            ("//a.example#x", "a.example"),
            ("  //a.example/ ", "a.example"),
            ("http:\\\\a.example\\x", "a.example"),
            ("http:///a.example/x", "a.example"),
            ("https:a.example/x", "a.example"),
            ("//u:p@a.example:1/x", "a.example"),
            ("//a.ex\tample/x", "a.example"),
            ("//%61.example/", "a.example"),
            ("http://[2001:DB8::1]:80/", "2001:db8::1"),
            ("ws://a.example/", "a.example"),
            ("x.png", "base.example"),
            ("/x.png", "base.example"),
            ("http:x.png", "base.example"),
            ("data:text/plain,x", None),
            ("javascript:alert(1)", None),
            ("blob:http://a.example/x", None),
            ("", "base.example"),
        ]
        for url, host in cases:
            self.assertEqual(urlHost(url, "http", "base.example"), host, url)
        self.assertIsNone(urlHost("x.png", "http", None))

    def test_srcset(self) -> None:
        cases = [
            ("a.png", ["a.png"]),
            ("a.png 1x, b.png 2x", ["a.png", "b.png"]),
            ("a.png, b.png", ["a.png", "b.png"]),
            ("a,b.png 1x,c.png 2x", ["a,b.png", "c.png"]),
            (" , a.png 100w (x, y), b.png", ["a.png", "b.png"]),
            ("", []),
        ]
        for value, urls in cases:
            self.assertEqual(srcsetURLs(value), urls, value)
