"""
Helpers for the filter tests: a body producer that honours pause and resume, sinks that
collect or pause, requests and responses.  (No tests here.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from caplab.proxy.filters.interfaces import ITransform
from caplab.proxy.hooks import Headers, IBodySink, Target, UpstreamRequest, UpstreamResponse


@implementer(IPushProducer)
class BodySource:
    """
    Delivers C{pieces} to a sink as fast as the sink lets it: stops while paused, goes on
    when resumed (synchronously, as a cache hit's producer does).

    @ivar pauses: how often it was paused; @ivar delivered: pieces handed out.
    """

    def __init__(self, pieces: Iterable[bytes], complete: bool = True) -> None:
        self._pieces: Iterator[bytes] = iter(pieces)
        self.complete = complete
        self.sink: IBodySink | None = None
        self.paused = False
        self.stopped = False
        self.finished = False
        self.pauses = 0
        self.delivered = 0
        self._delivering = False

    def deliverBody(self, sink: IBodySink) -> None:
        self.sink = sink
        sink.bodyStarted(self)
        self._deliver()

    def _deliver(self) -> None:
        if self._delivering:
            return
        self._delivering = True
        try:
            while not self.paused and not self.stopped and not self.finished:
                piece = next(self._pieces, None)
                assert self.sink is not None
                if piece is None:
                    self.finished = True
                    self.sink.bodyDone(self.complete)
                    return
                self.delivered += 1
                self.sink.bodyData(piece)
        finally:
            self._delivering = False

    def pauseProducing(self) -> None:
        if not self.paused:
            self.pauses += 1
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._deliver()

    def stopProducing(self) -> None:
        self.stopped = True


class CollectingSink:
    """
    An L{IBodySink} that keeps what it gets (or only counts it, with C{keep=False}).
    """

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.producer: IPushProducer | None = None
        self.pieces: list[bytes] = []
        self.received = 0
        self.done: bool | None = None

    def bodyStarted(self, producer: IPushProducer) -> None:
        self.producer = producer

    def bodyData(self, data: bytes) -> None:
        assert self.done is None, "data after the end"
        self.received += len(data)
        if self.keep:
            self.pieces.append(data)

    def bodyDone(self, complete: bool) -> None:
        assert self.done is None, "ended twice"
        self.done = complete

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)


class SlowClientSink(CollectingSink):
    """
    A sink like a client connection with a small send buffer: it pauses its producer once
    more than C{limit} bytes arrived since it last resumed it, and resumes it on L{drain}.
    """

    def __init__(self, limit: int, keep: bool = False) -> None:
        super().__init__(keep)
        self.limit = limit
        self.buffered = 0
        self.mostBuffered = 0

    def bodyData(self, data: bytes) -> None:
        super().bodyData(data)
        self.buffered += len(data)
        self.mostBuffered = max(self.mostBuffered, self.buffered)
        if self.buffered > self.limit and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.buffered = 0
        assert self.producer is not None
        self.producer.resumeProducing()


def runTransform(transform: ITransform, pieces: Iterable[bytes]) -> bytes:
    out = [transform.feed(piece) for piece in pieces]
    out.append(transform.finish())
    return b"".join(out)


def splitAt(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """
    C{data} cut at the offsets C{cuts} (any order, repeats and out-of-range ones allowed).
    """
    points = sorted({max(0, min(len(data), c)) for c in cuts})
    pieces = []
    previous = 0
    for point in [*points, len(data)]:
        pieces.append(data[previous:point])
        previous = point
    return pieces


def makeRequest(
    host: str = "example.com",
    path: bytes = b"/",
    method: bytes = b"GET",
    headers: Headers | None = None,
    scheme: str = "http",
) -> UpstreamRequest:
    port = 443 if scheme == "https" else 80
    return UpstreamRequest(method, Target(scheme, host, port, path), list(headers or []))


def makeResponse(
    headers: Headers,
    pieces: Iterable[bytes] = (),
    code: int = 200,
    complete: bool = True,
) -> tuple[UpstreamResponse, BodySource]:
    source = BodySource(pieces, complete)
    return UpstreamResponse(code, b"OK", list(headers), source.deliverBody), source


def receive(response: UpstreamResponse, sink: CollectingSink | None = None) -> CollectingSink:
    sink = sink if sink is not None else CollectingSink()
    response.deliverBody(sink)
    return sink
