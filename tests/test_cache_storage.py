"""
Tests for L{caplab.proxy.cache.storage}: the memory and disk stores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache.bodies import BLOCK, TURN
from caplab.proxy.cache.disk import DiskStore
from caplab.proxy.cache.entries import DiskEntry, EntryHead, StoredEntry
from caplab.proxy.cache.storage import IStore, MemoryStore
from tests.test_e2e_cache import goodRecord, writeEntryFile


def head(uri: str = "http://example.com/a", variant: bytes | None = None) -> EntryHead:
    return EntryHead(
        uri=uri,
        varyNames=(b"accept",) if variant is not None else (),
        variant=(variant,) if variant is not None else (),
        code=200,
        phrase=b"OK",
        headers=[(b"Cache-Control", b"max-age=60")],
        requestTime=1.0,
        responseTime=2.0,
    )


class Sink:
    """
    An L{IBodySink} that records what it gets and can pause its producer.
    """

    def __init__(self, pauseAfter: int | None = None) -> None:
        self.data: list[bytes] = []
        self.done: bool | None = None
        self.producer: IPushProducer | None = None
        self.pauseAfter = pauseAfter

    def bodyStarted(self, producer: IPushProducer) -> None:
        self.producer = producer

    def bodyData(self, data: bytes) -> None:
        self.data.append(data)
        if self.pauseAfter is not None and len(self.data) >= self.pauseAfter:
            assert self.producer is not None
            self.producer.pauseProducing()

    def bodyDone(self, complete: bool) -> None:
        self.done = complete

    @property
    def body(self) -> bytes:
        return b"".join(self.data)


def synchronously(function: Callable[[], Any]) -> Deferred[Any]:
    """
    A C{runInThread} for tests: runs at once.
    """
    return succeed(function())


def store(s: IStore, h: EntryHead, body: bytes, pieces: int = 1) -> StoredEntry | None:
    writer = s.writer(h)
    assert writer is not None
    step = max(1, -(-len(body) // pieces))
    for i in range(0, len(body), step):
        if not writer.write(body[i : i + step]):
            return None
    result: list[StoredEntry | None] = []
    writer.commit().addCallback(result.append)
    return result[0]


def read(s: IStore, entry: StoredEntry, clock: Clock | None = None) -> Sink:
    body = s.openBody(entry)
    assert body is not None
    sink = Sink()
    body.deliver(sink)
    while clock is not None and sink.done is None and clock.getDelayedCalls():
        clock.advance(0)
    return sink


class StoreTestsMixin:
    """
    Behaviour both stores share.
    """

    clock: Clock

    def makeStore(self, maxSize: int = 1 << 20, maxObjectSize: int = 1 << 19) -> IStore:
        raise NotImplementedError

    def test_commitMakesVisible(self: Any) -> None:
        """
        An entry is visible only once its writer commits; its body reads back whole.
        """
        s = self.makeStore()
        writer = s.writer(head())
        writer.write(b"hello ")
        writer.write(b"world")
        self.assertEqual(s.lookup("http://example.com/a"), [])
        writer.commit()
        [entry] = s.lookup("http://example.com/a")
        sink = read(s, entry, self.clock)
        self.assertEqual((sink.body, sink.done), (b"hello world", True))
        self.assertEqual(entry.bodyLength, 11)

    def test_abortLeavesNothing(self: Any) -> None:
        """
        An aborted writer stores nothing.
        """
        s = self.makeStore()
        writer = s.writer(head())
        writer.write(b"partial")
        writer.abort()
        self.assertEqual(s.lookup("http://example.com/a"), [])
        self.assertEqual(writer.write(b"more"), False)

    def test_largeBody(self: Any) -> None:
        """
        A body of several blocks, written in odd pieces, reads back whole.
        """
        s = self.makeStore()
        body = os.urandom(3 * BLOCK + 123)
        entry = store(s, head(), body, pieces=7)
        assert entry is not None
        self.assertEqual(read(s, entry, self.clock).body, body)

    def test_emptyBody(self: Any) -> None:
        """
        An empty body is stored and delivered.
        """
        s = self.makeStore()
        entry = store(s, head(), b"")
        assert entry is not None
        sink = read(s, entry, self.clock)
        self.assertEqual((sink.body, sink.done), (b"", True))

    def test_maxObjectSize(self: Any) -> None:
        """
        A body over the per-object limit makes the writer give up.
        """
        s = self.makeStore(maxObjectSize=1000)
        writer = s.writer(head())
        self.assertTrue(writer.write(b"x" * 600))
        self.assertFalse(writer.write(b"x" * 600))
        writer.commit()
        self.assertEqual(s.lookup("http://example.com/a"), [])

    def test_lruBound(self: Any) -> None:
        """
        The store stays within its byte bound by evicting the least recently used entry.
        """
        s = self.makeStore(maxSize=3 * 10_000, maxObjectSize=20_000)
        a = store(s, head("http://e/a"), b"a" * 9000)
        store(s, head("http://e/b"), b"b" * 9000)
        s.touch(a)
        store(s, head("http://e/c"), b"c" * 9000)
        store(s, head("http://e/d"), b"d" * 9000)
        self.assertEqual(s.lookup("http://e/b"), [])
        self.assertEqual(len(s.lookup("http://e/a")), 1)
        self.assertLessEqual(s.size, s.maxSize)

    def test_variants(self: Any) -> None:
        """
        Variants of a URI are kept side by side, most recent first; the same secondary key
        replaces; invalidating the URI removes them all.
        """
        s = self.makeStore()
        store(s, head(variant=b"text/html"), b"html")
        newer = head(variant=b"application/json")
        newer.responseTime = 5.0
        store(s, newer, b"json")
        store(s, head(variant=b"text/html"), b"html2")
        entries = s.lookup("http://example.com/a")
        self.assertEqual(
            [e.head.variant for e in entries], [(b"application/json",), (b"text/html",)]
        )
        self.assertEqual(read(s, entries[1], self.clock).body, b"html2")
        self.assertEqual(s.invalidate("http://example.com/a"), 2)
        self.assertEqual(s.lookup("http://example.com/a"), [])

    def test_refresh(self: Any) -> None:
        """
        Refreshing replaces the head and keeps the body.
        """
        s = self.makeStore()
        entry = store(s, head(), b"body")
        newHead = head()
        newHead.headers = [(b"Cache-Control", b"max-age=600")]
        s.refresh(entry, newHead)
        [again] = s.lookup("http://example.com/a")
        self.assertEqual(again.head.headers, [(b"Cache-Control", b"max-age=600")])
        self.assertEqual(read(s, again, self.clock).body, b"body")

    def test_backPressure(self: Any) -> None:
        """
        A paused sink stops the delivery of a multi-block body until it resumes.
        """
        s = self.makeStore()
        body = os.urandom(4 * BLOCK)
        entry = store(s, head(), body)
        opened = s.openBody(entry)
        sink = Sink(pauseAfter=1)
        opened.deliver(sink)
        self.clock.advance(0)
        self.assertEqual(len(sink.data), 1)
        self.assertIsNone(sink.done)
        sink.pauseAfter = None
        assert sink.producer is not None
        sink.producer.resumeProducing()
        self.clock.advance(0)
        self.assertEqual((sink.body, sink.done), (body, True))


class MemoryStoreTests(StoreTestsMixin, SynchronousTestCase):
    """
    L{MemoryStore}.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def makeStore(self, maxSize: int = 1 << 20, maxObjectSize: int = 1 << 19) -> IStore:
        return MemoryStore(maxSize, maxObjectSize, callLater=self.clock.callLater)

    def test_readyToSend(self) -> None:
        """
        A small body is held as one ready-to-send bytes object, delivered in one call.
        """
        s = MemoryStore(callLater=self.clock.callLater)
        entry = store(s, head(), b"abc", pieces=3)
        assert entry is not None
        self.assertEqual(entry.body, b"abc")
        sink = read(s, entry)
        self.assertEqual((sink.data, sink.done), ([b"abc"], True))

    def test_yieldsToReactor(self) -> None:
        """
        A body larger than one turn's share is delivered over several reactor turns.
        """
        s = MemoryStore(maxSize=8 * TURN, maxObjectSize=4 * TURN, callLater=self.clock.callLater)
        body = b"x" * (2 * TURN + 5)
        entry = store(s, head(), body)
        assert entry is not None
        sink = Sink()
        opened = s.openBody(entry)
        assert opened is not None
        opened.deliver(sink)
        self.assertIsNone(sink.done)
        self.assertEqual(len(sink.body), TURN)
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual((len(sink.body), sink.done), (len(body), True))


class DiskStoreTests(StoreTestsMixin, SynchronousTestCase):
    """
    L{DiskStore}: files, restarts, damage.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = tempfile.mkdtemp(prefix="caplab-cache-test-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def makeStore(self, maxSize: int = 1 << 20, maxObjectSize: int = 1 << 19) -> DiskStore:
        return DiskStore(
            self.directory,
            maxSize,
            maxObjectSize,
            runInThread=synchronously,
            clock=self.clock,
        )

    def files(self) -> list[str]:
        return sorted(os.listdir(self.directory))

    def test_survivesRestart(self) -> None:
        """
        A new store on the same directory finds the committed entries, heads and bodies.
        """
        body = os.urandom(2 * BLOCK + 7)
        store(self.makeStore(), head(variant=b"text/html"), body)
        again = self.makeStore()
        [entry] = again.lookup("http://example.com/a")
        self.assertEqual(entry.head, head(variant=b"text/html"))
        self.assertEqual(read(again, entry, self.clock).body, body)

    def test_othersLeftAlone(self) -> None:
        """
        Files that are not the store's are neither loaded nor deleted; a new directory is
        private to its user.
        """
        fresh = os.path.join(self.directory, "fresh")
        DiskStore(fresh, runInThread=synchronously, clock=self.clock)
        self.assertEqual(os.stat(fresh).st_mode & 0o777, 0o700)
        os.rmdir(fresh)
        s = self.makeStore()
        for name in ("notes.txt", "notes.tmp"):
            with open(os.path.join(self.directory, name), "w") as f:
                f.write("mine")
        store(s, head(), b"x")
        self.makeStore()
        self.assertEqual(len([n for n in self.files() if n.endswith(".entry")]), 1)
        self.assertIn("notes.tmp", self.files())
        self.assertIn("notes.txt", self.files())

    def test_atomic(self) -> None:
        """
        Until commit only a temporary file exists, which a restart deletes; an abort
        leaves nothing.
        """
        s = self.makeStore()
        writer = s.writer(head())
        assert writer is not None
        writer.write(b"x" * (BLOCK + 1))
        self.assertTrue(all(name.endswith(".tmp") for name in self.files()))
        self.makeStore()
        self.assertEqual(self.files(), [])
        writer.abort()
        writer = s.writer(head())
        assert writer is not None
        writer.write(b"y")
        writer.abort()
        self.assertEqual(self.files(), [])

    def test_corruptSmallDropped(self) -> None:
        """
        A one-block body that fails its checksum is dropped at open, before anything is
        sent, and its file deleted.
        """
        s = self.makeStore()
        entry = store(s, head(), b"hello world")
        assert isinstance(entry, DiskEntry)
        with open(entry.path, "r+b") as f:
            f.seek(6)
            f.write(b"X")
        self.assertIsNone(s.openBody(entry))
        self.assertEqual(s.lookup("http://example.com/a"), [])
        self.assertEqual(self.files(), [])

    def test_corruptLaterBlock(self) -> None:
        """
        A damaged later block ends the delivery as incomplete and drops the entry.
        """
        s = self.makeStore()
        entry = store(s, head(), os.urandom(3 * BLOCK))
        assert isinstance(entry, DiskEntry)
        with open(entry.path, "r+b") as f:
            f.seek(2 * (BLOCK + 8) + 100)
            f.write(b"\x00\x01\x02")
        sink = read(s, entry, self.clock)
        self.assertFalse(sink.done)
        self.assertEqual(len(sink.body), 2 * BLOCK)
        self.assertEqual(s.lookup("http://example.com/a"), [])

    def test_truncatedDroppedAtLoad(self) -> None:
        """
        A truncated file, or one with a damaged header record, is dropped at start-up.
        """
        s = self.makeStore()
        one = store(s, head("http://e/1"), b"a" * 5000)
        two = store(s, head("http://e/2"), b"b" * 5000)
        store(s, head("http://e/3"), b"c" * 5000)
        assert isinstance(one, DiskEntry) and isinstance(two, DiskEntry)
        with open(one.path, "r+b") as f:
            f.truncate(3000)
        size = os.path.getsize(two.path)
        with open(two.path, "r+b") as f:
            f.seek(size - 30)
            f.write(b"#")
        again = self.makeStore()
        self.assertEqual(again.lookup("http://e/1"), [])
        self.assertEqual(again.lookup("http://e/2"), [])
        self.assertEqual(len(again.lookup("http://e/3")), 1)
        self.assertEqual(len(self.files()), 1)

    def test_truncatedAfterLoad(self) -> None:
        """
        A file truncated while the store runs is detected at open and dropped.
        """
        s = self.makeStore()
        entry = store(s, head(), b"a" * 5000)
        assert isinstance(entry, DiskEntry)
        with open(entry.path, "r+b") as f:
            f.truncate(100)
        self.assertIsNone(s.openBody(entry))
        self.assertEqual(s.lookup("http://example.com/a"), [])

    def test_boundAcrossRestart(self) -> None:
        """
        The byte bound holds for what a restart finds: the oldest files go.
        """
        s = self.makeStore(maxSize=100_000, maxObjectSize=50_000)
        for i in range(3):
            store(s, head(f"http://e/{i}"), b"z" * 30_000)
            entry = s.lookup(f"http://e/{i}")[0]
            assert isinstance(entry, DiskEntry)
            os.utime(entry.path, (1000 + i, 1000 + i))
        again = self.makeStore(maxSize=70_000, maxObjectSize=50_000)
        self.assertEqual(again.lookup("http://e/0"), [])
        self.assertEqual(len(again.lookup("http://e/2")), 1)
        self.assertEqual(len(self.files()), 2)

    def test_refreshPersists(self) -> None:
        """
        A refreshed head is written to disk (a new file replaces the old one).
        """
        s = self.makeStore()
        entry = store(s, head(), b"body" * 30_000)
        assert isinstance(entry, DiskEntry)
        oldPath = entry.path
        newHead = head()
        newHead.headers = [(b"Cache-Control", b"max-age=600")]
        newHead.responseTime += 100
        s.refresh(entry, newHead)
        self.assertNotEqual(entry.path, oldPath)
        self.assertEqual(len(self.files()), 1)
        again = self.makeStore()
        [loaded] = again.lookup("http://example.com/a")
        self.assertEqual(loaded.head.headers, [(b"Cache-Control", b"max-age=600")])
        self.assertEqual(read(again, loaded, self.clock).body, b"body" * 30_000)

    def test_servedWhileRewriting(self) -> None:
        """
        While a refreshed entry's file is being rewritten, the old file still serves it.
        """
        pending: list[tuple[Callable[[], Any], Deferred[Any]]] = []

        def later(function: Callable[[], Any]) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append((function, d))
            return d

        s = DiskStore(self.directory, runInThread=synchronously, clock=self.clock)
        entry = store(s, head(), b"body" * 1000)
        assert entry is not None
        s.runInThread = later
        newHead = head()
        newHead.headers = [(b"Cache-Control", b"max-age=600"), (b"X-Longer", b"x" * 50)]
        newHead.responseTime += 100
        s.refresh(entry, newHead)
        self.assertEqual(read(s, entry, self.clock).body, b"body" * 1000)
        function, d = pending.pop()
        d.callback(function())
        self.assertEqual(read(s, entry, self.clock).body, b"body" * 1000)
        [(function, d)] = pending  # the old file's removal, in a thread too
        d.callback(function())
        self.assertEqual(len(self.files()), 1)

    def test_rewriteThrottled(self) -> None:
        """
        A refresh soon after the file was written updates only the index.
        """
        s = self.makeStore()
        entry = store(s, head(), b"body")
        assert isinstance(entry, DiskEntry)
        path = entry.path
        newHead = head()
        newHead.headers = [(b"Cache-Control", b"max-age=600")]
        newHead.responseTime += 5
        s.refresh(entry, newHead)
        self.assertEqual(entry.path, path)
        self.assertEqual(s.lookup("http://example.com/a")[0].head.headers, newHead.headers)


class CorruptionPropertyTests(SynchronousTestCase):
    """
    Whatever single byte of a stored file is damaged, the store never delivers a complete
    body that differs from what was stored.
    """

    @settings(max_examples=60, deadline=None)
    @given(
        length=st.integers(0, 3 * BLOCK),
        where=st.floats(0, 1, exclude_max=True),
        xor=st.integers(1, 255),
        restart=st.booleans(),
    )
    def test_neverServesDamage(self, length: int, where: float, xor: int, restart: bool) -> None:
        directory = tempfile.mkdtemp(prefix="caplab-cache-test-")
        try:
            clock = Clock()

            def makeStore() -> DiskStore:
                return DiskStore(directory, runInThread=synchronously, clock=clock)

            s = makeStore()
            body = bytes(range(256)) * (length // 256) + b"z" * (length % 256)
            entry = store(s, head(), body)
            assert isinstance(entry, DiskEntry) and entry.path is not None
            size = os.path.getsize(entry.path)
            offset = int(where * size)
            with open(entry.path, "r+b") as f:
                f.seek(offset)
                byte = f.read(1)[0]
                f.seek(offset)
                f.write(bytes([byte ^ xor]))
            if restart:
                s = makeStore()
            entries = s.lookup("http://example.com/a")
            if not entries:
                return
            opened = s.openBody(entries[0])
            if opened is None:
                return
            sink = Sink()
            opened.deliver(sink)
            while sink.done is None and clock.getDelayedCalls():
                clock.advance(0)
            if sink.done:
                self.assertEqual(sink.body, body)
                self.assertEqual(entries[0].head, head())
        finally:
            shutil.rmtree(directory, True)


class BlocksTests(SynchronousTestCase):
    """
    Streamed bytes are cut into full blocks plus a rest, whatever the pieces.
    """

    @settings(max_examples=50, deadline=None)
    @given(st.lists(st.integers(0, 3 * BLOCK), max_size=8))
    def test_blocks(self, sizes: list[int]) -> None:
        from caplab.proxy.cache.bodies import Blocks

        blocks = Blocks()
        data = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
        out = [block for piece in data for block in blocks.add(piece)]
        self.assertTrue(all(len(block) == BLOCK for block in out))
        self.assertEqual(b"".join(out) + (blocks.rest() or b""), b"".join(data))


class VariantIndexTests(SynchronousTestCase):
    """
    Variants of a URI are indexed by their secondary key, and capped per URI.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def variant(self, value: bytes, names: tuple[bytes, ...] = (b"accept-language",)) -> EntryHead:
        return EntryHead(
            uri="http://example.com/a",
            varyNames=names,
            variant=(value,) * len(names),
            code=200,
            phrase=b"OK",
            headers=[(b"Cache-Control", b"max-age=60")],
            requestTime=1.0,
            responseTime=2.0,
        )

    def test_selectIsOneLookup(self) -> None:
        """
        Choosing among many stored variants computes the request's secondary key once and
        looks it up: no scan of the variants.
        """
        from caplab.proxy.cache import rules

        s = MemoryStore(maxVariants=5000, callLater=self.clock.callLater)
        for i in range(1000):
            store(s, self.variant(b"x-%d" % i), b"body %d" % i)
        calls: list[object] = []
        original = rules.secondaryKey

        def counting(*args: Any) -> Any:
            calls.append(args)
            return original(*args)

        self.patch(rules, "secondaryKey", counting)
        entry, stored = s.select("http://example.com/a", [(b"Accept-Language", b"x-17")])
        self.assertTrue(stored)
        assert entry is not None
        self.assertEqual(read(s, entry).body, b"body 17")
        self.assertEqual(len(calls), 1)
        self.assertEqual(
            s.select("http://example.com/a", [(b"Accept-Language", b"x-none")]), (None, True)
        )
        self.assertEqual(s.select("http://example.com/b", []), (None, False))

    def test_capEvictsOldestAndCounts(self) -> None:
        """
        A URI keeps at most C{maxVariants} variants: storing one more evicts the oldest
        stored, and L{IStore.variantEvictions} counts it for the metrics.
        """
        s = MemoryStore(maxVariants=3, callLater=self.clock.callLater)
        for value in (b"a", b"b", b"c"):
            store(s, self.variant(value), value)
        self.assertEqual(s.variantEvictions, 0)
        store(s, self.variant(b"d"), b"d")
        store(s, self.variant(b"e"), b"e")
        held = sorted(e.head.variant[0] or b"" for e in s.lookup("http://example.com/a"))
        self.assertEqual(held, [b"c", b"d", b"e"])
        self.assertEqual(s.variantEvictions, 2)
        self.assertEqual(len(s), 3)
        store(s, self.variant(b"c"), b"c2")  # replacing a variant evicts nothing
        self.assertEqual(s.variantEvictions, 2)

    def test_newVaryNamesReplaceOld(self) -> None:
        """
        A response stored under other C{Vary} field names than the stored variants makes
        them obsolete: the origin negotiates on other fields now.
        """
        s = MemoryStore(callLater=self.clock.callLater)
        store(s, self.variant(b"en"), b"en")
        store(s, self.variant(b"en"), b"en")
        store(s, self.variant(b"gzip", (b"accept-encoding",)), b"gz")
        entries = s.lookup("http://example.com/a")
        self.assertEqual([e.head.varyNames for e in entries], [(b"accept-encoding",)])
        plain = head()
        store(s, plain, b"plain")
        self.assertEqual(s.select("http://example.com/a", [])[0].head, plain)  # type: ignore[union-attr]
        self.assertEqual(len(s), 1)


class AccountingTests(SynchronousTestCase):
    """
    What the store counts against its bound is what its entries really cost in memory.
    """

    def test_smallObjectsCountedAsTheyCost(self) -> None:
        """
        For small objects with typical header fields, the bytes a full store counts are
        within 25 % of the memory Python allocated for them (measured by tracemalloc), so
        C{--cache-size} bounds memory; and the bound holds.
        """
        import gc
        import tracemalloc

        from caplab.proxy.cache.rules import formatHTTPDate

        clock = Clock()
        count = 2000
        s = MemoryStore(256 << 20, 1 << 20, callLater=clock.callLater)

        def response(i: int) -> tuple[EntryHead, bytes]:
            h = head(f"http://origin.example/objects/{i}.txt")
            h.headers = [
                (b"Server", b"nginx/1.22.1"),
                (b"Date", formatHTTPDate(1_795_000_000 + i // 10)),
                (b"Content-Type", b"text/plain"),
                (b"Last-Modified", formatHTTPDate(1_794_000_000 + i)),
                (b"ETag", b'"6745a1c0-%x"' % i),
                (b"Cache-Control", b"max-age=600"),
                (b"Accept-Ranges", b"bytes"),
            ]
            h.requestTime = 1_795_000_000.0 + i
            h.responseTime = 1_795_000_000.5 + i
            return h, b"%08d" % i + b"x" * 92

        gc.collect()
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            store(s, *response(i))
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        self.assertEqual(len(s), count)
        ratio = traced / s.size
        self.assertTrue(0.8 <= ratio <= 1.25, f"traced {traced}, counted {s.size}: {ratio:.2f}")

        small = MemoryStore(100 * (s.size // count), 1 << 20, callLater=clock.callLater)
        for i in range(count):
            store(small, *response(i))
        self.assertLessEqual(small.size, small.maxSize)
        self.assertGreaterEqual(len(small), 90)
        self.assertIn(len(small), range(95, 101))


class DamagedDirectoryTests(SynchronousTestCase):
    """
    A damaged cache directory never stops the store from starting: each bad entry is
    logged on one line and dropped; every field of a record is checked by type.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.directory = tempfile.mkdtemp(prefix="caplab-cache-test-")
        self.addCleanup(shutil.rmtree, self.directory, True)

    def load(self) -> tuple[DiskStore, list[str]]:
        from twisted.logger import capturedLogs, formatEvent

        with capturedLogs() as events:
            s = DiskStore(self.directory, runInThread=synchronously, clock=self.clock)
        return s, [formatEvent(e) for e in events]

    def test_directoryNamedLikeAnEntry(self) -> None:
        """
        A directory named like an entry is logged and left alone; the rest loads.
        """
        os.mkdir(os.path.join(self.directory, "abc-dir.entry"))
        writeEntryFile(os.path.join(self.directory, "good.entry"), goodRecord(), b"good")
        s, lines = self.load()
        self.assertEqual(len(s.lookup("http://example.com/good")), 1)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("abc-dir.entry: not a regular file", lines[0])
        self.assertTrue(os.path.isdir(os.path.join(self.directory, "abc-dir.entry")))

    def test_wrongTypesDropped(self) -> None:
        """
        Records with a valid checksum whose fields have the wrong types (a null phrase, a
        string for a number, a bad header line, a missing field ...) are each logged on one
        line naming the field, and their files deleted; good entries load.
        """
        bad = {
            "phrase-null": goodRecord(phrase=None),
            "code-string": goodRecord(code="200"),
            "code-bool": goodRecord(code=True),
            "time-string": goodRecord(responseTime="soon"),
            "time-nan": b'{"uri": "http://e/", "varyNames": [], "variant": [], "code": 200, '
            b'"phrase": "OK", "headers": [], "requestTime": NaN, "responseTime": 1, '
            b'"bodyLength": 0}',
            "length-negative": goodRecord(bodyLength=-1),
            "headers-dict": goodRecord(headers={"a": "b"}),
            "header-number": goodRecord(headers=[["X-A", 1]]),
            "header-injection": goodRecord(headers=[["X-A", "a\r\nSet-Cookie: s=1"]]),
            "vary-mismatch": goodRecord(varyNames=["accept"], variant=[]),
            "uri-missing": {k: v for k, v in goodRecord().items() if k != "uri"},
            "list-record": [1, 2, 3],
            "not-json": b"\xff\xfe{",
            "partial-wrong": goodRecord(partial=[0, "4", 10]),
        }
        for name, record in bad.items():
            writeEntryFile(os.path.join(self.directory, f"{name}.entry"), record, b"good")
        writeEntryFile(os.path.join(self.directory, "good.entry"), goodRecord(), b"good")
        s, lines = self.load()
        self.assertEqual(len(s), 1)
        self.assertEqual(read(s, s.lookup("http://example.com/good")[0], self.clock).body, b"good")
        logged = [line for line in lines if "dropping damaged file" in line]
        # the first LOAD_LOG_LINES one by one, then one line with the count
        self.assertEqual(len(logged), 10)
        self.assertEqual(len(lines), 11, lines)
        self.assertIn("4 more damaged or foreign files", lines[-1])
        self.assertTrue(all("\n" not in line for line in lines))
        self.assertEqual(sorted(os.listdir(self.directory)), ["good.entry"])

    def test_eachFieldNamed(self) -> None:
        """
        The reason given names the bad field and what it held.
        """
        from caplab.proxy.cache.bodies import CorruptEntry

        def reason(record: dict[str, Any]) -> str:
            import json

            try:
                EntryHead.fromJSON(json.dumps(record).encode())
            except CorruptEntry as e:
                return str(e)
            return "accepted"

        self.assertEqual(
            reason(goodRecord(phrase=None)), "field 'phrase' is NoneType, not a string"
        )
        self.assertIn("field 'code'", reason(goodRecord(code="200")))
        self.assertIn("field 'requestTime'", reason(goodRecord(requestTime=None)))
        self.assertIn("field 'variant'", reason(goodRecord(variant=[1])))
        self.assertEqual(reason(goodRecord()), "accepted")

    def test_oldRecordsRead(self) -> None:
        """
        A record written by an older caplab (C{Age} and C{Content-Length} among the fields)
        loads: the age is kept apart, the framing dropped.
        """
        record = goodRecord(
            headers=[["Cache-Control", "max-age=60"], ["Age", "30"], ["Content-Length", "4"]]
        )
        del record["bodyLength"]
        record["bodyLength"] = 4
        writeEntryFile(os.path.join(self.directory, "old.entry"), record, b"good")
        s, lines = self.load()
        [entry] = s.lookup("http://example.com/good")
        self.assertEqual(entry.head.headers, [(b"Cache-Control", b"max-age=60")])
        self.assertEqual(entry.head.age, 30.0)
        self.assertEqual(lines, [])

    def test_oldRecordHugeAge(self) -> None:
        """
        An old record's C{Age} of thousands of digits is read as C{Age} is everywhere
        (2^31), not a reason to fail the load.
        """
        record = goodRecord(headers=[["Cache-Control", "max-age=60"], ["Age", "9" * 5000]])
        writeEntryFile(os.path.join(self.directory, "old.entry"), record, b"good")
        s, lines = self.load()
        [entry] = s.lookup("http://example.com/good")
        self.assertEqual(entry.head.age, float(2**31))
        self.assertEqual(lines, [])


class WriteFailureLogTests(SynchronousTestCase):
    """
    Failed writes (a full disk) are logged once per interval with a running count, and a
    summary when the burst ends, not once per response.
    """

    def test_diskFullRateLimited(self) -> None:
        import errno

        from twisted.internet.defer import fail
        from twisted.logger import capturedLogs, formatEvent

        from caplab.proxy.cache.disk import WRITE_LOG_INTERVAL

        clock = Clock()
        directory = tempfile.mkdtemp(prefix="caplab-cache-test-")
        self.addCleanup(shutil.rmtree, directory, True)

        def full(function: Callable[[], Any]) -> Deferred[Any]:
            return fail(OSError(errno.ENOSPC, "No space left on device"))

        s = DiskStore(directory, runInThread=full, clock=clock)
        with capturedLogs() as events:
            for i in range(500):
                self.assertIsNone(store(s, head(f"http://e/{i}"), b"x"))
                clock.advance(0.1)
            lines = [formatEvent(e) for e in events]
            self.assertEqual(len(lines), 1, lines)
            self.assertIn("could not store http://e/0", lines[0])
            self.assertIn("No space left on device", lines[0])
            clock.advance(WRITE_LOG_INTERVAL)  # the burst goes on ... then stops
            lines = [formatEvent(e) for e in events]
            self.assertEqual(len(lines), 2, lines)
            self.assertIn("could not store http://e/499", lines[1])
            self.assertIn("(499 times in the last 60 s, 500 in this burst)", lines[1])
            clock.advance(WRITE_LOG_INTERVAL)
            lines = [formatEvent(e) for e in events]
            self.assertEqual(len(lines), 3, lines)
            self.assertIn("cache: failed writes: the burst is over, 500 in all", lines[2])
            store(s, head("http://e/later"), b"x")
        self.assertEqual(len(events), 4)
        self.assertEqual(os.listdir(directory), [])
