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
signal context.  Signals that arrive during a reload are folded into one more after it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.usage import UsageError

from caplab.proxy.auth import AuthFileError
from caplab.proxy.filters.hosts import FilterConfigError
from caplab.proxy.policy import PolicyFileError


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
    ) -> None:
        """
        @param reloadables: (what, reloadable) pairs, or a function that gives the current
            ones; C{what} names each in the log (C{"block/allow lists"}).
        @param runInThread: runs a function in a thread, firing with its result.
        @param metrics: counts reloads by result (C{reloaded(ok)}), or None.
        @param logs: the log files to reopen, as (what, reloadable) pairs or a function.
        @param notifier: told C{reloading()} and C{ready(status)} around a reload (systemd's
            C{sd_notify}), or None.
        """
        self._reloadables = reloadables
        self._logs = logs
        self.runInThread = runInThread
        self.metrics = metrics
        self.notifier = notifier
        self.reloading: Deferred[bool] | None = None
        self._again: str | None = None

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
            if self._again != "reload":
                self._again = kind
            return self.reloading
        self.reloading = self._runAll(kind == "reload")

        def done(ok: bool) -> bool:
            self.reloading = None
            again, self._again = self._again, None
            if again is not None:
                self._run(again)
            return ok

        return self.reloading.addCallback(done)

    def _steps(self, reload: bool) -> list[tuple[str, IReloadable]]:
        return (self.reloadables if reload else []) + self.logs

    @inlineCallbacks
    def _runAll(self, reload: bool) -> Any:
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
    handlers are restored on stop.
    """

    log = Logger()
    name = "reload"

    def __init__(
        self,
        reloader: Reloader,
        reactor: Any,
        installHandler: Callable[[int, Any], Any] = signal.signal,
    ) -> None:
        """
        @param reactor: receives the work with C{callFromThread} (safe from a handler).
        @param installHandler: L{signal.signal}, or a fake in tests.
        """
        self.reloader = reloader
        self.reactor = reactor
        self.installHandler = installHandler
        self._previous: dict[int, Any] = {}

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

    def _received(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._handle, signum)

    def _handle(self, signum: int) -> None:
        if signum == signal.SIGUSR1:
            self.log.info("caplab received SIGUSR1: reopening the log files")
            self.reloader.reopenLogs()
        else:
            self.log.info("caplab received {signal}: reloading", signal=signal.Signals(signum).name)
            self.reloader.reload()
