"""
Transitional: what the current wiring (C{caplab/proxy/policy_options.py},
C{caplab/proxy/service.py} and the old proxy core) calls, mapped onto the package.

That wiring builds C{Metrics()} with no collaborators, instruments factories in place
(ignoring what the instrumenters return) and drives a worker's publishing from the proxy
factory.  Once the composition root builds the parts itself (see the package's docstring),
delete this module and its names in C{caplab/metrics/__init__.py}.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from caplab import __version__
from caplab.metrics import registry
from caplab.metrics.admin import IScrapeSource, LocalScrape
from caplab.metrics.admin import adminResource as _adminResource
from caplab.metrics.directory import MetricsDirectory
from caplab.metrics.figures import Figures, sourceOf
from caplab.metrics.history import RateHistory
from caplab.metrics.instrument import ReceivedBytesProtocol
from caplab.metrics.offload import Offloader
from caplab.metrics.pages import StatsPage, StatusPage
from caplab.metrics.publisher import WorkerPublisher
from caplab.metrics.shared import METRICS_ENVIRONMENT
from caplab.proxy.hooks import ICacheAdmin, IPage

#: The environment variable in which the supervisor tells a worker its number (as
#: C{caplab.workers.WORKER_ENVIRONMENT}, which cannot be imported here: it imports this).
_WORKER_ENVIRONMENT = "CAPLAB_WORKER"

_FROM_ENVIRONMENT: Any = object()


class _History(RateHistory):
    def publish(self) -> None:
        """
        Nothing: the L{WorkerPublisher} shares the history.  (The current proxy wiring
        calls this every second.)
        """


def _globalReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def workerIndex(environ: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """
    This worker's number, from the supervisor's environment variable (None if absent).
    """
    try:
        index = json.loads(environ.get(_WORKER_ENVIRONMENT, ""))["index"]
    except (ValueError, KeyError, TypeError):
        return None
    return index if isinstance(index, int) and not isinstance(index, bool) else None


class Metrics(registry.Metrics):
    """
    L{registry.Metrics} as the current wiring builds it (C{Metrics()}): in a C{--workers}
    worker (C{CAPLAB_METRICS_DIR} set), it publishes itself with a L{WorkerPublisher} on
    the global reactor.
    """

    def __init__(
        self, now: Callable[[], float] = time.time, shared: str | None = _FROM_ENVIRONMENT
    ) -> None:
        if shared is _FROM_ENVIRONMENT:
            shared = os.environ.get(METRICS_ENVIRONMENT) or None
            publish = shared is not None
        else:
            publish = False
        super().__init__(now, shared)
        self.history = _History(now)
        if publish and shared is not None:
            reactor = _globalReactor()
            publisher = WorkerPublisher(
                self, shared, reactor, Offloader(reactor), index=workerIndex()
            )
            reactor.callWhenRunning(publisher.startService)
            reactor.addSystemEventTrigger("before", "shutdown", publisher.stopService)


def countReceivedBytes(factory: Any, metrics: registry.Metrics) -> Any:
    """
    L{caplab.metrics.instrument.ReceivedBytesFactory}'s counting, installed in C{factory}
    itself (the current wiring ignores the return value).
    """
    build = factory.buildProtocol

    def buildProtocol(addr: Any) -> Any:
        protocol = build(addr)
        if protocol is None:
            metrics.connectionRefused()
            return None
        return ReceivedBytesProtocol(protocol, metrics)

    factory.buildProtocol = buildProtocol
    return factory


def instrumentTCPFactory(factory: Any, metrics: registry.Metrics) -> Any:
    """
    L{caplab.metrics.instrument.CountingTCPFactory}'s counting, installed in C{factory} itself.
    """
    if hasattr(factory, "active"):
        metrics.watchTCPFactory(factory)
    build = factory.buildProtocol

    def buildProtocol(addr: Any) -> Any:
        protocol = build(addr)
        if protocol is not None:
            metrics.tcpConnectionAccepted()
        return protocol

    factory.buildProtocol = buildProtocol
    return factory


def instrumentDatagramProtocol(protocol: Any, metrics: registry.Metrics) -> Any:
    """
    L{registry.Metrics.watchDatagramProtocol}.
    """
    metrics.watchDatagramProtocol(protocol)
    return protocol


def StatsResource(metrics: registry.Metrics, answeredBy: str | None = None) -> IPage:
    """
    The C{/stats} page of C{metrics}' server.
    """
    return StatsPage(sourceOf(metrics), answeredBy)


def adminResource(
    source: registry.Metrics | MetricsDirectory | IScrapeSource | CollectorRegistry,
    cache: ICacheAdmin | None = None,
) -> Any:
    """
    L{caplab.metrics.admin.adminResource} for what the current wiring passes: a
    L{Metrics} (read in a thread of the global reactor) or a L{MetricsDirectory}.
    """
    if isinstance(source, registry.Metrics):
        source = LocalScrape(source, Offloader(_globalReactor()))
    assert not isinstance(source, CollectorRegistry), "pass the MetricsDirectory itself"
    return _adminResource(source, cache)


class _FactoryFigures:
    """
    The old proxy core's own counters as figures (a factory without metrics).
    """

    _NAMES = {
        "open connections": "caplab_proxy_active_connections",
        "connections since start": "caplab_proxy_connections_total",
        "connections refused (--max-connections)": "caplab_proxy_refused_connections_total",
        "requests since start": "caplab_proxy_requests_total",
        "open tunnels": "caplab_proxy_active_tunnels",
        "tunnels since start": "caplab_proxy_tunnels_total",
    }

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def figures(self) -> Figures:
        counters = self.factory.counters()
        families = []
        for label, sample in self._NAMES.items():
            value = counters.get(label)
            if isinstance(value, int):
                family = Metric(sample.removesuffix("_total"), label, "untyped")
                family.add_sample(sample, {}, float(value))
                families.append(family)
        now = self.factory.clock.seconds()
        return Figures(families, [], now - self.factory.uptime(), now)


def legacyStatusPage(factory: Any) -> IPage:
    """
    The status page (C{/}) of the old proxy core's factory: its server's metrics if it has
    them, else its own counters.
    """
    metrics = factory.settings.metrics
    source: Any = (
        sourceOf(metrics) if isinstance(metrics, registry.Metrics) else _FactoryFigures(factory)
    )
    return StatusPage(source, __version__, worker=getattr(factory, "worker", None))
