"""
Bodies as streams: the client's request body (L{StreamedBody}, an L{IRequestBody}: chunks
from the client's connection go to the upstream leg's sink as they arrive, and the client is
paused while the sink is not ready or the upstream connection is slow); L{WholeBody}, a
response body held whole in memory (a stored one), which the client side sends in the same
write as the head; and L{DISCARD}, the sink of a body nobody wants.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from caplab.proxy.hooks import IBodySink


class ReadControl(Protocol):
    """
    Pauses and resumes reading from the client (the proxy's channel); each pause is undone
    by one resume.
    """

    def pauseReading(self) -> None: ...

    def resumeReading(self) -> None: ...


@implementer(IPushProducer)
class StreamedBody:
    """
    A request body read from the client while it is being forwarded.

    @ivar length: the announced length, None for chunked.
    @ivar received: the bytes received so far.
    """

    def __init__(
        self,
        reading: ReadControl,
        length: int | None,
        onStart: Callable[[], None] | None = None,
    ) -> None:
        self.reading = reading
        self.length = length
        self.received = 0
        self._onStart = onStart
        self._sink: IBodySink | None = None
        self._pending: list[bytes] = []
        self._done: bool | None = None
        self._pausedByUs = False
        self._pausedByUpstream = False

    @property
    def streaming(self) -> bool:
        """
        Whether the upstream leg is taking the body and its end has not come yet: the
        client, unless paused, should be sending it (C{100 Continue} was sent, if asked).
        """
        return self._sink is not None and self._done is None

    # From the channel

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self._sink is not None:
            self._sink.bodyData(data)
            return
        self._pending.append(data)
        self._pause()

    def finished(self, complete: bool) -> None:
        """
        The body ended (C{complete}), or cannot be completed (the client went away, broke
        the framing, or sent too much).
        """
        if self._done is not None:
            return
        self._done = complete
        self._resume()
        if self._sink is not None:
            self._sink.bodyDone(complete)

    # IRequestBody

    def startStreaming(self, sink: IBodySink) -> None:
        self._sink = sink
        if self._onStart is not None:
            onStart, self._onStart = self._onStart, None
            onStart()
        sink.bodyStarted(self)
        pending, self._pending = self._pending, []
        for data in pending:
            sink.bodyData(data)
        if self._done is not None:
            sink.bodyDone(self._done)
        elif not self._pausedByUpstream:
            self._resume()

    # IPushProducer: the upstream connection's back-pressure

    def _pause(self) -> None:
        if not self._pausedByUs and self._done is None:
            self._pausedByUs = True
            self.reading.pauseReading()

    def _resume(self) -> None:
        if self._pausedByUs:
            self._pausedByUs = False
            self.reading.resumeReading()

    def pauseProducing(self) -> None:
        self._pausedByUpstream = True
        self._pause()

    def resumeProducing(self) -> None:
        self._pausedByUpstream = False
        if self._done is None:
            self._resume()

    def stopProducing(self) -> None:
        self._pausedByUpstream = False
        self._sink = None
        self._resume()


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


class WholeBody:
    """
    A response body held whole in memory, as a C{deliverBody}: delivered in one go to any
    sink, and recognised by L{caplab.proxy.answer.Answer}, which then sends it in the same
    write as the head (no producer, no sink calls: the cache hit's short way).

    @ivar content: the whole body.
    """

    __slots__ = ("content",)

    def __init__(self, content: bytes) -> None:
        self.content = content

    def __call__(self, sink: IBodySink) -> None:
        sink.bodyStarted(NoProducer())
        if self.content:
            sink.bodyData(self.content)
        sink.bodyDone(True)


class Discard:
    """
    An L{IBodySink} for a body nobody wants: its producer is stopped at once (the connection
    it comes from is not worth keeping for the bytes).
    """

    def bodyStarted(self, producer: IPushProducer) -> None:
        producer.stopProducing()

    def bodyData(self, data: bytes) -> None:
        pass

    def bodyDone(self, complete: bool) -> None:
        pass


#: The one L{Discard}.
DISCARD: IBodySink = Discard()
