"""
Tests for the bytes of bodies being written (not committed yet) counted against the
store's bound (L{caplab.proxy.cache.storage.StoreIndex.reserve}), memory and disk alike.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache.disk import DiskStore
from caplab.proxy.cache.storage import IEntryWriter, MemoryStore, StoreIndex
from tests.test_cache_storage import head, store, synchronously

KIB = 1024


class ReservationTestsMixin:
    clock: Clock

    def makeStore(self, maxSize: int, maxObjectSize: int) -> StoreIndex:
        raise NotImplementedError

    def writer(self: Any, s: StoreIndex, uri: str) -> IEntryWriter:
        w = s.writer(head(uri))  # type: ignore[attr-defined]
        assert w is not None
        return w

    def test_concurrentWritersBounded(self: Any) -> None:
        """
        Writers in flight count their bytes against C{maxSize}: with 1 MiB and four large
        misses at once, the writer whose bytes cannot fit beside the others' gives up, and
        the bytes held never exceed the bound; committing or giving up gives them back.
        """
        s = self.makeStore(1024 * KIB, 512 * KIB)
        writers = [self.writer(s, f"http://e/{i}") for i in range(4)]
        accepted = []
        for _ in range(4):  # 4 x 100 KiB each, interleaved as concurrent bodies come
            accepted = [w.write(b"x" * (100 * KIB)) for w in writers]
            self.assertLessEqual(s.size + s.reserved, s.maxSize)
        # the third writer's third piece would make 1100 KiB: it gives up (its 200 KiB go
        # back); then the second's fourth; the first and the fourth finish within the bound
        self.assertEqual(accepted, [True, False, False, True])
        self.assertEqual(s.reserved, 800 * KIB)
        self.assertFalse(writers[1].write(b"x"))  # a writer that gave up stays given up
        self.assertEqual(s.reserved, 800 * KIB)
        result: list[Any] = []
        writers[0].commit().addCallback(result.append)
        self.assertEqual(s.reserved, 400 * KIB)
        self.assertIsNotNone(result[0])
        self.assertEqual(len(s), 1)
        self.assertLessEqual(s.size + s.reserved, s.maxSize)
        writers[3].abort()
        self.assertEqual(s.reserved, 0)

    def test_abortGivesBack(self: Any) -> None:
        """
        An aborted writer's bytes no longer count; abort twice counts once.
        """
        s = self.makeStore(1024 * KIB, 512 * KIB)
        w = self.writer(s, "http://e/a")
        self.assertTrue(w.write(b"x" * (300 * KIB)))
        self.assertEqual(s.reserved, 300 * KIB)
        w.abort()
        w.abort()
        self.assertEqual(s.reserved, 0)
        # and one over maxObjectSize gives back what it had
        w = self.writer(s, "http://e/b")
        self.assertTrue(w.write(b"x" * (300 * KIB)))
        self.assertFalse(w.write(b"x" * (300 * KIB)))
        self.assertEqual(s.reserved, 0)

    def test_inFlightEvictsOldest(self: Any) -> None:
        """
        Bytes in flight make room by evicting the least recently used entries, as a
        committed entry would: stored entries plus bytes in flight stay within the bound.
        """
        s = self.makeStore(1024 * KIB, 512 * KIB)
        for i in range(9):
            self.assertIsNotNone(store(s, head(f"http://e/old{i}"), b"o" * (100 * KIB)))
        self.assertEqual(len(s), 9)
        w = self.writer(s, "http://e/new")
        self.assertTrue(w.write(b"n" * (300 * KIB)))
        self.assertLessEqual(s.size + s.reserved, s.maxSize)
        self.assertEqual(s.lookup("http://e/old0"), [])
        self.assertEqual(len(s.lookup("http://e/old8")), 1)
        result: list[Any] = []
        w.commit().addCallback(result.append)
        self.assertIsNotNone(result[0])
        self.assertEqual(s.reserved, 0)
        self.assertLessEqual(s.size, s.maxSize)


class MemoryReservationTests(ReservationTestsMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def makeStore(self, maxSize: int, maxObjectSize: int) -> StoreIndex:
        return MemoryStore(maxSize, maxObjectSize, callLater=self.clock.callLater)


class DiskReservationTests(ReservationTestsMixin, SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = tempfile.mkdtemp(prefix="caplab-cachefix-reserve-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def makeStore(self, maxSize: int, maxObjectSize: int) -> StoreIndex:
        return DiskStore(
            self.directory, maxSize, maxObjectSize, runInThread=synchronously, clock=self.clock
        )

    def test_failedCommitGivesBack(self) -> None:
        """
        A commit that fails in its thread (a full disk) gives its bytes back too.
        """
        import errno

        from twisted.internet.defer import fail

        s = self.makeStore(1024 * KIB, 512 * KIB)
        assert isinstance(s, DiskStore)
        w = self.writer(s, "http://e/a")
        self.assertTrue(w.write(b"x" * (100 * KIB)))
        failures = [OSError(errno.ENOSPC, "No space left on device")]

        def failOnce(f: Any) -> Any:
            return fail(failures.pop()) if failures else synchronously(f)

        s.runInThread = failOnce
        result: list[Any] = []
        w.commit().addCallback(result.append)
        self.assertEqual(result, [None])
        self.assertEqual(s.reserved, 0)
        self.assertEqual(os.listdir(self.directory), [])
        s.writeFailures.stop()
