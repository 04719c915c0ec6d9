"""
The body sinks the cache puts between a response body and the client: a tee into the store,
a byte-range cutter, and a sink that throws bodies away.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer

from caplab.proxy.body import NoProducer
from caplab.proxy.cache.storage import IEntryWriter
from caplab.proxy.hooks import IBodySink


def noBody(sink: IBodySink) -> None:
    sink.bodyStarted(NoProducer())
    sink.bodyDone(True)


class Discard:
    """
    An L{IBodySink} that throws the body away (a 304's, a background revalidation's).

    Unlike L{caplab.proxy.body.DISCARD}, which stops the producer at once, it lets the body
    run to its end: a body teed into the store must arrive whole to be stored, and an origin
    connection read to the end can be used again.
    """

    def bodyStarted(self, producer: IPushProducer) -> None:
        pass

    def bodyData(self, data: bytes) -> None:
        pass

    def bodyDone(self, complete: bool) -> None:
        pass


class TeeSink:
    """
    Passes a streaming body on to the client's sink and writes it to the store; commits
    only a body that ended properly with the announced length.
    """

    def __init__(
        self,
        sink: IBodySink,
        writer: IEntryWriter,
        expectedLength: int | None,
        onDone: Any,
    ) -> None:
        self._sink = sink
        self._writer: IEntryWriter | None = writer
        self._expected = expectedLength
        self._length = 0
        self._onDone = onDone

    def bodyStarted(self, producer: IPushProducer) -> None:
        self._sink.bodyStarted(producer)

    def bodyData(self, data: bytes) -> None:
        self._length += len(data)
        if self._writer is not None and not self._writer.write(data):
            self._writer = None
        self._sink.bodyData(data)

    def bodyDone(self, complete: bool) -> None:
        writer, self._writer = self._writer, None
        whole = complete and (self._expected is None or self._expected == self._length)
        if writer is None:
            self._onDone(None)
        elif whole:
            writer.commit().addBoth(self._onDone)
        else:
            writer.abort()
            self._onDone(None)
        self._sink.bodyDone(complete)


class SliceSink:
    """
    Passes on only bytes C{start} to C{stop} of a body, and ends it there.
    """

    def __init__(self, sink: IBodySink, start: int, stop: int) -> None:
        self._sink = sink
        self._start = start
        self._stop = stop
        self._position = 0
        self._done = False
        self._producer: IPushProducer | None = None

    def bodyStarted(self, producer: IPushProducer) -> None:
        self._producer = producer
        self._sink.bodyStarted(producer)

    def bodyData(self, data: bytes) -> None:
        if self._done:
            return
        begin = self._position
        self._position += len(data)
        if self._position > self._start:
            piece = data[max(0, self._start - begin) : self._stop - begin]
            if piece:
                self._sink.bodyData(piece)
        if self._position >= self._stop:
            self._done = True
            if self._producer is not None:
                self._producer.stopProducing()
            self._sink.bodyDone(True)

    def bodyDone(self, complete: bool) -> None:
        if not self._done:
            self._done = True
            self._sink.bodyDone(complete)
