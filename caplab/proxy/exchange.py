"""
One request on a client connection, read top to bottom: admit it, dispatch it, relay the
answer.

    start()         the client's network, the target, loops, the declared body size
      _authenticate proxy credentials (checked off the reactor thread), then
    _admitted()     the host policy; then one of
      _ownPage        C{GET /stats}: the proxy's own pages
      _connect        C{CONNECT host:port}: a tunnel
      _purge          C{PURGE http://...}: the cache's stored responses of a URL
      _forward        everything else: an L{UpstreamRequest} through the filters and the
                      fetcher chain (cache, parent proxy, origin), then
    _gotResponse()  the response head back to the client (framing for this client), and its
                    body as it streams (this object is the L{IBodySink}), with the client's
                    back-pressure reaching the producer through the channel.

Everything the exchange writes goes through L{caplab.proxy.http1}'s writer; every way it can
end (complete, refused, failed, cut off, client gone) ends the exchange exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from caplab import __version__
from caplab.proxy import admission
from caplab.proxy.admission import Refusal
from caplab.proxy.body import DISCARD, StreamedBody
from caplab.proxy.headers import (
    endToEnd,
    maxForwards,
    upstreamRequestHeaders,
    viaValue,
    withMaxForwards,
)
from caplab.proxy.hooks import (
    Headers,
    PageRequest,
    Target,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from caplab.proxy.http1 import (
    LAST_CHUNK,
    MessageError,
    RequestHead,
    chunk,
    responseHead,
    tokens,
)
from caplab.proxy.pages import errorPage, reason, statusPage
from caplab.proxy.target import TargetError, parseAuthority, parseTarget

if TYPE_CHECKING:
    from caplab.proxy.channel import CaplabProxy

log = Logger(namespace="caplab.proxy")

_HTML = (b"Content-Type", b"text/html; charset=utf-8")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_CODES = frozenset({204, 304})


class Exchange:
    """
    One request and its response on a L{CaplabProxy} channel.

    @ivar code: the status sent (for the access log); @ivar sentLength: body bytes sent.
    @ivar user: the authenticated user; @ivar cacheStatus: the response's C{Cache-Status}.
    """

    def __init__(self, channel: CaplabProxy, head: RequestHead) -> None:
        self.channel = channel
        self.settings = channel.settings
        self.head = head
        self.method = head.method
        self.uri = head.target
        self.version = head.version
        self.clientHost = channel.clientHost
        self.keepAlive = head.keepAlive
        self.code = 0
        self.sentLength = 0
        self.user: str | None = None
        self.cacheStatus: str | None = None
        self.target: Target | None = None
        self.body: StreamedBody | None = None
        self.requestDone = head.bodyLength == 0
        self.responseDone = False
        self.gone = False
        self._received = 0
        self._expectContinue = False
        self._fetching: Deferred[UpstreamResponse] | None = None
        self._producer: IPushProducer | None = None
        self._pending: bytes | None = None
        self._chunked = False
        self._closeDelimited = False
        self._started = False
        self._tunnel: Any = None
        if head.bodyLength != 0:
            self.body = StreamedBody(channel, head.bodyLength, self._bodyStarted)

    # Admission

    def start(self) -> None:
        """
        Admit the request and dispatch it.
        """
        channel = self.channel
        channel.factory.requestCounted()
        if not channel.clientAllowed:
            self.refuse(admission.clientRefusal(self.clientHost))
            return
        if self.method == b"CONNECT":
            self._connectTarget()
            return
        uri = self.uri
        if uri[:1] == b"/" or uri == b"*":
            self._ownPage()
            return
        try:
            self.target = target = parseTarget(uri, websocket=self._upgrade() is not None)
        except TargetError as e:
            self.respondError(e.code, e.title, e.detail)
            return
        refusal = admission.loopRefusal(
            target, self.head.headers, self.settings.pseudonym, channel.localAddress
        )
        if refusal is None:
            refusal = self._expectation() or self._bodyLimit(self.head.bodyLength)
        if refusal is not None:
            self.refuse(refusal)
            return
        self._authenticate()

    def _expectation(self) -> Refusal | None:
        """
        C{Expect}: only C{100-continue} is understood (417 for anything else); it is
        answered once the request is admitted and its body is wanted, never before.
        """
        values = [v for n, v in self.head.headers if len(n) == 6 and n.lower() == b"expect"]
        if not values:
            return None
        if tokens(values) != [b"100-continue"]:
            return Refusal(417, "Expectation Failed", "only Expect: 100-continue is supported")
        self._expectContinue = self.version == b"HTTP/1.1" and self.body is not None
        return None

    def _bodyLimit(self, length: int | None) -> Refusal | None:
        limit = self.settings.maxRequestBody
        if limit is not None and length is not None and length > limit:
            return admission.bodyTooLarge(length, limit)
        return None

    def _authenticate(self) -> None:
        authenticator = self.settings.authenticator
        if authenticator is None:
            self._admitted()
            return
        credentials = None
        for name, value in self.head.headers:
            if len(name) == 19 and name.lower() == b"proxy-authorization":
                credentials = value
                break
        d = authenticator.authenticate(credentials)

        def checked(user: str | None) -> None:
            if self.gone or self.responseDone:
                return
            if user is None:
                metrics = self.settings.metrics
                if metrics is not None:
                    metrics.authenticationFailed()
                self.refuse(admission.authRefusal(authenticator.realm))
                return
            self.user = user
            self._admitted()

        def failed(reason: Failure) -> None:
            log.failure("checking proxy credentials", reason)
            if not (self.gone or self.responseDone):
                self.respondError(500, "Internal Server Error", "could not check credentials")

        d.addCallbacks(checked, failed).addErrback(self._internalError)

    def _admitted(self) -> None:
        """
        The client may use the proxy: the host policy, then dispatch.
        """
        target = self.target
        if target is None:  # CONNECT
            self._openTunnel()
            return
        if self.method == b"PURGE":
            self._purge(target)
            return
        refusal = admission.policyRefusal(self.settings.hostPolicy, target.host)
        if refusal is not None:
            self._blocked(refusal)
            return
        self._forward(target)

    def _blocked(self, refusal: Refusal) -> None:
        metrics = self.settings.metrics
        if metrics is not None:
            metrics.requestBlocked(self.method)
        self.refuse(refusal)

    # Dispatch: the proxy's own pages

    def _ownPage(self) -> None:
        """
        A request for the proxy itself (C{GET /}, C{/stats}, C{/proxy.pac}), or C{OPTIONS *}.
        """
        if self.uri == b"*":
            if self.method == b"OPTIONS":
                self.respond(200, [(b"Allow", b"GET, HEAD, OPTIONS")], b"")
            else:
                self.respondError(400, "Bad Request", "* is a target for OPTIONS only")
            return
        if self.method not in (b"GET", b"HEAD"):
            self.respondError(
                400,
                "Bad Request",
                "this is a proxy: send requests in absolute form (GET http://host/path)",
            )
            return
        path, _, query = self.uri.partition(b"?")
        page = self.settings.pages.get(path)
        if page is None and path == b"/":
            factory = self.channel.factory
            body = statusPage(__version__, factory.uptime(), factory.counters())
            self.respond(200, [_HTML], body)
            return
        if page is None:
            self.respondError(404, "Not Found", "the proxy has no such page; / is its status page")
            return
        local = self.channel.localAddress
        request = PageRequest(
            self.method,
            path,
            query,
            self.head.headers,
            self.clientHost,
            (getattr(local, "host", "127.0.0.1"), getattr(local, "port", 0)),
        )
        answer = page.render(request)
        self.respond(answer.code, answer.headers, answer.body)

    # Dispatch: CONNECT

    def _connectTarget(self) -> None:
        if self.body is not None:
            self.respondError(400, "Bad Request", "a CONNECT request has no body")
            return
        try:
            host, port = parseAuthority(self.uri)
        except TargetError as e:
            self.respondError(e.code, e.title, e.detail)
            return
        settings = self.settings
        refusal = admission.connectPortRefusal(port, settings.connectPorts)
        if refusal is None and settings.tunnels is None:
            refusal = Refusal(501, "Not Implemented", "this proxy does not tunnel")
        if refusal is None:
            refusal = admission.loopRefusal(
                Target("https", host, port, b""),
                self.head.headers,
                settings.pseudonym,
                self.channel.localAddress,
            )
        if refusal is not None:
            self.refuse(refusal)
            return
        self._connect = (host, port)
        self._authenticate()

    def _openTunnel(self) -> None:
        host, port = self._connect
        refusal = admission.policyRefusal(self.settings.hostPolicy, host)
        if refusal is not None:
            self._blocked(refusal)
            return
        self._tunnel = self.settings.tunnels.open(self, host, port)

    def tunnelEstablished(self, relay: Any) -> bytes:
        """
        The origin is connected: answer 200 and hand the connection to C{relay}; returns the
        bytes the client sent past its request (the tunnel's first).
        """
        self.code = 200
        self._started = True
        self.channel.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        return self.channel.startTunnel(relay)

    def tunnelFailed(self, error: UpstreamError) -> None:
        if not self.gone:
            self.respondError(error.code, error.title, error.detail)

    def tunnelClosed(self, received: int) -> None:
        """
        The tunnel is over: C{received} bytes came from the origin (the access log's size).
        """
        self.sentLength = received
        self.channel.factory.log(self)

    # Dispatch: PURGE

    def _purge(self, target: Target) -> None:
        cache = self.settings.cacheAdmin
        if cache is None:
            self.respondError(501, "Not Implemented", "this proxy has no cache to purge")
            return

        def purged(count: int) -> None:
            if count:
                self.respond(
                    200,
                    [(b"Content-Type", b"text/plain; charset=utf-8")],
                    b"purged %d stored response(s) of %s\n" % (count, target.uri.encode()),
                )
            else:
                self.respondError(404, "Not Found", f"nothing is stored for {target.uri}")

        cache.purge(target.uri).addCallback(purged).addErrback(self._internalError)

    # Dispatch: forwarding

    def _upgrade(self) -> bytes | None:
        """
        The client's C{Upgrade} field, if it asks to switch protocols (HTTP/1.1, with
        C{Connection: upgrade}): the request is then forwarded with it, past the cache.
        """
        head = self.head
        if head.version != b"HTTP/1.1" or b"upgrade" not in head.connection:
            return None
        for name, value in head.headers:
            if len(name) == 7 and name.lower() == b"upgrade":
                return value
        return None

    def _forward(self, target: Target) -> None:
        settings = self.settings
        method = self.method
        fields = self.head.headers
        if method == b"OPTIONS" or method == b"TRACE":
            remaining = maxForwards(fields)
            if remaining == 0:
                self._answerMaxForwards(fields)
                return
            if remaining is not None:
                fields = withMaxForwards(fields, remaining - 1)
        headers = upstreamRequestHeaders(
            fields,
            target.authority.encode("ascii"),
            viaValue(self.version, settings.pseudonym),
            self.clientHost.encode() if settings.forwardedFor else None,
            self.head.connection,
        )
        upgrade = self._upgrade()
        body = self.body
        request = UpstreamRequest(
            method,
            target,
            headers,
            body.length if body is not None else 0,
            self._interim if self.version == b"HTTP/1.1" else None,
            upgrade,
        )
        fetcher = settings.fetcher
        if upgrade is not None:
            fetcher = settings.upstream or fetcher
        elif settings.filters is not None:
            request = settings.filters.filterRequest(request, self.clientHost)
        self.request = request
        d = self._fetching = fetcher.fetch(request, body)
        d.addCallbacks(self._gotResponse, self._fetchFailed)
        d.addErrback(self._internalError)

    def _bodyStarted(self) -> None:
        """
        The upstream leg wants the request body: the moment to answer C{100-continue}.
        """
        if self._expectContinue and not self._started and not self.gone:
            self._expectContinue = False
            self.channel.send(_CONTINUE)

    def probeClient(self) -> None:
        """
        Find out whether a client that half-closed is still there, by the one thing HTTP/1.1
        lets a server send before its answer at any time: an interim C{100 Continue}
        (RFC 9110 section 15.2: clients must accept unexpected 1xx).  Nothing for HTTP/1.0.
        """
        if self.version == b"HTTP/1.1" and not self._started and not self.gone:
            self._expectContinue = False
            self.channel.send(_CONTINUE)

    def _answerMaxForwards(self, fields: Headers) -> None:
        """
        OPTIONS or TRACE with C{Max-Forwards: 0}: this proxy is the final recipient.
        """
        if self.method == b"OPTIONS":
            self.respond(200, [(b"Allow", b"GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE")], b"")
            return
        lines = [b"%s %s %s" % (self.method, self.uri, self.version)]
        lines += [
            n + b": " + v
            for n, v in fields
            if n.lower() not in (b"proxy-authorization", b"authorization", b"cookie")
        ]
        self.respond(200, [(b"Content-Type", b"message/http")], b"\r\n".join(lines) + b"\r\n\r\n")

    # The response

    def _interim(self, code: int, phrase: bytes, headers: Headers) -> None:
        """
        An interim response of the origin (C{103 Early Hints} ...): relayed to the client
        (an HTTP/1.1 one) before the final response.  C{100 Continue} is the proxy's own
        business with the client (see L{_bodyStarted}).
        """
        if code == 100 or self._started or self.gone:
            return
        self.channel.send(responseHead(code, phrase, endToEnd(headers)))

    def _gotResponse(self, response: UpstreamResponse) -> None:
        self._fetching = None
        if self.gone:
            response.deliverBody(DISCARD)
            if response.switched is not None:
                response.switched.transport.loseConnection()
            return
        if response.switched is not None:
            self._switched(response)
            return
        filters = self.settings.filters
        if filters is not None and self.request.upgrade is None:
            response = filters.filterResponse(self.request, response)
        self.cacheStatus = response.cacheStatus
        code = self.code = response.code
        fields = list(response.headers)
        hasBody = self.method != b"HEAD" and code not in _NO_BODY_CODES
        hasLength = False
        for name, _ in fields:
            if len(name) == 14 and name.lower() == b"content-length":
                hasLength = True
                break
        if response.cacheStatus is not None:
            fields.append((b"Cache-Status", response.cacheStatus.encode("latin-1")))
        fields.append((b"Via", viaValue(b"HTTP/1.1", self.settings.pseudonym)))
        if hasBody and not hasLength:
            if self.version == b"HTTP/1.1":
                self._chunked = True
                fields.append((b"Transfer-Encoding", b"chunked"))
            else:
                self.keepAlive = False  # close-delimited for an HTTP/1.0 client
                self._closeDelimited = True
        self._connectionField(fields)
        self._pending = responseHead(code, response.phrase, fields)
        self._started = True
        response.deliverBody(self)
        pending = self._pending
        if pending is not None and not self.gone:
            self._pending = None
            self.channel.send(pending)

    def _connectionField(self, fields: Headers) -> None:
        """
        Decide whether the connection stays open after this response, and say so: C{close},
        or C{keep-alive} to an HTTP/1.0 client that asked for it.
        """
        channel = self.channel
        if not self.requestDone or (channel.clientDone and not channel.reader.buffered):
            self.keepAlive = False
        if not self.keepAlive:
            fields.append((b"Connection", b"close"))
        elif self.version == b"HTTP/1.0":
            fields.append((b"Connection", b"keep-alive"))

    def _switched(self, response: UpstreamResponse) -> None:
        """
        The origin switched protocols (C{101}): relay its head, then both connections as a
        tunnel.
        """
        from caplab.proxy.tunnel import Relay

        switched = response.switched
        assert switched is not None
        self.code = response.code
        fields = [*response.headers, (b"Connection", b"upgrade")]
        fields.append((b"Via", viaValue(b"HTTP/1.1", self.settings.pseudonym)))
        self._started = True
        self.channel.send(responseHead(response.code, response.phrase, fields))
        relay = Relay(self, f"{self.target.authority if self.target else '?'} (upgraded)")
        relay.startSwitched(switched, self.channel.startTunnel(relay))

    def _fetchFailed(self, reason: Failure) -> None:
        self._fetching = None
        if self.gone or reason.check(CancelledError):
            return
        if reason.check(UpstreamError):
            error = reason.value
            assert isinstance(error, UpstreamError)
            self.respondError(error.code, error.title, error.detail)
            return
        log.failure("fetching {uri}", reason, uri=self.uri.decode("latin-1"))
        self.respondError(502, "Bad Gateway", "the proxy could not fetch this page")

    def _internalError(self, reason: Failure) -> None:
        """
        A bug while relaying: log it, and give the client a 500 if nothing was sent yet,
        else cut its connection (never a response that looks complete).
        """
        log.failure("relaying {uri}", reason, uri=self.uri.decode("latin-1"))
        self._stopProducer()
        if self.gone or self.responseDone:
            return
        if self._pending is not None or not self._started:
            self._pending = None
            self._started = False
            self._chunked = False
            self.respondError(500, "Internal Server Error", "the proxy failed (see its log)")
        else:
            self.responseDone = True
            self.channel.abort()

    # IBodySink: the response body

    def bodyStarted(self, producer: IPushProducer) -> None:
        if self.gone:
            producer.stopProducing()
            return
        self._producer = producer
        self.channel.setResponseProducer(producer)

    def bodyData(self, data: bytes) -> None:
        if self.gone or not data:
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
                self.channel.send(pending)
        self.channel.send(data)

    def bodyDone(self, complete: bool) -> None:
        self._stopProducer(stop=False)
        if self.gone or self.responseDone:
            return
        pending, self._pending = self._pending, None
        if not complete:
            if pending is not None:
                self.channel.send(pending)
            log.info(
                "{uri}: the response was cut off before its end; aborting the client",
                uri=self.uri.decode("latin-1"),
            )
            # Cut without completing the framing: the client sees a short body (short of
            # its Content-Length, or without the last chunk), never a whole one; a body
            # that ends with the connection can only be shown cut by a reset.
            self.responseDone = True
            self.keepAlive = False
            if self._closeDelimited:
                self.channel.abort()
            else:
                self.channel.close()
            return
        if self._chunked:
            pending = (pending or b"") + LAST_CHUNK
        if pending:
            self.channel.send(pending)
        self._responded()

    def _stopProducer(self, stop: bool = True) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            self.channel.setResponseProducer(None)
            if stop:
                producer.stopProducing()

    # The request body (from the channel)

    def bodyReceived(self, data: bytes) -> None:
        self._received += len(data)
        limit = self.settings.maxRequestBody
        if limit is not None and self._received > limit:
            self.bodyAborted(None, admission.bodyTooLarge(self._received, limit))
            return
        if self.body is not None:
            self.body.dataReceived(data)

    def bodyComplete(self) -> None:
        self.requestDone = True
        if self.body is not None:
            self.body.finished(True)
        if self.responseDone:
            self.channel.exchangeDone(self, self.keepAlive)

    def bodyAborted(self, error: MessageError | None, refusal: Refusal | None = None) -> None:
        """
        The request body cannot be completed (the client closed mid-body, sent a malformed
        chunk, or went over C{--max-request-body}): the upstream request is dropped, and the
        client answered (400, 413) if nothing was sent yet, else cut off.
        """
        self.keepAlive = False
        if self.body is not None:
            self.body.finished(False)
        if self._fetching is not None:
            d, self._fetching = self._fetching, None
            d.cancel()
        self._stopProducer()
        if self.responseDone:
            self.channel.close()
            return
        if self._started:
            self.responseDone = True
            self.channel.abort()
            return
        if refusal is None:
            assert error is not None
            refusal = Refusal(error.code, "Bad Request", f"the request body: {error.detail}")
        self.refuse(refusal)

    # Answers of the proxy's own

    def refuse(self, refusal: Refusal) -> None:
        self.respondError(refusal.code, refusal.title, refusal.detail, refusal.headers)

    def respondError(
        self, code: int, title: str, detail: str, headers: Headers | None = None
    ) -> None:
        """
        Answer with an error page that says why (and log it, for a 5xx).
        """
        if code >= 500:
            log.info(
                "{method} {uri}: {code} {detail}",
                method=self.method.decode("latin-1"),
                uri=self.uri.decode("latin-1"),
                code=code,
                detail=detail,
            )
        self.respond(code, [_HTML, *(headers or [])], errorPage(code, title, detail))

    def respond(self, code: int, headers: Headers, body: bytes) -> None:
        """
        Send a whole response of the proxy's own.
        """
        if self.gone or self.responseDone or self._started:
            return
        self.code = code
        fields = list(headers)
        self._connectionField(fields)
        fields.append((b"Content-Length", b"%d" % len(body)))
        if self.method == b"HEAD":
            body = b""
        self._started = True
        self.sentLength = len(body)
        self.channel.send(responseHead(code, reason(code), fields) + body)
        self._responded()

    def _responded(self) -> None:
        """
        The response is sent in full: log it; the exchange is over once the request's body
        is in too.
        """
        self.responseDone = True
        self.channel.factory.log(self)
        if self.requestDone:
            self.channel.exchangeDone(self, self.keepAlive)
        elif not self.keepAlive:
            self.channel.close()

    # The client went away

    def clientGone(self) -> None:
        self.gone = True
        if self.body is not None:
            self.body.finished(False)
        if self._fetching is not None:
            d, self._fetching = self._fetching, None
            d.cancel()
        self._stopProducer()
        if self._tunnel is not None:
            self._tunnel.clientLost()

    # For the access log

    def header(self, name: bytes) -> bytes | None:
        lower = name.lower()
        for n, v in self.head.headers:
            if n.lower() == lower:
                return v
        return None
