"""
Where the cache keeps responses: an interface (L{IStore}), the in-memory index both stores
share, and the in-memory store (L{MemoryStore}); the disk store is L{caplab.proxy.cache.disk}.

Both stores keep the index of what they hold in memory: the URI, the secondary (Vary) key,
the status and header fields, the times and the body length of every entry, so a lookup never
touches the disk.  They are bounded in bytes and evict the least recently used entries; an
object larger than C{maxObjectSize} is never stored.

Nothing is visible before it is whole: an L{IEntryWriter} collects the body while it streams
to the client, and only L{IEntryWriter.commit} (after the origin ended the body properly)
adds the entry; L{IEntryWriter.abort} throws it away.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from caplab.proxy.hooks import Headers, IBodySink

T = TypeVar("T")

#: Size of the body blocks stored on disk and of the pieces a hit is written in.
BLOCK = 65536

#: Bytes a body producer passes on in one reactor turn before it lets others run.
TURN = 1 << 20

#: Accounting overhead of one entry beyond its header and body bytes.
ENTRY_OVERHEAD = 256


@dataclass
class EntryHead:
    """
    A stored response apart from its body: which request it answers and its head.

    @ivar uri: the primary cache key (absolute URI).
    @ivar varyNames: the request fields the response varies on (lower-case).
    @ivar variant: the request's normalized values of those fields (the secondary key).
    """

    uri: str
    varyNames: tuple[bytes, ...]
    variant: tuple[bytes | None, ...]
    code: int
    phrase: bytes
    headers: Headers
    requestTime: float
    responseTime: float

    @property
    def key(self) -> str:
        """
        The entry's key: URI and secondary key.
        """
        if not self.varyNames:
            return self.uri
        parts = [
            f"{n.decode('latin-1')}={'' if v is None else v.decode('latin-1')!r}"
            for n, v in zip(self.varyNames, self.variant, strict=True)
        ]
        return self.uri + "\n" + "\n".join(parts)

    def headerBytes(self) -> int:
        return sum(len(n) + len(v) + 4 for n, v in self.headers)

    def toJSON(self, bodyLength: int) -> bytes:
        def text(b: bytes | None) -> str | None:
            return None if b is None else b.decode("latin-1")

        return json.dumps(
            {
                "uri": self.uri,
                "varyNames": [text(n) for n in self.varyNames],
                "variant": [text(v) for v in self.variant],
                "code": self.code,
                "phrase": text(self.phrase),
                "headers": [[text(n), text(v)] for n, v in self.headers],
                "requestTime": self.requestTime,
                "responseTime": self.responseTime,
                "bodyLength": bodyLength,
            }
        ).encode("utf-8")

    @classmethod
    def fromJSON(cls, data: bytes) -> tuple[EntryHead, int]:
        record = json.loads(data)

        def raw(s: str | None) -> bytes | None:
            return None if s is None else s.encode("latin-1")

        head = cls(
            uri=str(record["uri"]),
            varyNames=tuple(n.encode("latin-1") for n in record["varyNames"]),
            variant=tuple(raw(v) for v in record["variant"]),
            code=int(record["code"]),
            phrase=record["phrase"].encode("latin-1"),
            headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in record["headers"]],
            requestTime=float(record["requestTime"]),
            responseTime=float(record["responseTime"]),
        )
        return head, int(record["bodyLength"])


@dataclass(eq=False)
class StoredEntry:
    """
    One stored response as the index knows it.

    @ivar size: the bytes it counts against the store's bound.
    @ivar chunks: the body, ready to send (memory store only).
    @ivar path: its file (disk store only).
    @ivar derived: a slot for what the cache computes once per entry (its rules).
    """

    head: EntryHead
    bodyLength: int
    size: int
    chunks: list[bytes] = field(default_factory=list)
    path: str | None = None
    derived: Any = None
    #: False once removed, evicted or replaced.
    live: bool = True
    #: The size of its file (disk store only), checked when it is opened.
    fileSize: int = 0
    #: The response time of the head its file holds (disk store only).
    persisted: float = 0.0
    #: Whether its file is being rewritten (disk store only).
    rewriting: bool = False


class IBody(Protocol):
    """
    An opened stored body, checked as far as it can be before the head is sent.
    """

    def deliver(self, sink: IBodySink) -> None: ...

    def close(self) -> None: ...


class IEntryWriter(Protocol):
    """
    Collects one response body for the store while it streams to the client.
    """

    def write(self, data: bytes) -> bool:
        """
        Add body bytes; False once the writer gave up (too large, failed): stop writing.
        """

    def commit(self) -> Deferred[StoredEntry | None]:
        """
        The body is complete: make the entry visible (fires with it, or None if not stored).
        """

    def abort(self) -> None:
        """
        The body is not complete: throw everything away.
        """


class IStore(Protocol):
    """
    The cache's storage: an index in memory, bodies wherever the store keeps them.
    """

    maxSize: int
    maxObjectSize: int

    def lookup(self, uri: str) -> list[StoredEntry]:
        """
        The entries stored for C{uri} (every variant), most recent first.
        """

    def touch(self, entry: StoredEntry) -> None:
        """
        Mark C{entry} as just used (LRU).
        """

    def openBody(self, entry: StoredEntry) -> IBody | None:
        """
        The body of C{entry} to deliver, or None if it is gone or damaged (then dropped).
        """

    def writer(self, head: EntryHead) -> IEntryWriter | None:
        """
        A writer for a new entry (it replaces the entry with the same key when it commits),
        or None if the store takes nothing now.
        """

    def refresh(self, entry: StoredEntry, head: EntryHead) -> StoredEntry:
        """
        Replace the head of C{entry} (a 304 refreshed it); the body stays.
        """

    def remove(self, entry: StoredEntry) -> None: ...

    def invalidate(self, uri: str) -> int:
        """
        Remove every variant stored for C{uri}; the number removed.
        """


@implementer(IPushProducer)
class ChunkProducer:
    """
    Delivers body pieces to an L{IBodySink}, pausing with it, and giving the reactor back
    after L{TURN} bytes so that one large hit does not starve the other connections.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        sink: IBodySink,
        callLater: Callable[..., IDelayedCall],
        onDone: Callable[[bool], None] | None = None,
    ) -> None:
        self._chunks = chunks
        self._sink = sink
        self._callLater = callLater
        self._onDone = onDone
        self._paused = False
        self._finished = False
        self._scheduled: IDelayedCall | None = None

    def start(self) -> None:
        self._sink.bodyStarted(self)
        self._run()

    def _run(self) -> None:
        self._scheduled = None
        sent = 0
        while not self._paused and not self._finished:
            if sent >= TURN:
                self._scheduled = self._callLater(0, self._run)
                return
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._finish(True)
                return
            except CorruptEntry:
                self._finish(False)
                return
            sent += len(chunk)
            self._sink.bodyData(chunk)

    def _finish(self, complete: bool) -> None:
        self._finished = True
        if self._onDone is not None:
            self._onDone(complete)
        self._sink.bodyDone(complete)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if not self._paused or self._finished:
            return
        self._paused = False
        if self._scheduled is None:
            self._scheduled = self._callLater(0, self._run)

    def stopProducing(self) -> None:
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        self._scheduled = None
        if not self._finished:
            self._finished = True
            if self._onDone is not None:
                self._onDone(False)


class CorruptEntry(Exception):
    """
    A stored file failed a check.
    """


class StoreIndex:
    """
    The in-memory index and LRU bound shared by both stores.
    """

    log = Logger()

    def __init__(self, maxSize: int, maxObjectSize: int) -> None:
        self.maxSize = maxSize
        self.maxObjectSize = min(maxObjectSize, maxSize)
        self.size = 0
        self._lru: OrderedDict[str, StoredEntry] = OrderedDict()
        self._byURI: dict[str, dict[str, StoredEntry]] = {}

    def __len__(self) -> int:
        return len(self._lru)

    def lookup(self, uri: str) -> list[StoredEntry]:
        variants = self._byURI.get(uri)
        if not variants:
            return []
        if len(variants) == 1:
            return list(variants.values())
        return sorted(variants.values(), key=lambda e: e.head.responseTime, reverse=True)

    def touch(self, entry: StoredEntry) -> None:
        if entry.live:
            self._lru.move_to_end(entry.head.key)

    def _add(self, entry: StoredEntry) -> None:
        key = entry.head.key
        old = self._lru.get(key)
        if old is not None:
            self.remove(old)
        self._lru[key] = entry
        self._byURI.setdefault(entry.head.uri, {})[key] = entry
        self.size += entry.size
        self._evict()

    def _evict(self) -> None:
        while self.size > self.maxSize and self._lru:
            _, oldest = next(iter(self._lru.items()))
            self.remove(oldest)

    def remove(self, entry: StoredEntry) -> None:
        key = entry.head.key
        if self._lru.get(key) is not entry:
            return
        del self._lru[key]
        variants = self._byURI[entry.head.uri]
        del variants[key]
        if not variants:
            del self._byURI[entry.head.uri]
        self.size -= entry.size
        entry.live = False
        self._discard(entry)

    def _discard(self, entry: StoredEntry) -> None:
        """
        Free what the entry held outside the index.
        """

    def invalidate(self, uri: str) -> int:
        variants = list(self._byURI.get(uri, {}).values())
        for entry in variants:
            self.remove(entry)
        return len(variants)

    def _rekey(self, entry: StoredEntry, head: EntryHead) -> None:
        """
        Give C{entry} a new head, keeping its place in the index.
        """
        self.size -= entry.size
        entry.size += head.headerBytes() - entry.head.headerBytes()
        entry.head = head
        entry.derived = None
        self.size += entry.size
        self._evict()


class MemoryStore(StoreIndex):
    """
    Entries in memory, their bodies held as ready-to-send pieces of up to L{BLOCK} bytes.
    """

    def __init__(
        self,
        maxSize: int = 64 << 20,
        maxObjectSize: int = 8 << 20,
        callLater: Callable[..., IDelayedCall] | None = None,
    ) -> None:
        super().__init__(maxSize, maxObjectSize)
        if callLater is None:
            from twisted.internet import reactor

            callLater = reactor.callLater
        self.callLater = callLater

    def openBody(self, entry: StoredEntry) -> IBody | None:
        if not entry.live:
            return None
        return _MemoryBody(entry.chunks, self.callLater)

    def writer(self, head: EntryHead) -> IEntryWriter | None:
        if self.maxObjectSize <= 0:
            return None
        return _MemoryWriter(self, head)

    def refresh(self, entry: StoredEntry, head: EntryHead) -> StoredEntry:
        if entry.live:
            self._rekey(entry, head)
        return entry


class _MemoryBody:
    def __init__(self, chunks: list[bytes], callLater: Callable[..., IDelayedCall]) -> None:
        self._chunks = chunks
        self._callLater = callLater

    def deliver(self, sink: IBodySink) -> None:
        if len(self._chunks) <= 1:
            sink.bodyStarted(NoProducer())
            if self._chunks:
                sink.bodyData(self._chunks[0])
            sink.bodyDone(True)
            return
        ChunkProducer(iter(self._chunks), sink, self._callLater).start()

    def close(self) -> None:
        pass


@implementer(IPushProducer)
class NoProducer:
    """
    The producer of a body delivered in one go: nothing to pause.
    """

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class Blocks:
    """
    Gathers streamed bytes into blocks of L{BLOCK} bytes.
    """

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.pendingLength = 0
        self.total = 0

    def add(self, data: bytes) -> Iterator[bytes]:
        """
        Add C{data}; yield every block that is now full.
        """
        self.total += len(data)
        if self.pendingLength + len(data) < BLOCK:
            self.pending.append(data)
            self.pendingLength += len(data)
            return
        joined = b"".join([*self.pending, data]) if self.pending else data
        offset = 0
        while len(joined) - offset >= BLOCK:
            yield joined[offset : offset + BLOCK]
            offset += BLOCK
        rest = joined[offset:]
        self.pending = [rest] if rest else []
        self.pendingLength = len(rest)

    def rest(self) -> bytes | None:
        if not self.pendingLength:
            return None
        data = b"".join(self.pending)
        self.pending = []
        self.pendingLength = 0
        return data


class _MemoryWriter:
    def __init__(self, store: MemoryStore, head: EntryHead) -> None:
        self._store = store
        self._head = head
        self._blocks = Blocks()
        self._chunks: list[bytes] = []
        self._done = False

    def write(self, data: bytes) -> bool:
        if self._done:
            return False
        if self._blocks.total + len(data) > self._store.maxObjectSize:
            self.abort()
            return False
        self._chunks.extend(self._blocks.add(data))
        return True

    def commit(self) -> Deferred[StoredEntry | None]:
        if self._done:
            return succeed(None)
        self._done = True
        rest = self._blocks.rest()
        if rest is not None:
            self._chunks.append(rest)
        length = self._blocks.total
        entry = StoredEntry(
            head=self._head,
            bodyLength=length,
            size=length + self._head.headerBytes() + ENTRY_OVERHEAD,
            chunks=self._chunks,
        )
        if entry.size > self._store.maxSize:
            return succeed(None)
        self._store._add(entry)
        return succeed(entry)

    def abort(self) -> None:
        self._done = True
        self._chunks = []
        self._blocks = Blocks()
