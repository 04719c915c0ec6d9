"""
The client's request body as a stream (L{IRequestBody}): chunks from the channel go to the
fetcher's sink as they arrive, and the client connection is paused while the sink is not
ready or the upstream connection is slow.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from caplab.proxy.hooks import IBodySink


@implementer(IPushProducer)
class StreamedBody:
    """
    A request body read from C{transport} while it is being forwarded.

    @ivar length: the announced length, None for chunked.
    """

    def __init__(self, transport: Any, length: int | None) -> None:
        self.transport = transport
        self.length = length
        self.received = 0
        self._sink: IBodySink | None = None
        self._pending: list[bytes] = []
        self._done: bool | None = None
        self._pausedByUs = False
        self._pausedByUpstream = False

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
        The body ended (C{complete}) or the client went away.
        """
        if self._done is not None:
            return
        self._done = complete
        if self._sink is not None:
            self._sink.bodyDone(complete)

    # IRequestBody

    def startStreaming(self, sink: IBodySink) -> None:
        self._sink = sink
        sink.bodyStarted(self)
        pending, self._pending = self._pending, []
        for data in pending:
            sink.bodyData(data)
        if self._done is not None:
            sink.bodyDone(self._done)
        elif self._pausedByUs and not self._pausedByUpstream:
            self._pausedByUs = False
            self.transport.resumeProducing()

    # IPushProducer: the upstream connection's back-pressure

    def _pause(self) -> None:
        if not self._pausedByUs:
            self._pausedByUs = True
            self.transport.pauseProducing()

    def pauseProducing(self) -> None:
        self._pausedByUpstream = True
        self._pause()

    def resumeProducing(self) -> None:
        self._pausedByUpstream = False
        if self._pausedByUs and self._done is None:
            self._pausedByUs = False
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self._pausedByUpstream = False
        self._sink = None
