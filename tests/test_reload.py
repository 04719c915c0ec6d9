"""
Tests for L{caplab.reload}: reloading lists and the auth file, on SIGHUP.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from caplab.metrics import Metrics
from caplab.proxy.auth import HtpasswdAuthenticator, basicCredentials
from caplab.proxy.policy import ReloadableHostPolicy
from caplab.reload import MIN_INTERVAL, Reloader, SignalReloadService
from tests.test_auth import SHA256, FakeReactor, FakeThreadPool
from tests.test_policy import TempFiles


def inline(f: Callable[[], Any]) -> Deferred[Any]:
    return maybeDeferred(f)


class ReloaderTests(TempFiles, SynchronousTestCase):
    """
    L{Reloader} reloads each file on its own; a broken one keeps its old rules.
    """

    def setUp(self) -> None:
        self.blockFile = self.writeFile("block.txt", "a.example\n")
        self.usersFile = self.writeFile("users", f"carol:{SHA256}\n")
        self.policy = ReloadableHostPolicy([self.blockFile], [])
        self.pool = FakeThreadPool()
        self.authenticator = HtpasswdAuthenticator(
            self.usersFile,
            reactor=FakeReactor(),
            threadPool=self.pool,  # type: ignore[arg-type]
        )
        self.metrics = Metrics()
        self.reloader = Reloader(
            [("block/allow lists", self.policy), ("auth file", self.authenticator)],
            inline,
            self.metrics,
        )

    def reloadCount(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value("caplab_reloads_total", {"result": result})
        return value or 0.0

    def test_reload(self) -> None:
        """
        New rules and users are in force after a reload; each is logged with a summary.
        """
        self.writeFile("block.txt", "b.example\nc.example\n")
        self.writeFile("users", f"dave:{SHA256}\nerin:{SHA256}\n")
        with capturedLogs() as events:
            self.assertTrue(self.successResultOf(self.reloader.reload()))
        self.assertIsNone(self.policy.check("a.example"))
        self.assertIsNotNone(self.policy.check("c.example"))
        self.assertEqual(sorted(self.authenticator.users), ["dave", "erin"])
        summaries = [(e["what"], e["summary"]) for e in events if "summary" in e]
        block = os.path.join(self._directory, "block.txt")
        self.assertEqual(
            summaries,
            [("block/allow lists", f"block list {block}: 2 rules"), ("auth file", "2 users")],
        )
        self.assertEqual(self.reloadCount("ok"), 1)

    def test_brokenFileKeepsOldRules(self) -> None:
        """
        A broken list keeps the old list and logs why, naming file and line; the auth file is
        still reloaded.
        """
        self.writeFile("block.txt", "b.example\nhttp://broken/\n")
        self.writeFile("users", f"dave:{SHA256}\n")
        with capturedLogs() as events:
            self.assertFalse(self.successResultOf(self.reloader.reload()))
        self.assertIsNotNone(self.policy.check("a.example"))
        self.assertIsNone(self.policy.check("b.example"))
        self.assertEqual(list(self.authenticator.users), ["dave"])
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["what"], "block/allow lists")
        self.assertIn(f"{self.blockFile}:2", errors[0]["reason"])
        self.assertEqual(self.reloadCount("failed"), 1)

    def test_missingAuthFile(self) -> None:
        """
        An auth file that went away keeps the old users (and the credentials they accept).
        """
        os.remove(self.usersFile)
        with capturedLogs():
            self.assertFalse(self.successResultOf(self.reloader.reload()))
        d = self.authenticator.authenticate(basicCredentials("carol", "s3cret"))
        self.pool.runAll()
        self.assertEqual(self.successResultOf(d), "carol")

    def test_unexpectedErrorLogged(self) -> None:
        """
        An unexpected exception while loading is logged with its traceback, and the others
        are still reloaded.
        """

        class Exploding:
            def load(self) -> Any:
                raise ZeroDivisionError("boom")

            def use(self, loaded: Any) -> str:
                raise AssertionError("not reached")

        reloader = Reloader([("bad", Exploding()), ("lists", self.policy)], inline)
        with capturedLogs() as events:
            self.assertFalse(self.successResultOf(reloader.reload()))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertIn("lists", [e.get("what") for e in events if "summary" in e])

    def test_loadedInThreadUsedAfter(self) -> None:
        """
        Files are read through C{runInThread}; the rules change only once that is done, and a
        reload asked for meanwhile is folded into one more.
        """
        pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

        def later(f: Callable[[], Any]) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append((f, d))
            return d

        reloader = Reloader([("lists", self.policy)], later)
        self.writeFile("block.txt", "b.example\n")
        with capturedLogs():
            first = reloader.reload()
            second = reloader.reload()
            third = reloader.reload()
            self.assertIs(second, first)
            self.assertIs(third, first)
            self.assertEqual(len(pending), 1)
            self.assertIsNotNone(self.policy.check("a.example"))
            f, d = pending.pop()
            d.callback(f())
            self.assertTrue(self.successResultOf(first))
            self.assertIsNotNone(self.policy.check("b.example"))
            self.assertEqual(len(pending), 1)  # the folded reload
            f, d = pending.pop()
            d.callback(f())
        self.assertEqual(pending, [])
        self.assertIsNone(reloader.reloading)


class FakeSignals:
    """
    Records handlers instead of installing them.
    """

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {signal.SIGHUP: "previous"}

    def install(self, number: int, handler: Any) -> Any:
        previous = self.handlers.get(number)
        self.handlers[number] = handler
        return previous


class CallFromThreadRecorder(Clock):
    """
    A clock that records the functions handed to it from a signal handler.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fromThread: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.fromThread.append((f, args))


class SignalServiceTests(SynchronousTestCase):
    """
    L{SignalReloadService} with fake signal installation.
    """

    def test_handlerOnlySchedules(self) -> None:
        """
        The handler installed at start only hands the reload to the reactor thread; the
        previous handler is back after stop.
        """
        signals = FakeSignals()
        reactor = CallFromThreadRecorder()
        reloads: list[bool] = []

        class CountingReloader:
            def reload(self) -> None:
                reloads.append(True)

        service = SignalReloadService(
            CountingReloader(),  # type: ignore[arg-type]
            reactor,
            installHandler=signals.install,
        )
        service.startService()
        handler = signals.handlers[signal.SIGHUP]
        handler(signal.SIGHUP, None)
        self.assertEqual(reloads, [])
        self.assertEqual(len(reactor.fromThread), 1)
        f, args = reactor.fromThread[0]
        with capturedLogs() as events:
            f(*args)
        self.assertEqual(reloads, [True])
        self.assertEqual(events[0]["signal"], "SIGHUP")
        service.stopService()
        self.assertEqual(signals.handlers[signal.SIGHUP], "previous")


class RealSignalTests(TempFiles, TestCase):
    """
    A real SIGHUP sent to this process reloads the lists through the running reactor.
    """

    timeout = 20

    def test_sighup(self) -> Deferred[None]:
        """
        C{kill -HUP} reloads; the original handler is restored afterwards.
        """
        from twisted.internet import reactor

        path = self.writeFile("block.txt", "a.example\n")
        policy = ReloadableHostPolicy([path], [])
        done: Deferred[bool] = Deferred()

        class Notifying(Reloader):
            def reload(self) -> Deferred[bool]:
                d = super().reload()
                d.addCallback(done.callback)
                return d

        original = signal.getsignal(signal.SIGHUP)
        service = SignalReloadService(Notifying([("lists", policy)], inline), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.writeFile("block.txt", "b.example\n")
        os.kill(os.getpid(), signal.SIGHUP)

        def reloaded(ok: bool) -> None:
            self.assertIsNotNone(policy.check("b.example"))
            service.stopService()
            self.assertEqual(signal.getsignal(signal.SIGHUP), original)

        return done.addCallback(reloaded)


class Reopenable:
    """
    A log file that counts its reopenings.
    """

    def __init__(self) -> None:
        self.reopened = 0

    def load(self) -> str:
        return "file"

    def use(self, loaded: str) -> str:
        self.reopened += 1
        return "reopened"


class Notes:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def reloading(self) -> None:
        self.sent.append("RELOADING")

    def ready(self, status: str) -> None:
        self.sent.append(f"READY {status}")


class LogsAndNotifyTests(TempFiles, SynchronousTestCase):
    """
    SIGUSR1 reopens the logs only; SIGHUP reloads and reopens, between C{RELOADING=1} and
    C{READY=1}.
    """

    def test_reopenOnly(self) -> None:
        """
        L{Reloader.reopenLogs} reopens the logs and reads no list; it is not counted as a
        reload.
        """
        path = self.writeFile("block.txt", "a.example\n")
        policy = ReloadableHostPolicy([path], [])
        log, notes, metrics = Reopenable(), Notes(), Metrics()
        reloader = Reloader([("lists", policy)], inline, metrics, [("log", log)], notes)
        self.writeFile("block.txt", "b.example\n")
        with capturedLogs():
            self.assertTrue(self.successResultOf(reloader.reopenLogs()))
        self.assertEqual(log.reopened, 1)
        self.assertIsNotNone(policy.check("a.example"))  # not reloaded
        self.assertEqual(notes.sent, [])
        self.assertIsNone(
            metrics.registry.get_sample_value("caplab_reloads_total", {"result": "ok"})
        )
        with capturedLogs():
            self.assertTrue(self.successResultOf(reloader.reload()))
        self.assertEqual(log.reopened, 2)
        self.assertIsNotNone(policy.check("b.example"))
        self.assertEqual(notes.sent, ["RELOADING", "READY reloaded"])

    def test_stepsAskedAgain(self) -> None:
        """
        The steps are asked for after each one: a step added by an earlier one (a new
        configuration naming a list) runs in the same reload.
        """
        log = Reopenable()
        steps: list[tuple[str, Any]] = []

        class AddsOne:
            def load(self) -> None:
                return None

            def use(self, loaded: None) -> str:
                steps.append(("added", log))
                return "added a step"

        steps.append(("first", AddsOne()))
        reloader = Reloader(lambda: list(steps), inline)
        with capturedLogs():
            self.assertTrue(self.successResultOf(reloader.reload()))
        self.assertEqual(log.reopened, 1)

    def test_usr1Signal(self) -> None:
        """
        The service handles SIGUSR1 as well as SIGHUP (the default action of either would
        end the process), and restores both handlers when it stops.
        """
        signals = FakeSignals()
        reactor = CallFromThreadRecorder()
        calls: list[str] = []

        class Recording:
            def reload(self) -> None:
                calls.append("reload")

            def reopenLogs(self) -> None:
                calls.append("reopen")

        service = SignalReloadService(Recording(), reactor, installHandler=signals.install)  # type: ignore[arg-type]
        service.startService()
        signals.handlers[signal.SIGUSR1](signal.SIGUSR1, None)
        signals.handlers[signal.SIGHUP](signal.SIGHUP, None)
        with capturedLogs():
            for f, args in reactor.fromThread:
                f(*args)
        self.assertEqual(calls, ["reopen", "reload"])
        service.stopService()
        self.assertEqual(signals.handlers[signal.SIGUSR1], signal.SIG_DFL)
        self.assertEqual(signals.handlers[signal.SIGHUP], "previous")


class StormTests(SynchronousTestCase):
    """
    A storm of C{SIGHUP}s: one reload under way and one queued, one a second at most, and
    a few log lines.
    """

    def test_reloadsSpaced(self) -> None:
        """
        Requests during a reload fold into one more, which starts L{MIN_INTERVAL} seconds
        after the previous one started; a request after that waits for the interval too.
        """
        clock = Clock()
        loads: list[float] = []
        pending: list[Deferred[Any]] = []

        class Step:
            def load(self) -> None:
                loads.append(clock.seconds())

            def use(self, loaded: None) -> str:
                return "ok"

        def later(f: Callable[[], Any]) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d.addCallback(lambda _: f())

        reloader = Reloader([("step", Step())], later, clock=clock)
        with capturedLogs():
            first = reloader.reload()
            for _ in range(100):
                self.assertIs(reloader.reload(), first)
            clock.advance(0.1)
            pending.pop().callback(None)
            self.assertEqual(loads, [0.1])
            self.assertTrue(self.successResultOf(first))
            # The folded one waits for its turn; asking again changes nothing.
            self.assertEqual(pending, [])
            self.assertIs(reloader.reopenLogs(), reloader.reload())
            clock.advance(MIN_INTERVAL - 0.2)
            self.assertEqual(pending, [])
            clock.advance(0.1)
            self.assertEqual(len(pending), 1)
            pending.pop().callback(None)
            self.assertEqual(loads, [0.1, MIN_INTERVAL])
            self.assertIsNone(reloader.reloading)
            clock.advance(MIN_INTERVAL / 2)
            later_ = reloader.reload()
            self.assertEqual(pending, [])
            clock.advance(MIN_INTERVAL / 2)
            pending.pop().callback(None)
            self.assertTrue(self.successResultOf(later_))
        self.assertEqual(loads, [0.1, MIN_INTERVAL, 2 * MIN_INTERVAL])

    def test_signalLinesRateLimited(self) -> None:
        """
        A thousand C{SIGHUP}s in a second are two lines (the first, then a count) and a
        summary; every one still asks the reloader, which folds them.
        """
        signals = FakeSignals()
        reactor = CallFromThreadRecorder()
        asked: list[str] = []

        class Recording:
            def reload(self) -> None:
                asked.append("reload")

        service = SignalReloadService(Recording(), reactor, installHandler=signals.install)  # type: ignore[arg-type]
        service.startService()
        with capturedLogs() as events:
            for _ in range(1000):
                signals.handlers[signal.SIGHUP](signal.SIGHUP, None)
            for f, args in reactor.fromThread:
                f(*args)
            reactor.advance(1)
            reactor.advance(1)
        service.stopService()
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len(asked), 1000)
        self.assertEqual(
            lines,
            [
                "caplab received SIGHUP: reloading",
                "caplab received 999 more SIGHUP signals in the last 1s",
                "caplab received 1000 SIGHUP signals in 0s (folded: one run under way and "
                "one queued at a time, one a second at most)",
            ],
        )
