"""
Tests for L{caplab.proxy.cache.disk}: damaged records and files met while serving.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache.bodies import BLOCK, CorruptEntry
from caplab.proxy.cache.disk import DAMAGE_LOG_INTERVAL, DiskStore, readHead
from caplab.proxy.cache.entries import MAX_RECORD
from tests.test_cache_storage import Sink, head, store, synchronously
from tests.test_e2e_cache import goodRecord, writeEntryFile


class DiskDamageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = tempfile.mkdtemp(prefix="caplab-cachefix-test-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def makeStore(self) -> DiskStore:
        return DiskStore(
            self.directory,
            runInThread=synchronously,
            clock=self.clock,
        )

    def test_recordOverMaxRecordRefused(self) -> None:
        """
        A record longer than L{MAX_RECORD} is refused by its length, even one whose checksum
        and fields hold; one just under it loads.
        """
        path = os.path.join(self.directory, "long.entry")
        big = goodRecord(headers=[["X-Long", "a" * (MAX_RECORD + 1)]])
        writeEntryFile(path, big, b"good")
        with self.assertRaises(CorruptEntry) as caught:
            readHead(path)
        self.assertIn(f"over {MAX_RECORD}", str(caught.exception))
        writeEntryFile(path, goodRecord(headers=[["X-Long", "a" * (MAX_RECORD - 500)]]), b"good")
        self.assertEqual(readHead(path)[0].uri, "http://example.com/good")

    def test_recordOverMaxRecordDroppedAtLoad(self) -> None:
        """
        At start-up such a file is dropped (deleted), the others load.
        """
        writeEntryFile(
            os.path.join(self.directory, "long.entry"),
            goodRecord(uri="http://example.com/long", headers=[["X", "a" * (MAX_RECORD + 1)]]),
            b"good",
        )
        writeEntryFile(os.path.join(self.directory, "good.entry"), goodRecord(), b"good")
        with capturedLogs() as events:
            s = self.makeStore()
        self.assertEqual(s.lookup("http://example.com/long"), [])
        self.assertEqual(len(s.lookup("http://example.com/good")), 1)
        self.assertEqual(os.listdir(self.directory), ["good.entry"])
        [line] = [formatEvent(e) for e in events]
        self.assertIn("long.entry", line)

    def test_damagedWhileServingRateLimited(self) -> None:
        """
        Damaged files met while serving (a disk going bad) are each dropped, with one log
        line per interval, a count, and a summary when the burst ends.
        """
        s = self.makeStore()
        entries = []
        for i in range(100):
            entry = store(s, head(f"http://e/{i}"), b"body")
            assert entry is not None
            entries.append(entry)
        for entry in entries:
            with open(entry.path, "r+b") as f:  # type: ignore[attr-defined]
                f.seek(5)
                f.write(b"X")
        with capturedLogs() as events:
            for entry in entries:
                self.assertIsNone(s.openBody(entry))
                self.clock.advance(0.1)
            self.assertEqual(len(s), 0)
            lines = [formatEvent(e) for e in events]
            self.assertEqual(len(lines), 1, lines)
            self.assertIn("dropping damaged file", lines[0])
            self.assertIn("bad block checksum", lines[0])
            self.clock.advance(DAMAGE_LOG_INTERVAL)
            self.clock.advance(DAMAGE_LOG_INTERVAL)
            lines = [formatEvent(e) for e in events]
        self.assertEqual(len(lines), 3, lines)
        self.assertIn("(99 times in the last 60 s, 100 in this burst)", lines[1])
        self.assertIn("damaged files: the burst is over, 100 in all", lines[2])
        self.assertEqual(os.listdir(self.directory), [])

    def test_laterBlockDamageLogged(self) -> None:
        """
        A later block that fails its check while it streams drops the entry, on one
        (rate-limited) line that says why.
        """
        s = self.makeStore()
        entry = store(s, head(), b"x" * (2 * BLOCK))
        assert entry is not None
        with open(entry.path, "r+b") as f:  # type: ignore[attr-defined]
            f.seek(4 + BLOCK + 4 + 4 + 10)
            f.write(b"Y")
        body = s.openBody(entry)
        assert body is not None
        sink = Sink()
        with capturedLogs() as events:
            body.deliver(sink)
            for _ in range(10):
                if sink.done is not None:
                    break
                self.clock.advance(0)
        self.assertIs(sink.done, False)
        self.assertFalse(entry.live)
        [line] = [formatEvent(e) for e in events]
        self.assertIn("bad block checksum", line)
