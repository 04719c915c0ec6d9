"""
Prometheus metrics of every caplab service, the proxy's status pages, and the admin endpoint.

One idea per module:

  - L{registry}: L{Metrics}, the figures the services count (plain numbers, nothing per
    request but an addition), and the collector that exports them at scrape time;
  - L{history}: the request rate over the last minutes (pure);
  - L{figures}: what the pages show, read from the same families as C{/metrics};
  - L{chart}, L{pages}: the SVG rate chart, and the status (C{/}) and figures (C{/stats})
    pages as C{IPage}s;
  - L{admin}: the admin site (C{/metrics}, C{POST /cache/purge}, C{POST /cache/flush}) and
    who may use it;
  - L{shared}, L{publisher}, L{directory}: the C{--workers} metrics directory (its files;
    a worker's side; the supervisor's side), and L{operations}: the supervisor's purge and
    flush, passed on to every worker's cache through it;
  - L{process}: a process's own figures; L{offload}: the metrics' own thread for blocking
    reads.

Wiring (in the composition root), a single process::

    metrics = Metrics()
    tcp = UppercaseFactory(...); metrics.watchTCPFactory(tcp)   # read at scrape time
    metrics.watchDatagramProtocol(udpProtocol)
    proxyFactory = ProxyFactory(settings, ...)   # counts into settings.metrics itself
    settings.metrics = metrics
    forwarder = Forwarder(..., latency=metrics.upstreamLatency)  # times each origin
    metrics.watchCache(lambda: CacheFigures(store.size, len(store)))
    metrics.watchFilters(filterCounters)   # the content filters' events, read at scrape time
    source = LocalFigures(metrics)
    card = FilterCard(lambda: settings.filters is not None, COUNTERS)   # while filters run
    pages = {b"/": StatusPage(source, version, config, filters=card),
             b"/stats": StatsPage(source)}
    offloader = Offloader(reactor)
    site = AdminSite(adminResource(LocalScrape(metrics, offloader), cacheAdmin),
                     adminNetworks(config["admin-allow"], config["allow"]), reactor)

and in a C{--workers} worker, also C{WorkerPublisher(metrics,
os.environ[METRICS_ENVIRONMENT], reactor, offloader, index, cache=cacheAdmin)} as a service
(it makes the pages show the whole server, and runs the supervisor's purges and flushes on
this worker's cache), while the supervisor serves
C{adminResource(directory, WorkersCacheAdmin(directory, reactor))} for its
L{MetricsDirectory}.
"""

from caplab.metrics.admin import (
    AdminSite,
    IScrapeSource,
    LocalScrape,
    MetricsResource,
    adminNetworks,
    adminResource,
)
from caplab.metrics.chart import rateChart
from caplab.metrics.directory import MetricsDirectory
from caplab.metrics.figures import Figures, FiguresSource, LocalFigures, sourceOf, sums
from caplab.metrics.history import RateHistory
from caplab.metrics.offload import Offloader
from caplab.metrics.operations import WorkersCacheAdmin
from caplab.metrics.pages import FilterCard, StatsPage, StatusPage
from caplab.metrics.publisher import WorkerPublisher
from caplab.metrics.registry import (
    KNOWN_METHODS,
    LATENCY_BUCKETS,
    CacheFigures,
    Metrics,
    codeLabel,
    methodLabel,
)
from caplab.metrics.shared import METRICS_ENVIRONMENT

__all__ = [
    "KNOWN_METHODS",
    "LATENCY_BUCKETS",
    "METRICS_ENVIRONMENT",
    "AdminSite",
    "CacheFigures",
    "FilterCard",
    "Figures",
    "FiguresSource",
    "IScrapeSource",
    "LocalFigures",
    "LocalScrape",
    "Metrics",
    "MetricsDirectory",
    "MetricsResource",
    "Offloader",
    "RateHistory",
    "StatsPage",
    "StatusPage",
    "WorkerPublisher",
    "WorkersCacheAdmin",
    "adminNetworks",
    "adminResource",
    "codeLabel",
    "methodLabel",
    "rateChart",
    "sourceOf",
    "sums",
]
