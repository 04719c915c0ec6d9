"""
The proxy's seams: what the request path asks of the upstream leg, the cache, the host policy,
the authenticator and the metrics.

The data flow is one way::

    bytes in -> channel (parse, admit: client ACL, limits)
             -> policy (HostPolicy, Authenticator)
             -> fetcher: a chain of IFetcher (cache wraps the forwarder)
             -> relay the UpstreamResponse to the client (streaming, back-pressure)

Each piece is passed in (reactor, clock, resolver, store), so unit tests build it with fakes.
Implementations live in their own modules; this module holds only the contracts, so that the
cache, the policy and the core can be written side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer

from caplab.address import bracketed, hostPort


@dataclass(frozen=True)
class Target:
    """
    Where a request goes: scheme (C{http} or C{https}), host (lower-case, IDNA-encoded, IPv6
    without brackets), port, and the origin-form path with query (C{b"/a?b=c"}).
    """

    scheme: str
    host: str
    port: int
    path: bytes

    @cached_property
    def authority(self) -> str:
        """
        C{host[:port]} (the port only when not the scheme's default), as C{Host} says it;
        worked out once per target (recent targets are shared, see
        L{caplab.proxy.target.parseTarget}).
        """
        default = 443 if self.scheme == "https" else 80
        return bracketed(self.host) if self.port == default else hostPort(self.host, self.port)

    @cached_property
    def uri(self) -> str:
        """
        The absolute URI, the cache key's base (C{http://example.com:8080/a?b}).
        """
        return f"{self.scheme}://{self.authority}{self.path.decode('latin-1')}"


#: Header lists keep every field line in order, repeated names included, as raw bytes.
Headers = list[tuple[bytes, bytes]]

#: Receives an interim (1xx, not 101) response of the origin: status, reason, fields.
InterimHandler = Callable[[int, bytes, Headers], None]


@dataclass(slots=True)
class UpstreamRequest:
    """
    A request as it will be sent upstream: method, target, end-to-end headers only (hop-by-hop
    already removed, C{Via} added), and the body length (None: unknown, sent chunked; 0: none).

    @ivar interim: where the origin's interim responses (C{100 Continue}, C{103 Early
        Hints} ...) go, for the client; None drops them.  They never reach the fetch
        Deferred, so the cache never sees (or stores) them.
    @ivar upgrade: the client's C{Upgrade} field (a WebSocket handshake ...): the request
        asks the origin to switch protocols; never cached.
    """

    method: bytes
    target: Target
    headers: Headers
    bodyLength: int | None = 0
    interim: InterimHandler | None = field(default=None, compare=False, repr=False)
    upgrade: bytes | None = None


class IBodySink(Protocol):
    """
    Receives a response body as it streams; C{producer} can be paused for back-pressure.
    """

    def bodyStarted(self, producer: IPushProducer) -> None: ...

    def bodyData(self, data: bytes) -> None: ...

    def bodyDone(self, complete: bool) -> None:
        """
        The body ended: C{complete} is False when the origin died mid-body (the client
        connection must then be aborted, never ended as if the response were whole).
        """


#: Starts a response body's delivery to a sink (at most once per response).
DeliverBody = Callable[[IBodySink], None]


class ITunnelSide(Protocol):
    """
    What one side of a tunnel tells the relay: bytes that came, and the end of them.
    """

    def dataReceived(self, data: bytes) -> None: ...

    def readConnectionLost(self) -> None:
        """
        This side sent all it will send (a FIN): pass the half-close on.
        """

    def connectionLost(self) -> None:
        """
        This side's connection is gone.
        """


class ISwitchedConnection(Protocol):
    """
    An origin connection that switched protocols (after a 101): its transport, the bytes
    already received past the 101's head, and where further bytes go.
    """

    transport: Any
    leftover: bytes

    def attach(self, side: ITunnelSide) -> None:
        """
        Send what the origin sends from now on to C{side}.
        """


@dataclass(slots=True)
class UpstreamResponse:
    """
    A response head from the origin (or the cache): status, reason, end-to-end headers, and
    a way to have the body delivered to an L{IBodySink}.

    @ivar cacheStatus: an RFC 9211 C{Cache-Status} value set by the cache (None: no cache).
    @ivar switched: for a C{101 Switching Protocols} to a request with C{upgrade}: the
        origin's connection, which now carries the new protocol (relayed as a tunnel).
    """

    code: int
    phrase: bytes
    headers: Headers
    deliverBody: DeliverBody
    cacheStatus: str | None = None
    switched: ISwitchedConnection | None = None


class IRequestBody(Protocol):
    """
    The client's request body, streamed: the fetcher starts it once it is ready to send.
    """

    length: int | None

    def startStreaming(self, sink: IBodySink) -> None: ...


class IQuickHits(Protocol):
    """
    The cache's short way for its simplest hits (L{caplab.proxy.cache.quick.QuickHits}).
    """

    def answer(
        self, uri: str, headers: Headers, connection: list[bytes]
    ) -> UpstreamResponse | None:
        """
        The stored response that answers a plain C{GET} of C{uri} with the client's
        C{headers} and C{Connection} options, or None: the request goes the general way.
        """


class IFetcher(Protocol):
    """
    Gets a response for a request: the forwarder asks the origin, the cache may answer itself
    and otherwise asks the fetcher it wraps.

    The Deferred fires with the response head, or fails with L{UpstreamError}.  Cancelling it
    (the client went away) cancels the upstream request at once.

    The forwarder also offers C{fetchInto(request, body, receiver)}, the same fetch told to
    a receiver's C{fetched} or C{fetchFailed} instead of a Deferred; the exchange uses it
    when the forwarder is its fetcher (L{caplab.proxy.forward.Forwarder.fetchInto}).
    """

    def fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]: ...


class ProxyError(Exception):
    """
    An answer the proxy gives itself instead of a response from the origin: the status, a
    title, why (for a person: the error page says it), and any extra fields (a 407's
    C{Proxy-Authenticate}).
    """

    def __init__(
        self, code: int, title: str, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(f"{code} {title}: {detail}")
        self.code = code
        self.title = title
        self.detail = detail
        self.headers: Headers = list(headers)


class UpstreamError(ProxyError):
    """
    Why no response came from upstream: rendered as an error page with C{code} (502, 504 ...).
    """


@dataclass(frozen=True)
class Verdict:
    """
    A host policy decision that blocks: the rule that matched and the list it came from.
    """

    rule: str
    source: str


class IHostPolicy(Protocol):
    """
    Block/allow lists by host name (plain requests and CONNECT alike).
    """

    def check(self, host: str) -> Verdict | None:
        """
        None if C{host} may be reached, else the L{Verdict} that blocks it.
        """


class IAuthenticator(Protocol):
    """
    Proxy authentication (C{Proxy-Authorization}); checks must not block the reactor.
    """

    realm: str

    def authenticate(
        self, proxyAuthorization: bytes | None, client: str | None = None
    ) -> Deferred[str | None]:
        """
        The user name if the credentials are good, else None (answer 407); C{client} is the
        client's address (failures are throttled and logged by address).
        """


@dataclass(frozen=True)
class PageRequest:
    """
    A request for one of the proxy's own pages (origin-form, C{GET /stats}): what a page may
    look at.

    @ivar path: the path without the query; @ivar query: the query without its C{?}.
    @ivar client: the client's address; @ivar local: (host, port) the client connected to.
    """

    method: bytes
    path: bytes
    query: bytes
    headers: Headers
    client: str
    local: tuple[str, int]


@dataclass
class PageResponse:
    """
    A page's answer: status, fields (C{Content-Type} ...; framing is added by the writer) and
    the whole body (pages are small).
    """

    code: int
    headers: Headers
    body: bytes


class IPage(Protocol):
    """
    One of the proxy's own pages (status, C{/stats}, C{/proxy.pac}), rendered without I/O.
    """

    def render(self, request: PageRequest) -> PageResponse: ...


class ICacheAdmin(Protocol):
    """
    What operators may do to the cache (a C{PURGE} request, the admin endpoint).
    """

    def purge(self, uri: str) -> Deferred[int]:
        """
        Remove every stored response (every variant) of the absolute URI C{uri}; fires with
        how many were removed (0: nothing was stored).
        """

    def flush(self) -> Deferred[int]:
        """
        Remove every stored response; fires with how many were removed.
        """


class IFilterChain(Protocol):
    """
    Content filters around the cache (C{caplab.proxy.filters}): the request side runs
    before the cache key is computed, the response side after the cache, per client, on hits
    and misses alike, so the cache always stores what the origin sent.
    """

    def filterRequest(self, request: UpstreamRequest, client: str) -> UpstreamRequest:
        """
        The request to look up and forward instead of C{request} (from client address
        C{client}): URL and fields may change; the body may not.
        """

    def filterResponse(
        self, request: UpstreamRequest, response: UpstreamResponse
    ) -> UpstreamResponse:
        """
        The response to relay instead of C{response} (to C{request}, as filtered): fields
        may change and the body may be transformed as it streams (C{deliverBody} wrapped),
        with back-pressure kept and memory bounded.
        """
