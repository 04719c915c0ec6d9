"""
The body sink that transforms a response body as it streams to the client's sink.

It sits between the body's producer (the origin connection, or the cache) and the client's
sink, and is the client's producer: when the client's sink pauses it, it pauses the body's
producer at once, and keeps what it was working on (at most one input piece, decoded
lazily, plus each transform's window); when the client resumes, it finishes that first and
only then resumes the producer.  So memory stays bounded whatever the body's size or
compression ratio, and a slow client slows the origin as without filters.

With a C{callLater}, it also gives the reactor back after L{TURN} bytes of decoded body, so
one large body (or a compression bomb) does not hold up the other connections, even when
the transforms pass nothing on (a dropped C{<script>}, a rewrite that deletes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from caplab.proxy.filters.coding import Decoding
from caplab.proxy.filters.interfaces import ITransform
from caplab.proxy.hooks import IBodySink

#: Decoded bytes after which the sink lets the reactor run other work (with a callLater).
TURN = 1 << 20


@implementer(IPushProducer)
class TransformSink:
    """
    An L{IBodySink} that decodes a body, runs it through transforms, and passes the result
    to C{sink}; and the L{IPushProducer} of C{sink}.
    """

    def __init__(
        self,
        sink: IBodySink,
        transforms: Sequence[ITransform],
        decoding: Decoding | None = None,
        onError: Callable[[str], None] | None = None,
        callLater: Callable[..., Any] | None = None,
        turn: int = TURN,
    ) -> None:
        """
        @param decoding: undoes the body's content codings first, or None.
        @param onError: told (with a reason) when the body cannot be transformed: a corrupt
            encoding or a transform that failed.  The client's body then ends incomplete.
        @param callLater: C{reactor.callLater}, to yield after C{turn} decoded bytes; None:
            never.
        """
        self._sink = sink
        self._transforms = list(transforms)
        self._decoding = decoding
        self._onError = onError
        self._callLater = callLater
        self._turn = turn
        self._producer: IPushProducer | None = None
        self._inputs: deque[bytes] = deque()
        self._pieces: Iterator[bytes] | None = None
        self._ended: bool | None = None
        self._finished = False
        self._paused = False
        self._upstreamPaused = False
        self._pumping = False
        self._finalising = False
        self._scheduled: Any = None
        self._work = 0  # decoded bytes since the pump last gave the reactor back

    # IBodySink: from the body's producer

    def bodyStarted(self, producer: IPushProducer) -> None:
        self._producer = producer
        self._sink.bodyStarted(self)

    def bodyData(self, data: bytes) -> None:
        if self._finished:
            return
        self._inputs.append(data)
        self._pump()

    def bodyDone(self, complete: bool) -> None:
        if self._finished or self._ended is not None:
            return
        self._ended = complete
        if not complete:
            # The body was cut off: the client's connection will be aborted; nothing held
            # back would make it whole.
            self._finish(False)
            return
        self._pump()

    # IPushProducer: for the client's sink

    def pauseProducing(self) -> None:
        self._paused = True
        self._pauseUpstream()

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._finished = True
        self._inputs.clear()
        self._pieces = None
        self._cancelScheduled()
        producer, self._producer = self._producer, None
        if producer is not None and self._ended is None:
            producer.stopProducing()

    # The work

    def _pauseUpstream(self) -> None:
        if not self._upstreamPaused and self._producer is not None and self._ended is None:
            self._upstreamPaused = True
            self._producer.pauseProducing()

    def _resumeUpstream(self) -> None:
        if self._upstreamPaused:
            self._upstreamPaused = False
            if self._producer is not None and self._ended is None:
                self._producer.resumeProducing()

    def _pump(self) -> None:
        if self._pumping or self._scheduled is not None:
            return
        self._pumping = True
        self._work = 0
        starved = False
        try:
            while not self._paused and not self._finished:
                pieces = self._pieces
                if pieces is not None:
                    # one decoded piece through the transforms (maybe nothing comes out)
                    piece = next(pieces, None)
                    if piece is None:
                        self._pieces = None
                        if self._finalising:
                            self._finish(True)
                            return
                        continue
                    if piece:
                        self._sink.bodyData(piece)
                    if self._work >= self._turn and self._callLater is not None:
                        self._pauseUpstream()
                        self._scheduled = self._callLater(0, self._resume)
                        return
                    continue
                if self._inputs:
                    self._pieces = self._process(self._inputs.popleft())
                    continue
                if self._ended is not None:
                    self._finalising = True
                    self._pieces = self._final()
                    continue
                starved = True
                break
            if self._paused:
                self._pauseUpstream()
        except Exception as e:
            self._fail(e)
            return
        finally:
            self._pumping = False
        if starved:
            # Let the body come; a producer that delivers at once, as it resumes, finds
            # this sink ready for it (and paused again if the client is).
            self._resumeUpstream()

    def _resume(self) -> None:
        self._scheduled = None
        self._pump()

    def _process(self, data: bytes) -> Iterator[bytes]:
        pieces = self._decoding.decode(data) if self._decoding is not None else iter((data,))
        return self._cascade(0, pieces)

    def _final(self) -> Iterator[bytes]:
        if self._decoding is not None:
            yield from self._cascade(0, self._decoding.flush())
        for index, transform in enumerate(self._transforms):
            yield from self._cascade(index + 1, iter((transform.finish(),)))

    def _cascade(self, index: int, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """
        C{pieces} through the transforms from C{index} on: one output a piece, empty when
        the transforms held or dropped it all, so the pump can stop after any piece.
        """
        transforms = self._transforms[index:]
        for piece in pieces:
            self._work += len(piece)
            for transform in transforms:
                if not piece:
                    break
                piece = transform.feed(piece)
            yield piece

    def _finish(self, complete: bool) -> None:
        self._finished = True
        self._pieces = None
        self._inputs.clear()
        self._cancelScheduled()
        self._producer = None
        self._sink.bodyDone(complete)

    def _fail(self, reason: Exception) -> None:
        producer = self._producer
        ended = self._ended
        self._finish(False)
        if producer is not None and ended is None:
            producer.stopProducing()
        if self._onError is not None:
            self._onError(str(reason) or reason.__class__.__name__)

    def _cancelScheduled(self) -> None:
        scheduled, self._scheduled = self._scheduled, None
        if scheduled is not None and scheduled.active():
            scheduled.cancel()
