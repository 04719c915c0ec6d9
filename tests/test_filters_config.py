"""
Tests for the filters' configuration: the C{[filters]} table, the options' table, header
rules and host patterns, with a clear error for each kind of bad input.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.config import buildChain, parseFilterConfig, tableFromOptions
from caplab.proxy.filters.headerrules import (
    RequestHeaderFilter,
    ResponseHeaderFilter,
    parseHeaderRule,
)
from caplab.proxy.filters.hosts import FilterConfigError, HostSelector
from caplab.proxy.filters.interfaces import ResponseHead
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.policy import HostList, HostPolicy
from tests.test_filters_support import makeRequest


class HostSelectorTests(SynchronousTestCase):
    def test_patterns(self) -> None:
        selector = HostSelector.parse("example.com, *.example.org,192.0.2.1,bücher.example")
        for host, matches in [
            ("example.com", True),
            ("www.example.com", True),
            ("badexample.com", False),
            ("example.org", False),
            ("a.example.org", True),
            ("192.0.2.1", True),
            ("192.0.2.2", False),
            ("xn--bcher-kva.example", True),
            ("", False),
        ]:
            self.assertEqual(selector.matches(host), matches, host)
        self.assertTrue(HostSelector.parse("*").matches("anything.example"))

    def test_errors(self) -> None:
        for text, message in [
            ("", "empty host pattern"),
            ("a,,b", "empty host pattern"),
            ("http://x/", "is not a host pattern"),
            ("*.", "is not a host pattern"),
            ("a b", "is not a host pattern"),
            ("ex*ample.com", "is not a host pattern"),
        ]:
            with self.assertRaises(FilterConfigError) as caught:
                HostSelector.parse(text, "--rewrite")
            self.assertIn(message, str(caught.exception))
            self.assertTrue(str(caught.exception).startswith("--rewrite"))


class HeaderRuleTests(SynchronousTestCase):
    def test_actions(self) -> None:
        """
        add keeps what is there, set replaces every occurrence, remove removes them all;
        names match without regard to case.
        """
        headers = [(b"A", b"1"), (b"x-lab", b"old"), (b"B", b"2"), (b"X-Lab", b"older")]
        counters = FilterCounters()
        for text, want in [
            ("* add X-Lab: new", [*headers, (b"X-Lab", b"new")]),
            ("* set X-Lab: new", [(b"A", b"1"), (b"x-lab", b"new"), (b"B", b"2")]),
            ("* remove x-LAB", [(b"A", b"1"), (b"B", b"2")]),
            ("* set Y: a: b", [*headers, (b"Y", b"a: b")]),
        ]:
            rule = parseHeaderRule(text, "--response-header")
            head = ResponseHead(200, b"OK", list(headers), None, None)
            ResponseHeaderFilter(rule, counters).filterHead(makeRequest(), head)
            self.assertEqual(head.headers, want, text)
        request = makeRequest(headers=list(headers))
        filtered = RequestHeaderFilter(parseHeaderRule("* remove B"), counters).filterRequest(
            request, "c"
        )
        self.assertEqual(filtered.headers, [h for h in headers if h[0] != b"B"])
        self.assertEqual(request.headers, headers)
        self.assertEqual(counters["header-rules"], 1 + 1 + 2 + 1 + 1)

    def test_errors(self) -> None:
        for text, message in [
            ("* remove", "expected 'HOSTPATTERN add|set|remove NAME[: VALUE]'"),
            ("* replace X: 1", "expected 'HOSTPATTERN add|set|remove NAME[: VALUE]'"),
            ("* add X", "add needs 'NAME: VALUE'"),
            ("* remove X: 1", "remove takes a name only"),
            ("* add X Y: 1", "'X Y' is not a field name"),
            ("* add Ünï: 1", "must be ASCII"),
            ("* set Content-Length: 5", "rules may not change it"),
            ("* remove Transfer-Encoding", "rules may not change it"),
            ("* set Host: x", "rules may not change it"),
            ("* add X: a\x00b", "control character"),
            ("bad!host add X: 1", "is not a host pattern"),
        ]:
            with self.assertRaises(FilterConfigError) as caught:
                parseHeaderRule(text, "--request-header")
            self.assertIn(message, str(caught.exception), text)
            self.assertIn(repr(text), str(caught.exception))


def policy() -> HostPolicy:
    return HostPolicy(HostList(), HostList())


class ConfigTests(SynchronousTestCase):
    def test_full(self) -> None:
        config = parseFilterConfig(
            {
                "rewrite": ["example.com s/a/b/g"],
                "request-header": ["* set Accept-Language: en"],
                "response-header": "* remove Server",
                "block-elements": ["example.com,*.example.org"],
                "privacy": {"skip": ["gpc"], "strip-parameters": ["ref_src", "spm_*"]},
                "window": 4096,
            }
        )
        self.assertEqual(len(config.rewrites), 1)
        self.assertEqual(len(config.responseHeaders), 1)
        assert config.blockElements is not None and config.privacy is not None
        self.assertEqual(config.blockElements.patterns, ["example.com", "*.example.org"])
        self.assertEqual(config.privacy.parts, frozenset({"params", "referer", "cookies"}))
        self.assertTrue(config.privacy.tracking.isTracking("spm_x"))
        self.assertTrue(config.privacy.tracking.isTracking("utm_source"))
        self.assertEqual(config.window, 4096)
        self.assertFalse(config.empty)
        chain = buildChain(config, policy())
        self.assertEqual(
            chain.describe(),
            "privacy (params, referer, cookies); 2 header rules; element blocking on "
            "example.com,*.example.org; 1 rewrite rules",
        )

    def test_emptyAndOff(self) -> None:
        self.assertTrue(parseFilterConfig({}).empty)
        self.assertTrue(parseFilterConfig({"privacy": False}).empty)
        self.assertTrue(parseFilterConfig({"privacy": {"enabled": False}}).empty)
        self.assertTrue(
            parseFilterConfig({"privacy": {"skip": ["params,referer,gpc,cookies"]}}).empty
        )
        self.assertEqual(buildChain(parseFilterConfig({})).describe(), "no filters")

    def test_options(self) -> None:
        """
        The command-line options make the same table.
        """
        table = tableFromOptions(
            rewrite=["* s/a/b/"],
            blockElements=["*"],
            privacy=True,
            privacySkip=["gpc,cookies"],
            stripParameters=["ref_*"],
            filters=["* upper types=text/plain"],
        )
        config = parseFilterConfig(table, "options")
        assert config.privacy is not None
        self.assertEqual(config.privacy.parts, frozenset({"params", "referer"}))
        self.assertEqual(config.plugins[0].name, "upper")
        self.assertEqual(config.plugins[0].options, {"types": "text/plain"})
        self.assertIsNone(parseFilterConfig(tableFromOptions(privacySkip=["gpc"])).privacy)

    def test_optionMessages(self) -> None:
        """
        Parsed as options, the messages name the options.
        """
        cases: list[tuple[dict[str, Any], str]] = [
            ({"rewrite": ["* s/(/x/"]}, "--rewrite '* s/(/x/': bad regular expression"),
            ({"requestHeader": ["* drop X"]}, "--request-header '* drop X'"),
            ({"responseHeader": ["* set Host: x"]}, "--response-header '* set Host: x'"),
            ({"blockElements": ["a b"]}, "--block-elements: 'a b' is not a host pattern"),
            ({"privacy": True, "privacySkip": ["gcp"]}, "--privacy-skip 'gcp': name parts"),
            ({"privacy": True, "stripParameters": ["a*b"]}, "--strip-param: 'a*b'"),
            ({"filters": ["upper"]}, "--filter 'upper': expected"),
            ({"window": 1}, "--filter-window: expected a number of bytes"),
        ]
        for kwargs, message in cases:
            with self.assertRaises(FilterConfigError) as caught:
                parseFilterConfig(tableFromOptions(**kwargs), options=True)
            self.assertTrue(str(caught.exception).startswith(message), str(caught.exception))

    def assertBad(self, table: dict[str, Any], message: str) -> None:
        with self.assertRaises(FilterConfigError) as caught:
            parseFilterConfig(table)
        self.assertIn(message, str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_errors(self) -> None:
        """
        Each kind of bad configuration stops with a message naming the key.
        """
        self.assertBad({"rewrites": []}, "[filters]: unknown key 'rewrites'")
        self.assertBad({"rewrite": 5}, "[filters] rewrite: expected a string or a list of strings")
        self.assertBad(
            {"rewrite": ["* s/(/x/"]}, "[filters] rewrite '* s/(/x/': bad regular expression"
        )
        self.assertBad({"response-header": ["* drop X"]}, "[filters] response-header '* drop X'")
        self.assertBad(
            {"block-elements": ["http://x"]},
            "[filters] block-elements: 'http://x' is not a host pattern",
        )
        self.assertBad({"privacy": "yes"}, "[filters] privacy: expected true, false or a table")
        self.assertBad({"privacy": {"parts": []}}, "[filters] privacy: unknown key 'parts'")
        self.assertBad({"privacy": {"skip": ["gcp"]}}, "name parts of the privacy rules")
        self.assertBad(
            {"privacy": {"enabled": "no"}}, "[filters] privacy.enabled: expected true or false"
        )
        self.assertBad(
            {"privacy": {"strip-parameters": ["a*b"]}}, "[filters] privacy.strip-parameters: 'a*b'"
        )
        self.assertBad(
            {"window": 10}, "[filters] window: expected a number of bytes from 256 to 262144"
        )
        self.assertBad({"window": True}, "[filters] window")
        self.assertBad({"filter": ["upper"]}, "expected 'HOSTPATTERN NAME [KEY=VALUE ...]'")
        self.assertBad({"filter": ["* upper types"]}, "option 'types' is not KEY=VALUE")
        self.assertBad({"filter": [{"hosts": "*"}]}, "a table with name, hosts and options")
        self.assertBad({"filter": [{"name": "x", "options": 3}]}, "options: expected a table")

    def test_blockElementsNeedsAPolicy(self) -> None:
        with self.assertRaises(FilterConfigError) as caught:
            buildChain(parseFilterConfig({"block-elements": ["*"]}))
        self.assertIn("--block-list", str(caught.exception))
