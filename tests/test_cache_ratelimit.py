"""
Tests for L{caplab.proxy.cache.ratelimit.RateLimitedLog}, on a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache.ratelimit import RateLimitedLog


class RateLimitedLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.limited = RateLimitedLog(Logger(), self.clock.callLater, "test: failures", 10.0)

    def test_single(self) -> None:
        """
        One event is one line, and no summary follows.
        """
        with capturedLogs() as events:
            self.limited.emit("test: {what} failed", what="x")
            self.clock.advance(10)
            self.clock.advance(10)
        self.assertEqual([formatEvent(e) for e in events], ["test: x failed"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_burst(self) -> None:
        """
        A burst: the first event at once, one line per interval with the latest event's
        fields and the counts, then a summary when an interval passes without one; the
        next burst starts afresh.
        """
        with capturedLogs() as events:
            for i in range(100):
                self.limited.emit("test: {what} failed", what=i)
                self.clock.advance(0.25)
            self.clock.advance(10)  # the last events' line
            self.clock.advance(10)  # a quiet interval: the burst is over
            self.limited.emit("test: {what} failed", what="again")
        lines = [formatEvent(e) for e in events]
        self.assertEqual(
            lines,
            [
                "test: 0 failed",
                "test: 39 failed (39 times in the last 10 s, 40 in this burst)",
                "test: 79 failed (40 times in the last 10 s, 80 in this burst)",
                "test: 99 failed (20 times in the last 10 s, 100 in this burst)",
                "test: failures: the burst is over, 100 in all",
                "test: again failed",
            ],
        )

    def test_stop(self) -> None:
        """
        L{RateLimitedLog.stop} cancels the pending interval.
        """
        self.limited.emit("test: x")
        self.limited.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
