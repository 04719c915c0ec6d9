"""
The answer to one request, written as this client can take it: the status line and fields
framed for its HTTP version (a length, chunked, or until the connection closes), whether the
connection stays open, the body as it streams (an L{IBodySink}, with the client's
back-pressure reaching the producer), interim responses, and the proxy's own pages.

Every way an answer can end (complete, cut off, failed, the client gone) ends it once; a body
that cannot be completed is never sent as if it were whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger

from caplab.proxy.body import WholeBody
from caplab.proxy.headers import endToEnd, viaValue
from caplab.proxy.hooks import Headers, UpstreamResponse
from caplab.proxy.http1 import BODILESS_STATUSES, LAST_CHUNK, chunk, completeResponse, responseHead
from caplab.proxy.pages import errorPage

log = Logger(namespace="caplab.proxy")

HTML = (b"Content-Type", b"text/html; charset=utf-8")

#: An interim response the proxy sends itself (RFC 9110 section 15.2.1).
CONTINUE = responseHead(100, b"Continue", [])

#: The answer to a CONNECT once the tunnel is open.
ESTABLISHED = responseHead(200, b"Connection established", [])


class Client(Protocol):
    """
    What an answer needs of the client's connection (L{caplab.proxy.channel.CaplabProxy}).
    """

    clientDone: bool

    @property
    def readAhead(self) -> int: ...

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def setResponseProducer(self, producer: IPushProducer | None) -> None: ...


class Answer:
    """
    The answer to one request (L{caplab.proxy.exchange.Exchange} makes it and is told when
    it is complete).

    @ivar code: the status sent; @ivar sentLength: body bytes sent; @ivar cacheStatus: the
        C{Cache-Status} of the response relayed.
    @ivar started: bytes of the final answer went out (or are about to).
    @ivar done: the answer is complete (or was cut off).
    @ivar keepAlive: whether the connection may carry another request after it.
    """

    def __init__(
        self,
        client: Client,
        method: bytes,
        version: bytes,
        keepAlive: bool,
        pseudonym: bytes,
        finished: Callable[[], None],
    ) -> None:
        """
        @param finished: called with no argument once the answer is complete.
        """
        self.client = client
        self.method = method
        self.version = version
        self.keepAlive = keepAlive
        self.pseudonym = pseudonym
        self.code = 0
        self.sentLength = 0
        self.cacheStatus: str | None = None
        self.started = False
        self.done = False
        self.requestDone = True
        self._finished = finished
        self._pending: bytes | None = None
        self._chunked = False
        self._closeDelimited = False
        self._producer: IPushProducer | None = None

    # Before the final answer

    def interim(self, code: int, phrase: bytes, headers: Headers) -> None:
        """
        An origin's interim response (C{103 Early Hints} ...), relayed before the final one
        (the caller sends them only to HTTP/1.1 clients); C{100 Continue} is the proxy's own
        business with its client.
        """
        if code != 100 and not self.started and not self.done:
            self.client.send(responseHead(code, phrase, endToEnd(headers)))

    def sendContinue(self) -> None:
        """
        Send C{100 Continue} (the request is admitted and its body wanted, or a half-closed
        client's presence is being checked): only to an HTTP/1.1 client, only before the
        final answer.
        """
        if self.version == b"HTTP/1.1" and not self.started and not self.done:
            self.client.send(CONTINUE)

    # Relaying a response

    def relay(self, response: UpstreamResponse) -> None:
        """
        Send C{response}: its head framed for this client now, its body as it comes.
        """
        self.cacheStatus = response.cacheStatus
        code = self.code = response.code
        fields = list(response.headers)
        hasBody = self.method != b"HEAD" and code not in BODILESS_STATUSES
        hasLength = False
        for name, _ in fields:
            if len(name) == 14 and name.lower() == b"content-length":
                hasLength = True
                break
        if response.cacheStatus is not None:
            fields.append((b"Cache-Status", response.cacheStatus.encode("latin-1")))
        fields.append((b"Via", viaValue(b"HTTP/1.1", self.pseudonym)))
        if hasBody and not hasLength:
            if self.version == b"HTTP/1.1":
                self._chunked = True
                fields.append((b"Transfer-Encoding", b"chunked"))
            else:
                self.keepAlive = False  # ends with the connection, for an HTTP/1.0 client
                self._closeDelimited = True
        self._connectionField(fields)
        head = responseHead(code, response.phrase, fields)
        self.started = True
        deliver = response.deliverBody
        if type(deliver) is WholeBody:
            self._sendWhole(head, deliver.content)
            return
        # The head waits for the first piece of body (usually here already), so that both
        # leave in one write.
        self._pending = head
        deliver(self)
        pending = self._pending
        if pending is not None and not self.done:
            self._pending = None
            self.client.send(pending)

    def _sendWhole(self, head: bytes, content: bytes) -> None:
        """
        Send a body held whole (a L{WholeBody}) with its head, in one write, framed as
        L{bodyData} and L{bodyDone} would frame it.
        """
        if self.done:
            return
        self.sentLength += len(content)
        if self._chunked:
            content = (chunk(content) if content else b"") + LAST_CHUNK
        self.client.send(head + content)
        self._complete()

    def switched(self, response: UpstreamResponse) -> None:
        """
        Send the origin's C{101 Switching Protocols}; the connection is a tunnel after it.
        """
        self.code = response.code
        fields = [*response.headers, (b"Connection", b"upgrade")]
        fields.append((b"Via", viaValue(b"HTTP/1.1", self.pseudonym)))
        self.started = True
        self.keepAlive = False
        self.client.send(responseHead(response.code, response.phrase, fields))

    def _connectionField(self, fields: Headers) -> None:
        """
        Decide whether the connection stays open after this answer, and say so: C{close},
        or C{keep-alive} to an HTTP/1.0 client that asked for it.
        """
        client = self.client
        if not self.requestDone or (client.clientDone and not client.readAhead):
            self.keepAlive = False
        if not self.keepAlive:
            fields.append((b"Connection", b"close"))
        elif self.version == b"HTTP/1.0":
            fields.append((b"Connection", b"keep-alive"))

    # IBodySink: the response body

    def bodyStarted(self, producer: IPushProducer) -> None:
        if self.done:
            producer.stopProducing()
            return
        self._producer = producer
        self.client.setResponseProducer(producer)

    def bodyData(self, data: bytes) -> None:
        if self.done or not data:
            return
        self.sentLength += len(data)
        if self._chunked:
            data = chunk(data)
        pending = self._pending
        if pending is not None:
            self._pending = None
            if len(data) <= 65536:
                data = pending + data
            else:
                self.client.send(pending)
        self.client.send(data)

    def bodyDone(self, complete: bool) -> None:
        self.stopProducer(stop=False)
        if self.done:
            return
        pending, self._pending = self._pending, None
        if not complete:
            if pending is not None:
                self.client.send(pending)
            log.info("the response was cut off before its end; cutting the client off")
            self.cutOff()
            return
        if self._chunked:
            pending = (pending or b"") + LAST_CHUNK
        if pending:
            self.client.send(pending)
        self._complete()

    def stopProducer(self, stop: bool = True) -> None:
        """
        Forget the body's producer (and stop it, unless C{stop} is False).
        """
        producer, self._producer = self._producer, None
        if producer is not None:
            self.client.setResponseProducer(None)
            if stop:
                producer.stopProducing()

    # Ending without a whole answer

    def cutOff(self) -> None:
        """
        The answer cannot be completed: close without completing the framing, so the client
        sees a short body (short of its C{Content-Length}, or without the last chunk), never
        a whole one; a body that ends with the connection can only be shown cut by a reset.
        """
        self.done = True
        self.keepAlive = False
        if self._closeDelimited or not self.started:
            self.client.abort()
        else:
            self.client.close()

    def failed(self) -> None:
        """
        Something broke while answering: a 500 if nothing went out yet, else cut off.
        """
        self.stopProducer()
        if self.done:
            return
        if self._pending is not None or not self.started:
            self._pending = None
            self.started = self._chunked = False
            self.error(500, "Internal Server Error", "the proxy failed (see its log)")
        else:
            self.cutOff()

    def clientGone(self) -> None:
        self.done = True
        self.stopProducer()

    # Answers of the proxy's own

    def error(
        self, code: int, title: str, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        """
        An error page that says why.
        """
        self.complete(code, [HTML, *headers], errorPage(code, title, detail))

    def complete(self, code: int, headers: Headers, body: bytes) -> None:
        """
        A whole answer of the proxy's own, in one write.
        """
        if self.done or self.started:
            return
        self.code = code
        fields = list(headers)
        self._connectionField(fields)
        withBody = self.method != b"HEAD"
        self.started = True
        self.sentLength = len(body) if withBody else 0
        self.client.send(completeResponse(code, fields, body, False, withBody))
        self._complete()

    def _complete(self) -> None:
        self.done = True
        # Told once; forgotten, so that the exchange (which holds this answer) and its
        # answer are freed as soon as they are dropped, not by the garbage collector.
        finished, self._finished = self._finished, _toldAlready
        finished()


def _toldAlready() -> None:
    """
    What an answer tells when it is complete, once it has told its exchange.
    """
