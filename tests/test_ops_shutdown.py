"""
Tests for the access log at shutdown (L{caplab.tap.AccessLogService}): closed once the open
connections are done (a stopping worker's L{caplab.workers.Drain}), after their last lines,
and never waiting for a stuck disk longer than L{caplab.tap.CLOSE_TIMEOUT}.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.accesslog import AccessLog
from caplab.proxy.factory import ProxyFactory
from caplab.tap import CLOSE_TIMEOUT, AccessLogService
from caplab.workers import Drain


def record(log: AccessLog, path: bytes) -> None:
    log.record("1.1.1.1", None, b"GET", path, b"HTTP/1.1", 200, 1, None, None)


class Settings:
    """
    What L{ProxyFactory} reads of its settings, here.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.metrics = None


class AccessLogAtShutdownTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.path = os.path.join(directory.name, "access.log")
        self.clock = Clock()
        self.open = 1
        self.drain = Drain(self.clock, grace=10.0)
        self.drain.watch(lambda: self.open)

    def tree(self, log: AccessLog) -> MultiService:
        top = MultiService()
        # As in caplab.tap.serviceTree: the drain first, so that it is stopped last.
        self.drain.setServiceParent(top)
        AccessLogService(log, self.clock, self.drain).setServiceParent(top)
        top.startService()
        return top

    def lines(self) -> list[str]:
        with open(self.path) as f:
            return [line.split('"')[1] for line in f]

    def test_linesOfDrainedConnectionsWritten(self) -> None:
        """
        A stopping worker's proxy stops listening (its factory stops) while a connection
        is still served: that connection's line, recorded afterwards, is written before
        the log closes, and the stop waits for it.
        """
        log = AccessLog(self.path, self.clock)
        factory = ProxyFactory(Settings(self.clock), log)  # type: ignore[arg-type]
        factory.doStart()
        top = self.tree(log)
        record(log, b"/before")
        stopped = top.stopService()
        factory.doStop()  # the listening port is closed
        self.assertNoResult(stopped)
        record(log, b"/during")  # the open connection ends
        self.open = 0
        self.clock.advance(self.drain.interval)
        self.successResultOf(stopped)
        self.assertEqual(self.lines(), ["GET /before HTTP/1.1", "GET /during HTTP/1.1"])
        record(log, b"/after")
        log.flush()
        self.assertEqual(log.dropped, 1)
        self.assertEqual(len(self.lines()), 2)

    def test_waitBounded(self) -> None:
        """
        A writer that never finishes holds the stop for L{CLOSE_TIMEOUT} seconds after the
        drain, then the stop goes on, with a warning.
        """
        pending: list[Deferred[Any]] = []

        def stuck(work: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d

        log = AccessLog(self.path, self.clock, runInThread=stuck)
        top = self.tree(log)
        record(log, b"/x")
        with capturedLogs() as events:
            stopped = top.stopService()
            self.open = 0
            self.clock.advance(self.drain.interval)
            self.assertNoResult(stopped)
            self.clock.advance(CLOSE_TIMEOUT - 0.01)
            self.assertNoResult(stopped)
            self.clock.advance(0.01)
            self.successResultOf(stopped)
        self.assertEqual(
            [e["timeout"] for e in events if "still not written" in e["log_format"]],
            [CLOSE_TIMEOUT],
        )

    def test_withoutDrain(self) -> None:
        """
        In a single process (no drain) the log is closed as the services stop.
        """
        log = AccessLog(self.path, self.clock)
        service = AccessLogService(log, self.clock)
        service.startService()
        record(log, b"/x")
        self.successResultOf(service.stopService())
        self.assertEqual(self.lines(), ["GET /x HTTP/1.1"])
        self.assertTrue(log._closed)
