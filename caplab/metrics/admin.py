"""
The admin endpoint (C{--admin-endpoint}): C{/metrics} for Prometheus, and the cache's
operations for operators (C{POST /cache/purge}, C{POST /cache/flush}), served only to the
networks allowed to administer caplab.

Who may use it: C{--admin-allow} networks if any are given, else the proxy's C{--allow}
networks (loopback by default).  Any other client gets a 403 and one log line (rate-limited).
The endpoint has no password, so give it an C{--admin-allow} of its own whenever C{--allow}
admits more than the machines of its operators.

The cache's operations change state, so they are C{POST} only (a link or an image cannot
trigger them) and refuse anything a browser sends on a page's behalf (an C{Origin} or
C{Sec-Fetch-Site} field): they are for C{curl} and scripts, never for cross-site requests.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from caplab.metrics.offload import IOffloader
from caplab.metrics.operations import NoCache
from caplab.metrics.process import processFamilies
from caplab.metrics.registry import Metrics
from caplab.proxy.admission import LOOPBACK, clientAllowed
from caplab.proxy.hooks import ICacheAdmin
from caplab.proxy.target import TargetError, parseTarget
from caplab.ratelimit import LogThrottle

log = Logger(namespace="caplab.admin")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Largest request body the admin endpoint reads (a purge's form); larger ones get 413.
MAX_BODY = 65536

#: The answer of a cache operation where there is no cache to operate on.
NO_CACHE = "this caplab has no cache the admin endpoint can reach (--no-cache?)"

#: Longest URL a purge may name.
MAX_URL = 8192


def adminNetworks(
    adminAllow: Sequence[Network] | None, allow: Sequence[Network] | None
) -> tuple[Network, ...]:
    """
    The networks that may use the admin endpoint: C{--admin-allow}'s if given, else the
    proxy's C{--allow} (loopback if neither is given).
    """
    return tuple(adminAllow or allow or LOOPBACK)


def allowedAddress(address: object, networks: Iterable[Network]) -> bool:
    """
    Whether a client at C{address} (a Twisted address) is in C{networks}, as the proxy
    decides it (L{clientAllowed}).  A client that is not on an IP network (a UNIX socket) is
    allowed: the socket's permissions decide.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return True
    return clientAllowed(tuple(networks), host)


# /metrics


class IScrapeSource(Protocol):
    """
    The metric families C{/metrics} exposes, read without blocking the reactor.
    """

    def scrape(self) -> Deferred[list[Metric]]: ...


class LocalScrape:
    """
    A single process's figures: its L{Metrics} (read in the reactor thread, from memory)
    and its process figures (read from C{/proc} in the metrics thread).
    """

    def __init__(self, metrics: Metrics, offloader: IOffloader) -> None:
        self.metrics = metrics
        self.offloader = offloader

    def scrape(self) -> Deferred[list[Metric]]:
        families = list(self.metrics.registry.collect())
        return self.offloader.run(processFamilies).addCallback(lambda own: families + own)


class CoalescedScrape:
    """
    At most one scrape of C{source} at a time: scrapes asked for while one is under way get
    its result, so a burst of scrapers never queues a burst of reads.
    """

    def __init__(self, source: IScrapeSource) -> None:
        self.source = source
        self._waiting: list[Deferred[list[Metric]]] | None = None

    def scrape(self) -> Deferred[list[Metric]]:
        waiter: Deferred[list[Metric]] = Deferred()
        if self._waiting is not None:
            self._waiting.append(waiter)
            return waiter
        self._waiting = [waiter]
        self.source.scrape().addBoth(self._done)
        return waiter

    def _done(self, result: list[Metric] | Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(list(result))


class _Families:
    """
    Metric families in the shape prometheus-client's encoders take (a C{collect()}).
    """

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class MetricsResource(Resource):
    """
    C{/metrics}: the figures in the format the scraper asks for (Prometheus text, or
    OpenMetrics if C{Accept} says so), never cached.
    """

    isLeaf = True

    def __init__(self, source: IScrapeSource) -> None:
        super().__init__()
        self.source = CoalescedScrape(source)

    def render_GET(self, request: Request) -> Any:
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        gone = _whenGone(request)

        def answer(families: list[Metric]) -> None:
            if gone:
                return
            encoder, contentType = choose_encoder(accept)
            _finish(request, 200, contentType.encode("ascii"), encoder(_Families(families)))

        def failed(failure: Failure) -> None:
            log.warn("caplab admin: /metrics failed: {error}", error=failure.getErrorMessage())
            if not gone:
                _finishText(request, 500, "the figures could not be read; see the log\n")

        self.source.scrape().addCallbacks(answer, failed)
        return NOT_DONE_YET

    render_HEAD = render_GET


# The cache's operations.


def _whenGone(request: Request) -> list[bool]:
    """
    A list that becomes non-empty once C{request}'s connection is lost.
    """
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))
    return gone


def _finish(request: Request, code: int, contentType: bytes, body: bytes) -> None:
    request.setResponseCode(code)
    request.setHeader(b"content-type", contentType)
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def _finishText(request: Request, code: int, text: str) -> None:
    _finish(request, code, b"text/plain; charset=utf-8", text.encode("utf-8"))


def _finishJSON(request: Request, code: int, value: dict[str, object]) -> None:
    _finish(request, code, b"application/json", json.dumps(value).encode("utf-8") + b"\n")


def browserRefusal(request: Request) -> str | None:
    """
    Why a state-changing request is refused because a browser sent it on a page's behalf
    (it names an C{Origin}, or C{Sec-Fetch-Site} says a page asked), or None.
    """
    site = request.getHeader(b"sec-fetch-site")
    if request.getHeader(b"origin") is not None or site not in (None, b"none"):
        return (
            "the admin endpoint does not take cache operations from web pages (no cross-site "
            "requests); send them with curl or a script"
        )
    return None


def purgeTarget(request: Request) -> str:
    """
    The absolute URL a purge names (C{url}, in the query or a form body), normalised as the
    cache keys it (lower-case host, default port left out).

    @raise ValueError: there is none, or it is not an absolute C{http://} or C{https://}
        URL.
    """
    values = (request.args or {}).get(b"url") or []
    if len(values) != 1 or not values[0]:
        raise ValueError("name one URL to purge: url=http://host/path")
    url = values[0]
    if len(url) > MAX_URL:
        raise ValueError(f"the URL is longer than {MAX_URL} bytes")
    if any(byte < 0x21 or byte == 0x7F for byte in url):
        raise ValueError("the URL has spaces or control characters")
    try:
        return parseTarget(url).uri
    except TargetError as e:
        raise ValueError(f"{e.title}: {e.detail}") from None


class CacheOperation(Resource):
    """
    C{POST /cache/purge} (C{url=...}) or C{POST /cache/flush}: answered with JSON that says
    how many stored responses went (a purge that found nothing is a 404).
    """

    isLeaf = True

    def __init__(self, cache: ICacheAdmin | None, operation: str) -> None:
        """
        @param cache: the cache's admin seam, or None if this caplab has no cache.
        @param operation: C{"purge"} or C{"flush"}.
        """
        super().__init__()
        assert operation in ("purge", "flush"), operation
        self.cache = cache
        self.operation = operation

    def render(self, request: Request) -> Any:
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            _finishJSON(request, 405, {"error": f"{self.operation} is a POST request"})
            return NOT_DONE_YET
        return self.render_POST(request)

    def render_POST(self, request: Request) -> Any:
        refusal = browserRefusal(request)
        if refusal is not None:
            _finishJSON(request, 403, {"error": refusal})
            return NOT_DONE_YET
        if self.cache is None:
            _finishJSON(request, 404, {"error": NO_CACHE})
            return NOT_DONE_YET
        client = getattr(request.getClientAddress(), "host", "-")
        if self.operation == "flush":
            url = None
            d = self.cache.flush()
        else:
            try:
                url = purgeTarget(request)
            except ValueError as e:
                _finishJSON(request, 400, {"error": str(e)})
                return NOT_DONE_YET
            d = self.cache.purge(url)
        gone = _whenGone(request)

        def answer(count: int) -> None:
            log.info(
                "caplab admin: {client} {operation}{what}: {count} stored responses removed",
                client=client,
                operation="flushed the cache" if url is None else "purged ",
                what=url or "",
                count=count,
            )
            if gone:
                return
            if url is None:
                _finishJSON(request, 200, {"flushed": count})
            else:
                _finishJSON(request, 200 if count else 404, {"url": url, "purged": count})

        def failed(failure: Failure) -> None:
            if failure.check(NoCache):
                if not gone:
                    _finishJSON(request, 404, {"error": NO_CACHE})
                return
            log.warn(
                "caplab admin: cache {operation} failed: {error}",
                operation=self.operation,
                error=failure.getErrorMessage(),
            )
            if not gone:
                _finishJSON(request, 500, {"error": f"the cache {self.operation} failed"})

        d.addCallbacks(answer, failed)
        return NOT_DONE_YET


# The site.


class AdminIndex(Resource):
    """
    C{/}: what the endpoint offers.
    """

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (
            b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>caplab admin</title>'
            b"</head>\n<body><h1>caplab admin</h1>\n<ul>\n"
            b'<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>\n'
            b"<li><code>curl -X POST --data-urlencode url=http://host/path "
            b"http://ADMIN/cache/purge</code>: remove a URL's stored responses</li>\n"
            b"<li><code>curl -X POST http://ADMIN/cache/flush</code>: empty the cache</li>\n"
            b"</ul></body></html>\n"
        )

    render_HEAD = render_GET

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return super().getChild(path, request)


def adminResource(source: IScrapeSource, cache: ICacheAdmin | None = None) -> Resource:
    """
    The admin site's tree: C{/}, C{/metrics}, C{/cache/purge} and C{/cache/flush}.

    @param cache: the cache's admin seam (None: this caplab has no cache).
    """
    root = AdminIndex()
    root.putChild(b"metrics", MetricsResource(source))
    operations = Resource()
    operations.putChild(b"purge", CacheOperation(cache, "purge"))
    operations.putChild(b"flush", CacheOperation(cache, "flush"))
    root.putChild(b"cache", operations)
    return root


class _Refused(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(403)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"connection", b"close")
        request.channel.persistent = False  # nothing more from this client
        return b"403 Forbidden: this client may not use caplab's admin endpoint\n"


class AdminRequest(Request):
    """
    A request of the admin site: a body is read only if its length is declared and at most
    L{MAX_BODY} (else 413 or 411 at once and the connection closes), and always into
    memory.
    """

    _refused = False

    def gotLength(self, length: int | None) -> None:
        # Twisted calls this once the header block is in; its default puts a body of
        # unknown or large length in a temporary file (disk I/O in the reactor thread).
        if length is None or length > MAX_BODY:
            self._refused = True
            status = b"411 Length Required" if length is None else b"413 Content Too Large"
            transport = self.channel.transport
            assert transport is not None
            transport.write(
                b"HTTP/1.1 %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" % status
            )
            self.channel.loseConnection()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if not self._refused:
            super().handleContentChunk(data)

    def process(self) -> None:
        if not self._refused:
            super().process()


class AdminSite(Site):
    """
    The admin site: only clients of its allowed networks are served (others get 403, and
    one log line per burst); no access-log line for each scrape; idle connections closed
    after a minute.
    """

    noisy = False
    requestFactory = AdminRequest

    def __init__(
        self,
        resource: Resource,
        allow: Sequence[Network] | Callable[[], Sequence[Network]] = LOOPBACK,
        reactor: Any = None,
        timeout: float = 60.0,
    ) -> None:
        """
        @param allow: the networks whose clients are served (see L{adminNetworks}), or a
            function that gives them when a request comes (so that they follow a reload).
        @param reactor: times idle connections out and schedules the summary of refused
            clients (the global reactor if None: only the current wiring omits it).
        """
        if reactor is None:
            from twisted.internet import reactor
        super().__init__(resource, timeout=timeout, reactor=reactor)
        if callable(allow):
            self.networks = allow
        else:
            fixed = tuple(allow)
            self.networks = lambda: fixed
        self.refusals = LogThrottle(
            log,
            reactor,
            "caplab admin: refused {client}: not in the admin networks (--admin-allow) "
            "({total} refused so far)",
            interval=60.0,
            repeat="caplab admin: refused {count} more clients in the last {interval}s "
            "({total} so far)",
        )

    @property
    def allow(self) -> tuple[Network, ...]:
        """
        The networks whose clients are served now.
        """
        return tuple(self.networks())

    def getResourceFor(self, request: Request) -> Resource:
        address = request.getClientAddress()
        if not allowedAddress(address, self.allow):
            self.refusals.event(client=getattr(address, "host", "-"))
            return _Refused()
        return super().getResourceFor(request)

    def stopFactory(self) -> None:
        self.refusals.stop()
        super().stopFactory()

    def log(self, request: object) -> None:
        """
        No access-log line for each scrape.
        """
