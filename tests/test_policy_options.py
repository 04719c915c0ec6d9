"""
Tests for L{caplab.proxy.policy_options}: the policy options.  (The objects they describe are
built, and their files read, by L{caplab.wiring}: see C{tests/test_wiring.py}.)
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.pac import PacPage
from caplab.proxy.policy_options import PolicyOptions
from tests.test_policy import TempFiles


class Options(PolicyOptions, usage.Options):
    def postOptions(self) -> None:
        self.checkPolicyOptions()


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionTests(TempFiles, SynchronousTestCase):
    """
    Parsing and checking the options.
    """

    def test_defaults(self) -> None:
        """
        Nothing is on by default: no lists, no auth, no parent, no admin endpoint.
        """
        options = parse()
        for name in ["block-list", "allow-list", "no-upstream-for", "pac-bypass"]:
            self.assertEqual(options[name], [])
        for name in ["auth-file", "upstream-proxy", "admin-endpoint"]:
            self.assertIsNone(options[name])
        self.assertFalse(options["default-deny"])

    def test_repeatable(self) -> None:
        """
        The list options can be given several times.
        """
        one = self.writeFile("one", "a.example\n")
        two = self.writeFile("two", "b.example\n")
        options = parse(
            "--block-list", one, "--block-list", two, "--allow-list", one,
            "--pac-bypass", "lan.example", "--pac-bypass", "intranet.example",
            "--upstream-proxy", "http://127.0.0.1:3128",
            "--no-upstream-for", "a.example", "--no-upstream-for=b.example",
        )  # fmt: skip
        self.assertEqual(options["block-list"], [one, two])
        self.assertEqual(options["allow-list"], [one])
        self.assertEqual(options["pac-bypass"], ["lan.example", "intranet.example"])
        self.assertEqual(options["no-upstream-for"], ["a.example", "b.example"])

    def test_adminEndpoint(self) -> None:
        """
        A bare port means that port on loopback; a description is kept.
        """
        self.assertEqual(parse("--admin-endpoint", "9100")["admin-endpoint"],
                         "tcp:9100:interface=127.0.0.1")  # fmt: skip
        self.assertEqual(parse("--admin-endpoint", "tcp6:9100")["admin-endpoint"], "tcp6:9100")

    def assertUsageError(self, message: str, *argv: str) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            parse(*argv)
        self.assertIn(message, str(caught.exception))

    def test_badValues(self) -> None:
        """
        Bad URLs, domains and endpoints, and contradictions, are usage errors.
        """
        self.assertUsageError("--upstream-proxy: only http://", "--upstream-proxy", "ftp://h:1")
        self.assertUsageError("needs an --upstream-proxy", "--no-upstream-for", "a.example")
        self.assertUsageError("--pac-bypass", "--pac-bypass", "not a domain")
        self.assertUsageError("--pac-bypass", "--pac-bypass", "*.*.example")
        self.assertUsageError(
            "--no-upstream-for",
            "--upstream-proxy", "http://h:1", "--no-upstream-for", "http://x",
        )  # fmt: skip
        self.assertUsageError("--admin-endpoint 'nonsense:1'", "--admin-endpoint", "nonsense:1")
        self.assertUsageError("blocks every host", "--default-deny")

    def test_pacBypassReadAsThePageReadsIt(self) -> None:
        """
        C{--pac-bypass} accepts exactly the entries the PAC page serves (one reading of
        them, L{bypassDomain}): C{*.example.com} is served, not a crash at start-up.
        """
        for entry in ["*.Example.com", "lan", "bücher.example", "*.*.example", "a b", "*"]:
            try:
                page: PacPage | None = PacPage([entry])
            except ValueError:
                page = None
            try:
                parse("--pac-bypass", entry)
            except usage.UsageError:
                self.assertIsNone(page, entry)
            else:
                self.assertIsNotNone(page, entry)
        self.assertEqual(PacPage(["*.Example.com"]).bypass, ["*.example.com"])
