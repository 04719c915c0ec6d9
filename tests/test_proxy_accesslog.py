"""
Tests for L{caplab.proxy.accesslog}.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy import accesslog
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
        With an L{Offloader} the file is opened, written and closed in a thread of its own,
        in order, never in the calling thread; closing fires once the writes are done.
        """
        import threading

        from twisted.internet.defer import Deferred

        from caplab.metrics.offload import Offloader

        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "access.log")
        threads: list[str] = []
        finished = threading.Event()

        class Reactor(Clock):
            def callFromThread(self, f: object, *args: object) -> None:
                f(*args)  # type: ignore[operator]

            def addSystemEventTrigger(self, *args: object) -> None:
                pass

        writer = Offloader(Reactor(), "test writer")
        self.addCleanup(writer.stop)

        def tracked(work: object) -> Deferred[object]:
            def run() -> object:
                threads.append(threading.current_thread().name)
                return work()  # type: ignore[operator]

            return writer.run(run)

        log = AccessLog(path, Clock(), runInThread=tracked)
        log.open()
        for index in range(100):
            log.record("1.1.1.1", None, b"GET", b"/%d" % index, b"HTTP/1.1", 200, 1, None, None)
        log.close().addCallback(lambda _: finished.set())
        self.assertTrue(finished.wait(10))
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


def record(log: AccessLog, path: bytes = b"/x") -> None:
    log.record("1.1.1.1", None, b"GET", path, b"HTTP/1.1", 200, 1, None, None)


class FillingFile(io.BytesIO):
    """
    A file on a disk with C{room} bytes left (None: no limit): a write takes what fits, the
    next fails with C{ENOSPC}, as on a full disk.
    """

    room: int | None = None

    def write(self, data: Any) -> int:
        data = bytes(data)
        if self.room is not None:
            if self.room <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            data = data[: self.room]
            self.room -= len(data)
        return super().write(data)

    def close(self) -> None:
        pass  # keep the value readable


class FullDiskTests(SynchronousTestCase):
    """
    A full disk, or a file that cannot be opened: lines dropped and counted in one
    rate-limited line, and writing resumes by itself.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.log = AccessLog("access.log", self.clock)
        self.file = FillingFile()
        self.log._file = self.file

    def test_recovers(self) -> None:
        """
        While the disk is full every batch is tried, and dropped: one line at once, then
        a second with the count so far, and a summary; a line cut short is ended; once
        there is room the next lines are written, and nothing is held back as "behind".
        """
        self.patch(accesslog, "MAX_PENDING", 1000)
        self.file.room = 10
        with capturedLogs() as events:
            for _second in range(3):
                for _ in range(100):
                    record(self.log)
                    self.log.flush()
                self.clock.advance(1)
            self.clock.advance(1)
            self.file.room = None
            record(self.log, b"/back")
            self.log.flush()
        lines = [formatEvent(e) for e in events]
        self.assertEqual(self.log.dropped, 300)
        self.assertEqual(self.log._pending, 0)
        self.assertEqual(len(lines), 5, lines)
        self.assertEqual(
            lines[0],
            "caplab cannot write the access log access.log: No space left on device; 1 lines "
            "dropped so far (the next lines are tried again)",
        )
        for line, dropped in zip(lines[1:4], (100, 200, 300), strict=True):
            self.assertIn(f"; {dropped} lines dropped so far", line)
        self.assertEqual(
            lines[4],
            "caplab access log access.log: writes failed for 2s (No space left on device); "
            "300 lines dropped so far",
        )
        written = self.file.getvalue().split(b"\n")
        self.assertEqual(len(written[0]), 10)  # the line the disk cut short, ended
        self.assertIn(b"GET /back HTTP/1.1", written[1])
        self.assertEqual(written[2:], [b""])

    def test_devFull(self) -> None:
        """
        A real full device: the lines are dropped and counted, nothing raises.
        """
        log = AccessLog("/dev/full", self.clock)
        with capturedLogs() as events:
            log.open()
            for _ in range(5):
                record(log)
            log.flush()
            record(log)
            log.flush()
            self.successResultOf(log.close())
        self.assertEqual(log.dropped, 6)
        self.assertEqual(
            [e["dropped"] for e in events if "cannot write" in e["log_format"]], [5, 6]
        )

    def test_openedAgain(self) -> None:
        """
        A file that cannot be opened (its directory is missing) is tried again with the
        next lines, and written once it can be.
        """
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "logs", "access.log")
        log = AccessLog(path, self.clock)
        with capturedLogs() as events:
            log.open()
            record(log, b"/lost")
            log.flush()
            os.mkdir(os.path.dirname(path))
            record(log, b"/kept")
            log.flush()
            self.successResultOf(log.close())
        self.assertEqual(log.dropped, 1)
        failures = [e for e in events if "cannot write" in e["log_format"]]
        self.assertEqual([e["dropped"] for e in failures], [0, 1])
        with open(path) as f:
            self.assertEqual([line.split('"')[1] for line in f], ["GET /kept HTTP/1.1"])

    def test_closedDropsLater(self) -> None:
        """
        Lines recorded after the log is closed are counted as dropped, never written.
        """
        self.successResultOf(self.log.close())
        record(self.log)
        self.log.flush()
        self.assertEqual(self.log.dropped, 1)
        self.assertIsNone(self.log._file)
        self.assertEqual(self.file.getvalue(), b"")
