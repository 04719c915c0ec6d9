"""
Tests for the check of what a request filter returns (L{caplab.proxy.filters.chain}): a
result that is no request, or whose new target the host policy blocks, is refused and
logged, and the request goes on as it was.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.chain import FilterChain, requestRefusal
from caplab.proxy.filters.config import buildChain, parseFilterConfig
from caplab.proxy.filters.hosts import HostSelector
from caplab.proxy.filters.reporting import filterLog
from caplab.proxy.hooks import Target, UpstreamRequest, Verdict
from caplab.proxy.policy import HostList, HostPolicy
from tests.test_filters_support import makeRequest
from tests.test_proxy_channel import Harness


def policy() -> HostPolicy:
    blocked = HostList()
    blocked.addLines(["ads.example"], "blocked.txt")
    return HostPolicy(blocked, HostList())


class Returning:
    """
    A request filter that returns what C{make} makes of the request.
    """

    def __init__(self, make: Any, name: str = "returning") -> None:
        self.make = make
        self.name = name

    def filterRequest(self, request: UpstreamRequest, client: str) -> Any:
        return self.make(request)


def moved(host: str, port: int = 80, scheme: str = "http") -> Any:
    return lambda request: replace(request, target=Target(scheme, host, port, b"/moved"))


def chainOf(*makers: Any, hostPolicy: Any = None, names: list[str] | None = None) -> FilterChain:
    everything = HostSelector(["*"])
    names = list(names or [])
    return FilterChain(
        [(everything, Returning(make, names.pop(0) if names else "returning")) for make in makers],
        log=filterLog(Clock()),
        hostPolicy=hostPolicy if hostPolicy is not None else policy(),
    )


class RequestResultTests(SynchronousTestCase):
    def filtered(self, chain: FilterChain, request: UpstreamRequest) -> tuple[Any, list[str]]:
        with capturedLogs() as events:
            result = chain.filterRequest(request, "127.0.0.1")
        return result, [formatEvent(event) for event in events]

    def test_noneIsRefused(self) -> None:
        """
        A filter that returns None is skipped: the request goes on as it came, and the
        log says why.
        """
        request = makeRequest()
        result, lines = self.filtered(chainOf(lambda r: None), request)
        self.assertIs(result, request)
        self.assertEqual(len(lines), 1)
        self.assertIn("caplab filter returning failed on a request and was skipped", lines[0])
        self.assertIn("it returned NoneType, not an UpstreamRequest", lines[0])

    def test_blockedTargetIsRefused(self) -> None:
        """
        A filter that sends the request to a host the block list blocks is refused, in
        any spelling of the host; the request keeps the target the admission checked.
        """
        request = makeRequest()
        for host in ("ads.example", "www.ads.example", "ADS.example", "ads.example."):
            result, lines = self.filtered(chainOf(moved(host)), request)
            self.assertIs(result, request, host)
            self.assertEqual(len(lines), 1, host)
            self.assertIn(f"it sent the request to {host}, which the rule", lines[0])
            self.assertIn("(blocked.txt:1) blocks", lines[0])

    def test_otherChangesOfTarget(self) -> None:
        """
        A scheme that is not HTTP's, a port out of range, an empty host are refused.
        """
        request = makeRequest()
        for make, reason in [
            (moved("example.org", scheme="file"), "to a 'file' URI"),
            (moved("example.org", port=0), "to port 0"),
            (moved("example.org", port=70000), "to port 70000"),
            (moved(""), "to host ''"),
            (lambda r: replace(r, target="http://ads.example/"), "not a Target"),
            (lambda r: replace(r, bodyLength=5), "changed the request's body"),
        ]:
            result, lines = self.filtered(chainOf(make), request)
            self.assertIs(result, request, reason)
            self.assertIn(reason, lines[0])

    def test_allowedTargetIsUsed(self) -> None:
        """
        A target moved to a host the policy lets through is used, and the next filter
        sees it; a change that keeps the target is not checked against the policy.
        """
        request = makeRequest()
        result, lines = self.filtered(
            chainOf(moved("example.org", 8080), lambda r: replace(r, method=b"HEAD")), request
        )
        self.assertEqual(lines, [])
        self.assertEqual(result.target, Target("http", "example.org", 8080, b"/moved"))
        self.assertEqual(result.method, b"HEAD")

        class Refusing:
            def check(self, host: str) -> Verdict | None:
                raise AssertionError("checked")

        headers = lambda r: replace(r, headers=[(b"X-A", b"1")])  # noqa: E731
        path = lambda r: replace(r, target=replace(r.target, path=b"/other"))  # noqa: E731
        result, lines = self.filtered(chainOf(headers, path, hostPolicy=Refusing()), request)
        self.assertEqual(lines, [])
        self.assertEqual(result.headers, [(b"X-A", b"1")])
        self.assertEqual(result.target.path, b"/other")

    def test_failingPolicyRefuses(self) -> None:
        """
        A host policy that raises refuses the new target: the check fails closed.
        """

        class Broken:
            def check(self, host: str) -> Verdict | None:
                raise RuntimeError("lists gone")

        refusal = requestRefusal(makeRequest(), makeRequest("example.org"), Broken())
        self.assertIsNotNone(refusal)
        self.assertIn("RuntimeError: lists gone", str(refusal))

    def test_buildChainChecksWithItsPolicy(self) -> None:
        """
        L{buildChain} gives the chain the host policy, so a plugin's target is checked with
        the lists in force.
        """
        built = buildChain(parseFilterConfig({"request-header": ["* set X-A: 1"]}), policy())
        built.requestFilters.append((HostSelector(["*"]), Returning(moved("ads.example"))))
        request = makeRequest()
        result = built.filterRequest(request, "127.0.0.1")
        self.assertEqual(result.target, request.target)
        self.assertEqual(result.headers, [(b"X-A", b"1")])


class ExchangeTests(Harness):
    """
    Through the proxy's exchange: what a refused filter result does to the request.
    """

    def test_noneAndBlockedTarget(self) -> None:
        """
        With a plugin that returns None and one that moves the request to a blocked host,
        the request is fetched from the host the client named and answered (it was a 500).
        """
        hostPolicy = policy()
        chain = chainOf(
            lambda r: None, moved("ads.example"), hostPolicy=hostPolicy, names=["none", "moving"]
        )
        channel, transport = self.connect(filters=chain, hostPolicy=hostPolicy)
        with capturedLogs() as events:
            channel.dataReceived(b"GET http://example.com/a HTTP/1.1\r\nHost: example.com\r\n\r\n")
        [(request, _, _)] = self.fetcher.calls
        self.assertEqual(request.target.uri, "http://example.com/a")
        self.fetcher.answer(200, [(b"Content-Length", b"2")], [b"ok"])
        reply = transport.value()
        self.assertTrue(reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply)
        self.assertTrue(reply.endswith(b"\r\n\r\nok"))
        lines = [formatEvent(e) for e in events if e.get("log_namespace") == "caplab.proxy.filters"]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("caplab filter none failed on a request", lines[0])
        self.assertIn("caplab filter moving failed on a request", lines[1])
        self.assertIn("it sent the request to ads.example", lines[1])
