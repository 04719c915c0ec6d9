"""
Stored bodies in motion: the blocks a streamed body is cut into, and the producer that
delivers stored pieces to a sink with back-pressure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from zope.interface import implementer

from caplab.proxy.hooks import IBodySink

#: Size of the body blocks stored on disk and of the pieces a hit is written in.
BLOCK = 65536

#: Bytes a body producer passes on in one reactor turn before it lets others run.
TURN = 1 << 20


class CorruptEntry(Exception):
    """
    A stored file or record failed a check.
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
