"""
In the C{--workers} supervisor: the private directory where the workers share their figures
(L{caplab.metrics.shared}), and the whole server's figures read from it for C{/metrics}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable

from prometheus_client.metrics_core import Metric
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from caplab.metrics.history import BUCKETS, INTERVAL
from caplab.metrics.offload import IOffloader
from caplab.metrics.process import labelled, processFamilies
from caplab.metrics.shared import (
    METRICS_ENVIRONMENT,
    SERVER_FILE,
    foldEnded,
    readDirectory,
    writeJSON,
)


class MetricsDirectory:
    """
    The supervisor's side of the metrics directory.

    It is created before the first worker starts (L{create}) and named in every worker's
    environment (L{environment}); when a worker ends, what it counted is kept and its
    gauges dropped (L{processEnded}); it is removed when the server has stopped
    (L{remove}).  Every file operation after L{create} runs in the metrics thread, one at a
    time.

    @ivar path: the directory, or None before L{create} and after L{remove}.
    """

    log = Logger()

    def __init__(self, offloader: IOffloader, now: Callable[[], float] = time.time) -> None:
        self.offloader = offloader
        self.now = now
        self.path: str | None = None

    def create(self) -> str:
        """
        Make the directory (mode 0700) and note when the server started in it.
        """
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        self.path = tempfile.mkdtemp(prefix="caplab-metrics-")
        writeJSON(os.path.join(self.path, SERVER_FILE), {"started": self.now()})
        return self.path

    def environment(self) -> dict[str, str]:
        """
        What to add to a worker's environment.
        """
        return {METRICS_ENVIRONMENT: self.path} if self.path is not None else {}

    def processEnded(self, pid: int | None) -> Deferred[None]:
        """
        Worker C{pid} has ended: keep its counters, drop its gauges and process figures.
        """
        path = self.path
        if path is None or pid is None:
            return succeed(None)
        oldest = int(self.now() // INTERVAL) - BUCKETS
        d = self.offloader.run(foldEnded, path, pid, oldest)

        def failed(failure: Failure) -> None:
            self.log.warn(
                "caplab metrics: the figures of ended worker pid {pid} were not kept: {error}",
                pid=pid,
                error=failure.getErrorMessage(),
            )

        return d.addCallbacks(lambda _: None, failed)

    def remove(self) -> Deferred[None]:
        """
        Remove the directory (after any file operation under way).
        """
        path, self.path = self.path, None
        if path is None:
            return succeed(None)
        return self.offloader.run(shutil.rmtree, path, True).addErrback(lambda _: None)

    def scrape(self) -> Deferred[list[Metric]]:
        """
        The whole server's families: every worker's, plus the supervisor's own process
        figures (labelled with its C{pid}, as the workers' are).
        """
        path = self.path
        return self.offloader.run(self._scrape, path)

    @staticmethod
    def _scrape(path: str | None) -> list[Metric]:
        """
        (In the metrics thread.)
        """
        families = []
        if path is not None and os.path.isdir(path):
            families = readDirectory(path).families()
        own = labelled(processFamilies(), "pid", str(os.getpid()))
        byName = {family.name: family for family in families}
        for family in own:
            merged = byName.get(family.name)
            if merged is None:
                families.append(family)
            else:
                for sample in family.samples:
                    merged.add_sample(sample.name, sample.labels, sample.value)
        return families
