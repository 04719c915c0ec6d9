"""
Tests for L{caplab.proxy.policy_options}: the policy options and the objects they describe.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from caplab.listening import DatagramListener, StreamListener
from caplab.proxy.hooks import Target
from caplab.proxy.policy_options import (
    PolicyOptions,
    addPolicyServices,
    policyComponents,
    reloadables,
)
from caplab.proxy.upstream import NextHop
from caplab.reload import SignalReloadService
from caplab.tcp import UppercaseFactory
from caplab.udp import UppercaseDatagramProtocol
from tests.test_auth import HTPASSWD
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

    def test_brokenFiles(self) -> None:
        """
        Unreadable or broken files are usage errors naming the file and line.
        """
        broken = self.writeFile("broken", "ok.example\nhttp://x/\n")
        self.assertUsageError(f"{broken}:2", "--block-list", broken)
        self.assertUsageError(f"{broken}:2", "--allow-list", broken)
        self.assertUsageError("cannot read", "--block-list", broken + ".missing")
        users = self.writeFile("users", "alice:$apr1$x$y\n")
        self.assertUsageError(f"--auth-file: {users}:1", "--auth-file", users)
        self.assertUsageError("cannot read", "--auth-file", users + ".missing")

    def test_badValues(self) -> None:
        """
        Bad URLs, domains and endpoints, and contradictions, are usage errors.
        """
        self.assertUsageError("--upstream-proxy: only http://", "--upstream-proxy", "ftp://h:1")
        self.assertUsageError("needs an --upstream-proxy", "--no-upstream-for", "a.example")
        self.assertUsageError("--pac-bypass", "--pac-bypass", "not a domain")
        self.assertUsageError(
            "--no-upstream-for",
            "--upstream-proxy", "http://h:1", "--no-upstream-for", "http://x",
        )  # fmt: skip
        self.assertUsageError("--admin-endpoint 'nonsense:1'", "--admin-endpoint", "nonsense:1")
        self.assertUsageError("blocks every host", "--default-deny")


class ComponentTests(TempFiles, SynchronousTestCase):
    """
    L{policyComponents} builds the objects once.
    """

    def test_listsLoadedOnce(self) -> None:
        """
        The lists the option check loaded are the ones the proxy uses (not read twice).
        """
        block = self.writeFile("block", "a.example\n")
        options = parse("--block-list", block)
        checked = options["_caplab.checkedHostPolicy"]
        components = policyComponents(options, Clock())
        self.assertIs(components.hostPolicy, checked)
        self.assertNotIn("_caplab.checkedHostPolicy", options)

    def test_none(self) -> None:
        """
        Without options: no policy, no authenticator, direct routing, nothing to reload.
        """
        config: dict[str, object] = {}
        components = policyComponents(config, Clock())
        self.assertIsNone(components.hostPolicy)
        self.assertIsNone(components.authenticator)
        self.assertIsNone(components.parent)
        self.assertEqual(components.router.nextHop(Target("http", "a", 80, b"/")), NextHop("a", 80))
        self.assertEqual(reloadables(components), [])
        self.assertIs(policyComponents(config, Clock()), components)

    def test_all(self) -> None:
        """
        From parsed options: lists, users, a parent with exceptions, PAC bypass domains.
        """
        block = self.writeFile("block", "a.example\n")
        users = self.writeFile("users", HTPASSWD)
        options = parse(
            "--block-list", block, "--auth-file", users,
            "--upstream-proxy", "http://u:p@127.0.0.1:3128", "--no-upstream-for", "lan",
            "--pac-bypass", "lan",
        )  # fmt: skip
        components = policyComponents(options, Clock())
        assert components.hostPolicy is not None and components.authenticator is not None
        self.assertIsNotNone(components.hostPolicy.check("www.a.example"))
        self.assertEqual(sorted(components.authenticator.users), ["alice", "bob", "carol"])
        self.assertEqual(components.router.nextHop(Target("http", "x.lan", 80, b"/")).proxy, None)
        self.assertEqual(components.router.nextHop(Target("http", "b", 80, b"/")).port, 3128)
        self.assertEqual(components.pac.bypass, ["lan"])
        self.assertEqual(
            [name for name, _ in reloadables(components)], ["block/allow lists", "auth file users"]
        )


class ServiceTests(TempFiles, SynchronousTestCase):
    """
    L{addPolicyServices} adds the admin listener, the reload service and the counting.
    """

    def build(self, config: dict[str, object]) -> tuple[MultiService, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        top = MultiService()
        StreamListener(
            "tcp", "tcp:0", serverFromString(reactor, "tcp:0"), UppercaseFactory(clock=reactor),
            reactor,
        ).setServiceParent(top)  # fmt: skip
        DatagramListener(
            "udp", 0, "127.0.0.1", UppercaseDatagramProtocol(clock=reactor), reactor
        ).setServiceParent(top)
        addPolicyServices(top, config, reactor)
        return top, reactor

    def test_nothingAsked(self) -> None:
        """
        Without options: no admin listener and no reload service, but the uppercase services
        are counted.
        """
        config: dict[str, object] = {}
        top, _ = self.build(config)
        self.assertEqual([s.name for s in top], ["tcp", "udp"])
        tcp = top.getServiceNamed("tcp")
        assert isinstance(tcp, StreamListener)
        tcp.factory.buildProtocol(None)
        metrics = policyComponents(config, Clock()).metrics
        self.assertEqual(metrics.registry.get_sample_value("caplab_tcp_connections_total"), 1)

    def test_adminAndReload(self) -> None:
        """
        C{--admin-endpoint} adds a listener serving the metrics; lists add SIGHUP reloading.
        """
        block = self.writeFile("block", "a.example\n")
        top, reactor = self.build(
            {"admin-endpoint": "tcp:9100:interface=127.0.0.1", "block-list": [block]}
        )
        self.assertEqual([s.name for s in top], ["tcp", "udp", "admin", "reload"])
        admin = top.getServiceNamed("admin")
        assert isinstance(admin, StreamListener)
        self.assertIsInstance(admin.factory, Site)
        reload = top.getServiceNamed("reload")
        assert isinstance(reload, SignalReloadService)
        self.assertEqual([name for name, _ in reload.reloader.reloadables], ["block/allow lists"])

    def test_workers(self) -> None:
        """
        C{--admin-endpoint} goes with several workers (the parent adds up their figures).
        """

        class WithWorkers(Options):
            optParameters = [["workers", None, 1, "", int]]

        options = WithWorkers()
        options.parseOptions(["--workers", "2", "--admin-endpoint", "9100"])
        self.assertEqual(options["admin-endpoint"], "tcp:9100:interface=127.0.0.1")
