"""
Tests for L{caplab.proxy.accesslog}.
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.accesslog import AccessLog


class AccessLogTests(SynchronousTestCase):
    """
    Combined Log Format lines, buffered briefly.
    """

    def test_combinedFormat(self) -> None:
        """
        A line has the client, user, time, request line, status, size, referer and agent,
        quoted where needed, then the cache status if there is one; it reaches the file
        within the flush delay.
        """
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "access.log")
        clock = Clock()
        clock.advance(1795507200)  # 2026-11-24T08:00:00Z
        log = AccessLog(path, clock, flushDelay=0.2)
        log.open()
        self.addCleanup(log.close)
        log.record("::1", "al", b"GET", b'http://h/"x', b"HTTP/1.1", 200, 12, None, b"curl/8")
        log.record("1.2.3.4", None, b"CONNECT", b"h:443", b"HTTP/1.1", 200, 5, b"r", None, "hit")
        with open(path) as f:
            self.assertEqual(f.read(), "")
        clock.advance(0.2)
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual(
            lines,
            [
                '::1 - al [24/Nov/2026:08:00:00 +0000] "GET http://h/\\"x HTTP/1.1" 200 12 "-" '
                '"curl/8"',
                '1.2.3.4 - - [24/Nov/2026:08:00:00 +0000] "CONNECT h:443 HTTP/1.1" 200 5 "r" "-" '
                '"hit"',
            ],
        )

    def test_toTheLog(self) -> None:
        """
        With C{-} each record is a log event of namespace C{caplab.access}: the line in
        C{line} (what a text log shows) and every field apart (what a JSON log holds).
        """
        from twisted.logger import capturedLogs, formatEvent

        clock = Clock()
        clock.advance(1795507200)
        log = AccessLog("-", clock)
        log.open()
        with capturedLogs() as events:
            log.record("::1", "al", b"GET", b"http://h/", b"HTTP/1.1", 200, 12, None, b"c", "hit")
        [event] = events
        self.assertEqual(event["log_namespace"], "caplab.access")
        self.assertEqual(
            formatEvent(event),
            '::1 - al [24/Nov/2026:08:00:00 +0000] "GET http://h/ HTTP/1.1" 200 12 "-" "c" "hit"',
        )
        self.assertEqual(
            (event["method"], event["uri"], event["code"], event["size"], event["cacheStatus"]),
            ("GET", "http://h/", 200, 12, "hit"),
        )
        self.assertEqual(clock.getDelayedCalls(), [])
        log.close()

    def test_reopen(self) -> None:
        """
        The reopener opens the path again: lines recorded before go to the old file, lines
        after to the new one of the same name (logrotate has moved the old one away).
        """
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "access.log")
        clock = Clock()
        log = AccessLog(path, clock)
        log.open()
        self.addCleanup(log.close)
        log.record("1.1.1.1", None, b"GET", b"/old", b"HTTP/1.1", 200, 1, None, None)
        os.rename(path, path + ".1")
        reopener = log.reopener()
        self.assertEqual(reopener.use(reopener.load()), f"reopened {path}")
        log.record("1.1.1.1", None, b"GET", b"/new", b"HTTP/1.1", 200, 1, None, None)
        log.flush()
        with open(path + ".1") as f:
            self.assertIn("/old", f.read())
        with open(path) as f:
            self.assertEqual(f.read().count("GET /"), 1)

    def test_writtenInItsThread(self) -> None:
        """
        With a L{ThreadWriter} the file is opened, written and closed in a thread of its own,
        in order, never in the calling thread; closing waits for the writes.
        """
        import threading

        from twisted.internet.defer import Deferred

        from caplab.proxy.accesslog import ThreadWriter

        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "access.log")
        threads: list[str] = []

        class Reactor(Clock):
            def callFromThread(self, f: object, *args: object) -> None:
                f(*args)  # type: ignore[operator]

        writer = ThreadWriter(Reactor(), "test writer")

        def tracked(work: object) -> Deferred[object]:
            def run() -> object:
                threads.append(threading.current_thread().name)
                return work()  # type: ignore[operator]

            return writer(run)

        tracked.stop = writer.stop  # type: ignore[attr-defined]
        log = AccessLog(path, Clock(), runInThread=tracked)
        log.open()
        for index in range(100):
            log.record("1.1.1.1", None, b"GET", b"/%d" % index, b"HTTP/1.1", 200, 1, None, None)
        log.close()
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual(
            [line.split('"')[1] for line in lines][:3],
            ["GET /0 HTTP/1.1", "GET /1 HTTP/1.1", "GET /2 HTTP/1.1"],
        )
        self.assertEqual(len(lines), 100)
        self.assertNotIn(threading.current_thread().name, threads)
        self.assertEqual(len(set(threads)), 1)

    def test_boundedWhileBehind(self) -> None:
        """
        While the writer is behind (a slow disk), lines wait in memory only up to a bound;
        later ones are dropped and counted in a rate-limited warning.
        """
        from twisted.internet.defer import Deferred

        from caplab.proxy import accesslog

        pending: list[Deferred[object]] = []

        def never(work: object) -> Deferred[object]:
            d: Deferred[object] = Deferred()
            pending.append(d)
            return d

        self.patch(accesslog, "MAX_PENDING", 1000)
        clock = Clock()
        log = AccessLog("/nonexistent/never-written", clock, runInThread=never)
        from twisted.logger import capturedLogs

        with capturedLogs() as events:
            for _ in range(50):
                log.record("1.1.1.1", None, b"GET", b"/x", b"HTTP/1.1", 200, 1, None, None)
                log.flush()
        warnings = [e for e in events if "is behind" in e["log_format"]]
        self.assertEqual(len(warnings), 1)
        self.assertLessEqual(log._pending, 1000 + 100)
        log._dropped.stop()
