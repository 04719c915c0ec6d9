"""
One request on the proxy's channel (L{caplab.proxy.channel.CaplabProxy}): a
L{twisted.web.proxy.ProxyRequest} that admits it (client network, proxy authentication, host
policy, loops) and dispatches it: CONNECT to a tunnel, origin-form C{GET /} to the status
page, everything else to the fetcher chain, relaying the response as it streams.

A request body is not buffered into C{content} as stock L{Request} does: the channel starts
the request as soon as the header block is in (L{CaplabProxyRequest.startEarly}) and the body
is streamed to the fetcher (L{caplab.proxy.body.StreamedBody}).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import _QUEUED_SENTINEL
from twisted.web.proxy import ProxyRequest
from twisted.web.resource import Resource

from caplab.internals import sendNow
from caplab.proxy.body import StreamedBody
from caplab.proxy.headers import (
    loops,
    maxForwards,
    upstreamRequestHeaders,
    viaValue,
    withMaxForwards,
)
from caplab.proxy.hooks import (
    Headers,
    IAuthenticator,
    IPage,
    PageRequest,
    Target,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from caplab.proxy.pages import errorPage, reason
from caplab.proxy.target import TargetError, parseAuthority, parseTarget

if TYPE_CHECKING:
    from caplab.proxy.channel import CaplabProxy

log = Logger(namespace="caplab.proxy")


class CaplabProxyRequest(ProxyRequest):
    """
    One request on a L{CaplabProxy} channel: admit it, then forward, tunnel or answer it.

    @ivar user: the authenticated user name, for the access log.
    @ivar cacheStatus: the C{Cache-Status} of the response, for the access log.
    """

    channel: CaplabProxy
    user: str | None = None  # type: ignore[assignment]
    cacheStatus: str | None = None
    _body: StreamedBody | None = None
    _bodyLength: int | None = 0
    _bodyDone = False
    _started = False
    _fetching: Deferred[UpstreamResponse] | None = None
    _upstream: IPushProducer | None = None
    _target: Target | None = None
    _tunnel: Any = None
    _head: bytes | None = None

    def __init__(self, channel: CaplabProxy, queued: object = _QUEUED_SENTINEL) -> None:
        super().__init__(channel, queued, channel.settings.clock)
        self.settings = channel.settings
        self.clientHost = channel.clientHost

    # Called by the channel

    def parseCookies(self) -> None:
        """
        Nothing: cookies are the origin's business, passed on untouched, not parsed here.
        """

    def gotLength(self, length: int | None) -> None:
        """
        The header block is complete: remember the body length; a body is streamed, not
        buffered into C{content}.
        """
        self._bodyLength = length

    def startEarly(self, command: bytes, uri: bytes, version: bytes) -> None:
        """
        A request with a body: start it now, streaming the body as it comes.
        """
        self.method, self.uri, self.clientproto = command, uri, version
        self.path = uri
        self._body = StreamedBody(self.channel.transport, self._bodyLength)
        self._started = True
        if command == b"CONNECT":
            self.respondError(400, "Bad Request", "a CONNECT request has no body")
            return
        self._begin()

    def handleContentChunk(self, data: bytes) -> None:
        if self._body is not None and not self.finished:
            self._body.dataReceived(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        The request (and body, if any) is complete.
        """
        self._bodyDone = True
        if self._started:
            if self._body is not None:
                self._body.finished(True)
            return
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path
        self.args = {}
        self._started = True
        self._begin()

    def process(self) -> None:
        self._begin()

    # Admission and dispatch

    def _begin(self) -> None:
        channel = self.channel
        channel.factory.requests += 1
        if not channel.clientAllowed:
            self.respondError(
                403,
                "Forbidden",
                f"clients from {channel.clientHost} may not use this proxy. The proxy's "
                "operator can allow them with --allow (e.g. --allow 192.168.1.0/24); by "
                "default only loopback clients are served.",
            )
            return
        method = self.method
        if method == b"CONNECT":
            self._connect()
            return
        uri = self.uri
        if uri[:1] == b"/":
            self._originForm()
            return
        try:
            target = parseTarget(uri)
        except TargetError as e:
            self.respondError(e.code, e.title, e.detail)
            return
        self._target = target
        if self._loops(target):
            return
        authenticator = self.settings.authenticator
        if authenticator is not None:
            self._authenticate(authenticator, self._admitted)
        else:
            self._admitted(None)

    def _loops(self, target: Target) -> bool:
        """
        Refuse (508) a request that came through this proxy already, or that names it.
        """
        fields = self.requestHeaders.getAllRawHeaders()
        pseudonym = self.settings.pseudonym
        if self.requestHeaders.hasHeader(b"via") and loops(
            ((n, v) for n, vs in fields for v in vs), pseudonym
        ):
            self.respondError(
                508, "Loop Detected", "this request has passed through this proxy before"
            )
            return True
        host = self.channel.localAddress
        if getattr(host, "port", None) == target.port and _isLocal(target.host, host):
            self.respondError(
                508,
                "Loop Detected",
                f"{target.authority} is this proxy itself; open http://{target.authority}/ "
                "without the proxy for its status page",
            )
            return True
        return False

    def _authenticate(self, authenticator: IAuthenticator, then: Any) -> None:
        credentials = self.requestHeaders.getRawHeaders(b"proxy-authorization")
        d = authenticator.authenticate(credentials[0] if credentials else None)

        def checked(user: str | None) -> None:
            if self.finished or self._disconnected:
                return
            if user is None:
                metrics = self.settings.metrics
                if metrics is not None:
                    metrics.authenticationFailed()
                realm = authenticator.realm.replace('"', "")
                self.respondError(
                    407,
                    "Proxy Authentication Required",
                    "this proxy needs a user name and password",
                    [(b"Proxy-Authenticate", f'Basic realm="{realm}"'.encode())],
                )
                return
            self.user = user
            then(user)

        def failed(reason: Failure) -> None:
            log.failure("checking proxy credentials", reason)
            if not (self.finished or self._disconnected):
                self.respondError(500, "Internal Server Error", "could not check credentials")

        d.addCallbacks(checked, failed)

    def _blocked(self, host: str) -> bool:
        policy = self.settings.hostPolicy
        if policy is None:
            return False
        verdict = policy.check(host)
        if verdict is None:
            return False
        metrics = self.settings.metrics
        if metrics is not None:
            metrics.requestBlocked(self.method)
        self.respondError(
            403,
            "Forbidden",
            f"access to {host} is blocked by the rule {verdict.rule!r} ({verdict.source})",
        )
        return True

    def _admitted(self, user: str | None) -> None:
        target = self._target
        assert target is not None
        if self._blocked(target.host):
            return
        settings = self.settings
        method = self.method
        via = viaValue(self.clientproto, settings.pseudonym)
        fields = [(n, v) for n, vs in self.requestHeaders.getAllRawHeaders() for v in vs]
        if method == b"OPTIONS" or method == b"TRACE":
            remaining = maxForwards(fields)
            if remaining == 0:
                self._answerMaxForwards(fields)
                return
            if remaining is not None:
                fields = withMaxForwards(fields, remaining - 1)
        forwardedFor = self.channel.clientHost.encode() if settings.forwardedFor else None
        headers = upstreamRequestHeaders(
            fields,
            target.authority.encode("ascii"),
            via,
            forwardedFor,
            self.requestHeaders.getRawHeaders(b"connection", ()),
        )
        body = self._body
        upstream = UpstreamRequest(method, target, headers, body.length if body else 0)
        try:
            d = settings.fetcher.fetch(upstream, body)
        except Exception:
            log.failure("fetcher failed for {uri}", uri=target.uri)
            self.respondError(500, "Internal Server Error", "the proxy failed")
            return
        self._fetching = d
        d.addCallbacks(self._gotResponse, self._fetchFailed)
        d.addErrback(self._internalError)

    def _answerMaxForwards(self, fields: Headers) -> None:
        """
        OPTIONS or TRACE with C{Max-Forwards: 0}: this proxy is the final recipient.
        """
        if self.method == b"OPTIONS":
            self.respond(200, [(b"Allow", b"GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE")], b"")
            return
        lines = [b"%s %s %s" % (self.method, self.uri, self.clientproto)]
        lines += [
            n + b": " + v
            for n, v in fields
            if n.lower() not in (b"proxy-authorization", b"authorization", b"cookie")
        ]
        self.respond(200, [(b"Content-Type", b"message/http")], b"\r\n".join(lines) + b"\r\n\r\n")

    def _originForm(self) -> None:
        """
        A request for the proxy itself (C{GET /}): the status page, or 404.
        """
        path = self.uri.split(b"?", 1)[0]
        if self.method not in (b"GET", b"HEAD"):
            self.respondError(
                400,
                "Bad Request",
                "this is a proxy: send requests in absolute form (GET http://host/path)",
            )
            return
        resource = self.settings.statusResources.get(path)
        if resource is None and path == b"/":
            from caplab.metrics import legacyStatusPage  # until the root registers "/"

            resource = legacyStatusPage(self.channel.factory)
        if resource is not None and not isinstance(resource, Resource):
            self._servePage(resource, path)
            return
        if resource is not None:
            body = resource.render(self)
            if isinstance(body, bytes):
                self.write(body)
                self.finish()
            return
        self.respondError(404, "Not Found", "the proxy has no such page; / is its status page")

    def _servePage(self, page: IPage, path: bytes) -> None:
        """
        Answer with one of the proxy's own pages (an L{IPage}).
        """
        channel = self.channel
        local = channel.localAddress
        fields = [(n, v) for n, vs in self.requestHeaders.getAllRawHeaders() for v in vs]
        query = self.uri.split(b"?", 1)[1] if b"?" in self.uri else b""
        request = PageRequest(
            self.method,
            path,
            query,
            fields,
            channel.clientHost,
            (getattr(local, "host", ""), getattr(local, "port", 0)),
        )
        response = page.render(request)
        self.respond(response.code, response.headers, response.body)

    def _connect(self) -> None:
        try:
            host, port = parseAuthority(self.uri)
        except TargetError as e:
            self.respondError(e.code, e.title, e.detail)
            return
        if port not in self.settings.connectPorts:
            allowed = ", ".join(str(p) for p in sorted(self.settings.connectPorts))
            self.respondError(
                403,
                "Forbidden",
                f"CONNECT to port {port} is not allowed (allowed: {allowed}; see --connect-ports)",
            )
            return
        tunnels = self.settings.tunnels
        if tunnels is None:
            self.respondError(501, "Not Implemented", "this proxy does not tunnel")
            return
        authority = (f"[{host}]" if ":" in host else host) + f":{port}"
        target = Target("https", host, port, b"")
        if self._loops(target):
            return

        def admitted(user: str | None) -> None:
            if self._blocked(host):
                return
            self._tunnel = tunnels.open(self, host, port, authority)

        authenticator = self.settings.authenticator
        if authenticator is not None:
            self._authenticate(authenticator, admitted)
        else:
            admitted(None)

    # The response

    def _gotResponse(self, response: UpstreamResponse) -> None:
        self._fetching = None
        if self._disconnected:
            response.deliverBody(_Discard())
            return
        self.cacheStatus = response.cacheStatus
        code = response.code
        self.code = code
        self.code_message = response.phrase
        headers = response.headers
        lines = [b"HTTP/1.1 %d " % code, response.phrase, b"\r\n"]
        hasLength = False
        for name, value in headers:
            if not hasLength and len(name) == 14 and name.lower() == b"content-length":
                hasLength = True
            lines += (name, b": ", value, b"\r\n")
        chunked = False
        if not hasLength and not (self.method == b"HEAD" or code in (204, 304)):
            if self.clientproto == b"HTTP/1.1":
                chunked = True
            else:
                self.channel.persistent = False
        if not self._bodyDone:
            self.channel.persistent = False
        if response.cacheStatus is not None:
            lines += (b"Cache-Status: ", response.cacheStatus.encode("latin-1"), b"\r\n")
        lines += (b"Via: ", viaValue(b"HTTP/1.1", self.settings.pseudonym), b"\r\n")
        if chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not self.channel.persistent:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self.startedWriting = 1
        self.chunked = chunked
        # The head waits for the first piece of body (usually already here) so that both
        # leave in one send.
        self._head = b"".join(lines)
        response.deliverBody(self)
        if self._head is not None and not self._disconnected:
            head, self._head = self._head, None
            sendNow(self.channel.transport, head)

    def _fetchFailed(self, reason: Failure) -> None:
        self._fetching = None
        if self._disconnected or reason.check(CancelledError):
            return
        if reason.check(UpstreamError):
            error = reason.value
            self.respondError(error.code, error.title, error.detail)  # type: ignore[union-attr]
            return
        log.failure("fetching {uri}", reason, uri=self.uri)
        self.respondError(502, "Bad Gateway", "the proxy could not fetch this page")

    def _internalError(self, reason: Failure) -> None:
        """
        A bug while relaying: log it, and give the client a 500 if nothing was sent yet,
        else close its connection (never a response that looks complete).
        """
        log.failure("relaying {uri}", reason, uri=self.uri)
        if self._upstream is not None:
            producer, self._upstream = self._upstream, None
            producer.stopProducing()
            if not self._disconnected:
                self.channel.unregisterProducer()
        if self._disconnected or self.finished:
            return
        if self._head is not None:  # a head not sent yet: replace it
            self._head = None
            self.startedWriting = self.chunked = 0
        if not self.startedWriting:
            self.respondError(500, "Internal Server Error", "the proxy failed (see its log)")
        else:
            self.channel.persistent = False
            self.channel.transport.loseConnection()

    # IBodySink: the response body

    def bodyStarted(self, producer: IPushProducer) -> None:
        if self._disconnected:
            producer.stopProducing()
            return
        self._upstream = producer
        self.channel.registerProducer(producer, True)
        if self.channel._waitingForTransport:
            producer.pauseProducing()  # the client is not reading yet

    def bodyData(self, data: bytes) -> None:
        if self._disconnected:
            return
        self.sentLength += len(data)
        head = self._head
        if head is not None:
            self._head = None
            if self.chunked:
                data = b"".join((head, b"%x\r\n" % len(data), data, b"\r\n"))
            elif len(data) <= 65536:
                data = head + data
            else:
                sendNow(self.channel.transport, head)
        elif self.chunked:
            data = b"".join((b"%x\r\n" % len(data), data, b"\r\n"))
        sendNow(self.channel.transport, data)

    def bodyDone(self, complete: bool) -> None:
        if self._upstream is not None:
            self._upstream = None
            if not self._disconnected:
                self.channel.unregisterProducer()
        if self._disconnected or self.finished:
            return
        head, self._head = self._head, None
        if complete:
            if self.chunked:
                self.chunked = 0
                head = head + b"0\r\n\r\n" if head is not None else b"0\r\n\r\n"
            if head is not None:
                sendNow(self.channel.transport, head)
        elif head is not None:
            sendNow(self.channel.transport, head)
        if not complete:
            log.info(
                "{uri}: the origin closed mid-body; aborting the client",
                uri=self.uri.decode("latin-1"),
            )
            # Close without completing the framing: the client sees a cut-off body
            # (short of its Content-Length, or without the last chunk), never a whole one.
            self.channel.persistent = False
            self.channel._closing = True
            self.channel.transport.loseConnection()
            return
        self.finish()

    # Answers of the proxy's own

    def respond(self, code: int, headers: Headers, body: bytes) -> None:
        """
        Send a complete response of the proxy's own.
        """
        if self._disconnected or self.finished:
            return
        if not self._bodyDone:
            self.channel.persistent = False
        self.code = code
        self.code_message = reason(code)
        lines = [b"HTTP/1.1 %d " % code, self.code_message, b"\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        lines += (b"Content-Length: %d\r\n" % len(body),)
        if not self.channel.persistent:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        if self.method != b"HEAD":
            lines.append(body)
            self.sentLength = len(body)
        self.startedWriting = 1
        sendNow(self.channel.transport, b"".join(lines))
        self.finish()

    def respondError(
        self, code: int, title: str, detail: str, headers: Headers | None = None
    ) -> None:
        """
        Answer with an error page that says why.
        """
        if code >= 500:
            log.info(
                "{method} {uri}: {code} {detail}",
                method=self.method.decode("latin-1"),
                uri=self.uri.decode("latin-1"),
                code=code,
                detail=detail,
            )
        page = errorPage(code, title, detail)
        self.respond(
            code,
            [(b"Content-Type", b"text/html; charset=utf-8"), *(headers or [])],
            page,
        )

    # Client gone

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self._body is not None:
            self._body.finished(False)
        if self._fetching is not None:
            d, self._fetching = self._fetching, None
            d.cancel()
        if self._upstream is not None:
            producer, self._upstream = self._upstream, None
            producer.stopProducing()
        if self._tunnel is not None:
            self._tunnel.clientLost()


class _Discard:
    def bodyStarted(self, producer: IPushProducer) -> None:
        producer.stopProducing()

    def bodyData(self, data: bytes) -> None:
        pass

    def bodyDone(self, complete: bool) -> None:
        pass


def _isLocal(host: str, local: Any) -> bool:
    if host in ("localhost", getattr(local, "host", None)):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified
