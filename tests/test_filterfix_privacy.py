"""
Tests for the order of privacy and header rules in a built chain: privacy comes last, so
no header rule puts back what it removed or reduced.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.config import buildChain, parseFilterConfig
from caplab.proxy.filters.fields import fieldValues
from caplab.proxy.hooks import Headers
from tests.test_filters_support import makeRequest, makeResponse

#: A third-party request: an image of example.com on a page of news.example.
THIRD_PARTY: Headers = [
    (b"Referer", b"http://news.example/story?id=7"),
    (b"Sec-Fetch-Mode", b"no-cors"),
    (b"Sec-Fetch-Dest", b"image"),
    (b"Cookie", b"id=client"),
]
#: A first-party one.
FIRST_PARTY: Headers = [(b"Referer", b"http://www.example.com/page"), (b"Cookie", b"id=client")]

RULES = {
    "privacy": True,
    "request-header": [
        "* add Cookie: id=rule",
        "* set Referer: http://tracker.example/full/path?user=1",
        "* remove Sec-GPC",
    ],
    "response-header": ["* add Set-Cookie: rule=1"],
}


class PrivacyWinsTests(SynchronousTestCase):
    def test_requestHeaderRules(self) -> None:
        """
        On a third-party request a rule's C{Cookie} goes with the client's, a rule's
        cross-site C{Referer} is reduced to its origin, and C{Sec-GPC: 1} is sent though a
        rule removes it.
        """
        chain = buildChain(parseFilterConfig(RULES))
        request = chain.filterRequest(makeRequest(headers=list(THIRD_PARTY)), "127.0.0.1")
        self.assertEqual(fieldValues(request.headers, b"cookie"), [])
        self.assertEqual(fieldValues(request.headers, b"referer"), [b"http://tracker.example/"])
        self.assertEqual(fieldValues(request.headers, b"sec-gpc"), [b"1"])

    def test_responseHeaderRules(self) -> None:
        """
        A rule's C{Set-Cookie} does not reach the browser on a third-party response, as
        the origin's does not; on a first-party one both do.
        """
        chain = buildChain(parseFilterConfig(RULES))
        for headers, cookies in [
            (THIRD_PARTY, []),
            (FIRST_PARTY, [b"origin=1", b"rule=1"]),
        ]:
            request = makeRequest(headers=list(headers))
            response, _ = makeResponse([(b"Set-Cookie", b"origin=1")])
            filtered = chain.filterResponse(request, response)
            self.assertEqual(fieldValues(filtered.headers, b"set-cookie"), cookies, headers)

    def test_firstPartyKeepsRuleCookie(self) -> None:
        """
        On a first-party request privacy removes nothing: the rule's C{Cookie} is sent.
        """
        chain = buildChain(
            parseFilterConfig({"privacy": True, "request-header": ["* add Cookie: id=rule"]})
        )
        request = chain.filterRequest(makeRequest(headers=list(FIRST_PARTY)), "127.0.0.1")
        self.assertEqual(fieldValues(request.headers, b"cookie"), [b"id=client", b"id=rule"])
