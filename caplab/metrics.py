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

import glob
import json
import os
import shutil
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.utils import floatToGoString
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

#: The request methods counted by name; any other is counted as C{OTHER} (bounded labels).
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

#: Upstream latency buckets, in seconds: loopback milliseconds up to a slow origin's 30 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: L{Metrics}' default for C{shared}: ask prometheus-client.
_FROM_PROMETHEUS: Any = object()


#: prometheus-client's environment variable naming the directory of multiprocess mode.
MULTIPROCESS_ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"

#: Label of each method named in L{KNOWN_METHODS}, as bytes and as text, any case seen.
_METHOD_LABELS: dict[bytes | str, str] = {}
for _name in KNOWN_METHODS:
    _METHOD_LABELS[_name] = _METHOD_LABELS[_name.encode("ascii")] = _name


def methodLabel(method: bytes | str) -> str:
    """
    The C{method} label of a request method: its upper-case name if it is one of
    L{KNOWN_METHODS}, else C{OTHER}.
    """
    label = _METHOD_LABELS.get(method)
    if label is not None:
        return label
    if isinstance(method, bytes):
        method = method.decode("latin-1")
    method = method.upper()
    return method if method in KNOWN_METHODS else "OTHER"


def sharedDirectory() -> str | None:
    """
    The directory where this process's prometheus-client values live (multiprocess mode,
    chosen when prometheus-client was first imported), or None when they live in memory.
    """
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get(MULTIPROCESS_ENVIRONMENT) or None


def readDirectory(path: str) -> list[Metric]:
    """
    The metric families of every process's files in a multiprocess directory, merged:
    counters and histograms summed over all processes (dead ones too, so nothing counted is
    lost when a worker is restarted), C{livesum} gauges over the live ones.
    """
    files = glob.glob(os.path.join(path, "*.db"))
    return list(MultiProcessCollector.merge(files, accumulate=True))


class RateHistory:
    """
    Requests per interval over the last minutes, for the status page's chart.

    With a multiprocess directory (C{--workers}), each worker L{publish}es its own history
    there as C{rate_PID.json} (the proxy does so every second), and L{series} adds up every
    worker's: the chart is the whole server's.

    @ivar interval: the width of one bucket, in seconds.
    @ivar buckets: how many buckets are kept.
    @ivar shared: the multiprocess directory, or None.
    """

    def __init__(
        self,
        now: Callable[[], float] = time.time,
        interval: float = 10.0,
        buckets: int = 60,
        shared: str | None = None,
        pid: int | None = None,
    ) -> None:
        """
        @param pid: the process whose history this is (by default this process).
        """
        self.now = now
        self.interval = interval
        self.buckets = buckets
        self.shared = shared
        self._file: str | None = None
        if shared is not None:
            self._file = os.path.join(shared, f"rate_{os.getpid() if pid is None else pid}.json")
        self._published: dict[str, int] | None = None
        self._counts: dict[int, int] = {}
        # The bucket being filled, kept apart so that recording in it is one comparison.
        self._slot: int | None = None
        self._current = 0

    def record(self, count: int = 1) -> None:
        slot = int(self.now() // self.interval)
        if slot == self._slot:
            self._current += count
            return
        self._settle()
        self._slot = slot
        self._current = self._counts.pop(slot, 0) + count
        if len(self._counts) > self.buckets * 2:
            oldest = slot - self.buckets
            for key in [key for key in self._counts if key <= oldest]:
                del self._counts[key]

    def _settle(self) -> None:
        if self._slot is not None and self._current:
            self._counts[self._slot] = self._current

    def series(self) -> list[tuple[float, float]]:
        """
        (bucket start time, requests per second) for each of the last L{buckets} buckets,
        oldest first, the current (incomplete) bucket last.
        """
        self._settle()
        counts = self._counts if self.shared is None else self._wholeServer()
        current = int(self.now() // self.interval)
        return [
            (slot * self.interval, counts.get(slot, 0) / self.interval)
            for slot in range(current - self.buckets + 1, current + 1)
        ]

    def publish(self) -> None:
        """
        Write this process's recent history to the multiprocess directory (if there is one,
        and if it changed), for the other workers' L{series}.
        """
        if self._file is None or self.shared is None:
            return
        self._settle()
        oldest = int(self.now() // self.interval) - self.buckets
        recent = {str(slot): count for slot, count in self._counts.items() if slot > oldest}
        if recent == self._published:
            return
        try:
            fd, temporary = tempfile.mkstemp(dir=self.shared, prefix=".rate-", suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                json.dump(recent, out)
            os.replace(temporary, self._file)
        except OSError:  # the directory is gone: the server is stopping
            return
        self._published = recent

    def _wholeServer(self) -> dict[int, int]:
        """
        This process's counts plus what the other processes published.
        """
        assert self.shared is not None
        counts = dict(self._counts)
        for name in glob.glob(os.path.join(self.shared, "rate_*.json")):
            if name == self._file:
                continue
            try:
                with open(name) as published:
                    theirs = json.load(published)
            except (OSError, ValueError):
                continue
            for slot, count in theirs.items():
                counts[int(slot)] = counts.get(int(slot), 0) + int(count)
        return counts


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

    The figures the proxy updates for every request and every read (requests, bytes,
    connections, tunnels, upstream latency) are plain numbers in this object, exported by a
    collector at scrape time: no label lookup, lock or callback per request.  When this
    process's prometheus-client values live in a multiprocess directory (a C{--workers}
    worker, see L{MetricsDirectory}), they are prometheus-client metrics instead, so that
    they reach the directory at once and the parent can add up every worker's.

    @ivar registry: the registry L{adminResource} exposes.
    @ivar history: the recent request rate, for a status page.
    @ivar shared: the multiprocess directory this process's metrics are written to, or
        None (single process: they live in memory).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        now: Callable[[], float] = time.time,
        shared: str | None = _FROM_PROMETHEUS,
    ) -> None:
        """
        @param shared: the multiprocess directory; by default the one prometheus-client
            writes to (L{sharedDirectory}).
        """
        self.registry = registry if registry is not None else CollectorRegistry()
        self.shared = sharedDirectory() if shared is _FROM_PROMETHEUS else shared
        self.history = RateHistory(now, shared=self.shared)
        self.created = time.time()
        # The hot figures, single-process.
        self.requestCounts: dict[tuple[str, int], int] = {}
        self._requestCreated: dict[tuple[str, int], float] = {}
        self.receivedTotal = 0
        self.sentTotal = 0
        self.openConnections = 0
        self.connectionsTotal = 0
        self.refusedTotal = 0
        self.openTunnels = 0
        self.tunnelsTotal = 0
        self.latencyCounts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latencySum = 0.0
        #: UDP protocols whose own count of received datagrams is read at scrape time
        #: (single process: nothing added to the per-datagram path).
        self.udpProtocols: list[Any] = []
        r = self.registry
        if self.shared is None:
            r.register(_HotFigures(self))
        else:
            self._declareHotFigures(r)
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
        self.cacheHits = Counter(
            "caplab_cache_hits", "Responses served from the cache.", registry=r
        )
        self.cacheMisses = Counter(
            "caplab_cache_misses", "Cacheable requests the cache could not answer.", registry=r
        )
        self.cacheBytes = Gauge(
            "caplab_cache_stored_bytes",
            "Bytes of responses held in the cache.",
            registry=r,
            multiprocess_mode="livesum",
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
            multiprocess_mode="livesum",
        )
        if self.shared is not None:
            self.udpDatagrams = Counter(*_HELP["udpDatagrams"], registry=r)
        self.reloads = Counter(
            "caplab_reloads",
            "Reloads of the block/allow lists and auth file (SIGHUP), by result.",
            ["result"],
            registry=r,
        )

    def _declareHotFigures(self, r: CollectorRegistry) -> None:
        """
        The hot figures as prometheus-client metrics (multiprocess mode).
        """
        self.requests = Counter(*_HELP["requests"], labelnames=["method", "code"], registry=r)
        self._requestChildren: dict[tuple[str, int], Any] = {}
        self.received = Counter(*_HELP["received"], registry=r)
        self.sent = Counter(*_HELP["sent"], registry=r)
        self.activeConnections = Gauge(
            *_HELP["activeConnections"], registry=r, multiprocess_mode="livesum"
        )
        self.connections = Counter(*_HELP["connections"], registry=r)
        self.refused = Counter(*_HELP["refused"], registry=r)
        self.activeTunnels = Gauge(*_HELP["activeTunnels"], registry=r, multiprocess_mode="livesum")
        self.tunnels = Counter(*_HELP["tunnels"], registry=r)
        self.latency = Histogram(*_HELP["latency"], buckets=LATENCY_BUCKETS, registry=r)

    def families(self) -> Iterable[Metric]:
        """
        The metric families of the whole server: this process's registry, or with
        C{--workers} every worker's figures from the shared directory.
        """
        if self.shared is not None:
            return readDirectory(self.shared)
        return self.registry.collect()

    # The proxy.

    def requestDone(self, method: bytes | str, code: int) -> None:
        """
        A proxy request was answered with status C{code}.
        """
        label = _METHOD_LABELS.get(method)
        if label is None:
            label = methodLabel(method)
        key = (label, code)
        if self.shared is None:
            counts = self.requestCounts
            if key in counts:
                counts[key] += 1
            else:
                counts[key] = 1
                self._requestCreated[key] = time.time()
        else:
            child = self._requestChildren.get(key)
            if child is None:
                child = self._requestChildren[key] = self.requests.labels(label, str(int(code)))
            child.inc()
        self.history.record()

    def bytesReceived(self, count: int) -> None:
        if self.shared is None:
            self.receivedTotal += count
        else:
            self.received.inc(count)

    def bytesSent(self, count: int) -> None:
        if self.shared is None:
            self.sentTotal += count
        else:
            self.sent.inc(count)

    def connectionOpened(self) -> None:
        if self.shared is None:
            self.openConnections += 1
            self.connectionsTotal += 1
        else:
            self.activeConnections.inc()
            self.connections.inc()

    def connectionClosed(self) -> None:
        if self.shared is None:
            self.openConnections -= 1
        else:
            self.activeConnections.dec()

    def connectionRefused(self) -> None:
        """
        A client connection was refused (C{--max-connections}).
        """
        if self.shared is None:
            self.refusedTotal += 1
        else:
            self.refused.inc()

    def tunnelOpened(self) -> None:
        if self.shared is None:
            self.openTunnels += 1
            self.tunnelsTotal += 1
        else:
            self.activeTunnels.inc()
            self.tunnels.inc()

    def tunnelClosed(self) -> None:
        if self.shared is None:
            self.openTunnels -= 1
        else:
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
        if seconds < 0.0:
            seconds = 0.0
        if self.shared is None:
            # Bucket i counts observations <= LATENCY_BUCKETS[i]; the last one, the rest.
            self.latencyCounts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latencySum += seconds
        else:
            self.latency.observe(seconds)

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


#: Name and help of each hot figure (both ways of keeping it use the same).
_HELP: dict[str, tuple[str, str]] = {
    "requests": (
        "caplab_proxy_requests",
        "Proxy requests answered, by method and response status code.",
    ),
    "received": (
        "caplab_proxy_received_bytes",
        "Bytes received from proxy clients (request heads, bodies, tunnel data).",
    ),
    "sent": (
        "caplab_proxy_sent_bytes",
        "Bytes sent to proxy clients (response heads, bodies, tunnel data).",
    ),
    "activeConnections": (
        "caplab_proxy_active_connections",
        "Open client connections of the proxy.",
    ),
    "connections": ("caplab_proxy_connections", "Client connections the proxy accepted."),
    "refused": (
        "caplab_proxy_refused_connections",
        "Client connections the proxy refused (--max-connections).",
    ),
    "activeTunnels": ("caplab_proxy_active_tunnels", "Open CONNECT tunnels of the proxy."),
    "tunnels": ("caplab_proxy_tunnels", "CONNECT tunnels the proxy opened."),
    "udpDatagrams": ("caplab_udp_datagrams", "Datagrams received by the uppercase UDP service."),
    "latency": (
        "caplab_proxy_upstream_latency_seconds",
        "Time from starting an upstream request (or tunnel) to its response head "
        "(or established connection).",
    ),
}


class _HotFigures:
    """
    The collector of a single process's hot figures, read from L{Metrics} at scrape time.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(*_HELP["requests"], labels=["method", "code"])
        for (method, code), count in list(m.requestCounts.items()):
            requests.add_metric(
                [method, str(int(code))], count, created=m._requestCreated.get((method, code))
            )
        yield requests
        yield self._counter("received", m.receivedTotal)
        yield self._counter("sent", m.sentTotal)
        yield GaugeMetricFamily(*_HELP["activeConnections"], value=m.openConnections)
        yield self._counter("connections", m.connectionsTotal)
        yield self._counter("refused", m.refusedTotal)
        yield GaugeMetricFamily(*_HELP["activeTunnels"], value=m.openTunnels)
        yield self._counter("tunnels", m.tunnelsTotal)
        yield self._counter("udpDatagrams", sum(p.received for p in m.udpProtocols))
        cumulative = 0
        buckets = []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), m.latencyCounts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        latency = HistogramMetricFamily(*_HELP["latency"])
        latency.add_metric([], buckets, m.latencySum, timestamp=None)
        latency.add_sample(latency.name + "_created", {}, m.created)
        yield latency

    def _counter(self, key: str, value: int) -> CounterMetricFamily:
        return CounterMetricFamily(*_HELP[key], value=value, created=self.metrics.created)

    def describe(self) -> Iterable[Metric]:
        return self.collect()


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
        self.seconds = clock.seconds

    def fetch(self, request: Any, body: Any) -> Any:
        return self.inner.fetch(request, body).addCallback(self._done, self.seconds())

    def _done(self, response: Any, started: float) -> Any:
        self.metrics.upstreamLatency(self.seconds() - started)
        return response


def instrumentTCPFactory(factory: Any, metrics: Metrics) -> Any:
    """
    Count the connections C{factory} accepts in C{metrics}, and read its open connections
    from its C{active} attribute (if it has one) at scrape time.

    The factory and its protocols are left as they are (no wrapping protocol in the data
    path): only the factory's C{buildProtocol} is wrapped.  With a multiprocess directory,
    where nothing can be read at scrape time, each protocol's C{connectionLost} is wrapped
    too, to count open connections down as they close.

    @return: C{factory}.
    """
    build = factory.buildProtocol
    live = metrics.shared is not None
    active = metrics.tcpActive

    def buildProtocol(addr: Any) -> Any:
        protocol = build(addr)
        if protocol is not None:
            metrics.tcpConnections.inc()
            if live:
                active.inc()
                lost = protocol.connectionLost

                def connectionLost(reason: Any = None) -> Any:
                    active.dec()
                    return lost(reason)

                protocol.connectionLost = connectionLost
        return protocol

    factory.buildProtocol = buildProtocol
    if not live and hasattr(factory, "active"):
        active.set_function(lambda: float(factory.active))
    return factory


def countReceivedBytes(factory: Any, metrics: Metrics) -> Any:
    """
    Count every byte the connections of C{factory} receive (request heads, bodies and tunnel
    data alike) in C{metrics}' received bytes, without a wrapping protocol in the data path:
    each protocol's C{dataReceived} is wrapped as it is built.  A connection the factory
    refuses (C{buildProtocol} returns None) is counted as refused.

    @return: C{factory}.
    """
    build = factory.buildProtocol
    shared = metrics.shared is not None

    def buildProtocol(addr: Any) -> Any:
        protocol = build(addr)
        if protocol is None:
            metrics.connectionRefused()
            return protocol
        received = protocol.dataReceived
        replaying = [0]

        if shared:

            def dataReceived(data: bytes) -> None:
                if not replaying[0]:
                    metrics.bytesReceived(len(data))
                received(data)

        else:

            def dataReceived(data: bytes) -> None:
                if not replaying[0]:
                    metrics.receivedTotal += len(data)
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
    Count the datagrams C{protocol} receives in C{metrics}: in one process by reading the
    protocol's own C{received} count at scrape time (nothing on the per-datagram path); under
    C{--workers}, where figures go to the shared files, by counting each datagram.

    @return: C{protocol}.
    """
    if metrics.shared is None:
        # One process: the protocol counts its datagrams itself; read that at scrape time.
        metrics.udpProtocols.append(protocol)
        return protocol
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


def sums(families: Iterable[Metric]) -> dict[str, float]:
    """
    Each sample name's value, summed over its labels.
    """
    found: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


def statsPage(metrics: Metrics, answeredBy: str | None = None) -> bytes:
    """
    An HTML page of the metrics for a person: the request rate over the last minutes as a
    chart, requests by method and status, and the other figures (refreshes every 10 s).

    @param answeredBy: with C{--workers}, which worker answers (say, C{"worker 1 (pid
        123) of 2"}); the page says so (its figures are the whole server's).
    """
    families = list(metrics.families())
    totals = sums(families)
    byStatus = []
    for family in families:
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
        f"<tr><th>{escape(label)}</th><td>{int(totals.get(name, 0))}</td></tr>\n"
        for label, name in STATS_FIGURES
    )
    count = totals.get("caplab_proxy_upstream_latency_seconds_count", 0.0)
    total = totals.get("caplab_proxy_upstream_latency_seconds_sum", 0.0)
    latency = f"{1000 * total / count:.1f} ms" if count else "no upstream requests yet"
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="10"><title>caplab proxy figures</title>'
        "<style>body{font-family:sans-serif} td,th{padding:2px 8px;text-align:left}</style>"
        "</head>\n<body><h1>caplab proxy figures</h1>\n"
        f"{_answeredBy(answeredBy)}"
        "<h2>Requests per second</h2>\n"
        f"{rateChart(metrics.history)}\n"
        "<h2>Requests by method and status</h2>\n"
        f'<table id="requests"><tr><th>method</th><th>status</th><th>requests</th></tr>\n'
        f"{requestRows}</table>\n"
        f'<h2>Figures</h2>\n<table id="figures">\n{figureRows}'
        f"<tr><th>mean upstream latency</th><td>{latency}</td></tr>\n</table>\n"
        '<p><a href="/">status</a> · <a href="/proxy.pac">PAC file</a></p>\n'
        "</body></html>\n"
    ).encode()


def _answeredBy(answeredBy: str | None) -> str:
    if not answeredBy:
        return ""
    return (
        f'<p id="answered-by">Answered by {escape(answeredBy)}; the figures are the whole '
        "server's (every worker's).</p>\n"
    )


class StatsResource(Resource):
    """
    The stats page (L{statsPage}) on the proxy's own port (C{/stats}).
    """

    isLeaf = True

    def __init__(self, metrics: Metrics, answeredBy: str | None = None) -> None:
        super().__init__()
        self.metrics = metrics
        self.answeredBy = answeredBy

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return statsPage(self.metrics, self.answeredBy)

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


def adminResource(metrics: Metrics | CollectorRegistry) -> Resource:
    """
    The admin site's root: C{/} and C{/metrics}.

    @param metrics: the metrics to serve, or a registry (the C{--workers} parent's, see
        L{MetricsDirectory}).
    """
    registry = metrics.registry if isinstance(metrics, Metrics) else metrics
    root = _AdminRoot()
    root.putChild(b"metrics", MetricsResource(registry))
    return root


class AdminSite(Site):
    """
    The admin site: no access-log line for each scrape.
    """

    noisy = False

    def log(self, request: Any) -> None:
        pass


class MetricsDirectory:
    """
    In the C{--workers} parent: the private directory where the workers' prometheus-client
    values live (its multiprocess mode), and the collector that adds them up.

    The parent creates it before the first worker starts and hands it to every worker in
    C{PROMETHEUS_MULTIPROC_DIR} (L{environment}), which prometheus-client reads when the
    worker first imports it; when a worker ends, its live gauges are dropped
    (L{processEnded}); the directory is removed when the server stops (L{remove}).

    @ivar path: the directory, or None before L{create} and after L{remove}.
    """

    def __init__(self) -> None:
        self.path: str | None = None

    def create(self) -> str:
        self.remove()
        self.path = tempfile.mkdtemp(prefix="caplab-metrics-")  # mode 0700
        return self.path

    def environment(self) -> dict[str, str]:
        """
        What to add to a worker's environment.
        """
        return {MULTIPROCESS_ENVIRONMENT: self.path} if self.path is not None else {}

    def processEnded(self, pid: int | None) -> None:
        """
        Worker C{pid} has ended: its open connections and tunnels no longer count (its
        counters and histograms still do).
        """
        if self.path is not None and pid is not None:
            mark_process_dead(pid, self.path)

    def remove(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None

    def registry(self) -> CollectorRegistry:
        """
        A registry of the whole server's figures, read from the directory at each scrape.
        """
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry

    def collect(self) -> Iterable[Metric]:
        if self.path is None or not os.path.isdir(self.path):
            return []
        return readDirectory(self.path)

    def describe(self) -> Iterable[Metric]:
        return []
