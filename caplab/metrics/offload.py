"""
Blocking work in a thread of its own, so that the reactor thread never waits for a disk: the
metrics' (the C{--workers} metrics directory's files, C{/proc}) and the access log's writes,
each with an L{Offloader} of its own.

One thread, not the reactor's shared pool: the jobs then never delay name lookups, password
checks or disk-cache commits queued there (nor are delayed by them), and they run one at a
time, in order, so a directory is never read while this process is changing it, and log
lines are written in the order they were handed over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class IOffloader(Protocol):
    """
    Runs a blocking function away from the reactor thread; the Deferred fires in the
    reactor thread with its result.
    """

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]: ...


class Offloader:
    """
    An L{IOffloader} with one thread of its own, started on first use and stopped when the
    reactor shuts down.
    """

    def __init__(self, reactor: Any, name: str = "caplab-metrics") -> None:
        self.reactor = reactor
        self.name = name
        self._pool: ThreadPool | None = None
        self._stopped = False

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        if self._stopped:
            return fail(RuntimeError(f"the {self.name} thread has stopped (shutting down)"))
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=1, name=self.name)
            self._pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        return deferToThreadPool(self.reactor, self._pool, f, *args)

    def stop(self) -> None:
        """
        Wait for the job under way (if any) and end the thread; later jobs fail at once.
        """
        self._stopped = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
