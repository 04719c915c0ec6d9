"""
The figures every caplab service counts, kept as plain numbers, and the collector that turns
them into Prometheus metric families when someone asks.

The services call the small methods of L{Metrics} (C{requestDone}, C{connectionOpened} ...),
which know nothing of Prometheus: each adds to an C{int} or a C{dict}, with no label lookup,
lock or callback, so counting costs a request next to nothing.  L{MetricsCollector} reads those
numbers at scrape time (or, under C{--workers}, once a second to publish them: see
L{caplab.metrics.shared}).

All names start with C{caplab_}.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from caplab.metrics.history import RateHistory

#: The request methods counted by name; any other is counted as C{OTHER} (bounded labels).
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

#: Upstream latency buckets, in seconds: loopback milliseconds up to a slow origin's 30 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Label of each method named in L{KNOWN_METHODS}, as bytes and as text.
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


#: Label of each standard status code (L{http.HTTPStatus}); any other is C{"other"}.
_CODE_LABELS: dict[int, str] = {int(status): str(int(status)) for status in HTTPStatus}


def codeLabel(code: int) -> str:
    """
    The C{code} label of a response status: the code if it is a standard one (those
    L{http.HTTPStatus} names), else C{"other"}.  An origin chooses its status codes (and so
    does any client that names an origin of its own), so the labels must not: each would be
    one more series in every scrape, page and worker's file.
    """
    return _CODE_LABELS.get(code, "other")


#: Name (without C{_total}) and help of every family L{MetricsCollector} exports.
FAMILIES: dict[str, tuple[str, str]] = {
    "requests": (
        "caplab_proxy_requests",
        "Proxy requests answered, by method and response status code (other: a code "
        "that is not a standard one).",
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
    "blocked": (
        "caplab_proxy_blocked_requests",
        "Requests refused by the block/allow lists (plain and CONNECT).",
    ),
    "authFailures": (
        "caplab_proxy_auth_failures",
        "Requests answered 407 because credentials were missing or wrong.",
    ),
    "latency": (
        "caplab_proxy_upstream_latency_seconds",
        "Time from starting an upstream request (or tunnel) to its response head "
        "(or established connection).",
    ),
    "cacheHits": ("caplab_cache_hits", "Responses served from the cache."),
    "cacheMisses": ("caplab_cache_misses", "Cacheable requests the cache could not answer."),
    "cacheBytes": ("caplab_cache_stored_bytes", "Bytes of responses held in the cache."),
    "cacheEntries": ("caplab_cache_stored_entries", "Responses (variants) held in the cache."),
    "variantEvictions": (
        "caplab_cache_variant_evictions",
        "Stored variants dropped because their URL had too many.",
    ),
    "tcpConnections": (
        "caplab_tcp_connections",
        "Connections accepted by the uppercase TCP service.",
    ),
    "tcpActive": (
        "caplab_tcp_active_connections",
        "Open connections of the uppercase TCP service.",
    ),
    "udpDatagrams": ("caplab_udp_datagrams", "Datagrams received by the uppercase UDP service."),
    "reloads": (
        "caplab_reloads",
        "Reloads of the block/allow lists and auth file (SIGHUP), by result.",
    ),
    "filterEvents": (
        "caplab_filter_events",
        "What the content filters did, by kind of event (what): tracking parameters, "
        "Referers, cookies and header fields removed or changed, bodies rewritten, "
        "elements blocked, bodies left untransformed and why.",
    ),
}


@dataclass(frozen=True)
class CacheFigures:
    """
    What the cache holds now: bytes, entries (every stored variant counts), and how many
    variants it has dropped for having too many of one URL (None: it does not say).
    """

    storedBytes: int
    storedEntries: int
    variantEvictions: int | None = None


class _Active(Protocol):
    active: int
    accepted: int


class _Received(Protocol):
    received: int


class _Events(Protocol):
    def snapshot(self) -> Mapping[str, int]: ...


class Metrics:
    """
    caplab's figures, as plain numbers the services add to.

    @ivar history: the recent request rate, for the status pages' chart.
    @ivar created: when counting started (the C{_created} time of the counters).
    @ivar registry: a registry of L{MetricsCollector} over this object (what C{/metrics}
        exposes in a single process).
    @ivar server: under C{--workers}, the whole server's figures as last read (a
        L{caplab.metrics.figures.FiguresSource}); None in a single process, where this
        object's figures are the server's.
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        """
        @param now: the wall clock (seconds since the epoch).
        """
        self.now = now
        self.created = now()
        self.server: Any = None
        self.history = RateHistory(now)
        #: (method label, code label) -> requests (see L{methodLabel}, L{codeLabel}).
        self.requestCounts: dict[tuple[str, str], int] = {}
        self.requestCreated: dict[tuple[str, str], float] = {}
        self.receivedTotal = 0
        self.sentTotal = 0
        self.openConnections = 0
        self.connectionsTotal = 0
        self.refusedTotal = 0
        self.openTunnels = 0
        self.tunnelsTotal = 0
        self.latencyCounts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latencySum = 0.0
        self.blockedCounts = {"CONNECT": 0, "other": 0}
        self.authFailures = 0
        self.cacheHits = 0
        self.cacheMisses = 0
        self.cacheBytes = 0
        self.reloadCounts: dict[str, int] = {}
        #: Factories of the uppercase TCP service whose C{active} count is read when asked.
        self.tcpFactories: list[_Active] = []
        #: UDP protocols whose own count of received datagrams is read when asked.
        self.udpProtocols: list[_Received] = []
        #: Counts of the content filters' events, read when asked (see L{watchFilters}).
        self.filterEvents: list[_Events] = []
        #: Where the cache's figures are read when asked (see L{watchCache}).
        self.cacheFigures: Callable[[], CacheFigures] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MetricsCollector(self))

    # The proxy.

    def requestDone(self, method: bytes | str, code: int, sent: int = 0) -> None:
        """
        A proxy request was answered with status C{code} and C{sent} bytes of body.
        """
        self.sentTotal += sent
        label = _METHOD_LABELS.get(method)
        if label is None:
            label = methodLabel(method)
        key = (label, _CODE_LABELS.get(code, "other"))
        counts = self.requestCounts
        if key in counts:
            counts[key] += 1
        else:
            counts[key] = 1
            self.requestCreated[key] = self.now()
        self.history.record()

    def connectionOpened(self) -> None:
        self.openConnections += 1
        self.connectionsTotal += 1

    def connectionClosed(self) -> None:
        self.openConnections -= 1

    def connectionRefused(self) -> None:
        """
        A client connection was refused (C{--max-connections}).
        """
        self.refusedTotal += 1

    def tunnelOpened(self) -> None:
        self.openTunnels += 1
        self.tunnelsTotal += 1

    def tunnelClosed(self) -> None:
        self.openTunnels -= 1

    def requestBlocked(self, method: bytes | str = "GET") -> None:
        """
        A request was refused by the host policy.
        """
        self.blockedCounts["CONNECT" if methodLabel(method) == "CONNECT" else "other"] += 1

    def authenticationFailed(self) -> None:
        self.authFailures += 1

    def upstreamLatency(self, seconds: float) -> None:
        """
        An upstream response head (or tunnel connection) came after C{seconds}.
        """
        if seconds < 0.0:
            seconds = 0.0
        # Bucket i counts observations <= LATENCY_BUCKETS[i]; the last one, the rest.
        self.latencyCounts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latencySum += seconds

    # The cache.

    def cacheHit(self) -> None:
        self.cacheHits += 1

    def cacheMiss(self) -> None:
        self.cacheMisses += 1

    def cacheStoredBytes(self, count: int) -> None:
        """
        The cache now holds C{count} bytes (unless L{watchCache} reads its figures).
        """
        self.cacheBytes = count

    def watchCache(self, figures: Callable[[], CacheFigures]) -> None:
        """
        Read the cache's stored bytes and entries (and variant evictions) from C{figures}
        whenever the metrics are read, instead of waiting for L{cacheStoredBytes}: the
        figures are then right after evictions and purges too.

        @param figures: called in the reactor thread; must not block.
        """
        self.cacheFigures = figures

    # The uppercase services.

    def watchTCPFactory(self, factory: _Active) -> None:
        """
        Read the open and accepted connections of an uppercase TCP factory (its C{active}
        and C{accepted}) when asked: nothing is added to its per-connection path.
        """
        self.tcpFactories.append(factory)

    def watchDatagramProtocol(self, protocol: _Received) -> None:
        """
        Read the datagrams an uppercase UDP protocol has received (its C{received}) when
        asked: nothing is added to its per-datagram path.
        """
        self.udpProtocols.append(protocol)

    # The content filters.

    def watchFilters(self, events: _Events) -> None:
        """
        Read the content filters' counts of what they did (C{events.snapshot()}, kind ->
        count, as L{caplab.proxy.filters.FilterCounters} has them) when asked: the filters
        go on adding to their own counters, and nothing calls into the metrics per event.

        Once watched, every kind the counters know is exported, zeros included, whether or
        not a filter is configured now (a reload may switch filters on): see
        L{MetricsCollector}.
        """
        self.filterEvents.append(events)

    # Operations.

    def reloaded(self, ok: bool) -> None:
        result = "ok" if ok else "failed"
        self.reloadCounts[result] = self.reloadCounts.get(result, 0) + 1

    # Reading.

    def families(self) -> list[Metric]:
        """
        The metric families of the whole server, from memory: this process's, or under
        C{--workers} every worker's as last read (L{server}).
        """
        if self.server is not None:
            return list(self.server.figures().families)
        return list(self.registry.collect())


class MetricsCollector:
    """
    A prometheus-client collector of a L{Metrics}' figures, read when it is collected.

    Collect it in the reactor thread: it reads the services' live state.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(*FAMILIES["requests"], labels=["method", "code"])
        for (method, code), count in list(m.requestCounts.items()):
            requests.add_metric([method, code], count, created=m.requestCreated.get((method, code)))
        yield requests
        yield self._counter("received", m.receivedTotal)
        yield self._counter("sent", m.sentTotal)
        yield GaugeMetricFamily(*FAMILIES["activeConnections"], value=m.openConnections)
        yield self._counter("connections", m.connectionsTotal)
        yield self._counter("refused", m.refusedTotal)
        yield GaugeMetricFamily(*FAMILIES["activeTunnels"], value=m.openTunnels)
        yield self._counter("tunnels", m.tunnelsTotal)
        yield self._labelled("blocked", "method", m.blockedCounts.items())
        yield self._counter("authFailures", m.authFailures)
        yield self._latency()
        yield self._counter("cacheHits", m.cacheHits)
        yield self._counter("cacheMisses", m.cacheMisses)
        yield from self._cache()
        accepted = sum(factory.accepted for factory in m.tcpFactories)
        yield self._counter("tcpConnections", accepted)
        yield GaugeMetricFamily(*FAMILIES["tcpActive"], value=sum(f.active for f in m.tcpFactories))
        yield self._counter("udpDatagrams", sum(p.received for p in m.udpProtocols))
        yield self._labelled("reloads", "result", m.reloadCounts.items())
        if m.filterEvents:
            yield self._labelled("filterEvents", "what", self._filterEvents().items())

    def _counter(self, key: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(*FAMILIES[key], value=value, created=self.metrics.created)

    def _labelled(
        self, key: str, label: str, values: Iterable[tuple[str, int]]
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(*FAMILIES[key], labels=[label])
        for value, count in sorted(values):
            family.add_metric([value], count, created=self.metrics.created)
        return family

    def _latency(self) -> HistogramMetricFamily:
        m = self.metrics
        cumulative = 0
        buckets = []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), m.latencyCounts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        latency = HistogramMetricFamily(*FAMILIES["latency"])
        latency.add_metric([], buckets, m.latencySum)
        latency.add_sample(latency.name + "_created", {}, m.created)
        return latency

    def _filterEvents(self) -> dict[str, int]:
        """
        The watched filter counts added up, every kind they know included (at 0 before its
        first event: a series that exists from the start is one Prometheus can take a
        C{rate()} of, and an alert on it needs no C{absent()}).
        """
        counts: dict[str, int] = {}
        for events in self.metrics.filterEvents:
            for what, count in events.snapshot().items():
                counts[what] = counts.get(what, 0) + count
        return counts

    def _cache(self) -> Iterator[Metric]:
        m = self.metrics
        figures = m.cacheFigures() if m.cacheFigures is not None else None
        if figures is None:
            yield GaugeMetricFamily(*FAMILIES["cacheBytes"], value=m.cacheBytes)
            return
        yield GaugeMetricFamily(*FAMILIES["cacheBytes"], value=figures.storedBytes)
        yield GaugeMetricFamily(*FAMILIES["cacheEntries"], value=figures.storedEntries)
        if figures.variantEvictions is not None:
            yield self._counter("variantEvictions", figures.variantEvictions)

    def describe(self) -> Iterable[Metric]:
        return []
