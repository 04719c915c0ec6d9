"""
Reloading the block/allow lists and the auth file on C{SIGHUP}, without a restart.

Listening sockets and open connections are not touched: only the rules change, for requests
that arrive after the reload.  Each file is read in a thread (a list of 100,000 lines takes a
fraction of a second, which the reactor does not wait for) and the new rules are swapped in
on the reactor thread.  A file that is broken or unreadable leaves its old rules in force and
the reason is logged; the others are still reloaded.

The signal handler only schedules the work with C{reactor.callFromThread}: nothing runs in
signal context.  Signals that arrive during a reload are folded into one more reload after it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from caplab.proxy.auth import AuthFileError
from caplab.proxy.policy import PolicyFileError


class IReloadable(Protocol):
    """
    Rules read from files: L{load} reads them (in any thread), L{use} puts them in force.
    """

    def load(self) -> Any: ...

    def use(self, loaded: Any) -> str:
        """
        Put C{loaded} in force; return a one-line summary for the log.
        """


class Reloader:
    """
    Reloads named L{IReloadable}s, one after the other, each on its own.

    @ivar reloading: the Deferred of the reload under way, or None.
    """

    log = Logger()

    def __init__(
        self,
        reloadables: Sequence[tuple[str, IReloadable]],
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
        metrics: Any = None,
    ) -> None:
        """
        @param reloadables: (what, reloadable) pairs; C{what} names it in the log
            (C{"block/allow lists"}).
        @param runInThread: runs a function in a thread, firing with its result.
        @param metrics: counts reloads by result (C{reloaded(ok)}), or None.
        """
        self.reloadables = list(reloadables)
        self.runInThread = runInThread
        self.metrics = metrics
        self.reloading: Deferred[bool] | None = None
        self._again = False

    def reload(self) -> Deferred[bool]:
        """
        Reload everything; fires with True if every file was reloaded.  While a reload is
        under way, another request is folded into one more reload after it.
        """
        if self.reloading is not None:
            self._again = True
            return self.reloading
        self.reloading = self._reloadAll()

        def done(ok: bool) -> bool:
            self.reloading = None
            if self._again:
                self._again = False
                self.reload()
            return ok

        return self.reloading.addCallback(done)

    @inlineCallbacks
    def _reloadAll(self) -> Any:
        ok = True
        for what, reloadable in self.reloadables:
            try:
                loaded = yield self.runInThread(reloadable.load)
            except (PolicyFileError, AuthFileError, OSError) as e:
                ok = False
                self.log.error(
                    "caplab reload of {what} failed, keeping the old rules: {reason}",
                    what=what,
                    reason=str(e),
                )
                continue
            except Exception:
                ok = False
                self.log.failure("caplab reload of {what} failed, keeping the old rules", what=what)
                continue
            summary = reloadable.use(loaded)
            self.log.info("caplab reloaded {what}: {summary}", what=what, summary=summary)
        if self.metrics is not None:
            self.metrics.reloaded(ok)
        return ok


class SignalReloadService(Service):
    """
    Reload on a signal (C{SIGHUP}) while running; the previous handler is restored on stop.
    """

    log = Logger()
    name = "reload"

    def __init__(
        self,
        reloader: Reloader,
        reactor: Any,
        signalNumber: int = signal.SIGHUP,
        installHandler: Callable[[int, Any], Any] = signal.signal,
    ) -> None:
        """
        @param reactor: receives the reload with C{callFromThread} (safe from a handler).
        @param installHandler: L{signal.signal}, or a fake in tests.
        """
        self.reloader = reloader
        self.reactor = reactor
        self.signalNumber = signalNumber
        self.installHandler = installHandler
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = self.installHandler(self.signalNumber, self._received)

    def stopService(self) -> None:
        if not self.running:
            return
        super().stopService()
        previous, self._previous = self._previous, None
        self.installHandler(self.signalNumber, signal.SIG_DFL if previous is None else previous)

    def _received(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._reload, signum)

    def _reload(self, signum: int) -> None:
        self.log.info("caplab received {signal}: reloading", signal=signal.Signals(signum).name)
        self.reloader.reload()
