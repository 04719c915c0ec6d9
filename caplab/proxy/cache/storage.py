"""
Where the cache keeps responses: an interface (L{IStore}) and two stores, in memory
(L{MemoryStore}) and on disk (L{DiskStore}).

Both stores keep the index of what they hold in memory: the URI, the secondary (Vary) key,
the status and header fields, the times and the body length of every entry, so a lookup never
touches the disk.  They are bounded in bytes and evict the least recently used entries; an
object larger than C{maxObjectSize} is never stored.

Nothing is visible before it is whole: an L{IEntryWriter} collects the body while it streams
to the client, and only L{IEntryWriter.commit} (after the origin ended the body properly)
adds the entry; L{IEntryWriter.abort} throws it away.

Disk I/O and the reactor
========================

L{DiskStore} writes each body block (at most L{BLOCK} bytes) to its temporary file when the
block is full: a small write that lands in the page cache, done inline.  The slow part of an
atomic write, C{fsync} and the renames, runs in a thread (C{runInThread}, by default the
reactor's thread pool), as does the rewrite of a file whose header fields a 304 refreshed.
Serving a disk hit reads one block per step and verifies it before it is passed on (a block
is L{BLOCK} bytes, read inline, normally from the page cache), pausing with the consumer.
The index is rebuilt when the store is created (before the reactor runs) by reading only the
small trailer and header record of each file.

File format: body blocks C{[u32 length][data][u32 crc32]}, then the header record (JSON),
then a trailer C{[u32 length of header record][u32 crc32 of it][8-byte magic]}.  A file whose
trailer, header record or any block fails its check, or whose size is not what the trailer
says, is dropped (deleted) and never served; a block is checked before its bytes are sent, and
an object of one block (up to 64 KiB) is checked whole before its response head is returned.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, BinaryIO, Protocol, TypeVar

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

#: Seconds of response time between two rewrites of a refreshed entry's file.
REWRITE_INTERVAL = 60.0

_MAGIC = b"CAPLABC1"
_TRAILER = struct.Struct(">II8s")
_BLOCK_HEAD = struct.Struct(">I")
_CRC = struct.Struct(">I")


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


class _Index:
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


class MemoryStore(_Index):
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
            sink.bodyStarted(_NoProducer())
            if self._chunks:
                sink.bodyData(self._chunks[0])
            sink.bodyDone(True)
            return
        ChunkProducer(iter(self._chunks), sink, self._callLater).start()

    def close(self) -> None:
        pass


@implementer(IPushProducer)
class _NoProducer:
    """
    The producer of a body delivered in one go: nothing to pause.
    """

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Blocks:
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
        self._blocks = _Blocks()
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
        self._blocks = _Blocks()


def deferToReactorThread(function: Callable[[], T]) -> Deferred[T]:
    """
    Run C{function} in the reactor's thread pool.
    """
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThreadPool

    return deferToThreadPool(reactor, reactor.getThreadPool(), function)  # type: ignore[arg-type, attr-defined]


class DiskStore(_Index):
    """
    Entries in files under C{directory}, bounded in bytes, kept across restarts.

    @param runInThread: runs a blocking function (fsync, rename, rewrite) off the reactor
        thread and returns a Deferred of its result.
    """

    def __init__(
        self,
        directory: str,
        maxSize: int = 64 << 20,
        maxObjectSize: int = 8 << 20,
        callLater: Callable[..., IDelayedCall] | None = None,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]] = deferToReactorThread,
    ) -> None:
        super().__init__(maxSize, maxObjectSize)
        if callLater is None:
            from twisted.internet import reactor

            callLater = reactor.callLater
        self.callLater = callLater
        self.directory = os.path.abspath(directory)
        self.runInThread = runInThread
        self._counter = 0
        os.makedirs(self.directory, exist_ok=True)
        self._load()

    def _fileName(self, head: EntryHead) -> str:
        self._counter += 1
        digest = sha256(head.key.encode("utf-8")).hexdigest()[:32]
        unique = f"{os.getpid()}-{self._counter}-{os.urandom(4).hex()}"
        return os.path.join(self.directory, f"{digest}-{unique}.entry")

    def _load(self) -> None:
        """
        Rebuild the index from the files in the directory, oldest first; drop temporary
        files of interrupted writes and every file that fails a check.
        """
        found: list[tuple[float, StoredEntry]] = []
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith(".tmp"):
                _unlink(path)
                continue
            if not name.endswith(".entry"):
                continue
            try:
                head, bodyLength, size = readHead(path)
            except (OSError, CorruptEntry, ValueError, KeyError, TypeError) as e:
                self.log.warn("cache: dropping damaged file {path}: {e}", path=path, e=e)
                _unlink(path)
                continue
            entry = StoredEntry(
                head=head,
                bodyLength=bodyLength,
                size=size,
                path=path,
                fileSize=size,
                persisted=head.responseTime,
            )
            found.append((os.stat(path).st_mtime, entry))
        found.sort(key=lambda pair: (pair[0], pair[1].head.responseTime))
        for _, entry in found:
            self._add(entry)

    def _discard(self, entry: StoredEntry) -> None:
        if entry.path is not None:
            _unlink(entry.path)

    def openBody(self, entry: StoredEntry) -> IBody | None:
        if not entry.live or entry.path is None:
            return None
        try:
            body = _DiskBody(entry.path, entry.bodyLength, entry.fileSize, self.callLater)
        except (OSError, CorruptEntry) as e:
            self.log.warn("cache: dropping damaged file {path}: {e}", path=entry.path, e=e)
            self.remove(entry)
            return None
        body.onCorrupt = lambda: self.remove(entry)
        return body

    def writer(self, head: EntryHead) -> IEntryWriter | None:
        if self.maxObjectSize <= 0:
            return None
        try:
            return _DiskWriter(self, head, self._fileName(head))
        except OSError as e:
            self.log.warn("cache: cannot write in {dir}: {e}", dir=self.directory, e=e)
            return None

    def _committed(
        self, head: EntryHead, path: str, bodyLength: int, size: int
    ) -> StoredEntry | None:
        entry = StoredEntry(
            head=head,
            bodyLength=bodyLength,
            size=size,
            path=path,
            fileSize=size,
            persisted=head.responseTime,
        )
        if size > self.maxSize:
            _unlink(path)
            return None
        self._add(entry)
        return entry

    def refresh(self, entry: StoredEntry, head: EntryHead) -> StoredEntry:
        """
        Update the index now and rewrite the file (same body, new header record) in a
        thread; the new file replaces the old one atomically.

        The file matters only after a restart (an older head there makes the entry stale
        sooner, so it is revalidated): it is rewritten at most once per
        L{REWRITE_INTERVAL} seconds of response time, one rewrite at a time, so that an
        entry revalidated on every request does not copy its body every time.
        """
        if not entry.live or entry.path is None:
            return entry
        self._rekey(entry, head)
        if entry.rewriting or head.responseTime - entry.persisted < REWRITE_INTERVAL:
            return entry
        entry.rewriting = True
        oldPath = entry.path
        newPath = self._fileName(head)
        record = head.toJSON(entry.bodyLength)

        def rewrite() -> int:
            with open(oldPath, "rb") as source:
                bodyRegion = os.fstat(source.fileno()).st_size - _bodyEnd(source)
                source.seek(0)
                return _atomicWrite(newPath, _copyBody(source, bodyRegion), record)

        def done(size: int) -> None:
            entry.rewriting = False
            if entry.live and entry.path == oldPath:
                entry.path = newPath
                entry.fileSize = size
                entry.persisted = head.responseTime
                self.size += size - entry.size
                entry.size = size
                _unlink(oldPath)
                self._evict()
            else:
                _unlink(newPath)

        def failed(reason: Any) -> None:
            entry.rewriting = False
            self.log.warn("cache: could not rewrite {path}: {e}", path=oldPath, e=reason.value)
            _unlink(newPath + ".tmp")

        self.runInThread(rewrite).addCallbacks(done, failed)
        return entry


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _bodyEnd(f: BinaryIO) -> int:
    """
    How many bytes at the end of the open file C{f} are header record and trailer.
    """
    f.seek(-_TRAILER.size, os.SEEK_END)
    length, _, magic = _TRAILER.unpack(f.read(_TRAILER.size))
    if magic != _MAGIC:
        raise CorruptEntry("bad trailer")
    return int(length) + _TRAILER.size


def _copyBody(source: BinaryIO, length: int) -> Iterator[bytes]:
    remaining = length
    while remaining > 0:
        data = source.read(min(remaining, 1 << 20))
        if not data:
            raise CorruptEntry("truncated body")
        remaining -= len(data)
        yield data


def _atomicWrite(path: str, body: Iterator[bytes], record: bytes) -> int:
    """
    Write framed body bytes (already framed) and C{record} to C{path} atomically: a
    temporary file, fsync, rename, fsync of the directory.  The size of the new file.
    """
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        for data in body:
            f.write(data)
        f.write(record)
        f.write(_TRAILER.pack(len(record), zlib.crc32(record), _MAGIC))
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    os.rename(temporary, path)
    _fsyncDirectory(os.path.dirname(path))
    return size


def _fsyncDirectory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def readHead(path: str) -> tuple[EntryHead, int, int]:
    """
    The header record of the file at C{path}, checked: (head, body length, file size).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _TRAILER.size:
            raise CorruptEntry("truncated")
        f.seek(size - _TRAILER.size)
        length, crc, magic = _TRAILER.unpack(f.read(_TRAILER.size))
        if magic != _MAGIC or length > size - _TRAILER.size:
            raise CorruptEntry("bad trailer")
        f.seek(size - _TRAILER.size - length)
        record = f.read(length)
        if len(record) != length or zlib.crc32(record) != crc:
            raise CorruptEntry("bad header record")
    head, bodyLength = EntryHead.fromJSON(record)
    blocks = -(-bodyLength // BLOCK)
    expected = bodyLength + blocks * (_BLOCK_HEAD.size + _CRC.size) + length + _TRAILER.size
    if expected != size:
        raise CorruptEntry(f"size {size}, expected {expected}")
    return head, bodyLength, size


def frameBlock(block: bytes) -> bytes:
    return _BLOCK_HEAD.pack(len(block)) + block + _CRC.pack(zlib.crc32(block))


class _DiskWriter:
    """
    Writes framed blocks to a temporary file as they fill; commit finishes it in a thread.
    """

    def __init__(self, store: DiskStore, head: EntryHead, path: str) -> None:
        self._store = store
        self._head = head
        self._path = path
        self._temporary = path + ".tmp"
        self._file: BinaryIO | None = open(self._temporary, "wb")
        self._blocks = _Blocks()

    def write(self, data: bytes) -> bool:
        if self._file is None:
            return False
        if self._blocks.total + len(data) > self._store.maxObjectSize:
            self.abort()
            return False
        try:
            for block in self._blocks.add(data):
                self._file.write(frameBlock(block))
        except OSError as e:
            self._store.log.warn("cache: write failed: {e}", e=e)
            self.abort()
            return False
        return True

    def commit(self) -> Deferred[StoredEntry | None]:
        f = self._file
        if f is None:
            return succeed(None)
        self._file = None
        rest = self._blocks.rest()
        bodyLength = self._blocks.total
        record = self._head.toJSON(bodyLength)
        temporary, path = self._temporary, self._path

        def finish() -> int:
            try:
                if rest is not None:
                    f.write(frameBlock(rest))
                f.write(record)
                f.write(_TRAILER.pack(len(record), zlib.crc32(record), _MAGIC))
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            finally:
                f.close()
            os.rename(temporary, path)
            _fsyncDirectory(os.path.dirname(path))
            return size

        def done(size: int) -> StoredEntry | None:
            return self._store._committed(self._head, path, bodyLength, size)

        def failed(reason: Any) -> None:
            self._store.log.warn(
                "cache: could not store {uri}: {e}", uri=self._head.uri, e=reason.value
            )
            _unlink(temporary)
            return None

        return self._store.runInThread(finish).addCallbacks(done, failed)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            _unlink(self._temporary)


class _DiskBody:
    """
    A stored body read block by block from its file; each block is checked before it is
    passed on.  The first block is read and checked when the body is opened.
    """

    onCorrupt: Callable[[], None] | None = None

    def __init__(
        self, path: str, bodyLength: int, size: int, callLater: Callable[..., IDelayedCall]
    ) -> None:
        self._file: BinaryIO | None = open(path, "rb")
        self._callLater = callLater
        try:
            if os.fstat(self._file.fileno()).st_size != size:
                raise CorruptEntry("size changed")
            self._remaining = bodyLength
            self._first = self._readBlock() if bodyLength else None
        except BaseException:
            self.close()
            raise

    def _readBlock(self) -> bytes:
        assert self._file is not None
        header = self._file.read(_BLOCK_HEAD.size)
        if len(header) != _BLOCK_HEAD.size:
            raise CorruptEntry("truncated block")
        (length,) = _BLOCK_HEAD.unpack(header)
        if length > BLOCK or length > self._remaining or length == 0:
            raise CorruptEntry("bad block length")
        data = self._file.read(length)
        crc = self._file.read(_CRC.size)
        if len(data) != length or len(crc) != _CRC.size or _CRC.unpack(crc)[0] != zlib.crc32(data):
            raise CorruptEntry("bad block checksum")
        self._remaining -= length
        return data

    def _blocks(self) -> Iterator[bytes]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
            while self._remaining > 0:
                try:
                    yield self._readBlock()
                except (OSError, CorruptEntry) as e:
                    if self.onCorrupt is not None:
                        self.onCorrupt()
                    raise CorruptEntry(str(e)) from e
        finally:
            self.close()

    def deliver(self, sink: IBodySink) -> None:
        if self._remaining == 0:
            first, self._first = self._first, None
            self.close()
            sink.bodyStarted(_NoProducer())
            if first is not None:
                sink.bodyData(first)
            sink.bodyDone(True)
            return
        ChunkProducer(self._blocks(), sink, self._callLater, self._done).start()

    def _done(self, complete: bool) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
