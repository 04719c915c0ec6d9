"""
Where the cache keeps responses: the interfaces (L{IStore}, L{IEntryWriter}, L{IBody}), the
in-memory index every store shares (L{StoreIndex}), and the in-memory store
(L{MemoryStore}); the disk store is L{caplab.proxy.cache.disk}, the Redis-shared one
L{caplab.proxy.cache.redisstore}.

Every store keeps the index of what it holds in memory: the URI, the secondary (Vary) key,
the status and header fields, the times and the body length of every entry, so a lookup never
touches the disk.  It is bounded in bytes (L{caplab.proxy.cache.entries.entryCost}: what an
entry really costs, objects included) and evicts the least recently used entries; an object
larger than C{maxObjectSize} is never stored.

The index is a dict by URI.  A URI without C{Vary} maps to its one entry; a URI with
variants maps to a small table keyed by the secondary key, so choosing the variant for a
request is one computation of the request's key and one dict lookup, however many variants
are stored.  A URI keeps at most C{maxVariants} variants (the oldest go first, counted in
L{StoreIndex.variantEvictions}), so one URI with C{Vary: User-Agent} cannot crowd out the rest
of the cache.

Nothing is visible before it is whole: an L{IEntryWriter} collects the body while it streams
to the client, and only L{IEntryWriter.commit} (after the origin ended the body properly)
adds the entry; L{IEntryWriter.abort} throws it away.  The bytes writers hold meanwhile count
against the bound too (L{StoreIndex.reserve}): many large misses at once evict what they need,
and a writer whose bytes cannot fit beside the others' gives up, so that they cannot hold
many times C{maxObjectSize} beyond C{maxSize}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from caplab.proxy.body import WholeBody
from caplab.proxy.cache import rules
from caplab.proxy.cache.bodies import Blocks, ChunkProducer
from caplab.proxy.cache.entries import (
    FIXED_COST,
    EntryHead,
    StoredEntry,
    bodyCost,
    compactHead,
)
from caplab.proxy.hooks import Headers, IBodySink

#: Variants one URI keeps at most, by default.
MAX_VARIANTS = 128

#: Stored parts (206 responses) one URI keeps at most.
MAX_PARTS = 16


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


class IBodySource(Protocol):
    """
    What a response made from a stored entry needs of the store (L{caplab.proxy.cache.replies}).
    """

    def touch(self, entry: StoredEntry) -> None:
        """
        Mark C{entry} as just used (LRU).
        """

    def openBody(self, entry: StoredEntry) -> IBody | None:
        """
        The body of C{entry} to deliver, or None if it is gone or damaged (then dropped).
        """


class IStore(IBodySource, Protocol):
    """
    The cache's storage: an index in memory, bodies wherever the store keeps them.

    @ivar variantEvictions: how many variants were evicted because their URI had
        C{maxVariants} already (for the metrics).
    """

    maxSize: int
    maxObjectSize: int
    variantEvictions: int

    def select(self, uri: str, requestHeaders: Headers) -> tuple[StoredEntry | None, bool]:
        """
        The stored complete response for C{uri} whose secondary key matches the request
        (the most recent if several do), and whether anything complete is stored for C{uri}.
        """

    def lookup(self, uri: str) -> list[StoredEntry]:
        """
        The complete entries stored for C{uri} (every variant), most recent first.
        """

    def parts(self, uri: str) -> list[StoredEntry]:
        """
        The stored parts (206 responses) of C{uri}, every variant, most recent first.
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
        Remove every variant (and part) stored for C{uri}; the number removed.
        """

    def purge(self, uri: str) -> Deferred[int]:
        """
        L{invalidate} everywhere the store keeps C{uri} (memory, disk, Redis); fires with
        the number of stored responses removed.
        """

    def flush(self) -> Deferred[int]:
        """
        Remove everything, everywhere the store keeps it; fires with the number removed.
        """


class _Variants:
    """
    The entries of one URI that has variants (or parts): complete variants by secondary
    key, all under the same C{Vary} field names, and stored parts by key.
    """

    __slots__ = ("names", "table", "parts")

    def __init__(self, names: tuple[bytes, ...]) -> None:
        self.names = names
        self.table: dict[tuple[bytes | None, ...], StoredEntry] = {}
        self.parts: dict[str, StoredEntry] = {}

    def __len__(self) -> int:
        return len(self.table) + len(self.parts)


class StoreIndex:
    """
    The in-memory index and LRU bound shared by every store.

    @ivar size: the bytes the entries count against C{maxSize}.
    @ivar reserved: the body bytes writers hold, not committed yet, which count against
        C{maxSize} as well (L{reserve}).
    """

    log = Logger()

    def __init__(self, maxSize: int, maxObjectSize: int, maxVariants: int = MAX_VARIANTS) -> None:
        self.maxSize = maxSize
        self.maxObjectSize = min(maxObjectSize, maxSize)
        self.maxVariants = max(1, maxVariants)
        self.size = 0
        self.reserved = 0
        self.count = 0
        self.variantEvictions = 0
        self._byURI: dict[str, StoredEntry | _Variants] = {}
        # the least recently used list: a ring through a sentinel, oldest after it
        self._ring = StoredEntry(EntryHead("", (), (), 0, b"", [], 0.0, 0.0), 0)
        self._ring.newer = self._ring.older = self._ring

    def __len__(self) -> int:
        return self.count

    # Lookups: the hit path

    def select(self, uri: str, requestHeaders: Headers) -> tuple[StoredEntry | None, bool]:
        found = self._byURI.get(uri)
        if found is None:
            return None, False
        if not isinstance(found, _Variants):
            return found, True
        if not found.table:
            return None, False
        return found.table.get(rules.secondaryKey(found.names, requestHeaders)), True

    def lookup(self, uri: str) -> list[StoredEntry]:
        found = self._byURI.get(uri)
        if found is None:
            return []
        if not isinstance(found, _Variants):
            return [found]
        return sorted(found.table.values(), key=lambda e: e.head.responseTime, reverse=True)

    def parts(self, uri: str) -> list[StoredEntry]:
        found = self._byURI.get(uri)
        if not isinstance(found, _Variants):
            return []
        return sorted(found.parts.values(), key=lambda e: e.head.responseTime, reverse=True)

    def holds(self, uri: str) -> bool:
        """
        Whether anything (complete or part) is stored for C{uri}.
        """
        return uri in self._byURI

    def touch(self, entry: StoredEntry) -> None:
        if not entry.live:
            return
        ring = self._ring
        newest = ring.older
        if newest is entry:
            return
        older, newer = entry.older, entry.newer
        assert older is not None and newer is not None and newest is not None
        older.newer = newer
        newer.older = older
        entry.older = newest
        entry.newer = ring
        newest.newer = entry
        ring.older = entry

    # Adding and removing

    def _add(self, entry: StoredEntry, headCost: int | None = None) -> None:
        """
        Make C{entry} visible, replacing the entry with the same key, and account for it.
        """
        head = entry.head
        if headCost is None:
            headCost = compactHead(head)
        entry.refreshed()
        entry.size = self._cost(entry, headCost)
        found = self._byURI.get(head.uri)
        if head.partial is None and not head.varyNames and not isinstance(found, _Variants):
            if found is not None:
                self._drop(found)
            self._byURI[head.uri] = entry
        else:
            variants = self._variantsOf(head)
            if head.partial is None:
                old = variants.table.pop(head.variant, None)
                if old is not None:
                    self._forget(old)
                variants.table[head.variant] = entry
            else:
                key = head.key
                old = variants.parts.pop(key, None)
                if old is not None:
                    self._forget(old)
                variants.parts[key] = entry
            self._capVariants(variants)
        self._link(entry)
        self._evict()

    def _cost(self, entry: StoredEntry, headCost: int) -> int:
        """
        What C{entry} counts against the bound: its memory (see L{entries}).
        """
        return FIXED_COST + headCost + bodyCost(entry.body)

    def _variantsOf(self, head: EntryHead) -> _Variants:
        """
        The variants table of C{head}'s URI, made if needed; entries stored under other
        C{Vary} field names are dropped (the origin now negotiates on these).
        """
        found = self._byURI.get(head.uri)
        if isinstance(found, _Variants):
            if found.names == head.varyNames:
                return found
            if head.partial is None:
                for old in list(found.table.values()):
                    self._drop(old)
                found = self._byURI.get(head.uri)
                if isinstance(found, _Variants):
                    found.names = head.varyNames
                    return found
            else:
                return found
        elif found is not None:
            self._drop(found)
        variants = _Variants(head.varyNames)
        self._byURI[head.uri] = variants
        return variants

    def _capVariants(self, variants: _Variants) -> None:
        while len(variants.table) > self.maxVariants:
            self.variantEvictions += 1
            self._drop(next(iter(variants.table.values())))
        while len(variants.parts) > MAX_PARTS:
            self._drop(next(iter(variants.parts.values())))

    def _link(self, entry: StoredEntry) -> None:
        ring = self._ring
        newest = ring.older
        assert newest is not None
        entry.older = newest
        entry.newer = ring
        newest.newer = entry
        ring.older = entry
        self.size += entry.size
        self.count += 1

    def reserve(self, amount: int) -> bool:
        """
        Count C{amount} more bytes of a body being written against C{maxSize}, evicting the
        least recently used entries to make room.  False, and nothing counted, when the
        bytes in flight would exceed C{maxSize} even with every entry evicted: the writer
        gives up (the response still reaches its client, it is only not stored).
        """
        if self.reserved + amount > self.maxSize:
            return False
        self.reserved += amount
        self._evict()
        return True

    def release(self, amount: int) -> None:
        """
        A writer committed or gave up: its C{amount} reserved bytes no longer count.
        """
        self.reserved -= amount

    def _evict(self) -> None:
        ring = self._ring
        while self.size + self.reserved > self.maxSize and ring.newer is not ring:
            oldest = ring.newer
            assert oldest is not None
            self._drop(oldest)

    def remove(self, entry: StoredEntry) -> None:
        """
        Remove C{entry} everywhere the store keeps it (a store shared with others removes it
        for them too).
        """
        self._drop(entry)

    def _drop(self, entry: StoredEntry) -> None:
        """
        Take C{entry} out of this index (its own evictions and replacements: a store shared
        with others leaves their copies alone).
        """
        if not entry.live:
            return
        head = entry.head
        found = self._byURI.get(head.uri)
        if found is entry:
            del self._byURI[head.uri]
        elif isinstance(found, _Variants):
            if head.partial is None:
                if found.table.get(head.variant) is entry:
                    del found.table[head.variant]
            else:
                key = head.key
                if found.parts.get(key) is entry:
                    del found.parts[key]
            if not found:
                del self._byURI[head.uri]
        self._forget(entry)

    def _forget(self, entry: StoredEntry) -> None:
        """
        Take C{entry} out of the LRU list and the size; free what it holds.
        """
        if not entry.live:
            return
        entry.live = False
        older, newer = entry.older, entry.newer
        if older is not None and newer is not None:
            older.newer = newer
            newer.older = older
        entry.older = entry.newer = None
        self.size -= entry.size
        self.count -= 1
        self._discard(entry)

    def _discard(self, entry: StoredEntry) -> None:
        """
        Free what the entry held outside the index.
        """

    def entries(self) -> Iterator[StoredEntry]:
        """
        Every entry, least recently used first.
        """
        ring = self._ring
        entry = ring.newer
        while entry is not None and entry is not ring:
            newer = entry.newer
            yield entry
            entry = newer

    def invalidate(self, uri: str) -> int:
        found = self._byURI.get(uri)
        if found is None:
            return 0
        if not isinstance(found, _Variants):
            self._drop(found)
            return 1
        variants = [*found.table.values(), *found.parts.values()]
        for entry in variants:
            self._drop(entry)
        return len(variants)

    def purge(self, uri: str) -> Deferred[int]:
        return succeed(self.invalidate(uri))

    def flush(self) -> Deferred[int]:
        removed = 0
        for entry in list(self.entries()):
            self._drop(entry)
            removed += 1
        return succeed(removed)

    def _rekey(self, entry: StoredEntry, head: EntryHead) -> None:
        """
        Give C{entry} a new head (same key), keeping its place in the index.
        """
        headCost = compactHead(head)
        entry.head = head
        entry.refreshed()
        self.size -= entry.size
        entry.size = self._cost(entry, headCost)
        self.size += entry.size
        self._evict()


class MemoryStore(StoreIndex):
    """
    Entries in memory, their bodies held ready to send: one C{bytes} object, or pieces of
    up to L{caplab.proxy.cache.bodies.BLOCK} bytes.
    """

    def __init__(
        self,
        maxSize: int = 64 << 20,
        maxObjectSize: int = 8 << 20,
        callLater: Callable[..., IDelayedCall] | None = None,
        maxVariants: int = MAX_VARIANTS,
    ) -> None:
        super().__init__(maxSize, maxObjectSize, maxVariants)
        if callLater is None:
            from twisted.internet import reactor

            callLater = reactor.callLater
        self.callLater = callLater

    def openBody(self, entry: StoredEntry) -> IBody | None:
        if not entry.live:
            return None
        body = entry.body
        if isinstance(body, bytes):
            return _WholeMemoryBody(body)
        return _MemoryBody(body, self.callLater)

    def writer(self, head: EntryHead) -> IEntryWriter | None:
        if self.maxObjectSize <= 0:
            return None
        return _MemoryWriter(self, head)

    def refresh(self, entry: StoredEntry, head: EntryHead) -> StoredEntry:
        if entry.live:
            self._rekey(entry, head)
        return entry


class _WholeMemoryBody:
    """
    A stored body in one piece: its C{deliver} is a L{WholeBody}, sent with the head.
    """

    __slots__ = ("deliver",)

    def __init__(self, body: bytes) -> None:
        self.deliver = WholeBody(body)

    def close(self) -> None:
        pass


class _MemoryBody:
    """
    A stored body in pieces, produced one piece per reactor turn.
    """

    def __init__(self, body: tuple[bytes, ...], callLater: Callable[..., IDelayedCall]) -> None:
        self._body = body
        self._callLater = callLater

    def deliver(self, sink: IBodySink) -> None:
        ChunkProducer(iter(self._body), sink, self._callLater).start()

    def close(self) -> None:
        pass


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
        if self._blocks.total + len(data) > self._store.maxObjectSize or not (
            self._store.reserve(len(data))
        ):
            self.abort()
            return False
        self._chunks.extend(self._blocks.add(data))
        return True

    def commit(self) -> Deferred[StoredEntry | None]:
        if self._done:
            return succeed(None)
        self._done = True
        self._store.release(self._blocks.total)
        rest = self._blocks.rest()
        if rest is not None:
            self._chunks.append(rest)
        chunks = self._chunks
        body: bytes | tuple[bytes, ...] = (
            tuple(chunks) if len(chunks) > 1 else chunks[0] if chunks else b""
        )
        entry = StoredEntry(self._head, self._blocks.total, body=body)
        if self._blocks.total + FIXED_COST > self._store.maxSize:
            return succeed(None)
        self._store._add(entry)
        if not entry.live:
            return succeed(None)
        return succeed(entry)

    def abort(self) -> None:
        if not self._done:
            self._store.release(self._blocks.total)
        self._done = True
        self._chunks = []
        self._blocks = Blocks()
