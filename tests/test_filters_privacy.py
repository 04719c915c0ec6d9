"""
Tests for the privacy rules (L{caplab.proxy.filters.privacy}): pure functions first, then the
filter on requests and responses.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.hosts import FilterConfigError
from caplab.proxy.filters.interfaces import ResponseHead
from caplab.proxy.filters.privacy import (
    DEFAULT_TRACKING_PARAMETERS,
    PrivacyFilter,
    PrivacySettings,
    TrackingParameters,
    isCrossSite,
    isNavigation,
    parsePrivacyParts,
    reducedReferer,
    siteOf,
    stripTrackingParameters,
)
from caplab.proxy.filters.reporting import FilterCounters
from tests.test_filters_support import makeRequest

TRACKING = TrackingParameters(DEFAULT_TRACKING_PARAMETERS)


class TrackingParameterTests(SynchronousTestCase):
    def test_strips(self) -> None:
        cases = [
            (b"/a", b"/a", 0),
            (b"/a?", b"/a?", 0),
            (b"/a?x=1", b"/a?x=1", 0),
            (b"/a?utm_source=news", b"/a", 1),
            (b"/a?x=1&utm_source=n&utm_medium=m&y=2", b"/a?x=1&y=2", 2),
            (b"/a?fbclid=abc&gclid=def&mc_eid=1", b"/a", 3),
            (b"/a?UTM_Campaign=x&Fbclid=y&k", b"/a?k", 2),
            (b"/a?utm%5Fsource=x&z=%20", b"/a?z=%20", 1),
            (b"/a?x=utm_source&&y", b"/a?x=utm_source&&y", 0),
            (b"/a?gclidx=1&xgclid=2", b"/a?gclidx=1&xgclid=2", 0),
            (b"/a?q=caf%C3%A9&fbclid=1", b"/a?q=caf%C3%A9", 1),
        ]
        for path, want, removed in cases:
            self.assertEqual(stripTrackingParameters(path, TRACKING), (want, removed), path)

    def test_extendable(self) -> None:
        """
        Names and C{prefix*} patterns extend the list.
        """
        tracking = TrackingParameters([*DEFAULT_TRACKING_PARAMETERS, "ref_src", "spm_*"])
        self.assertEqual(
            stripTrackingParameters(b"/?ref_src=t&spm_id=1&spm=2", tracking), (b"/?spm=2", 2)
        )
        for bad in ("", "*", "a*b", "a=b", "a&b"):
            with self.assertRaises(FilterConfigError):
                TrackingParameters([bad])

    @settings(max_examples=200)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["utm_x", "fbclid", "a", "b", "gclid", "q"]),
                st.text(alphabet="xyz%20", max_size=4),
            ),
            max_size=6,
        )
    )
    def test_keepsTheOthersInOrder(self, parameters: list[tuple[str, str]]) -> None:
        """
        Every other parameter is kept, in order, byte for byte.
        """
        path = b"/p?" + b"&".join(f"{k}={v}".encode() for k, v in parameters)
        stripped, removed = stripTrackingParameters(path, TRACKING)
        kept = [f"{k}={v}".encode() for k, v in parameters if not TRACKING.isTracking(k)]
        self.assertEqual(removed, len(parameters) - len(kept))
        if removed:
            self.assertEqual(stripped, b"/p" + (b"?" + b"&".join(kept) if kept else b""))
        else:
            self.assertEqual(stripped, path)


class SiteTests(SynchronousTestCase):
    def test_sites(self) -> None:
        self.assertEqual(siteOf("www.example.co.uk"), "example.co.uk")
        self.assertEqual(siteOf("static.example.com"), "example.com")
        self.assertEqual(siteOf("a.github.io"), "a.github.io")
        self.assertEqual(siteOf("192.0.2.1"), "192.0.2.1")
        self.assertEqual(siteOf("2001:db8::1"), "2001:db8::1")
        self.assertEqual(siteOf("localhost"), "localhost")

    def test_crossSite(self) -> None:
        self.assertFalse(isCrossSite(b"http://www.example.com/a", "static.example.com"))
        self.assertTrue(isCrossSite(b"http://news.example/a", "ads.example.net"))
        self.assertTrue(isCrossSite(b"https://a.github.io/", "b.github.io"))
        self.assertFalse(isCrossSite(None, "example.com"))
        self.assertFalse(isCrossSite(b"android-app://x", "example.com"))
        self.assertFalse(isCrossSite(b"not a url", "example.com"))
        self.assertFalse(isCrossSite(b"http://EXAMPLE.com./", "example.com"))

    def test_reducedReferer(self) -> None:
        self.assertEqual(
            reducedReferer(b"http://news.example/2026/story?id=7", "ads.example.net"),
            b"http://news.example/",
        )
        self.assertEqual(
            reducedReferer(b"https://user:pw@news.example:8443/x", "ads.example.net"),
            b"https://news.example:8443/",
        )
        self.assertEqual(
            reducedReferer(b"http://[2001:db8::1]/x", "a.example"), b"http://[2001:db8::1]/"
        )
        self.assertIsNone(reducedReferer(b"http://news.example/", "ads.example.net"))
        self.assertIsNone(reducedReferer(b"http://www.news.example/x", "img.news.example"))

    def test_navigation(self) -> None:
        html = [(b"Accept", b"text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")]
        self.assertTrue(isNavigation(b"GET", html))
        self.assertFalse(isNavigation(b"POST", html))
        self.assertFalse(isNavigation(b"GET", [(b"Accept", b"image/avif,image/webp,*/*")]))
        self.assertFalse(isNavigation(b"GET", []))
        self.assertTrue(
            isNavigation(
                b"GET", [(b"Sec-Fetch-Mode", b"navigate"), (b"Sec-Fetch-Dest", b"document")]
            )
        )
        self.assertFalse(
            isNavigation(
                b"GET", [*html, (b"Sec-Fetch-Mode", b"navigate"), (b"Sec-Fetch-Dest", b"iframe")]
            )
        )
        self.assertFalse(isNavigation(b"GET", [*html, (b"Sec-Fetch-Mode", b"no-cors")]))

    def test_parts(self) -> None:
        self.assertEqual(parsePrivacyParts("params, GPC"), frozenset({"params", "gpc"}))
        for bad in ("", "params,cookie", "everything"):
            with self.assertRaises(FilterConfigError):
                parsePrivacyParts(bad)


IMAGE = [(b"Accept", b"image/webp,*/*"), (b"Referer", b"http://news.example/story?id=7")]


class PrivacyFilterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.counters = FilterCounters()
        self.filter = PrivacyFilter(PrivacySettings(), self.counters)

    def test_thirdPartyRequest(self) -> None:
        """
        A third-party image request loses its tracking parameters and cookies, its Referer
        is reduced to the origin, and it says C{Sec-GPC: 1}.
        """
        request = makeRequest(
            "pixel.tracker.example",
            b"/p.gif?utm_source=x&id=3",
            headers=[*IMAGE, (b"Cookie", b"uid=42"), (b"Cookie", b"b=1")],
        )
        filtered = self.filter.filterRequest(request, "192.0.2.55")
        self.assertEqual(filtered.target.path, b"/p.gif?id=3")
        self.assertEqual(
            filtered.headers,
            [
                (b"Accept", b"image/webp,*/*"),
                (b"Referer", b"http://news.example/"),
                (b"Sec-GPC", b"1"),
            ],
        )
        self.assertEqual(request.headers[-1], (b"Cookie", b"b=1"), "the original is unchanged")
        self.assertEqual(self.counters["tracking-parameters"], 1)
        self.assertEqual(self.counters["cookies-dropped"], 1)
        self.assertEqual(self.counters["referers-reduced"], 1)
        self.assertEqual(self.counters["gpc-sent"], 1)

    def test_firstPartyAndNavigationKeepCookies(self) -> None:
        """
        Same-site requests, and top-level navigations from another site, keep cookies.
        """
        sameSite = makeRequest("img.news.example", headers=[*IMAGE, (b"Cookie", b"a=1")])
        navigation = makeRequest(
            "bank.example",
            headers=[
                (b"Accept", b"text/html"),
                (b"Referer", b"http://search.example/?q=bank"),
                (b"Cookie", b"s=1"),
            ],
        )
        for request in (sameSite, navigation):
            filtered = self.filter.filterRequest(request, "client")
            self.assertIn((b"Cookie", request.headers[-1][1]), filtered.headers)
        self.assertEqual(self.counters["cookies-dropped"], 0)

    def test_setCookieDroppedOnThirdPartyResponses(self) -> None:
        request = self.filter.filterRequest(makeRequest("ads.example.net", headers=IMAGE), "c")
        head = ResponseHead(
            200,
            b"OK",
            [(b"Set-Cookie", b"uid=1"), (b"set-cookie", b"x=2"), (b"ETag", b'"a"')],
            "image/gif",
            None,
        )
        self.filter.filterHead(request, head)
        self.assertEqual(head.headers, [(b"ETag", b'"a"')])
        self.assertEqual(self.counters["set-cookies-dropped"], 2)
        first = makeRequest("news.example", headers=IMAGE)
        head = ResponseHead(200, b"OK", [(b"Set-Cookie", b"uid=1")], "text/html", None)
        self.filter.filterHead(first, head)
        self.assertEqual(head.headers, [(b"Set-Cookie", b"uid=1")])

    def test_nothingIdentifiesTheClient(self) -> None:
        """
        The client's address changes nothing in what is sent; nothing is added but
        C{Sec-GPC}.
        """
        request = makeRequest("a.example", b"/?x=1", headers=[(b"Accept", b"*/*")])
        one = self.filter.filterRequest(request, "192.0.2.1")
        two = self.filter.filterRequest(request, "2001:db8::99")
        self.assertEqual(one, two)
        self.assertEqual([n for n, _ in one.headers], [b"Accept", b"Sec-GPC"])

    def test_partsSwitchOff(self) -> None:
        """
        Each part can be left off on its own.
        """
        request = makeRequest(
            "ads.example.net", b"/?fbclid=1", headers=[*IMAGE, (b"Cookie", b"a=1")]
        )
        for part, check in [
            ("params", lambda r: r.target.path == b"/?fbclid=1"),
            ("referer", lambda r: (b"Referer", IMAGE[1][1]) in r.headers),
            ("gpc", lambda r: all(n != b"Sec-GPC" for n, _ in r.headers)),
            ("cookies", lambda r: (b"Cookie", b"a=1") in r.headers),
        ]:
            settings = PrivacySettings(frozenset({"params", "referer", "gpc", "cookies"} - {part}))
            filtered = PrivacyFilter(settings, FilterCounters()).filterRequest(request, "c")
            self.assertTrue(check(filtered), part)
            everything = self.filter.filterRequest(request, "c")
            self.assertFalse(check(everything), part)

    def test_unchangedRequestIsTheSame(self) -> None:
        request = makeRequest("a.example", headers=[(b"Sec-GPC", b"1")])
        self.assertIs(self.filter.filterRequest(request, "c"), request)
