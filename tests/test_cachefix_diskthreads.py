"""
Tests for the disk store's writes and removals off the reactor thread: every file
operation of a writer (create, blocks, commit, removal) and every removal of a file runs
through C{runInThread}, a writer's jobs one after another in order.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache.bodies import BLOCK
from caplab.proxy.cache.disk import DiskStore
from caplab.proxy.cache.entries import StoredEntry
from tests.test_cache_storage import Sink, head, store, synchronously


class Jobs:
    """
    A C{runInThread} that holds the jobs until the test runs them, as a thread would.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, function: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((function, d))
        return d

    def runOne(self, error: BaseException | None = None) -> None:
        function, d = self.pending.pop(0)
        if error is not None:
            d.errback(error)
            return
        try:
            result = function()
        except BaseException as e:
            d.errback(e)
        else:
            d.callback(result)

    def runAll(self) -> int:
        count = 0
        while self.pending:
            self.runOne()
            count += 1
            assert count < 1000
        return count


class DiskThreadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = tempfile.mkdtemp(prefix="caplab-cachefix-threads-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.jobs = Jobs()
        self.store = DiskStore(
            self.directory, 1 << 20, 1 << 19, runInThread=self.jobs, clock=self.clock
        )

    def files(self) -> list[str]:
        return sorted(os.listdir(self.directory))

    def test_writerTouchesNothingInline(self) -> None:
        """
        Making a writer, writing blocks and committing touch no file in the calling thread;
        the jobs come one at a time (the next only once the one before ended), in order,
        and the entry is visible once the last one ended.
        """
        h = head()
        writer = self.store.writer(h)
        assert writer is not None
        body = os.urandom(3 * BLOCK + 10)
        for i in range(0, len(body), BLOCK // 2):
            self.assertTrue(writer.write(body[i : i + BLOCK // 2]))
        result: list[StoredEntry | None] = []
        writer.commit().addCallback(result.append)
        self.assertEqual(self.files(), [])
        self.assertEqual(len(self.jobs.pending), 1)  # create; the others wait for it
        self.jobs.runOne()
        [temporary] = self.files()
        self.assertTrue(temporary.endswith(".entry.tmp"))
        self.assertEqual(len(self.jobs.pending), 1)
        self.assertEqual(self.jobs.runAll(), 4)  # three blocks, then the commit
        self.assertEqual(len(result), 1)
        entry = result[0]
        assert entry is not None
        [name] = self.files()
        self.assertTrue(name.endswith(".entry"))
        opened = self.store.openBody(entry)  # the first block, checked before the head
        assert opened is not None
        sink = Sink()
        opened.deliver(sink)
        self.assertEqual(sink.data, [body[:BLOCK]])
        self.assertEqual(len(self.jobs.pending), 1)  # one read at a time
        self.assertEqual(self.jobs.runAll(), 3)
        self.assertEqual((sink.body, sink.done), (body, True))

    def test_abortAfterPendingWrites(self) -> None:
        """
        An abort removes the temporary file after the writes before it, not under them.
        """
        writer = self.store.writer(head())
        assert writer is not None
        self.assertTrue(writer.write(b"x" * (2 * BLOCK)))
        writer.abort()
        self.assertEqual(self.store.reserved, 0)
        self.assertFalse(writer.write(b"y"))
        with capturedLogs() as events:
            self.jobs.runAll()
        self.assertEqual(self.files(), [])
        self.assertEqual(events, [])

    def test_failedJobEndsWriter(self) -> None:
        """
        A job that fails (a full disk) ends the writer: one log line, its bytes given back,
        its temporary file removed, later writes refused and the commit stores nothing.
        """
        writer = self.store.writer(head())
        assert writer is not None
        self.jobs.runOne()  # created
        self.assertTrue(writer.write(b"x" * BLOCK))
        with capturedLogs() as events:
            self.jobs.runOne(OSError(errno.ENOSPC, "No space left on device"))
            self.assertFalse(writer.write(b"x"))
            result: list[StoredEntry | None] = []
            writer.commit().addCallback(result.append)
            self.jobs.runAll()
        self.assertEqual(result, [None])
        self.assertEqual(self.store.reserved, 0)
        self.assertEqual(len(self.store), 0)
        self.assertEqual(self.files(), [])
        [line] = [formatEvent(e) for e in events]
        self.assertIn("No space left on device", line)

    def test_removalInThread(self) -> None:
        """
        Removing an entry (purge, eviction, replacement) deletes its file in a thread.
        """
        self.store.runInThread = synchronously
        entry = store(self.store, head(), b"body")
        assert entry is not None
        self.store.runInThread = self.jobs
        self.store.remove(entry)
        self.assertEqual(len(self.files()), 1)
        self.assertEqual(self.jobs.runAll(), 1)
        self.assertEqual(self.files(), [])

    def stored(self, body: bytes) -> StoredEntry:
        self.store.runInThread = synchronously
        entry = store(self.store, head(), body)
        assert entry is not None
        self.store.runInThread = self.jobs
        return entry

    def test_hitReadsInThread(self) -> None:
        """
        A hit's blocks after the first are read in a thread, one read at a time, none
        while the client is paused; a damaged one ends the body incomplete and drops
        the entry.
        """
        body = os.urandom(4 * BLOCK)
        entry = self.stored(body)
        opened = self.store.openBody(entry)
        assert opened is not None
        sink = Sink(pauseAfter=2)
        opened.deliver(sink)
        self.assertEqual(len(sink.data), 1)
        self.assertEqual(len(self.jobs.pending), 1)
        self.jobs.runOne()  # the second block: the sink pauses
        self.assertEqual(len(sink.data), 2)
        self.assertEqual(self.jobs.pending, [])
        sink.pauseAfter = None
        assert sink.producer is not None
        sink.producer.resumeProducing()
        self.assertEqual(len(self.jobs.pending), 1)
        self.assertEqual(self.jobs.runAll(), 2)
        self.assertEqual((sink.body, sink.done), (body, True))

    def test_damagedLaterBlockInThread(self) -> None:
        """
        A later block that fails its check in the thread ends the body incomplete, drops
        the entry and says so on one line.
        """
        entry = self.stored(os.urandom(3 * BLOCK))
        with open(entry.path, "r+b") as f:  # type: ignore[attr-defined]
            f.seek(2 * (BLOCK + 8) + 100)
            f.write(b"\x00\x01\x02")
        opened = self.store.openBody(entry)
        assert opened is not None
        sink = Sink()
        with capturedLogs() as events:
            opened.deliver(sink)
            self.jobs.runAll()
        self.assertIs(sink.done, False)
        self.assertEqual(len(sink.body), 2 * BLOCK)
        self.assertFalse(entry.live)
        self.assertEqual(self.files(), [])
        [line] = [formatEvent(e) for e in events]
        self.assertIn("bad block checksum", line)

    def test_stoppedWhileReading(self) -> None:
        """
        A client gone while a block is read: the block is dropped and the file closed when
        the read ends, nothing more is asked for or delivered.
        """
        entry = self.stored(os.urandom(3 * BLOCK))
        opened = self.store.openBody(entry)
        assert opened is not None
        sink = Sink()
        opened.deliver(sink)
        assert sink.producer is not None
        sink.producer.stopProducing()
        self.assertEqual(self.jobs.runAll(), 1)
        self.assertEqual(len(sink.data), 1)
        self.assertIsNone(sink.done)
        self.assertIsNone(opened._file)  # type: ignore[attr-defined]
        self.assertTrue(entry.live)
