"""
Builds the web proxy from parsed options: the one place the proxy's parts are wired.

L{caplab.tap} calls L{makeProxyFactory} and listens with the factory.  Collaborators can be
passed in (tests, or other parts of caplab): a fetcher chain, host policy, authenticator,
metrics and connector; otherwise they are built from C{config}.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.task import LoopingCall

from caplab.metrics import (
    LatencyFetcher,
    StatsResource,
    countReceivedBytes,
    legacyStatusPage,
    sums,
)
from caplab.proxy.accesslog import AccessLog
from caplab.proxy.admission import LOOPBACK
from caplab.proxy.channel import ProxySettings
from caplab.proxy.connect import EndpointConnector
from caplab.proxy.factory import ProxyFactory
from caplab.proxy.forward import Forwarder
from caplab.proxy.hooks import IAuthenticator, IFetcher, IHostPolicy
from caplab.proxy.options import portList
from caplab.proxy.tunnel import TunnelOpener
from caplab.proxy.upstream import ChainingConnector, ChainingFetcher

_UNSET: Any = object()


def makeProxyFactory(
    config: Mapping[str, Any],
    reactor: Any,
    *,
    fetcher: IFetcher | Callable[[IFetcher], IFetcher] | None = None,
    hostPolicy: IHostPolicy | None = _UNSET,
    authenticator: IAuthenticator | None = _UNSET,
    metrics: Any = _UNSET,
    connector: Any = None,
) -> IProtocolFactory:
    """
    The proxy's server factory for C{config}.

    @param fetcher: the fetcher chain to use instead of the forwarder (an L{IFetcher}), or a
        function that wraps the forwarder into one (e.g. a cache); by default the cache the
        options describe (if caplab has one) around the forwarder.
    @param hostPolicy: block/allow lists (default: from the policy options, if any).
    @param authenticator: proxy authentication (default: from C{--auth-file}, if any).
    @param metrics: an object with caplab's metrics methods, or None.
    @param connector: how to reach origins (default: L{EndpointConnector} with C{--resolve}
        and C{--upstream-ca}).
    """
    components = _policyComponents(config, reactor)
    if connector is None:
        parent = getattr(components, "parent", None)
        connector = EndpointConnector(
            reactor,
            resolve=config.get("resolve") or {},
            caFile=config.get("upstream-ca"),
            connectTimeout=config.get("upstream-timeout", 60.0) or 30.0,
            hostPolicy=getattr(components, "hostPolicy", None),
            trusted=[parent.host] if parent is not None else [],
        )
    if components is not None and components.parent is not None:
        connector = ChainingConnector(connector, components.router, reactor)
    forwarder = Forwarder(reactor, connector, timeout=config.get("upstream-timeout", 60.0))
    upstream: IFetcher = forwarder
    if components is not None:
        upstream = LatencyFetcher(
            ChainingFetcher(forwarder, components.router), components.metrics, reactor
        )
    if hostPolicy is _UNSET:
        hostPolicy = getattr(components, "hostPolicy", None)
    if authenticator is _UNSET:
        authenticator = getattr(components, "authenticator", None)
    if metrics is _UNSET:
        metrics = getattr(components, "metrics", None)
    chain: IFetcher
    if fetcher is None:
        chain = _cached(config, upstream, reactor, metrics)
    elif hasattr(fetcher, "fetch") and not isinstance(fetcher, type):
        chain = fetcher
    else:
        chain = fetcher(upstream)
    connectPorts = config.get("connect-ports", "443")
    if isinstance(connectPorts, str):
        connectPorts = portList(connectPorts)
    settings = ProxySettings(
        fetcher=chain,
        clock=reactor,
        hostPolicy=hostPolicy,
        authenticator=authenticator,
        metrics=metrics,
        allow=tuple(config.get("allow") or LOOPBACK),
        connectPorts=frozenset(connectPorts),
        forwardedFor=bool(config.get("x-forwarded-for", False)),
        pseudonym=b"caplab-%d" % (os.getpid(),),
        headerTimeout=config.get("header-timeout", 30.0),
        idleTimeout=config.get("keep-alive-timeout", 60.0),
        maxConnections=config.get("max-connections", 1000),
        maxRequestBody=config.get("max-request-body"),
    )
    answeredBy = None
    if components is not None and components.metrics.shared is not None:
        answeredBy = _worker(config)
    settings.upstream = upstream
    if components is not None:
        settings.pages[b"/proxy.pac"] = components.pac
        settings.pages[b"/stats"] = StatsResource(components.metrics, answeredBy)
    settings.forwarder = forwarder  # type: ignore[attr-defined]
    accessLog = None
    if config.get("access-log"):
        accessLog = AccessLog(config["access-log"], reactor)
    if answeredBy is not None:
        factory: ProxyFactory = WorkerProxyFactory(settings, accessLog, answeredBy)
    else:
        factory = ProxyFactory(settings, accessLog)
    settings.pages[b"/"] = legacyStatusPage(factory)
    if components is not None and metrics is components.metrics:
        countReceivedBytes(factory, metrics)
    settings.tunnels = TunnelOpener(connector, reactor, metrics)
    return factory


def _worker(config: Mapping[str, Any]) -> str:
    """
    Which C{--workers} worker this process is, for a person: C{"worker 1 (pid 123) of 2"}.
    """
    from caplab.workers import InheritedSockets

    inherited = InheritedSockets.fromEnvironment()
    index = inherited.index if inherited is not None else "?"
    return f"worker {index} (pid {os.getpid()}) of {config.get('workers', '?')}"


class WorkerProxyFactory(ProxyFactory):
    """
    The proxy's factory in a C{--workers} worker: its status page shows the whole server's
    figures (every worker's, from the metrics directory), and says which worker answered;
    while it runs, it publishes this worker's request rate there every second (for the
    chart of C{/stats}).
    """

    def __init__(self, settings: ProxySettings, accessLog: AccessLog | None, worker: str) -> None:
        super().__init__(settings, accessLog)
        self.worker = worker
        self._publishing: LoopingCall | None = None

    def startFactory(self) -> None:
        super().startFactory()
        self._publishing = LoopingCall(self.settings.metrics.history.publish)
        self._publishing.clock = self.clock
        self._publishing.start(1.0, now=False)

    def stopFactory(self) -> None:
        if self._publishing is not None and self._publishing.running:
            self._publishing.stop()
        self._publishing = None
        self.settings.metrics.history.publish()
        super().stopFactory()

    def counters(self) -> dict[str, int]:
        totals = sums(self.settings.metrics.families())

        def total(name: str) -> int:
            return int(totals.get(name, 0))

        figures: dict[str, Any] = {
            "answered by": self.worker,
            "open connections": total("caplab_proxy_active_connections"),
            "connections since start": total("caplab_proxy_connections_total"),
            "connections refused (--max-connections)": total(
                "caplab_proxy_refused_connections_total"
            ),
            "requests since start": total("caplab_proxy_requests_total"),
            "open tunnels": total("caplab_proxy_active_tunnels"),
            "tunnels since start": total("caplab_proxy_tunnels_total"),
        }
        return figures


def _policyComponents(config: Mapping[str, Any], reactor: Any) -> Any:
    """
    The policy engineer's shared components (lists, auth, metrics), if caplab has them.
    """
    try:
        from caplab.proxy.policy_options import policyComponents
    except ImportError:
        return None
    if not isinstance(config, dict):
        return None
    return policyComponents(config, reactor)


def _cached(
    config: Mapping[str, Any], forwarder: IFetcher, reactor: Any, metrics: Any = None
) -> IFetcher:
    """
    The forwarder wrapped in the cache the options describe (no options: no cache).
    """
    if "cache-size" not in config and "no-cache" not in config:
        return forwarder
    from caplab.proxy.cache.options import cachingFetcher

    return cachingFetcher(config, forwarder, reactor, metrics)
