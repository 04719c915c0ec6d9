"""
Prometheus metrics of every caplab service, and the admin web resource that serves them.

All names start with C{caplab_}.  One L{Metrics} object holds one registry (not the
process-wide default one, so tests and several services in one process do not collide); the
services are handed the object and call its small methods, which know nothing of Prometheus:

    - the proxy: L{Metrics.requestDone}, L{Metrics.bytesReceived}/L{Metrics.bytesSent},
      L{Metrics.connectionOpened}/L{Metrics.connectionClosed}, L{Metrics.tunnelOpened}/
      L{Metrics.tunnelClosed}, L{Metrics.requestBlocked}, L{Metrics.authenticationFailed},
      L{Metrics.upstreamLatency};
    - the cache: L{Metrics.cacheHit}, L{Metrics.cacheMiss}, L{Metrics.cacheStoredBytes};
    - the uppercase services: L{instrumentTCPFactory} and L{instrumentDatagramProtocol} count
      for them without changing them.

L{adminResource} serves C{/metrics} in the Prometheus text format (or OpenMetrics, if the
scraper asks for it in C{Accept}), on the C{--admin-endpoint} listener.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from html import escape
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web.server import Request

#: The request methods counted by name; any other is counted as C{OTHER} (bounded labels).
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

#: Upstream latency buckets, in seconds: loopback milliseconds up to a slow origin's 30 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RateHistory:
    """
    Requests per interval over the last minutes, for the status page's chart.

    @ivar interval: the width of one bucket, in seconds.
    @ivar buckets: how many buckets are kept.
    """

    def __init__(
        self, now: Callable[[], float] = time.time, interval: float = 10.0, buckets: int = 60
    ) -> None:
        self.now = now
        self.interval = interval
        self.buckets = buckets
        self._counts: dict[int, int] = {}

    def record(self, count: int = 1) -> None:
        slot = int(self.now() // self.interval)
        self._counts[slot] = self._counts.get(slot, 0) + count
        if len(self._counts) > self.buckets * 2:
            oldest = slot - self.buckets
            for key in [key for key in self._counts if key <= oldest]:
                del self._counts[key]

    def series(self) -> list[tuple[float, float]]:
        """
        (bucket start time, requests per second) for each of the last L{buckets} buckets,
        oldest first, the current (incomplete) bucket last.
        """
        current = int(self.now() // self.interval)
        return [
            (slot * self.interval, self._counts.get(slot, 0) / self.interval)
            for slot in range(current - self.buckets + 1, current + 1)
        ]


def rateChart(history: RateHistory, width: int = 480, height: int = 120) -> str:
    """
    An inline SVG bar chart of C{history}'s request rate, for an HTML status page: one bar
    per bucket, oldest left, scaled to the busiest bucket, with the peak rate as a label.

    Everything in it is a number the code computed, so it needs no escaping.
    """
    series = history.series()
    peak = max((rate for _, rate in series), default=0.0)
    scale = (height - 20) / peak if peak > 0 else 0.0
    barWidth = width / max(len(series), 1)
    bars = []
    for index, (_, rate) in enumerate(series):
        barHeight = rate * scale
        bars.append(
            f'<rect x="{index * barWidth:.1f}" y="{height - barHeight:.1f}" '
            f'width="{max(barWidth - 1, 1):.1f}" height="{barHeight:.1f}">'
            f"<title>{rate:.2f} requests/s</title></rect>"
        )
    minutes = len(series) * history.interval / 60
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="rate-chart" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="requests per second over the last {minutes:g} minutes" '
        f'data-peak="{peak:.3f}" data-buckets="{len(series)}">'
        f'<g fill="#3a7bd5">{"".join(bars)}</g>'
        f'<text x="2" y="12" font-size="11" font-family="sans-serif">peak {peak:.2f}/s, '
        f"last {minutes:g} min</text></svg>"
    )


class Metrics:
    """
    caplab's metrics in one Prometheus registry.

    @ivar registry: the registry L{adminResource} exposes.
    @ivar history: the recent request rate, for a status page.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.history = RateHistory(now)
        r = self.registry
        self.requests = Counter(
            "caplab_proxy_requests",
            "Proxy requests answered, by method and response status code.",
            ["method", "code"],
            registry=r,
        )
        self.received = Counter(
            "caplab_proxy_received_bytes",
            "Bytes received from proxy clients (request heads, bodies, tunnel data).",
            registry=r,
        )
        self.sent = Counter(
            "caplab_proxy_sent_bytes",
            "Bytes sent to proxy clients (response heads, bodies, tunnel data).",
            registry=r,
        )
        self.activeConnections = Gauge(
            "caplab_proxy_active_connections", "Open client connections of the proxy.", registry=r
        )
        self.activeTunnels = Gauge(
            "caplab_proxy_active_tunnels", "Open CONNECT tunnels of the proxy.", registry=r
        )
        self.blocked = Counter(
            "caplab_proxy_blocked_requests",
            "Requests refused by the block/allow lists (plain and CONNECT).",
            ["method"],
            registry=r,
        )
        self.authFailures = Counter(
            "caplab_proxy_auth_failures",
            "Requests answered 407 because credentials were missing or wrong.",
            registry=r,
        )
        self.latency = Histogram(
            "caplab_proxy_upstream_latency_seconds",
            "Time from starting an upstream request (or tunnel) to its response head "
            "(or established connection).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cacheHits = Counter(
            "caplab_cache_hits", "Responses served from the cache.", registry=r
        )
        self.cacheMisses = Counter(
            "caplab_cache_misses", "Cacheable requests the cache could not answer.", registry=r
        )
        self.cacheBytes = Gauge(
            "caplab_cache_stored_bytes", "Bytes of responses held in the cache.", registry=r
        )
        self.tcpConnections = Counter(
            "caplab_tcp_connections",
            "Connections accepted by the uppercase TCP service.",
            registry=r,
        )
        self.tcpActive = Gauge(
            "caplab_tcp_active_connections",
            "Open connections of the uppercase TCP service.",
            registry=r,
        )
        self.udpDatagrams = Counter(
            "caplab_udp_datagrams",
            "Datagrams received by the uppercase UDP service.",
            registry=r,
        )
        self.reloads = Counter(
            "caplab_reloads",
            "Reloads of the block/allow lists and auth file (SIGHUP), by result.",
            ["result"],
            registry=r,
        )

    # The proxy.

    def requestDone(self, method: bytes | str, code: int) -> None:
        """
        A proxy request was answered with status C{code}.
        """
        if isinstance(method, bytes):
            method = method.decode("latin-1")
        method = method.upper()
        if method not in KNOWN_METHODS:
            method = "OTHER"
        self.requests.labels(method=method, code=str(int(code))).inc()
        self.history.record()

    def bytesReceived(self, count: int) -> None:
        self.received.inc(count)

    def bytesSent(self, count: int) -> None:
        self.sent.inc(count)

    def connectionOpened(self) -> None:
        self.activeConnections.inc()

    def connectionClosed(self) -> None:
        self.activeConnections.dec()

    def tunnelOpened(self) -> None:
        self.activeTunnels.inc()

    def tunnelClosed(self) -> None:
        self.activeTunnels.dec()

    def requestBlocked(self, method: bytes | str = "GET") -> None:
        """
        A request was refused by the host policy.
        """
        if isinstance(method, bytes):
            method = method.decode("latin-1")
        self.blocked.labels(method="CONNECT" if method.upper() == "CONNECT" else "other").inc()

    def authenticationFailed(self) -> None:
        self.authFailures.inc()

    def upstreamLatency(self, seconds: float) -> None:
        """
        An upstream response head (or tunnel connection) came after C{seconds}.
        """
        self.latency.observe(max(0.0, seconds))

    # The cache.

    def cacheHit(self) -> None:
        self.cacheHits.inc()

    def cacheMiss(self) -> None:
        self.cacheMisses.inc()

    def cacheStoredBytes(self, count: int) -> None:
        """
        The cache now holds C{count} bytes.
        """
        self.cacheBytes.set(count)

    # Operations.

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels(result="ok" if ok else "failed").inc()


class LatencyFetcher:
    """
    An C{IFetcher} that times its inner fetcher: from the request to the response head, in
    the upstream latency histogram (failures are not timed).

    Put it around the forwarder (inside the cache), so that only real upstream requests count.
    """

    def __init__(self, inner: Any, metrics: Metrics, clock: Any) -> None:
        """
        @param clock: an C{IReactorTime} (its C{seconds()}).
        """
        self.inner = inner
        self.metrics = metrics
        self.clock = clock

    def fetch(self, request: Any, body: Any) -> Any:
        started = self.clock.seconds()
        d = self.inner.fetch(request, body)

        def done(response: Any) -> Any:
            self.metrics.upstreamLatency(self.clock.seconds() - started)
            return response

        return d.addCallback(done)


def instrumentTCPFactory(factory: Any, metrics: Metrics) -> Any:
    """
    Count the connections C{factory} accepts in C{metrics}, and read its open connections
    from its C{active} attribute (if it has one) at scrape time.

    The factory and its protocols are left as they are (no wrapping protocol in the data
    path): only the factory's C{buildProtocol} is wrapped.

    @return: C{factory}.
    """
    build = factory.buildProtocol

    def buildProtocol(addr: Any) -> Any:
        protocol = build(addr)
        if protocol is not None:
            metrics.tcpConnections.inc()
        return protocol

    factory.buildProtocol = buildProtocol
    if hasattr(factory, "active"):
        metrics.tcpActive.set_function(lambda: float(factory.active))
    return factory


def countReceivedBytes(factory: Any, metrics: Metrics) -> Any:
    """
    Count every byte the connections of C{factory} receive (request heads, bodies and tunnel
    data alike) in C{metrics}' received bytes, without a wrapping protocol in the data path:
    each protocol's C{dataReceived} is wrapped as it is built.

    @return: C{factory}.
    """
    build = factory.buildProtocol
    counter = metrics.received

    def buildProtocol(addr: Any) -> Any:
        protocol = build(addr)
        if protocol is None:
            return protocol
        received = protocol.dataReceived
        replaying = [0]

        def dataReceived(data: bytes) -> None:
            if not replaying[0]:
                counter.inc(len(data))
            received(data)

        protocol.dataReceived = dataReceived
        setLineMode = getattr(protocol, "setLineMode", None)
        if setLineMode is not None:
            # A LineReceiver (HTTPChannel) hands bytes it buffered back to its own
            # dataReceived when it returns to line mode: they were counted on arrival.

            def replayingSetLineMode(extra: bytes = b"") -> Any:
                replaying[0] += 1
                try:
                    return setLineMode(extra)
                finally:
                    replaying[0] -= 1

            protocol.setLineMode = replayingSetLineMode
        return protocol

    factory.buildProtocol = buildProtocol
    return factory


def instrumentDatagramProtocol(protocol: Any, metrics: Metrics) -> Any:
    """
    Count the datagrams C{protocol} receives in C{metrics}.

    @return: C{protocol}.
    """
    received = protocol.datagramReceived

    def datagramReceived(datagram: bytes, addr: Any) -> None:
        metrics.udpDatagrams.inc()
        received(datagram, addr)

    protocol.datagramReceived = datagramReceived
    return protocol


class MetricsResource(Resource):
    """
    C{/metrics}: the registry in the format the scraper asks for.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encoder, contentType = choose_encoder(accept)
        request.setHeader(b"content-type", contentType.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return encoder(self.registry)

    render_HEAD = render_GET


#: The figures of the stats page: (label, metric sample name), in order.
STATS_FIGURES = (
    ("open client connections", "caplab_proxy_active_connections"),
    ("open CONNECT tunnels", "caplab_proxy_active_tunnels"),
    ("bytes received from clients", "caplab_proxy_received_bytes_total"),
    ("bytes sent to clients", "caplab_proxy_sent_bytes_total"),
    ("requests blocked by the lists", "caplab_proxy_blocked_requests_total"),
    ("requests answered 407", "caplab_proxy_auth_failures_total"),
    ("cache hits", "caplab_cache_hits_total"),
    ("cache misses", "caplab_cache_misses_total"),
    ("bytes in the cache", "caplab_cache_stored_bytes"),
    ("uppercase TCP connections", "caplab_tcp_connections_total"),
    ("uppercase UDP datagrams", "caplab_udp_datagrams_total"),
)


def _sums(metrics: Metrics) -> dict[str, float]:
    """
    Each sample name's value, summed over its labels.
    """
    sums: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def statsPage(metrics: Metrics) -> bytes:
    """
    An HTML page of the metrics for a person: the request rate over the last minutes as a
    chart, requests by method and status, and the other figures (refreshes every 10 s).
    """
    sums = _sums(metrics)
    byStatus = []
    for family in metrics.registry.collect():
        if family.name == "caplab_proxy_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    byStatus.append((labels["method"], labels["code"], int(sample.value)))
    byStatus.sort()
    requestRows = (
        "".join(
            f"<tr><td>{escape(method)}</td><td>{escape(code)}</td><td>{count}</td></tr>\n"
            for method, code, count in byStatus
        )
        or '<tr><td colspan="3">none yet</td></tr>\n'
    )
    figureRows = "".join(
        f"<tr><th>{escape(label)}</th><td>{int(sums.get(name, 0))}</td></tr>\n"
        for label, name in STATS_FIGURES
    )
    count = sums.get("caplab_proxy_upstream_latency_seconds_count", 0.0)
    total = sums.get("caplab_proxy_upstream_latency_seconds_sum", 0.0)
    latency = f"{1000 * total / count:.1f} ms" if count else "no upstream requests yet"
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="10"><title>caplab proxy figures</title>'
        "<style>body{font-family:sans-serif} td,th{padding:2px 8px;text-align:left}</style>"
        "</head>\n<body><h1>caplab proxy figures</h1>\n"
        f"<h2>Requests per second</h2>\n{rateChart(metrics.history)}\n"
        "<h2>Requests by method and status</h2>\n"
        f'<table id="requests"><tr><th>method</th><th>status</th><th>requests</th></tr>\n'
        f"{requestRows}</table>\n"
        f'<h2>Figures</h2>\n<table id="figures">\n{figureRows}'
        f"<tr><th>mean upstream latency</th><td>{latency}</td></tr>\n</table>\n"
        '<p><a href="/">status</a> · <a href="/proxy.pac">PAC file</a></p>\n'
        "</body></html>\n"
    ).encode()


class StatsResource(Resource):
    """
    The stats page (L{statsPage}) on the proxy's own port (C{/stats}).
    """

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return statsPage(self.metrics)

    render_HEAD = render_GET


class _AdminRoot(Resource):
    """
    C{/}: a pointer to C{/metrics}.
    """

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (
            b"<!DOCTYPE html><html><head><title>caplab admin</title></head>"
            b'<body><h1>caplab admin</h1><p><a href="/metrics">/metrics</a> '
            b"(Prometheus)</p></body></html>\n"
        )

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"":
            return self
        return super().getChild(path, request)


def adminResource(metrics: Metrics) -> Resource:
    """
    The admin site's root: C{/} and C{/metrics}.
    """
    root = _AdminRoot()
    root.putChild(b"metrics", MetricsResource(metrics.registry))
    return root
