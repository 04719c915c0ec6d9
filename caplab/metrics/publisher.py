"""
In a C{--workers} worker: share this worker's figures through the metrics directory, and read
the whole server's back for the status pages (L{WorkerPublisher}).

Counting stays what it is in a single process (plain numbers in L{Metrics}); once a second
the figures are read in the reactor thread (a few microseconds), then written and the
directory read in the metrics thread (L{caplab.metrics.offload}), so no file is touched by the
reactor thread while the server runs, and no request waits for one.  The pages serve the last
figures read, at most a second old.  At shutdown, after every connection has ended, the
final figures are written once more (then nothing else is running).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client.metrics_core import Metric
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from caplab.metrics.figures import Figures, LocalFigures, WorkerFigures, sums
from caplab.metrics.history import seriesOf
from caplab.metrics.offload import IOffloader
from caplab.metrics.operations import Command, CommandRunner, readCommands
from caplab.metrics.process import labelled, processFamilies
from caplab.metrics.registry import Metrics
from caplab.metrics.shared import (
    DirectoryState,
    WorkerSnapshot,
    readDirectory,
    workerFile,
    writeJSON,
)
from caplab.proxy.hooks import ICacheAdmin
from caplab.ratelimit import LogThrottle


class WorkerPublisher(Service):
    """
    Publishes a worker's L{Metrics} to the metrics directory every L{interval} seconds and
    keeps the whole server's figures, as last read, for the pages (an
    L{caplab.metrics.figures.FiguresSource}).

    Building it makes it C{metrics.server}, so that C{metrics.families()} and the pages
    show the whole server.
    """

    log = Logger()
    name = "metrics"

    def __init__(
        self,
        metrics: Metrics,
        directory: str,
        reactor: Any,
        offloader: IOffloader,
        index: int | None = None,
        pid: int | None = None,
        interval: float = 1.0,
        cache: ICacheAdmin | None = None,
    ) -> None:
        """
        @param reactor: schedules the publishing (C{IReactorTime}) and the final write at
            shutdown (C{IReactorCore}).
        @param index: this worker's number (1, 2 ...), for the pages.
        @param pid: this worker's process id (by default this process's).
        @param cache: this worker's cache, for the supervisor's purge and flush (None: it
            has none; see L{caplab.metrics.operations}).
        """
        self.metrics = metrics
        self.directory = directory
        self.reactor = reactor
        self.offloader = offloader
        self.index = index
        self.pid = os.getpid() if pid is None else pid
        self.interval = interval
        self.state: DirectoryState | None = None
        self.commands = CommandRunner(directory, offloader, self.pid, cache, metrics.now)
        self._families: list[Metric] = []
        self._loop: LoopingCall | None = None
        self._problems = LogThrottle(
            self.log,
            reactor,
            "caplab metrics: cannot share this worker's figures in {directory}: {error}",
            interval=60.0,
            repeat="caplab metrics: {count} more failures to share figures in the last {interval}s",
        )
        metrics.server = self

    def startService(self) -> None:
        super().startService()
        loop = self._loop = LoopingCall(self.publish)
        loop.clock = self.reactor
        loop.start(self.interval, now=True)
        self.reactor.addSystemEventTrigger("after", "shutdown", self.writeFinal)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._problems.stop()

    def publish(self) -> Deferred[None]:
        """
        Write this worker's figures and read every worker's back (in the metrics thread).
        """
        m = self.metrics
        families = list(m.registry.collect())
        d = self.offloader.run(self._exchange, families, m.history.recent(), m.now())
        return d.addCallbacks(self._read, self._failed)

    def _snapshot(self, families: list[Metric], rate: dict[int, int], now: float) -> Any:
        process = labelled(processFamilies(), "pid", str(self.pid))
        return WorkerSnapshot(
            self.pid, self.index, self.metrics.created, now, [*families, *process], rate
        ).toJSON()

    def _exchange(
        self, families: list[Metric], rate: dict[int, int], now: float
    ) -> tuple[DirectoryState, list[Command]]:
        """
        (In the metrics thread.)
        """
        writeJSON(workerFile(self.directory, self.pid), self._snapshot(families, rate, now))
        return readDirectory(self.directory), readCommands(self.directory)

    def _read(self, read: tuple[DirectoryState, list[Command]]) -> None:
        state, commands = read
        self.commands.run(commands)
        self.state = state
        self._families = state.families()
        if state.unreadable:
            self._problems.event(
                directory=self.directory, error=f"damaged files {', '.join(state.unreadable)}"
            )

    def _failed(self, failure: Failure) -> None:
        self._problems.event(directory=self.directory, error=failure.getErrorMessage())

    def writeFinal(self) -> None:
        """
        Write this worker's last figures (at shutdown, once nothing else runs).
        """
        m = self.metrics
        try:
            writeJSON(
                workerFile(self.directory, self.pid),
                self._snapshot(list(m.registry.collect()), m.history.recent(), m.now()),
            )
        except OSError as e:  # the supervisor removed the directory: it is stopping too
            self.log.info("caplab metrics: last figures not written: {error}", error=e)

    # A FiguresSource.

    def figures(self) -> Figures:
        """
        The whole server's figures as last read; before the first read, this worker's.
        """
        state = self.state
        if state is None:
            return LocalFigures(self.metrics).figures()
        history = self.metrics.history
        now = self.metrics.now()
        oldest = int(now // history.interval) - history.buckets
        started = state.started
        if started is None:
            starts = [w.started for w in state.workers if w.started is not None]
            started = min(starts, default=self.metrics.created)
        return Figures(
            families=self._families,
            rate=seriesOf(state.rate(oldest), now, history.interval, history.buckets),
            started=started,
            now=now,
            interval=history.interval,
            workers=[
                WorkerFigures(w.pid, w.index, w.started, sums(w.families)) for w in state.workers
            ],
        )
