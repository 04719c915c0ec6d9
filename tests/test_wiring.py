"""
Tests for L{caplab.wiring}, the composition root: every component built from the parsed
options, the proxy's settings, the policy's files, the start-up summary, and a configuration
reload.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from typing import Any

import pytest
from twisted.internet.defer import maybeDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from caplab.listening import DatagramListener, StreamListener
from caplab.metrics import StatusPage
from caplab.proxy.cache.disk import DiskStore
from caplab.proxy.cache.fetcher import CachingFetcher
from caplab.proxy.cache.quick import QuickHits
from caplab.proxy.cache.storage import MemoryStore
from caplab.proxy.hooks import Target
from caplab.proxy.upstream import NextHop
from caplab.reconfigure import ConfigReload, watchConfig
from caplab.reload import IReloadable
from caplab.tap import Options, makeService
from caplab.trace import TracingFactory
from caplab.wiring import ConfigError, IdleOriginsClosed, build, buildSupervisor
from caplab.workers import WORKER_ENVIRONMENT
from tests.test_auth import HTPASSWD, SHA256
from tests.test_policy import TempFiles


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class Reactor(MemoryReactorClock):
    """
    A memory reactor that also runs functions "in a thread" at once.
    """

    def getThreadPool(self) -> Any:
        return None

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def inline(f: Any) -> Any:
    return maybeDeferred(f)


class BuildTests(TempFiles, SynchronousTestCase):
    """
    L{build}: the parts for the options.
    """

    def test_defaults(self) -> None:
        """
        By default: the three services listen on their endpoints, the proxy caches in
        memory, with no lists, no authentication, a direct route, loopback clients.
        """
        parts = build(parse(), Reactor())
        self.assertEqual([listener.label for listener in parts.listeners], ["tcp", "udp", "proxy"])
        tcp, udp, proxy = parts.listeners
        assert isinstance(tcp, StreamListener) and isinstance(udp, DatagramListener)
        assert parts.proxy is not None and parts.proxy.cache is not None
        self.assertIs(tcp.factory, parts.tcp)
        self.assertIs(udp.protocol, parts.udp)
        self.assertIsInstance(parts.proxy.cache.store, MemoryStore)
        self.assertIsInstance(parts.proxy.settings.fetcher, CachingFetcher)
        self.assertIsInstance(parts.proxy.settings.hits, QuickHits)  # a store in memory
        # One host policy for the process's lifetime, empty without lists.
        self.assertEqual(len(parts.policy.hostPolicy.current.blocked), 0)
        self.assertIsNone(parts.policy.hostPolicy.check("any.example"))
        self.assertIs(parts.proxy.settings.hostPolicy, parts.policy.hostPolicy)
        self.assertIsNone(parts.policy.authenticator)
        self.assertEqual(
            parts.policy.router.nextHop(Target("http", "a", 80, b"/")), NextHop("a", 80)
        )
        self.assertEqual(parts.reloadSteps(), [])
        self.assertEqual(parts.logSteps(), [])
        self.assertIsNone(parts.admin)

    def test_proxySettings(self) -> None:
        """
        The proxy's options reach its settings.
        """
        parts = build(
            parse(
                "--no-cache", "--allow", "10.0.0.0/8", "--connect-ports", "443,8443",
                "--x-forwarded-for", "--header-timeout", "5", "--keep-alive-timeout", "7",
                "--max-connections", "3",
            ),
            Reactor(),
        )  # fmt: skip
        assert parts.proxy is not None
        settings = parts.proxy.settings
        self.assertIsNone(parts.proxy.cache)
        self.assertEqual(settings.allow, (ipaddress.ip_network("10.0.0.0/8"),))
        self.assertEqual(settings.connectPorts, frozenset({443, 8443}))
        self.assertTrue(settings.forwardedFor)
        self.assertEqual(
            (settings.headerTimeout, settings.idleTimeout, settings.maxConnections), (5.0, 7.0, 3)
        )
        self.assertIs(settings.metrics, parts.metrics)

    def test_policy(self) -> None:
        """
        Lists, users, a parent with exceptions and PAC bypass domains are built from their
        options, shared by the proxy and the reload; the summary counts them.
        """
        block = self.writeFile("block", "a.example\nb.example\n")
        users = self.writeFile("users", HTPASSWD)
        parts = build(
            parse(
                "--block-list", block, "--auth-file", users,
                "--upstream-proxy", "http://u:p@127.0.0.1:3128", "--no-upstream-for", "lan",
                "--pac-bypass", "lan",
            ),
            Reactor(),
        )  # fmt: skip
        policy = parts.policy
        assert policy.hostPolicy is not None and policy.authenticator is not None
        assert parts.proxy is not None
        self.assertIsNotNone(policy.hostPolicy.check("www.a.example"))
        self.assertEqual(sorted(policy.authenticator.users), ["alice", "bob", "carol"])
        self.assertIs(parts.proxy.settings.hostPolicy, policy.hostPolicy)
        self.assertIs(parts.proxy.settings.authenticator, policy.authenticator)
        self.assertIsNone(policy.router.nextHop(Target("http", "x.lan", 80, b"/")).proxy)
        self.assertEqual(policy.router.nextHop(Target("http", "b", 80, b"/")).port, 3128)
        self.assertEqual(policy.pac.bypass, ["lan"])
        steps = parts.reloadSteps()
        self.assertEqual(
            [name for name, _ in steps],
            ["block/allow lists", "idle origin connections", "auth file users"],
        )
        # Pooled origin connections made under the old lists are closed after the new ones.
        closed: list[int] = []
        step = steps[1][1]
        assert isinstance(step, IdleOriginsClosed)
        self.assertEqual(step.closeIdle, parts.proxy.closeIdle)
        step.closeIdle = lambda: closed.append(1)
        reloadable: IReloadable = step  # used as the Reloader uses it (load returns None here)
        reloadable.use(reloadable.load())
        self.assertEqual(closed, [1])
        summary = parts.summary()
        self.assertIn(f"2 block rules and 0 allow rules from block list {block}", summary)
        self.assertIn(f"auth: 3 users in {users}", summary)
        self.assertIn("parent proxy: 127.0.0.1:3128 (direct for lan)", summary)
        self.assertIn("cache: in memory, up to 64M, objects up to 8M", summary)
        self.assertNotIn("u:p", summary)

    def test_brokenFiles(self) -> None:
        """
        A broken or missing list or auth file is a L{ConfigError} naming the file (and
        line); C{makeService} reports it in one line and exits 64.
        """
        broken = self.writeFile("broken", "ok.example\nhttp://x/\n")
        with self.assertRaises(ConfigError) as caught:
            build(parse("--block-list", broken), Reactor())
        self.assertIn(f"{broken}:2", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            build(parse("--allow-list", broken + ".missing"), Reactor())
        self.assertIn("cannot read", str(caught.exception))
        users = self.writeFile("users", "alice:$apr1$x$y\n")
        with self.assertRaises(ConfigError) as caught:
            build(parse("--auth-file", users), Reactor())
        self.assertIn(f"--auth-file: {users}:1", str(caught.exception))
        with self.assertRaises(SystemExit) as exited:
            makeService(parse("--block-list", broken), reactor=Reactor())
        self.assertEqual(exited.exception.code, 64)

    def test_brokenFilesUnderWorkers(self) -> None:
        """
        The C{--workers} parent reads the files its workers would refuse before it binds:
        a broken list, auth file or filter is the same L{ConfigError}, exit 64.
        """
        broken = self.writeFile("broken", "ok.example\nhttp://x/\n")
        users = self.writeFile("users", "alice:$apr1$x$y\n")
        for args, message in [
            (["--block-list", broken], f"{broken}:2"),
            (["--auth-file", users], f"--auth-file: {users}:1"),
            (["--filter", "* no-such-plugin"], "no filter plugin named 'no-such-plugin'"),
        ]:
            options = parse("--workers", "2", *args)
            with self.assertRaises(ConfigError) as caught:
                buildSupervisor(options, Reactor())
            self.assertIn(message, str(caught.exception))
            reactor = Reactor()
            with self.assertRaises(SystemExit) as exited:
                makeService(options, reactor=reactor)
            self.assertEqual(exited.exception.code, 64)
            self.assertEqual(reactor.tcpServers, [])

    def test_diskCache(self) -> None:
        """
        C{--cache-dir} keeps the cache on disk.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        parts = build(parse("--cache-dir", directory), Reactor())
        assert parts.proxy is not None and parts.proxy.cache is not None
        self.assertIsInstance(parts.proxy.cache.store, DiskStore)
        self.assertIsNone(parts.proxy.settings.hits)  # bodies on disk: the general way
        self.assertIn(f"on disk in {directory}", parts.summary())

    def test_adminAndTrace(self) -> None:
        """
        C{--admin-endpoint} adds a listener serving the metrics; C{--trace} wraps every
        stream service and the trace is reopened on a signal.
        """
        trace = self.writeFile("trace", "")
        parts = build(
            parse("--admin-endpoint", "9100", "--trace", trace, "--access-log", trace + ".a"),
            Reactor(),
        )
        labels = [listener.label for listener in parts.listeners]
        self.assertEqual(labels, ["tcp", "udp", "proxy", "admin"])
        admin = parts.listeners[-1]
        assert isinstance(admin, StreamListener)
        self.assertIsInstance(admin.factory, Site)
        self.assertEqual(admin.description, "tcp:9100:interface=127.0.0.1")
        for listener in parts.listeners[:3:2]:
            assert isinstance(listener, StreamListener)
            self.assertIsInstance(listener.factory, TracingFactory)
        self.assertEqual([name for name, _ in parts.logSteps()], ["access log", "trace"])
        assert parts.tracer is not None
        parts.tracer.close()

    def test_uppercaseCounted(self) -> None:
        """
        The uppercase services are counted in the metrics.
        """
        parts = build(parse("--no-proxy"), Reactor())
        assert parts.tcp is not None
        parts.tcp.buildProtocol(None)
        value = parts.metrics.registry.get_sample_value("caplab_tcp_connections_total")
        self.assertEqual(value, 1)
        self.assertNotIn("policy:", parts.summary())


def test_workerLeavesAdminToParent(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    In a C{--workers} worker the admin endpoint is the parent's: the worker has none.
    """
    monkeypatch.setenv(
        WORKER_ENVIRONMENT,
        '{"index": 1, "sockets": [{"label": "proxy", "fd": 3, "family": 2, "kind": 1}]}',
    )
    parts = build(parse("--admin-endpoint", "9100", "--no-tcp", "--no-udp"), Reactor())
    assert parts.admin is None and parts.drain is not None
    assert [listener.label for listener in parts.listeners] == ["proxy"]
    assert "worker 1 of 1" in parts.summary()


class ConfigReloadTests(TempFiles, SynchronousTestCase):
    """
    L{ConfigReload}: C{SIGHUP} reads the C{--config} file again; what can change without a
    restart changes, the rest is logged as needing one and stays.
    """

    def test_reload(self) -> None:
        """
        New lists, a new auth file and new CONNECT ports are put in force; a new cache size
        is logged as needing a restart and the old one stays.
        """
        one = self.writeFile("one.txt", "a.example\n")
        two = self.writeFile("two.txt", "b.example\n")
        users = self.writeFile("users", f"dave:{SHA256}\n")
        config = self.writeFile("caplab.toml", f'block-list = ["{one}"]\ncache-size = "64M"\n')
        parts = watchConfig(build(parse("--config", config, "--no-tcp"), Reactor()))
        parts.reloader.runInThread = inline
        parts.reloader.minInterval = 0  # reloads back to back
        assert parts.policy.hostPolicy is not None and parts.proxy is not None
        self.assertIsNotNone(parts.policy.hostPolicy.check("a.example"))
        self.writeFile(
            "caplab.toml",
            f'block-list = ["{two}"]\nauth-file = "{users}"\ncache-size = "32M"\n'
            'connect-ports = "443,8443"\n',
        )
        with capturedLogs() as events:
            ok = self.successResultOf(parts.reloader.reload())
        self.assertTrue(ok)
        self.assertIsNone(parts.policy.hostPolicy.check("a.example"))
        self.assertIsNotNone(parts.policy.hostPolicy.check("b.example"))
        assert parts.policy.authenticator is not None
        self.assertIs(parts.proxy.settings.authenticator, parts.policy.authenticator)
        self.assertEqual(list(parts.policy.authenticator.users), ["dave"])
        self.assertEqual(parts.proxy.settings.connectPorts, frozenset({443, 8443}))
        self.assertEqual(parts.options["cache-size"], 64 << 20)
        restart = [e for e in events if "needs a restart" in e["log_format"]]
        self.assertEqual(len(restart), 1)
        self.assertEqual(restart[0]["options"], "--cache-size")
        summaries = {e["what"]: e["summary"] for e in events if "summary" in e}
        self.assertEqual(
            summaries[f"configuration {config}"],
            "changed --auth-file, --block-list, --connect-ports",
        )

    def test_badFileKeepsOldConfiguration(self) -> None:
        """
        An unknown key or a bad value: one line naming the file and key; nothing changes.
        """
        one = self.writeFile("one.txt", "a.example\n")
        config = self.writeFile("caplab.toml", f'block-list = ["{one}"]\n')
        parts = watchConfig(build(parse("--config", config, "--no-tcp"), Reactor()))
        parts.reloader.runInThread = inline
        parts.reloader.minInterval = 0  # reloads back to back
        before = dict(parts.options)
        for text, message in [
            ("nonsense = 1\n", f"{config}: nonsense: no such option"),
            ("tcp-port = 70000\n", f"{config}: tcp-port = 70000: not a port number (0-65535)"),
        ]:
            self.writeFile("caplab.toml", text)
            with capturedLogs() as events:
                self.assertFalse(self.successResultOf(parts.reloader.reload()))
            errors = [e for e in events if e["log_level"].name == "error"]
            self.assertEqual([e["reason"] for e in errors], [message])
            self.assertEqual(dict(parts.options), before)
        assert parts.policy.hostPolicy is not None
        self.assertIsNotNone(parts.policy.hostPolicy.check("a.example"))

    def test_missingAuthFileKeepsEverything(self) -> None:
        """
        A reload that adds client networks and names an auth file that is not there fails
        as a whole: the old networks stay, authentication stays as it was, the options in
        force stay the old ones, so a corrected reload puts both in force.
        """
        users = self.writeFile("users", f"dave:{SHA256}\n")
        missing = users + ".missing"
        config = self.writeFile("caplab.toml", "no-udp = true\n")
        parts = watchConfig(build(parse("--config", config, "--no-tcp"), Reactor()))
        parts.reloader.runInThread = inline
        parts.reloader.minInterval = 0  # reloads back to back
        assert parts.proxy is not None
        settings = parts.proxy.settings
        allowed = settings.allow
        self.writeFile(
            "caplab.toml", f'no-udp = true\nallow = ["10.0.0.0/8"]\nauth-file = "{missing}"\n'
        )
        with capturedLogs() as events:
            self.assertFalse(self.successResultOf(parts.reloader.reload()))
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn(missing, errors[0]["reason"])
        self.assertEqual(settings.allow, allowed)
        self.assertIsNone(parts.policy.authenticator)
        self.assertIsNone(settings.authenticator)
        self.assertEqual(parts.options["allow"], [])
        self.assertIsNone(parts.options["auth-file"])

        self.writeFile(
            "caplab.toml", f'no-udp = true\nallow = ["10.0.0.0/8"]\nauth-file = "{users}"\n'
        )
        with capturedLogs() as events:
            self.assertTrue(self.successResultOf(parts.reloader.reload()))
        summaries = {e["what"]: e["summary"] for e in events if "summary" in e}
        self.assertEqual(summaries[f"configuration {config}"], "changed --allow, --auth-file")
        self.assertEqual(settings.allow, (ipaddress.ip_network("10.0.0.0/8"),))
        assert parts.policy.authenticator is not None
        self.assertIs(settings.authenticator, parts.policy.authenticator)
        self.assertEqual(list(parts.policy.authenticator.users), ["dave"])

    def test_brokenListKeepsEverything(self) -> None:
        """
        A reload that names a list that is not there, or one with a bad line, changes
        nothing: neither the lists nor the other options it changes.
        """
        one = self.writeFile("one.txt", "a.example\n")
        broken = self.writeFile("broken.txt", "ok.example\nhttp://x/\n")
        config = self.writeFile("caplab.toml", f'block-list = ["{one}"]\n')
        parts = watchConfig(build(parse("--config", config, "--no-tcp"), Reactor()))
        parts.reloader.runInThread = inline
        parts.reloader.minInterval = 0  # reloads back to back
        assert parts.proxy is not None
        before = dict(parts.options)
        for path in (one + ".missing", broken):
            self.writeFile(
                "caplab.toml",
                f'block-list = ["{path}"]\nconnect-ports = "443,8443"\nallow = ["10.0.0.0/8"]\n',
            )
            with capturedLogs() as events:
                self.assertFalse(self.successResultOf(parts.reloader.reload()))
            [error] = [e for e in events if e["log_level"].name == "error"]
            self.assertEqual(error["what"], f"configuration {config}")
            self.assertIn(path, error["reason"])
            self.assertEqual(dict(parts.options), before)
            self.assertEqual(parts.proxy.settings.connectPorts, frozenset({443}))
            self.assertEqual(parts.policy.hostPolicy.blockFiles, [one])
            self.assertIsNotNone(parts.policy.hostPolicy.check("a.example"))

    def test_useReadsNothing(self) -> None:
        """
        L{ConfigReload.load} reads every file the new options name (in a thread); C{use}
        only puts what it read in force (the reactor thread reads no file).
        """
        one = self.writeFile("one.txt", "a.example\n")
        users = self.writeFile("users", f"dave:{SHA256}\n")
        config = self.writeFile("caplab.toml", "no-udp = true\n")
        parts = watchConfig(build(parse("--config", config, "--no-tcp"), Reactor()))
        reload = ConfigReload(parts)
        self.writeFile("caplab.toml", f'block-list = ["{one}"]\nauth-file = "{users}"\n')
        loaded = reload.load()
        os.remove(one)
        os.remove(users)
        self.assertEqual(reload.use(loaded), "changed --auth-file, --block-list")
        self.assertIsNotNone(parts.policy.hostPolicy.check("a.example"))
        assert parts.policy.authenticator is not None
        self.assertEqual(list(parts.policy.authenticator.users), ["dave"])

        # An authenticator in force takes the users of a new file read by load.
        other = self.writeFile("other", f"erin:{SHA256}\n")
        self.writeFile("caplab.toml", f'block-list = ["{one}"]\nauth-file = "{other}"\n')
        authenticator = parts.policy.authenticator
        loaded = reload.load()
        os.remove(other)
        self.assertEqual(reload.use(loaded), "changed --auth-file")
        self.assertIs(parts.policy.authenticator, authenticator)
        self.assertEqual((authenticator.path, list(authenticator.users)), (other, ["erin"]))

    def test_adminAndStatusPageFollowReload(self) -> None:
        """
        The admin endpoint's networks (the proxy's C{--allow} without C{--admin-allow}) and
        the configuration the status page shows are those in force after a reload.
        """
        config = self.writeFile(
            "caplab.toml", 'no-udp = true\nallow = ["127.0.0.0/8", "10.0.0.0/8"]\n'
        )
        parts = watchConfig(
            build(parse("--config", config, "--no-tcp", "--admin-endpoint", "9100"), Reactor())
        )
        parts.reloader.runInThread = inline
        parts.reloader.minInterval = 0  # reloads back to back
        assert parts.proxy is not None
        status = parts.proxy.settings.pages[b"/"]
        assert isinstance(status, StatusPage)
        loopback, ten = ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")
        self.assertEqual(parts.admin.allow, (loopback, ten))
        self.assertEqual(status.config["clients from"], "127.0.0.0/8, 10.0.0.0/8")

        self.writeFile("caplab.toml", 'no-udp = true\nallow = ["127.0.0.0/8"]\n')
        self.assertTrue(self.successResultOf(parts.reloader.reload()))
        self.assertEqual(parts.proxy.settings.allow, (loopback,))
        self.assertEqual(parts.admin.allow, (loopback,))
        self.assertEqual(status.config["clients from"], "127.0.0.0/8")

    def test_oneHostPolicyForLife(self) -> None:
        """
        The lists are one object for the process's lifetime, shared by the proxy's settings
        and the connector that checks addresses: a reload that adds lists (an address rule)
        or removes them changes that object in place, so the connector sees the change.
        """
        block = self.writeFile("block.txt", "127.0.0.0/8\n")
        config = self.writeFile("caplab.toml", "no-udp = true\n")
        parts = watchConfig(build(parse("--config", config, "--no-tcp"), Reactor()))
        parts.reloader.runInThread = inline
        parts.reloader.minInterval = 0  # reloads back to back
        assert parts.proxy is not None
        hostPolicy = parts.policy.hostPolicy
        connector = parts.proxy.settings.tunnels.connector
        self.assertIs(connector.hostPolicy, hostPolicy)
        self.assertIsNone(connector.hostPolicy.checkAddress("127.0.0.1"))

        self.writeFile("caplab.toml", f'no-udp = true\nblock-list = ["{block}"]\n')
        self.assertTrue(self.successResultOf(parts.reloader.reload()))
        self.assertIs(parts.policy.hostPolicy, hostPolicy)
        self.assertIs(parts.proxy.settings.hostPolicy, hostPolicy)
        self.assertIs(connector.hostPolicy, hostPolicy)
        verdict = connector.hostPolicy.checkAddress("127.0.0.1")
        assert verdict is not None
        self.assertEqual(verdict.rule, "127.0.0.0/8")

        self.writeFile("caplab.toml", "no-udp = true\n")
        self.assertTrue(self.successResultOf(parts.reloader.reload()))
        self.assertIs(parts.policy.hostPolicy, hostPolicy)
        self.assertIs(parts.proxy.settings.hostPolicy, hostPolicy)
        self.assertIs(connector.hostPolicy, hostPolicy)
        self.assertIsNone(connector.hostPolicy.checkAddress("127.0.0.1"))
        self.assertEqual(
            [name for name, _ in parts.reloadSteps()],
            [f"configuration {config}", "idle origin connections", "filters"],
        )

    def test_noChange(self) -> None:
        """
        A reload with the same file changes nothing and says so.
        """
        config = self.writeFile("caplab.toml", "no-udp = true\n")
        parts = build(parse("--config", config), Reactor())
        self.assertEqual(
            ConfigReload(parts).use(ConfigReload(parts).load()), "no change to put in force"
        )
