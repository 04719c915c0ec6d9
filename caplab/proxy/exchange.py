"""
One request on a client connection, read top to bottom: admit it, dispatch it, answer it.

    start()         the client's network, the target, loops, C{Expect}, the body's size
      _authenticate proxy credentials (checked off the reactor thread), then
    _admitted()     the host policy; then one of
      _ownPage        C{GET /stats}: the proxy's own pages
      _openTunnel     C{CONNECT host:port}: a tunnel
      _purge          C{PURGE http://...}: the cache's stored responses of a URL
      _forward        everything else: an L{UpstreamRequest} through the filters and the
                      fetcher chain (cache, parent proxy, origin), then
    fetched()       the response, relayed as it streams by the request's
                    L{caplab.proxy.answer.Answer}, or the tunnel an upgrade becomes.

The request's body streams to the upstream leg (L{StreamedBody}) as the client sends it.
The exchange is over once its answer is complete and its request read; the client's
connection (L{ClientChannel}) then reads the next request or closes.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure

from caplab.proxy import admission
from caplab.proxy.admission import Refusal
from caplab.proxy.answer import ESTABLISHED, Answer, Client
from caplab.proxy.body import DISCARD, StreamedBody
from caplab.proxy.headers import maxForwards, upstreamRequestHeaders, viaValue, withMaxForwards
from caplab.proxy.hooks import (
    Headers,
    IFilterChain,
    PageRequest,
    Target,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from caplab.proxy.http1 import MessageError, RequestHead, tokens
from caplab.proxy.target import TargetError, parseAuthority, parseTarget
from caplab.proxy.tunnel import PendingTunnel, Relay

log = Logger(namespace="caplab.proxy")


class ClientChannel(Client, Protocol):
    """
    What an exchange needs of the client's connection (L{caplab.proxy.channel.CaplabProxy}).
    """

    settings: Any
    factory: Any
    transport: Any
    clientHost: str
    clientAllowed: bool
    localAddress: Any

    def exchangeDone(self, exchange: Exchange, keepAlive: bool) -> None: ...

    def startTunnel(self, relay: Relay) -> bytes: ...

    def pauseReading(self) -> None: ...

    def resumeReading(self) -> None: ...


class Cancellable(Protocol):
    """
    A fetch under way (a Deferred, or the forwarder's L{caplab.proxy.origin.Transfer}).
    """

    def cancel(self) -> None: ...


class Exchange:
    """
    One request and its answer on a client connection.

    @ivar answer: the L{Answer} (status, bytes sent, cache status: the access log's).
    @ivar user: the authenticated user; @ivar gone: the client went away.
    """

    def __init__(self, channel: ClientChannel, head: RequestHead) -> None:
        self.channel = channel
        self.settings = channel.settings
        self.head = head
        self.method = head.method
        self.uri = head.target
        self.version = head.version
        self.clientHost = channel.clientHost
        self.user: str | None = None
        self.target: Target | None = None
        self.request: UpstreamRequest | None = None
        self.body: StreamedBody | None = None
        self.requestDone = head.bodyLength == 0
        self.gone = False
        self.answer = Answer(
            channel,
            head.method,
            head.version,
            head.keepAlive,
            self.settings.pseudonym,
            self._answered,
        )
        self.answer.requestDone = self.requestDone
        #: Bytes of the request body received so far.
        self.received = 0
        self._expectContinue = False
        self._readFields(head)
        self._fetching: Cancellable | None = None
        self._filters: IFilterChain | None = None
        self._tunnel: PendingTunnel | None = None
        self._connectTo: tuple[str, int] = ("", 0)
        if head.bodyLength != 0:
            self.body = StreamedBody(channel, head.bodyLength, self._bodyWanted)

    def _readFields(self, head: RequestHead) -> None:
        """
        Note the few request fields the exchange acts on, in one pass over the head (names
        compared by length first: most fields are none of these).
        """
        self.via: list[bytes] = []
        self.expect: list[bytes] = []
        self.upgrade: bytes | None = None
        self.credentials: bytes | None = None
        self.referer: bytes | None = None
        self.userAgent: bytes | None = None
        for name, value in head.headers:
            size = len(name)
            if size == 3:
                if name.lower() == b"via":
                    self.via.append(value)
            elif size == 6:
                if name.lower() == b"expect":
                    self.expect.append(value)
            elif size == 7:
                lower = name.lower()
                if lower == b"referer":
                    self.referer = value
                elif lower == b"upgrade" and self.upgrade is None:
                    self.upgrade = value
            elif size == 10:
                if name.lower() == b"user-agent":
                    self.userAgent = value
            elif size == 19 and self.credentials is None:
                if name.lower() == b"proxy-authorization":
                    self.credentials = value
        if head.version != b"HTTP/1.1" or b"upgrade" not in head.connection:
            self.upgrade = None  # an upgrade is asked with Connection: upgrade, in HTTP/1.1

    # Admission

    def start(self) -> None:
        """
        Admit the request and dispatch it.
        """
        channel = self.channel
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
            self.target = target = parseTarget(uri, websocket=self.upgrade is not None)
        except TargetError as e:
            self.refuse(e)
            return
        refusal = admission.loopRefusal(
            target, self.via, self.settings.pseudonym, channel.localAddress
        )
        if refusal is None and self.expect:
            refusal = self._expectation()
        if refusal is None and self.body is not None:
            refusal = self._bodyLimit(self.head.bodyLength)
        if refusal is not None:
            self.refuse(refusal)
            return
        self._authenticate()

    def _expectation(self) -> Refusal | None:
        """
        C{Expect}: only C{100-continue} is understood (417 for anything else); it is
        answered once the request is admitted and its body wanted, never before.
        """
        if not self.expect:
            return None
        if tokens(self.expect) != [b"100-continue"]:
            return Refusal(417, "Expectation Failed", "only Expect: 100-continue is supported")
        self._expectContinue = self.body is not None
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

        def checked(user: str | None) -> None:
            if self.gone or self.answer.done:
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
            if not (self.gone or self.answer.done):
                self.answer.error(500, "Internal Server Error", "could not check credentials")

        d = authenticator.authenticate(self.credentials, self.clientHost)
        d.addCallbacks(checked, failed).addErrback(self.internalError)

    def _admitted(self) -> None:
        """
        The client may use the proxy: the host policy, then dispatch.
        """
        target = self.target
        if target is None:
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
        answer = self.answer
        if self.uri == b"*":
            if self.method == b"OPTIONS":
                answer.complete(200, [(b"Allow", b"GET, HEAD, OPTIONS")], b"")
            else:
                answer.error(400, "Bad Request", "* is a target for OPTIONS only")
            return
        if self.method not in (b"GET", b"HEAD"):
            answer.error(
                400,
                "Bad Request",
                "this is a proxy: send requests in absolute form (GET http://host/path)",
            )
            return
        path, _, query = self.uri.partition(b"?")
        page = self.settings.pages.get(path)
        if page is None:
            answer.error(404, "Not Found", "the proxy has no such page; / is its status page")
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
        rendered = page.render(request)
        answer.complete(rendered.code, rendered.headers, rendered.body)

    # Dispatch: CONNECT

    def _connectTarget(self) -> None:
        if self.body is not None:
            self.answer.error(400, "Bad Request", "a CONNECT request has no body")
            return
        try:
            host, port = parseAuthority(self.uri)
        except TargetError as e:
            self.refuse(e)
            return
        settings = self.settings
        refusal = admission.connectPortRefusal(port, settings.connectPorts)
        if refusal is None and settings.tunnels is None:
            refusal = Refusal(501, "Not Implemented", "this proxy does not tunnel")
        if refusal is None:
            refusal = admission.loopRefusal(
                Target("https", host, port, b""),
                self.via,
                settings.pseudonym,
                self.channel.localAddress,
            )
        if refusal is not None:
            self.refuse(refusal)
            return
        self._connectTo = (host, port)
        self._authenticate()

    def _openTunnel(self) -> None:
        host, port = self._connectTo
        refusal = admission.policyRefusal(self.settings.hostPolicy, host)
        if refusal is not None:
            self._blocked(refusal)
            return
        self._tunnel = self.settings.tunnels.open(self, host, port)

    def tunnelEstablished(self, relay: Relay) -> bytes:
        """
        The origin is connected: answer 200 and hand the connection to C{relay}; returns the
        bytes the client sent past its request (the tunnel's first).
        """
        self.answer.code = 200
        self.answer.started = True
        self.channel.send(ESTABLISHED)
        return self.channel.startTunnel(relay)

    def tunnelFailed(self, error: UpstreamError) -> None:
        if not self.gone:
            if error.code == 403:
                self._blocked(error)
            else:
                self.refuse(error)

    def tunnelClosed(self, received: int) -> None:
        """
        The tunnel is over: C{received} bytes came from the origin (the access log's size).
        """
        self.answer.sentLength = received
        self.channel.factory.log(self)

    # Dispatch: PURGE

    def _purge(self, target: Target) -> None:
        cache = self.settings.cacheAdmin
        if cache is None:
            self.answer.error(501, "Not Implemented", "this proxy has no cache to purge")
            return

        def purged(count: int) -> None:
            if count:
                text = b"purged %d stored response(s) of %s\n" % (count, target.uri.encode())
                self.answer.complete(200, [(b"Content-Type", b"text/plain; charset=utf-8")], text)
            else:
                self.answer.error(404, "Not Found", f"nothing is stored for {target.uri}")

        cache.purge(target.uri).addCallback(purged).addErrback(self.internalError)

    # Dispatch: forwarding

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
        hits = settings.hits
        if (
            hits is not None
            and method == b"GET"
            and self.body is None
            and self.upgrade is None
            and settings.filters is None
        ):
            stored = hits.answer(target.uri, fields, self.head.connection)
            if stored is not None:
                self.fetched(stored)
                return
        headers = upstreamRequestHeaders(
            fields,
            target.authority.encode("ascii"),
            viaValue(self.version, settings.pseudonym),
            self.clientHost.encode() if settings.forwardedFor else None,
            self.head.connection,
        )
        upgrade = self.upgrade
        body = self.body
        request = UpstreamRequest(
            method,
            target,
            headers,
            body.length if body is not None else 0,
            self.answer.interim if self.version == b"HTTP/1.1" else None,
            upgrade,
        )
        fetcher = settings.fetcher
        if upgrade is not None:
            fetcher = settings.upstream or fetcher
        elif settings.filters is not None:
            # The chain in force now serves this request to its end, whatever a reload does.
            self._filters = filters = getattr(settings.filters, "current", settings.filters)
            request = filters.filterRequest(request, self.clientHost)
        self.request = request
        fetchInto = getattr(fetcher, "fetchInto", None)
        if fetchInto is not None:
            # The forwarder itself (no cache, no parent): told directly, without a Deferred.
            transfer = fetchInto(request, body, self)
            if transfer.waiting:  # (it may have failed at once: nothing left to cancel)
                self._fetching = transfer
            return
        d = self._fetching = fetcher.fetch(request, body)
        d.addCallbacks(self.fetched, self.fetchFailed)

    def _bodyWanted(self) -> None:
        """
        The upstream leg wants the request body: the moment to answer C{100-continue}.
        """
        if self._expectContinue:
            self._expectContinue = False
            self.answer.sendContinue()

    def probeClient(self) -> None:
        """
        Find out whether a client that half-closed is still there, by the one thing HTTP/1.1
        lets a server send before its answer at any time: an interim C{100 Continue}
        (RFC 9110 section 15.2: clients must accept unexpected 1xx).  Nothing for HTTP/1.0,
        nor for a CONNECT whose tunnel is opening (the client awaits its 2xx, then the
        tunnel's bytes: no 1xx before them).
        """
        if self.method == b"CONNECT":
            return
        self._expectContinue = False
        self.answer.sendContinue()

    def _answerMaxForwards(self, fields: Headers) -> None:
        """
        OPTIONS or TRACE with C{Max-Forwards: 0}: this proxy is the final recipient.
        """
        if self.method == b"OPTIONS":
            allow = b"GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE"
            self.answer.complete(200, [(b"Allow", allow)], b"")
            return
        lines = [b"%s %s %s" % (self.method, self.uri, self.version)]
        lines += [
            n + b": " + v
            for n, v in fields
            if n.lower() not in (b"proxy-authorization", b"authorization", b"cookie")
        ]
        body = b"\r\n".join(lines) + b"\r\n\r\n"
        self.answer.complete(200, [(b"Content-Type", b"message/http")], body)

    # The response

    def fetched(self, response: UpstreamResponse) -> None:
        """
        The response's head came (from the fetcher chain, or stored): relay it.
        """
        self._fetching = None
        try:
            self._relay(response)
        except Exception:
            self.internalError(Failure())

    def _relay(self, response: UpstreamResponse) -> None:
        switched = response.switched
        if self.gone:
            response.deliverBody(DISCARD)
            if switched is not None:
                switched.transport.loseConnection()
            return
        if switched is not None:
            self.answer.switched(response)
            authority = self.target.authority if self.target is not None else "?"
            relay = Relay(self, f"{authority} (upgraded)")
            relay.startSwitched(switched, self.channel.startTunnel(relay))
            return
        filters = self._filters
        if filters is not None and self.request is not None:
            response = filters.filterResponse(self.request, response)
        self.answer.relay(response)

    def fetchFailed(self, reason: Failure) -> None:
        """
        There is no response: say why to the client (unless the fetch was cancelled).
        """
        self._fetching = None
        try:
            self._refuseFailed(reason)
        except Exception:
            self.internalError(Failure())

    def _refuseFailed(self, reason: Failure) -> None:
        if self.gone or reason.check(CancelledError):
            return
        if isinstance(reason.value, UpstreamError):
            if reason.value.code == 403:
                self._blocked(reason.value)  # an address rule, checked when connecting
            else:
                self.refuse(reason.value)
            return
        log.failure("fetching {uri}", reason, uri=self.uri.decode("latin-1"))
        self.answer.error(502, "Bad Gateway", "the proxy could not fetch this page")

    def internalError(self, reason: Failure) -> None:
        """
        A bug while answering: logged; the client gets a 500 if nothing was sent yet, else
        its connection is cut (never an answer that looks complete).
        """
        log.failure("answering {uri}", reason, uri=self.uri.decode("latin-1"))
        if not self.gone:
            self.answer.failed()

    def refuse(self, refusal: Refusal) -> None:
        """
        Answer with the error page of C{refusal} (logged, for a 5xx).
        """
        if refusal.code >= 500:
            log.info(
                "{method} {uri}: {code} {detail}",
                method=self.method.decode("latin-1"),
                uri=self.uri.decode("latin-1"),
                code=refusal.code,
                detail=refusal.detail,
            )
        self.answer.error(refusal.code, refusal.title, refusal.detail, refusal.headers)

    def _answered(self) -> None:
        """
        The answer is complete: log it; the exchange is over once the request's body is in
        too.
        """
        self.channel.factory.log(self)
        if self.requestDone:
            self.channel.exchangeDone(self, self.answer.keepAlive)
        elif not self.answer.keepAlive:
            self.channel.close()

    # The request body (from the channel)

    def bodyReceived(self, data: bytes) -> None:
        self.received += len(data)
        limit = self.settings.maxRequestBody
        if limit is not None and self.received > limit:
            self.bodyAborted(None, admission.bodyTooLarge(self.received, limit))
            return
        if self.body is not None:
            self.body.dataReceived(data)

    def bodyComplete(self) -> None:
        self.requestDone = self.answer.requestDone = True
        if self.body is not None:
            self.body.finished(True)
        if self.answer.done:
            self.channel.exchangeDone(self, self.answer.keepAlive)

    @property
    def readingBody(self) -> bool:
        """
        Whether the request body is wanted upstream and not all in: the client should be
        sending it.
        """
        body = self.body
        return body is not None and not self.requestDone and body.streaming

    def bodyStalled(self, timeout: float) -> None:
        """
        The client sent none of the request body it owes for C{timeout} seconds: 408 if
        nothing was sent to it yet, else cut off; the upstream request is dropped either way
        (it would hold an origin connection for good).
        """
        self.bodyAborted(
            None,
            Refusal(408, "Request Timeout", f"the request body stalled for {timeout:g} s"),
        )

    def bodyAborted(self, error: MessageError | None, refusal: Refusal | None = None) -> None:
        """
        The request body cannot be completed (the client closed mid-body, sent a malformed
        chunk, or went over C{--max-request-body}): the upstream request is dropped, and the
        client answered (400, 413) if nothing was sent yet, else cut off.
        """
        answer = self.answer
        answer.keepAlive = False
        if self.body is not None:
            self.body.finished(False)
        self._cancelFetch()
        answer.stopProducer()
        if answer.done:
            self.channel.close()
        elif answer.started:
            answer.cutOff()
        else:
            if refusal is None:
                assert error is not None
                refusal = Refusal(error.code, "Bad Request", f"the request body: {error.detail}")
            self.refuse(refusal)

    # The client went away

    def clientGone(self) -> None:
        self.gone = True
        if self.body is not None:
            self.body.finished(False)
        self._cancelFetch()
        self.answer.clientGone()
        if self._tunnel is not None:
            self._tunnel.clientLost()

    def _cancelFetch(self) -> None:
        if self._fetching is not None:
            fetching, self._fetching = self._fetching, None
            fetching.cancel()
