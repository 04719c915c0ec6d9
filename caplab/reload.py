"""
Reloading without a restart: on C{SIGHUP} the configuration file (C{--config}), the
block/allow lists and the auth file are read again, and the log files (C{--access-log},
C{--trace}) reopened; on C{SIGUSR1} only the log files are reopened (for logrotate, which
moves a log away and then signals: the next lines go to a new file of the old name).

Listening sockets and open connections are not touched: only the rules change, for requests
that arrive after the reload.  Each file is read in a thread (a list of 100,000 lines takes a
fraction of a second, which the reactor does not wait for) and the new rules are swapped in
on the reactor thread.  A file that is broken or unreadable leaves its old rules in force and
the reason is logged; the others are still reloaded.

The signal handlers only schedule the work with C{reactor.callFromThread}: nothing runs in
signal context.  A storm of signals costs at most one reload under way and one more queued
(the signals that arrive during a reload are folded into it), a reload starts at most once a
second (L{MIN_INTERVAL}), and the lines saying a signal came are rate-limited.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel
from twisted.python.usage import UsageError

from caplab.proxy.auth import AuthFileError
from caplab.proxy.filters.hosts import FilterConfigError
from caplab.proxy.policy import PolicyFileError
from caplab.ratelimit import LogThrottles


class IReloadable(Protocol):
    """
    Something read from files: L{load} reads them (in any thread), L{use} puts them in force.
    """

    def load(self) -> Any: ...

    def use(self, loaded: Any) -> str:
        """
        Put C{loaded} in force; return a one-line summary for the log.
        """


Steps = Sequence[tuple[str, IReloadable]]

#: Errors that mean "this file is bad": logged in one line, without a traceback.
EXPECTED_ERRORS = (PolicyFileError, AuthFileError, FilterConfigError, OSError, UsageError)

#: Seconds from the start of one reload (or reopening) to the start of the next, at least.
MIN_INTERVAL = 1.0


class Reloader:
    """
    Reloads named L{IReloadable}s, one after the other, each on its own.

    @ivar reloading: the Deferred of the reload under way, or None.
    """

    log = Logger()

    def __init__(
        self,
        reloadables: Steps | Callable[[], Steps],
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
        metrics: Any = None,
        logs: Steps | Callable[[], Steps] = (),
        notifier: Any = None,
        clock: IReactorTime | None = None,
        minInterval: float = MIN_INTERVAL,
    ) -> None:
        """
        @param reloadables: (what, reloadable) pairs, or a function that gives the current
            ones; C{what} names each in the log (C{"block/allow lists"}).
        @param runInThread: runs a function in a thread, firing with its result.
        @param metrics: counts reloads by result (C{reloaded(ok)}), or None.
        @param logs: the log files to reopen, as (what, reloadable) pairs or a function.
        @param notifier: told C{reloading()} and C{ready(status)} around a reload (systemd's
            C{sd_notify}), or None.
        @param clock: spaces the reloads (one starts C{minInterval} seconds after the
            previous one started, at the earliest); None: a queued reload starts at once.
        """
        self._reloadables = reloadables
        self._logs = logs
        self.runInThread = runInThread
        self.metrics = metrics
        self.notifier = notifier
        self.clock = clock
        self.minInterval = minInterval
        self.reloading: Deferred[bool] | None = None
        self._again: str | None = None
        self._lastStarted: float | None = None
        #: the kind of the run waiting for its turn (L{minInterval}), or None.
        self._waiting: str | None = None

    @property
    def reloadables(self) -> list[tuple[str, IReloadable]]:
        found = self._reloadables
        return list(found() if callable(found) else found)

    @property
    def logs(self) -> list[tuple[str, IReloadable]]:
        found = self._logs
        return list(found() if callable(found) else found)

    def reload(self) -> Deferred[bool]:
        """
        Reload everything and reopen the logs; fires with True if every step worked.  While
        a reload is under way, another request is folded into one more reload after it.
        """
        return self._run("reload")

    def reopenLogs(self) -> Deferred[bool]:
        """
        Reopen the log files only.
        """
        return self._run("reopen")

    def _run(self, kind: str) -> Deferred[bool]:
        if self.reloading is not None:
            if self._waiting is not None:
                # Not started yet: it will read everything as it is when it starts.
                if kind == "reload":
                    self._waiting = kind
            elif self._again != "reload":
                self._again = kind
            return self.reloading
        wait = 0.0
        if self.clock is not None and self._lastStarted is not None:
            wait = self._lastStarted + self.minInterval - self.clock.seconds()
        if wait > 0:
            assert self.clock is not None
            self._waiting = kind
            self.reloading = deferLater(self.clock, wait).addCallback(self._startWaiting)
        else:
            self.reloading = self._runAll(kind == "reload")

        def done(ok: bool) -> bool:
            self.reloading = None
            again, self._again = self._again, None
            if again is not None:
                self._run(again)
            return ok

        return self.reloading.addCallback(done)

    def _startWaiting(self, ignored: None) -> Deferred[bool]:
        kind, self._waiting = self._waiting, None
        return self._runAll(kind == "reload")

    def _steps(self, reload: bool) -> list[tuple[str, IReloadable]]:
        return (self.reloadables if reload else []) + self.logs

    @inlineCallbacks
    def _runAll(self, reload: bool) -> Any:
        if self.clock is not None:
            self._lastStarted = self.clock.seconds()
        if reload and self.notifier is not None:
            self.notifier.reloading()
        ok = True
        done: set[str] = set()
        while True:
            # Asked again after each step: a new configuration may name other files.
            pending = [step for step in self._steps(reload) if step[0] not in done]
            if not pending:
                break
            what, reloadable = pending[0]
            done.add(what)
            try:
                loaded = yield self.runInThread(reloadable.load)
                summary = reloadable.use(loaded)
            except EXPECTED_ERRORS as e:
                ok = False
                self.log.error(
                    "caplab reload of {what} failed, keeping the old rules: {reason}",
                    what=what,
                    reason=_oneLine(e),
                )
                continue
            except Exception:
                ok = False
                self.log.failure("caplab reload of {what} failed, keeping the old rules", what=what)
                continue
            self.log.info("caplab reloaded {what}: {summary}", what=what, summary=summary)
        if not done:
            self.log.info(
                "caplab has nothing to {what} (no --config, list, auth file or log file)",
                what="reload" if reload else "reopen",
            )
        if reload:
            if self.metrics is not None:
                self.metrics.reloaded(ok)
            if self.notifier is not None:
                self.notifier.ready("reloaded" if ok else "reload failed: see the log")
        return ok


def _oneLine(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    return " ".join(str(error).split()) or repr(error)


class SignalReloadService(Service):
    """
    While running: C{SIGHUP} reloads, C{SIGUSR1} reopens the log files.  The previous
    handlers are restored on stop.  The line saying a signal came is rate-limited (one a
    second per signal, with a count): the reloader folds a storm of them into one or two
    reloads.
    """

    log = Logger()
    name = "reload"

    def __init__(
        self,
        reloader: Reloader,
        reactor: Any,
        installHandler: Callable[[int, Any], Any] = signal.signal,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param reactor: receives the work with C{callFromThread} (safe from a handler).
        @param installHandler: L{signal.signal}, or a fake in tests.
        @param clock: times the rate-limited lines (C{reactor} if None).
        """
        self.reloader = reloader
        self.reactor = reactor
        self.installHandler = installHandler
        self._previous: dict[int, Any] = {}
        self._lines = LogThrottles(
            self.log, clock if clock is not None else reactor, level=LogLevel.info
        )

    def startService(self) -> None:
        super().startService()
        for number in (signal.SIGHUP, signal.SIGUSR1):
            self._previous[number] = self.installHandler(number, self._received)

    def stopService(self) -> None:
        if not self.running:
            return
        super().stopService()
        previous, self._previous = self._previous, {}
        for number, handler in previous.items():
            self.installHandler(number, signal.SIG_DFL if handler is None else handler)
        self._lines.stop()

    def _received(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._handle, signum)

    def _handle(self, signum: int) -> None:
        name = signal.Signals(signum).name
        what = "reopening the log files" if signum == signal.SIGUSR1 else "reloading"
        self._lines.throttle(
            name,
            "caplab received {signal}: {what}",
            summary="caplab received {burst} {signal} signals in {duration}s (folded: one run "
            "under way and one queued at a time, one a second at most)",
            repeat="caplab received {count} more {signal} signals in the last {interval}s",
        ).event(signal=name, what=what)
        if signum == signal.SIGUSR1:
            self.reloader.reopenLogs()
        else:
            self.reloader.reload()
