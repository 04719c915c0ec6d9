"""
Chaining to a parent proxy (C{--upstream-proxy http://[user:pass@]host:port}).

Three pieces the forwarder and the tunnel use:

    - L{UpstreamRouter.nextHop} says where a L{Target}'s connection goes: to the parent proxy,
      or (no parent, or a C{--no-upstream-for} domain) straight to the origin;
    - L{UpstreamRouter.requestHead} gives a plain request's request-target and headers for that
      hop: origin-form to an origin, absolute-form plus the parent's C{Proxy-Authorization}
      to a parent;
    - L{ConnectThroughProxyEndpoint} is an C{IStreamClientEndpoint} that opens a tunnel through
      the parent with C{CONNECT host:port} and then behaves like a direct connection to the
      origin, so a tunnel (or TLS) is built on it unchanged.

The client's own C{Proxy-Authorization} is never sent on: it is for this proxy alone (the
core drops it as hop-by-hop); only the parent's configured credentials are sent, and only to
the parent.  Credentials never appear in reprs or logs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from caplab.address import hostPort
from caplab.proxy.auth import basicCredentials
from caplab.proxy.body import DISCARD
from caplab.proxy.connect import connectQuietly
from caplab.proxy.hooks import (
    Headers,
    IFetcher,
    IRequestBody,
    Target,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from caplab.proxy.http1 import MessageError, ResponseHead, ResponseReader, requestHead
from caplab.proxy.policy import HostList, PolicyFileError, normaliseHost

#: The largest CONNECT response head accepted from a parent proxy.
MAX_HEAD = 16384


@dataclass(frozen=True)
class ParentProxy:
    """
    A parent proxy: where it listens and the C{Proxy-Authorization} value to send it.
    """

    host: str
    port: int
    authorization: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> str:
        """
        C{host:port} (IPv6 bracketed), for logs and error pages: never the credentials.
        """
        return hostPort(self.host, self.port)


def parseProxyURL(url: str) -> ParentProxy:
    """
    The L{ParentProxy} that C{http://[user:pass@]host:port} names (user and password may be
    percent-encoded).

    @raise ValueError: not such a URL (the message never repeats a password).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("not an http://[user:password@]host:port URL") from None
    if parts.scheme.lower() != "http":
        raise ValueError("only http:// parent proxies are supported (http://host:port)")
    if not parts.hostname:
        raise ValueError("no host in the URL (http://host:port)")
    if port is None or port == 0:
        raise ValueError("name the parent proxy's port (http://host:port)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a proxy URL has no path (http://host:port)")
    host = normaliseHost(parts.hostname)
    authorization = None
    if parts.username is not None:
        authorization = basicCredentials(unquote(parts.username), unquote(parts.password or ""))
    return ParentProxy(host, port, authorization)


@dataclass(frozen=True)
class NextHop:
    """
    Where to connect for a target: C{host}, C{port}, and the parent proxy if that is one.
    """

    host: str
    port: int
    proxy: ParentProxy | None = None


class UpstreamRouter:
    """
    Chooses the next hop of each request: the parent proxy, if there is one and the target
    is not in the C{--no-upstream-for} domains.
    """

    def __init__(self, parent: ParentProxy | None = None, noUpstreamFor: Iterable[str] = ()):
        """
        @raise ValueError: a C{noUpstreamFor} entry is not a domain or address.
        """
        self.parent = parent
        self.direct = HostList()
        try:
            self.direct.addLines(noUpstreamFor, "--no-upstream-for")
        except PolicyFileError as e:
            raise ValueError(str(e)) from None

    def nextHop(self, target: Target) -> NextHop:
        """
        Where C{target}'s connection goes.
        """
        if self.parent is None:
            return NextHop(target.host, target.port)
        try:
            host = normaliseHost(target.host)
        except ValueError:
            host = target.host
        if self.direct.match(host) is not None:
            return NextHop(target.host, target.port)
        return NextHop(self.parent.host, self.parent.port, self.parent)

    def requestHead(self, hop: NextHop, request: UpstreamRequest) -> tuple[bytes, Headers]:
        """
        The request-target and header list to send to C{hop} for a plain (not CONNECT)
        request: origin-form to an origin; absolute-form to a parent, with its credentials.

        Any C{Proxy-Authorization} in C{request.headers} is dropped either way.
        """
        headers = [(n, v) for n, v in request.headers if n.lower() != b"proxy-authorization"]
        if hop.proxy is None:
            return request.target.path, headers
        if hop.proxy.authorization is not None:
            headers.append((b"Proxy-Authorization", hop.proxy.authorization))
        return request.target.uri.encode("ascii"), headers


def authority(host: str, port: int) -> bytes:
    """
    C{host:port} as CONNECT names it, IPv6 bracketed.
    """
    return hostPort(host, port).encode("ascii")


def unreachableParent(parent: ParentProxy, reason: Failure) -> UpstreamError:
    """
    The L{UpstreamError} for a connection to C{parent} that failed for C{reason}: 504 for a
    timeout, else 502; it names the parent (never its credentials).
    """
    if reason.check(ConnectTimeoutError):
        return UpstreamError(
            504, "Gateway Timeout", f"connecting to parent proxy {parent.address} timed out"
        )
    return UpstreamError(
        502,
        "Bad Gateway",
        f"cannot reach parent proxy {parent.address}: {reason.getErrorMessage()}",
    )


@implementer(IStreamClientEndpoint)
class ConnectThroughProxyEndpoint:
    """
    Connects to C{host:port} through a parent proxy's CONNECT tunnel.

    The returned protocol sees only the origin's bytes: the CONNECT exchange is done before
    its C{makeConnection}.  A parent that refuses (any non-2xx) fails the connection with an
    L{UpstreamError} 502 naming the parent and its status; one that does not answer within
    C{timeout} seconds with 504.
    """

    def __init__(
        self,
        proxyEndpoint: IStreamClientEndpoint,
        host: str,
        port: int,
        parent: ParentProxy,
        clock: IReactorTime,
        timeout: float = 30.0,
    ) -> None:
        self.proxyEndpoint = proxyEndpoint
        self.host = host
        self.port = port
        self.parent = parent
        self.clock = clock
        self.timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        connected: list[_ConnectProtocol] = []

        def cancel(d: Deferred[IProtocol]) -> None:
            if connected:
                connected[0].abort()  # the half-open tunnel
            else:
                connecting.cancel()

        established: Deferred[IProtocol] = Deferred(cancel)
        wrapper = _ConnectFactory(self, protocolFactory, established)
        connecting = self.proxyEndpoint.connect(wrapper)

        def failed(reason: Failure) -> None:
            if established.called:
                return
            if reason.check(CancelledError, UpstreamError):
                established.errback(reason)
                return
            established.errback(unreachableParent(self.parent, reason))

        connecting.addCallbacks(connected.append, failed)
        return established


class _ConnectFactory(Factory):
    def __init__(
        self,
        endpoint: ConnectThroughProxyEndpoint,
        wrapped: IProtocolFactory,
        established: Deferred[IProtocol],
    ) -> None:
        self.endpoint = endpoint
        self.wrapped = wrapped
        self.established = established

    def buildProtocol(self, addr: IAddress | None) -> _ConnectProtocol:
        return _ConnectProtocol(self, addr)


class _ConnectProtocol(Protocol):
    """
    Sends C{CONNECT}, reads the parent's answer, then hands the connection to the wrapped
    protocol and relays to it.
    """

    log = Logger()

    def __init__(self, factory: _ConnectFactory, addr: IAddress | None) -> None:
        self.connectFactory = factory
        self.addr = addr
        self.inner: IProtocol | None = None
        self._reader = ResponseReader(MAX_HEAD)
        self._reader.expect(b"CONNECT")
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        endpoint = self.connectFactory.endpoint
        target = authority(endpoint.host, endpoint.port)
        headers = [(b"Host", target)]
        if endpoint.parent.authorization is not None:
            headers.append((b"Proxy-Authorization", endpoint.parent.authorization))
        self.transport.write(requestHead(b"CONNECT", target, headers))  # type: ignore[union-attr]
        self._timer = endpoint.clock.callLater(endpoint.timeout, self._timedOut)

    def abort(self) -> None:
        """
        Give up on the tunnel (the connection attempt was cancelled).
        """
        self._fail(Failure(UpstreamError(502, "Bad Gateway", "tunnel cancelled")))

    def _timedOut(self) -> None:
        self._timer = None
        endpoint = self.connectFactory.endpoint
        self._fail(
            Failure(
                UpstreamError(
                    504,
                    "Gateway Timeout",
                    f"parent proxy {endpoint.parent.address} did not answer CONNECT "
                    f"within {endpoint.timeout:g} seconds",
                )
            )
        )

    def _fail(self, reason: Failure) -> None:
        self._cancelTimer()
        established = self.connectFactory.established
        if not established.called:
            established.errback(reason)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        if self.connectFactory.established.called:
            return  # failed already; the connection is going away
        for event in self._reader.receive(data):
            if isinstance(event, MessageError):
                self._refused(event.detail.encode())
                return
            if isinstance(event, ResponseHead):
                if not event.switched:
                    self._refused(b"%d %s" % (event.code, event.phrase))
                    return
                self._established(self._reader.switch())
                return

    def _refused(self, what: bytes) -> None:
        parent = self.connectFactory.endpoint.parent
        detail = what.decode("latin-1")[:200]
        self.log.warn(
            "parent proxy {parent} refused CONNECT: {detail}", parent=parent.address, detail=detail
        )
        self._fail(
            Failure(
                UpstreamError(
                    502,
                    "Bad Gateway",
                    f"parent proxy {parent.address} answered CONNECT with {detail}",
                )
            )
        )

    def _established(self, rest: bytes) -> None:
        self._cancelTimer()
        inner = self.connectFactory.wrapped.buildProtocol(self.addr)  # type: ignore[arg-type]
        if inner is None:
            self._fail(Failure(ConnectionDone("the protocol factory refused the connection")))
            return
        if IHalfCloseableProtocol.providedBy(inner):
            alsoProvides(self, IHalfCloseableProtocol)
        self.inner = inner
        inner.makeConnection(self.transport)  # type: ignore[arg-type]
        self.connectFactory.established.callback(inner)
        if rest:
            inner.dataReceived(rest)

    def readConnectionLost(self) -> None:
        if self.inner is not None:
            IHalfCloseableProtocol(self.inner).readConnectionLost()

    def writeConnectionLost(self) -> None:
        if self.inner is not None:
            IHalfCloseableProtocol(self.inner).writeConnectionLost()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._cancelTimer()
        if self.inner is not None:
            self.inner.connectionLost(reason or Failure(ConnectionDone()))
            return
        established = self.connectFactory.established
        if not established.called:
            parent = self.connectFactory.endpoint.parent
            established.errback(
                Failure(
                    UpstreamError(
                        502,
                        "Bad Gateway",
                        f"parent proxy {parent.address} closed the connection before "
                        "answering CONNECT",
                    )
                )
            )


class ChainingFetcher:
    """
    An L{IFetcher} in front of the forwarder: a request whose next hop is the parent proxy
    is sent in absolute form with the parent's credentials (the connection itself goes to the
    parent through L{ChainingConnector}).

    The absolute URI travels as the target's path, which is what the forwarder writes as the
    request-target; host and port stay the origin's, so the cache and the connection pool key
    on the origin as before.
    """

    def __init__(self, inner: IFetcher, router: UpstreamRouter) -> None:
        self.inner = inner
        self.router = router

    def fetch(self, request: UpstreamRequest, body: IRequestBody | None) -> Deferred[Any]:
        hop = self.router.nextHop(request.target)
        if hop.proxy is None or request.target.scheme != "http":
            return self.inner.fetch(request, body)
        requestTarget, headers = self.router.requestHead(hop, request)
        chained = replace(request, target=replace(request.target, path=requestTarget))
        chained.headers = headers
        parent = hop.proxy

        def refused(response: UpstreamResponse) -> UpstreamResponse:
            # The parent's 407 is about this proxy's credentials, not the client's: passing
            # it on would ask the client for credentials that are never forwarded.
            if response.code != 407:
                return response
            response.deliverBody(DISCARD)
            raise UpstreamError(
                502,
                "Bad Gateway",
                f"parent proxy {parent.address} refused this proxy's credentials (407)",
            )

        return self.inner.fetch(chained, body).addCallback(refused)


class ChainingConnector:
    """
    Wraps the proxy's connector (C{caplab.proxy.connect.EndpointConnector}) so that
    connections whose next hop is the parent proxy go through it:

        - C{connect(target, protocol)} (the forwarder): an C{http} target's connection goes
          to the parent itself (the request is in absolute form, see L{ChainingFetcher}); an
          C{https} target's goes through a CONNECT tunnel, with TLS to the origin inside;
        - C{endpoint(host, port, tls)} (CONNECT tunnels): a CONNECT tunnel through the parent.

    Targets reached directly are left to the wrapped connector.
    """

    def __init__(self, inner: Any, router: UpstreamRouter, clock: IReactorTime) -> None:
        self.inner = inner
        self.router = router
        self.clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def endpoint(self, host: str, port: int, tls: bool = False) -> IStreamClientEndpoint:
        """
        The client endpoint for C{host:port}: a tunnel through the parent if it is the next
        hop, else the wrapped connector's.
        """
        hop = self.router.nextHop(Target("https" if tls else "http", host, port, b""))
        if hop.proxy is None:
            return self.inner.endpoint(host, port, tls)
        endpoint: IStreamClientEndpoint = ConnectThroughProxyEndpoint(
            self.inner.endpoint(hop.host, hop.port), host, port, hop.proxy, self.clock
        )
        if tls:
            endpoint = wrapClientTLS(self.inner.tlsOptions(host), endpoint)
        return endpoint

    def connect(self, target: Target, protocol: Protocol) -> Deferred[Any]:
        """
        Connect C{protocol} for the forwarder: to the parent for plain C{http}, through it
        for C{https}, or as the wrapped connector would.
        """
        hop = self.router.nextHop(target)
        if hop.proxy is None:
            return self.inner.connect(target, protocol)
        if target.scheme != "http":
            return connectQuietly(self.endpoint(target.host, target.port, tls=True), protocol)
        parent = hop.proxy

        def failed(reason: Failure) -> Failure:
            if reason.check(CancelledError, UpstreamError):
                return reason
            raise unreachableParent(parent, reason)

        endpoint = self.inner.endpoint(hop.host, hop.port)
        return connectQuietly(endpoint, protocol).addErrback(failed)
