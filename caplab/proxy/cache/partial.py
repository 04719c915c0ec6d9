"""
Stored parts of a response (206 responses to single-range requests): which of them hold a
whole representation together, and writing them into one complete stored response
(RFC 9111 section 3.4).
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer

from caplab.proxy.cache.entries import EntryHead, StoredEntry
from caplab.proxy.cache.fields import isWeak, strongMatch
from caplab.proxy.cache.storage import IEntryWriter, IStore


def combinable(parts: list[StoredEntry], newest: StoredEntry) -> list[StoredEntry]:
    """
    The stored parts that may be combined with C{newest}: the same variant, the same
    complete length and the same strong C{ETag} (only a strong validator says two parts
    are of one representation).
    """
    head = newest.head
    assert head.partial is not None and newest.rules is not None
    etag = newest.rules.etag
    if etag is None or isWeak(etag):
        return []
    return [
        part
        for part in parts
        if part.live
        and part.head.partial is not None
        and part.head.partial[2] == head.partial[2]
        and part.head.varyNames == head.varyNames
        and part.head.variant == head.variant
        and part.rules is not None
        and strongMatch(part.rules.etag, etag)
    ]


def cover(parts: list[StoredEntry]) -> list[StoredEntry] | None:
    """
    The parts, in order, that together hold every byte of the representation, or None if
    there is a gap.
    """
    chosen: list[StoredEntry] = []
    position = 0
    for part in sorted(parts, key=lambda p: p.head.partial or (0, 0, 0)):
        assert part.head.partial is not None
        first, stop, complete = part.head.partial
        if first > position:
            return None
        if stop > position:
            chosen.append(part)
            position = stop
        if position >= complete:
            return chosen
    return None


def completeHead(newest: EntryHead) -> EntryHead:
    """
    The head of the complete response the parts make: the newest part's fields and times,
    status 200.
    """
    return replace(newest, code=200, phrase=b"OK", partial=None)


class Combiner:
    """
    Writes the bytes of C{parts} (in order, overlaps skipped) into a new complete entry of
    C{store}; the parts are removed once it is stored.
    """

    def __init__(self, store: IStore, parts: list[StoredEntry], head: EntryHead) -> None:
        self.store = store
        self.parts = list(parts)
        self.head = head
        self.position = 0
        self.result: Deferred[StoredEntry | None] = Deferred()
        self._writer: IEntryWriter | None = None

    def run(self) -> Deferred[StoredEntry | None]:
        writer = self.store.writer(self.head)
        if writer is None:
            return succeed(None)
        self._writer = writer
        self._next()
        return self.result

    def _next(self) -> None:
        writer = self._writer
        assert writer is not None
        if not self.parts:
            self._writer = None
            writer.commit().addCallback(self._committed)
            return
        part = self.parts.pop(0)
        body = self.store.openBody(part)
        if body is None:
            self._fail()
            return
        body.deliver(_PartSink(self, part))

    def _committed(self, entry: StoredEntry | None) -> None:
        if entry is not None:
            for part in self.store.parts(self.head.uri):
                if part.head.varyNames == self.head.varyNames and (
                    part.head.variant == self.head.variant
                ):
                    self.store.remove(part)
        self.result.callback(entry)

    def _fail(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        if not self.result.called:
            self.result.callback(None)


class _PartSink:
    """
    Receives one part's body and writes the bytes the complete body still needs.
    """

    def __init__(self, combiner: Combiner, part: StoredEntry) -> None:
        assert part.head.partial is not None
        self.combiner = combiner
        self.offset = part.head.partial[0]
        self.stop = part.head.partial[1]

    def bodyStarted(self, producer: IPushProducer) -> None:
        pass

    def bodyData(self, data: bytes) -> None:
        combiner = self.combiner
        start = self.offset
        self.offset += len(data)
        skip = combiner.position - start
        if skip >= len(data) or combiner._writer is None:
            return
        piece = data[max(0, skip) :]
        combiner.position += len(piece)
        if not combiner._writer.write(piece):
            combiner._fail()

    def bodyDone(self, complete: bool) -> None:
        if not complete or self.combiner._writer is None:
            self.combiner._fail()
            return
        self.combiner._next()
