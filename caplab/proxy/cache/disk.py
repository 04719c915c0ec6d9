"""
The disk store: L{DiskStore} keeps the cache in files under C{--cache-dir}, bounded in
bytes, across restarts.

Disk I/O and the reactor
========================

Every write runs in a thread (C{runInThread}, by default the reactor's thread pool): a
writer's jobs (creating its temporary file, each body block of at most L{BLOCK} bytes when it
is full, the commit's C{fsync} and renames, or the removal) one after another, in order; the
removal of a file (eviction, purge, replacement) and the rewrite of a file whose header
fields a 304 refreshed as well.  Serving a disk hit opens its file and reads and checks its
first block inline (one block: a damaged small object is found before its head is sent);
every later block is read and checked in a thread, one read at a time and none while the
client is paused.  The index is rebuilt when the store is created (before the reactor runs)
by reading only the small trailer and header record of each file.

File format: body blocks C{[u32 length][data][u32 crc32]}, then the header record (JSON),
then a trailer C{[u32 length of header record][u32 crc32 of it][8-byte magic]}.  A file whose
trailer, header record or any block fails its check, or whose size is not what the trailer
says, is dropped (deleted) and never served; a block is checked before its bytes are sent, and
an object of one block (up to 64 KiB) is checked whole before its response head is returned.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from hashlib import sha256
from typing import Any, BinaryIO, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from caplab.proxy.body import NoProducer
from caplab.proxy.cache.bodies import BLOCK, Blocks, CorruptEntry
from caplab.proxy.cache.entries import MAX_RECORD, DiskEntry, EntryHead, StoredEntry
from caplab.proxy.cache.storage import MAX_VARIANTS, IBody, IEntryWriter, StoreIndex
from caplab.proxy.hooks import IBodySink
from caplab.ratelimit import LogThrottle

T = TypeVar("T")

#: Seconds of response time between two rewrites of a refreshed entry's file.
REWRITE_INTERVAL = 60.0

#: Damaged files logged one by one at start-up; the rest are counted in one line.
LOAD_LOG_LINES = 10

#: Seconds between two log lines about failed writes (disk full ...) in a burst.
WRITE_LOG_INTERVAL = 60.0

#: Seconds between two log lines about damaged files met while serving, in a burst.
DAMAGE_LOG_INTERVAL = 60.0

_MAGIC = b"CAPLABC1"
_TRAILER = struct.Struct(">II8s")
_BLOCK_HEAD = struct.Struct(">I")
_CRC = struct.Struct(">I")


def deferToReactorThread(function: Callable[[], T]) -> Deferred[T]:
    """
    Run C{function} in the reactor's thread pool.
    """
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThreadPool

    return deferToThreadPool(reactor, reactor.getThreadPool(), function)  # type: ignore[arg-type, attr-defined]


class DiskStore(StoreIndex):
    """
    Entries in files under C{directory}, bounded in bytes, kept across restarts.

    @param runInThread: runs a blocking function (the file work: writes, fsync, renames,
        removals, reads of a hit's blocks after the first) off the reactor thread and
        returns a Deferred of its result.
    @param clock: times the log lines about failed writes (the reactor if None).
    @ivar writeFailures: the rate-limited log of failed writes (a full disk fails every
        response that would be stored: one line per L{WRITE_LOG_INTERVAL}, with a count).
    @ivar damagedFiles: the rate-limited log of damaged files met while serving (a disk
        going bad damages many: one line per L{DAMAGE_LOG_INTERVAL}, with a count).
    """

    def __init__(
        self,
        directory: str,
        maxSize: int = 64 << 20,
        maxObjectSize: int = 8 << 20,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]] = deferToReactorThread,
        maxVariants: int = MAX_VARIANTS,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(maxSize, maxObjectSize, maxVariants)
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.directory = os.path.abspath(directory)
        self.runInThread = runInThread
        self.writeFailures = LogThrottle(
            self.log,
            clock,
            "cache: could not store {uri} in {directory}: {error}",
            summary="cache: failed writes: the burst is over, {burst} in all",
            interval=WRITE_LOG_INTERVAL,
            repeat="cache: could not store {uri} in {directory}: {error} "
            "({count} times in the last {interval} s, {burst} in this burst)",
        )
        self.damagedFiles = LogThrottle(
            self.log,
            clock,
            "cache: dropping damaged file {path}: {error}",
            summary="cache: damaged files: the burst is over, {burst} in all",
            interval=DAMAGE_LOG_INTERVAL,
            repeat="cache: dropping damaged file {path}: {error} "
            "({count} times in the last {interval} s, {burst} in this burst)",
        )
        self._counter = 0
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._load()

    def _fileName(self, head: EntryHead) -> str:
        self._counter += 1
        digest = sha256(head.key.encode("utf-8")).hexdigest()[:32]
        unique = f"{os.getpid()}-{self._counter}-{os.urandom(4).hex()}"
        return os.path.join(self.directory, f"{digest}-{unique}.entry")

    def _load(self) -> None:
        """
        Rebuild the index from the files in the directory, oldest first; drop temporary
        files of interrupted writes and every file that fails a check.  Nothing found here
        stops the start: each damaged file is logged (the first L{LOAD_LOG_LINES}, then a
        count) and dropped; what is not a regular file is logged and left alone.
        """
        found: list[tuple[float, DiskEntry]] = []
        damaged = 0
        try:
            names = os.listdir(self.directory)
        except OSError as e:
            self.log.warn(
                "cache: cannot read {directory} ({error}); starting empty",
                directory=self.directory,
                error=e.strerror or e,
            )
            return
        for name in names:
            path = os.path.join(self.directory, name)
            if not (name.endswith(".entry") or name.endswith(".entry.tmp")):
                continue
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue  # gone meanwhile
            if not stat.S_ISREG(mode):
                damaged += 1
                if damaged <= LOAD_LOG_LINES:
                    self.log.warn(
                        "cache: ignoring {path}: not a regular file (left alone)", path=path
                    )
                continue
            if name.endswith(".entry.tmp"):
                _unlink(path)
                continue
            try:
                head, bodyLength, size, mtime = readHead(path)
            except Exception as e:  # whatever is wrong with one file, the others still load
                damaged += 1
                if damaged <= LOAD_LOG_LINES:
                    self.log.warn(
                        "cache: dropping damaged file {path}: {error}",
                        path=path,
                        error=_describe(e),
                    )
                _unlink(path)
                continue
            found.append((mtime, _fileEntry(head, path, bodyLength, size)))
        if damaged > LOAD_LOG_LINES:
            self.log.warn(
                "cache: {more} more damaged or foreign files in {directory} "
                "({damaged} in all, the first {logged} logged above)",
                more=damaged - LOAD_LOG_LINES,
                damaged=damaged,
                logged=LOAD_LOG_LINES,
                directory=self.directory,
            )
        found.sort(key=lambda pair: (pair[0], pair[1].head.responseTime))
        for _, entry in found:
            self._add(entry)

    def _cost(self, entry: StoredEntry, headCost: int) -> int:
        """
        A file counts its size against the bound (the bound is on the disk).
        """
        return entry.fileSize if isinstance(entry, DiskEntry) else 0

    def _discard(self, entry: StoredEntry) -> None:
        if isinstance(entry, DiskEntry) and entry.path:
            self.unlink(entry.path)

    def unlink(self, path: str) -> None:
        """
        Delete a file in a thread (a failure leaves it: it is looked at again next start).
        """
        maybeDeferred(self.runInThread, partial(_unlink, path)).addErrback(_leftForNextStart)

    def openBody(self, entry: StoredEntry) -> IBody | None:
        if not entry.live or not isinstance(entry, DiskEntry):
            return None
        try:
            body = _DiskBody(entry.path, entry.bodyLength, entry.fileSize, self.runInThread)
        except (OSError, CorruptEntry) as e:
            self.damaged(entry, e)
            return None
        body.onCorrupt = lambda error: self.damaged(entry, error)
        return body

    def damaged(self, entry: StoredEntry, error: BaseException) -> None:
        """
        C{entry}'s file failed a check or could not be read: it is dropped, and the log line
        rate-limited (L{damagedFiles}).
        """
        path = entry.path if isinstance(entry, DiskEntry) else ""
        self.damagedFiles.event(path=path, error=_describe(error))
        self.remove(entry)

    def writer(self, head: EntryHead) -> IEntryWriter | None:
        if self.maxObjectSize <= 0:
            return None
        return _DiskWriter(self, head, self._fileName(head))

    def writeFailed(self, uri: str, error: BaseException) -> None:
        """
        A write failed (disk full, permissions ...): rate-limited, one line per interval.
        """
        self.writeFailures.event(
            uri=uri,
            directory=self.directory,
            error=_describe(error),
        )

    def _committed(
        self, head: EntryHead, path: str, bodyLength: int, size: int
    ) -> StoredEntry | None:
        entry = _fileEntry(head, path, bodyLength, size)
        if size > self.maxSize:
            self.unlink(path)
            return None
        self._add(entry)
        return entry if entry.live else None

    def flush(self) -> Deferred[int]:
        """
        Forget every entry now; delete their files in a thread.
        """
        paths = []
        for entry in list(self.entries()):
            if isinstance(entry, DiskEntry) and entry.path:
                paths.append(entry.path)
                entry.path = ""
            self.remove(entry)

        def unlinkAll() -> int:
            for path in paths:
                _unlink(path)
            return len(paths)

        return self.runInThread(unlinkAll)

    def refresh(self, entry: StoredEntry, head: EntryHead) -> StoredEntry:
        """
        Update the index now and rewrite the file (same body, new header record) in a
        thread; the new file replaces the old one atomically.

        The file matters only after a restart (an older head there makes the entry stale
        sooner, so it is revalidated): it is rewritten at most once per
        L{REWRITE_INTERVAL} seconds of response time, one rewrite at a time, so that an
        entry revalidated on every request does not copy its body every time.
        """
        if not entry.live or not isinstance(entry, DiskEntry) or not entry.path:
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
                self.unlink(oldPath)
                self._evict()
            else:
                self.unlink(newPath)

        def failed(reason: Any) -> None:
            entry.rewriting = False
            self.writeFailed(head.uri, reason.value)
            self.unlink(newPath + ".tmp")

        self.runInThread(rewrite).addCallbacks(done, failed)
        return entry


def _describe(error: BaseException) -> str:
    """
    An error as one short line: C{strerror} for OS errors (no errno tuple), else its text.
    """
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _fileEntry(head: EntryHead, path: str, bodyLength: int, size: int) -> DiskEntry:
    """
    The index entry of a complete file: it counts its whole size against the bound.
    """
    return DiskEntry(
        head,
        bodyLength,
        path=path,
        fileSize=size,
        persisted=head.responseTime,
    )


def _leftForNextStart(reason: Failure) -> None:
    """
    A removal that could not run (the threads stopped, at shutdown): the file stays, and
    the next start drops it (a temporary file) or loads it within the bound.
    """


def _unlink(path: str) -> None:
    """
    Delete a file if it is there; a failure leaves it (it is looked at again next start).
    """
    try:
        os.unlink(path)
    except OSError:
        pass


def _bodyEnd(f: BinaryIO) -> int:
    """
    How many bytes at the end of the open file C{f} are header record and trailer.
    """
    f.seek(-_TRAILER.size, os.SEEK_END)
    length, _, magic = _TRAILER.unpack(f.read(_TRAILER.size))
    if magic != _MAGIC or length > MAX_RECORD:
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


def readHead(path: str) -> tuple[EntryHead, int, int, float]:
    """
    The header record of the file at C{path}, checked: (head, body length, file size,
    modification time).  A record longer than L{MAX_RECORD} is refused before it is read
    (a damaged length field could ask for the whole of a large file).
    """
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        size = info.st_size
        if size < _TRAILER.size:
            raise CorruptEntry("truncated")
        f.seek(size - _TRAILER.size)
        length, crc, magic = _TRAILER.unpack(f.read(_TRAILER.size))
        if magic != _MAGIC or length > size - _TRAILER.size:
            raise CorruptEntry("bad trailer")
        if length > MAX_RECORD:
            raise CorruptEntry(f"header record of {length} bytes, over {MAX_RECORD}")
        f.seek(size - _TRAILER.size - length)
        record = f.read(length)
        if len(record) != length or zlib.crc32(record) != crc:
            raise CorruptEntry("bad header record")
    head, bodyLength = EntryHead.fromJSON(record)
    blocks = -(-bodyLength // BLOCK)
    expected = bodyLength + blocks * (_BLOCK_HEAD.size + _CRC.size) + length + _TRAILER.size
    if expected != size:
        raise CorruptEntry(f"size {size}, expected {expected}")
    return head, bodyLength, size, info.st_mtime


def frameBlock(block: bytes) -> bytes:
    return _BLOCK_HEAD.pack(len(block)) + block + _CRC.pack(zlib.crc32(block))


class _DiskWriter:
    """
    Writes one body to a temporary file, all its file work in the store's threads
    (C{runInThread}): creating the file, each framed block as it fills, and the commit
    (the last block, the record, fsync, rename) or the removal, each job started once the
    one before it ended, so that they happen in order while the reactor goes on.

    A job that fails (disk full ...) ends the writer: the failure is logged (rate-limited,
    L{DiskStore.writeFailed}), the temporary file removed, and the next L{write} says
    False; bytes not written yet are held meanwhile, at most C{maxObjectSize} (they count
    against the store's bound, L{StoreIndex.reserve}).
    """

    def __init__(self, store: DiskStore, head: EntryHead, path: str) -> None:
        self._store = store
        self._head = head
        self._path = path
        self._temporary = path + ".tmp"
        self._file: BinaryIO | None = None
        self._blocks = Blocks()
        self._reserved = 0
        #: Whether writes are taken (no commit, abort or failure yet).
        self._open = True
        self._failed = False
        self._last: Deferred[Any] = succeed(None)
        self._then(self._create)

    def _then(self, job: Callable[[], T]) -> Deferred[T | None]:
        """
        Run C{job} in a thread once every job before it has ended; the chain fires with
        its result, or None once a job failed (then no later job runs).
        """

        def run(_: object) -> Deferred[T | None] | None:
            if self._failed:
                return None
            return maybeDeferred(self._store.runInThread, job).addErrback(self._jobFailed)

        self._last = self._last.addCallback(run)
        return self._last

    def _jobFailed(self, reason: Failure) -> None:
        self._failed = True
        self._open = False
        self._release()
        self._store.writeFailed(self._head.uri, reason.value or Exception(reason))
        maybeDeferred(self._store.runInThread, self._discardFile).addErrback(_leftForNextStart)

    def _release(self) -> None:
        self._store.release(self._reserved)
        self._reserved = 0

    # the jobs (in a thread)

    def _create(self) -> None:
        self._file = open(self._temporary, "wb")

    def _writeBlocks(self, blocks: list[bytes]) -> None:
        assert self._file is not None
        for block in blocks:
            self._file.write(frameBlock(block))

    def _discardFile(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()
        _unlink(self._temporary)

    # the writer (in the reactor thread)

    def write(self, data: bytes) -> bool:
        if not self._open:
            return False
        if self._blocks.total + len(data) > self._store.maxObjectSize or not (
            self._store.reserve(len(data))
        ):
            self.abort()
            return False
        self._reserved += len(data)
        blocks = list(self._blocks.add(data))
        if blocks:
            self._then(partial(self._writeBlocks, blocks))
        return True

    def commit(self) -> Deferred[StoredEntry | None]:
        if not self._open:
            return succeed(None)
        self._open = False
        rest = self._blocks.rest()
        bodyLength = self._blocks.total
        record = self._head.toJSON(bodyLength)
        temporary, path = self._temporary, self._path

        def finish() -> int:
            f, self._file = self._file, None
            assert f is not None
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

        def done(size: int | None) -> StoredEntry | None:
            if size is None:
                return None  # a job failed: logged, cleaned up, released
            self._release()
            return self._store._committed(self._head, path, bodyLength, size)

        return self._then(finish).addCallback(done)

    def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        self._release()
        self._then(self._discardFile)


class _DiskBody:
    """
    A stored body read block by block from its file; each block is checked before it is
    passed on.  The first block is read and checked when the body is opened (in the calling
    thread: one block, so that a damaged small object is found before its head is sent);
    the others are read in a thread (L{_BlockReader}).
    """

    #: Called with the error when a later block fails its check or cannot be read.
    onCorrupt: Callable[[BaseException], None] | None = None

    def __init__(
        self,
        path: str,
        bodyLength: int,
        size: int,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
    ) -> None:
        self._file: BinaryIO | None = open(path, "rb")
        self._runInThread = runInThread
        try:
            if os.fstat(self._file.fileno()).st_size != size:
                raise CorruptEntry("size changed")
            self.remaining = bodyLength
            self._first = self.readBlock() if bodyLength else None
        except BaseException:
            self.close()
            raise

    def readBlock(self) -> bytes:
        """
        The next block, checked (L{CorruptEntry} if it fails).
        """
        if self._file is None:
            raise CorruptEntry("closed")
        header = self._file.read(_BLOCK_HEAD.size)
        if len(header) != _BLOCK_HEAD.size:
            raise CorruptEntry("truncated block")
        (length,) = _BLOCK_HEAD.unpack(header)
        if length > BLOCK or length > self.remaining or length == 0:
            raise CorruptEntry("bad block length")
        data = self._file.read(length)
        crc = self._file.read(_CRC.size)
        if len(data) != length or len(crc) != _CRC.size or _CRC.unpack(crc)[0] != zlib.crc32(data):
            raise CorruptEntry("bad block checksum")
        self.remaining -= length
        return data

    def deliver(self, sink: IBodySink) -> None:
        first, self._first = self._first, None
        if self.remaining == 0:
            self.close()
            sink.bodyStarted(NoProducer())
            if first is not None:
                sink.bodyData(first)
            sink.bodyDone(True)
            return
        _BlockReader(self, sink, self._runInThread).start(first)

    def corrupt(self, error: BaseException) -> None:
        self.close()
        if self.onCorrupt is not None:
            self.onCorrupt(error)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@implementer(IPushProducer)
class _BlockReader:
    """
    Delivers a disk body's blocks to a sink, pausing with it: each block after the first is
    read and checked in a thread, one read at a time, the next one only while the sink is
    not paused (so at most one block is held).
    """

    def __init__(
        self,
        body: _DiskBody,
        sink: IBodySink,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]],
    ) -> None:
        self._body = body
        self._sink = sink
        self._runInThread = runInThread
        self._paused = False
        self._finished = False
        self._reading = False
        self._looping = False

    def start(self, first: bytes | None) -> None:
        self._sink.bodyStarted(self)
        if first is not None:
            self._sink.bodyData(first)
        self._next()

    def _next(self) -> None:
        """
        Ask for the next block unless paused, done or already reading; a loop, not a
        recursion, when the reads complete at once.
        """
        if self._looping:
            return
        self._looping = True
        try:
            while not (self._paused or self._finished or self._reading):
                if self._body.remaining == 0:
                    self._finish(True)
                    break
                self._reading = True
                read = maybeDeferred(self._runInThread, self._body.readBlock)
                read.addCallbacks(self._got, self._failed)
        finally:
            self._looping = False

    def _got(self, data: bytes) -> None:
        self._reading = False
        if self._finished:
            self._body.close()  # stopped while the block was read
            return
        self._sink.bodyData(data)
        self._next()

    def _failed(self, reason: Failure) -> None:
        self._reading = False
        if self._finished:
            self._body.close()
            return
        self._finished = True
        self._body.corrupt(reason.value or Exception(reason))
        self._sink.bodyDone(False)

    def _finish(self, complete: bool) -> None:
        self._finished = True
        self._body.close()
        self._sink.bodyDone(complete)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if not self._paused or self._finished:
            return
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        if self._finished:
            return
        self._finished = True
        if not self._reading:
            self._body.close()
