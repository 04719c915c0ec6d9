"""
The composition root: every component of C{twist caplab} built from the parsed options, in
one place, returned as one L{Parts} that L{caplab.tap.makeService} turns into the service
tree.

The options modules only parse and validate; everything here builds.  Each component has one
C{build...} function; the proxy is built by L{buildProxy} alone (the one place that calls
the proxy core's constructors), the cache by L{buildCache}, the policy by L{buildPolicy}.  A
new component is one more function and one more field of L{Parts}.

A file that cannot be used (a block list with a bad line, an htpasswd file with a weak hash)
raises L{ConfigError}: at start-up C{makeService} reports it in one line and exits 64; on
C{SIGHUP} (L{caplab.reconfigure.ConfigReload}) the old configuration stays in force.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from caplab import __version__
from caplab.config import humanSize
from caplab.listening import DatagramListener, IListener, StreamListener, stopWithStatus
from caplab.metrics import (
    METRICS_ENVIRONMENT,
    AdminSite,
    Figures,
    FilterCard,
    LocalScrape,
    MetricsDirectory,
    Offloader,
    StatsPage,
    StatusPage,
    WorkerPublisher,
    WorkersCacheAdmin,
    adminNetworks,
    sourceOf,
)
from caplab.metrics.admin import adminResource
from caplab.metrics.registry import CacheFigures, Metrics
from caplab.proxy.accesslog import AccessLog
from caplab.proxy.auth import AuthFileError, HtpasswdAuthenticator
from caplab.proxy.filters import (
    COUNTERS,
    FilterChain,
    FilterConfigError,
    FilterCounters,
    ReloadableFilterChain,
    buildChain,
    filterLog,
)
from caplab.proxy.filters.options import anyFilter, filterConfig
from caplab.proxy.hooks import ICacheAdmin, IFetcher, IQuickHits
from caplab.proxy.pac import PacPage
from caplab.proxy.policy import PolicyFileError, ReloadableHostPolicy
from caplab.proxy.upstream import ParentProxy, UpstreamRouter, parseProxyURL
from caplab.reload import IReloadable, Reloader
from caplab.sdnotify import Notifier
from caplab.tcp import UppercaseFactory
from caplab.trace import Tracer
from caplab.udp import UppercaseDatagramProtocol
from caplab.workers import (
    Drain,
    InheritedSockets,
    WorkerSupervisor,
    sharedSockets,
)

if TYPE_CHECKING:
    from caplab.proxy.factory import ProxyFactory

log = Logger(namespace="caplab.wiring")


class ConfigError(Exception):
    """
    A file the options name cannot be used; the message is one line naming it.
    """


# --- the parts ---------------------------------------------------------------------------


@dataclass
class PolicyParts:
    """
    Who may reach what: the block/allow lists, proxy authentication, the parent proxy and
    the PAC file.

    @ivar hostPolicy: the block/allow lists: one object for the process's lifetime (empty
        without lists), shared by the connector, the proxy's settings and the filters, and
        changed in place by a reload (never replaced).
    @ivar authenticator: None without C{--auth-file}.
    @ivar router: the next hop of each request (direct without C{--upstream-proxy}).
    """

    hostPolicy: ReloadableHostPolicy
    authenticator: HtpasswdAuthenticator | None
    router: UpstreamRouter
    parent: ParentProxy | None
    pac: PacPage


@dataclass
class CacheParts:
    """
    The proxy's HTTP cache: the fetcher in front of the origin, its store, and where it is
    (for the start-up line).
    """

    fetcher: IFetcher
    store: Any
    where: str
    #: purge and flush (a PURGE request, the admin endpoint); None if the cache cannot.
    admin: ICacheAdmin | None = None
    #: the short way of the simplest hits (a store in memory only).
    hits: IQuickHits | None = None


@dataclass
class ProxyParts:
    """
    The web proxy: its server factory and what the rest of caplab reaches into.

    @ivar factory: the proxy's server factory (what listens).
    @ivar settings: the proxy's settings (L{ProxyParts.reconfigure} changes some at reload).
    @ivar closeIdle: closes the pooled idle origin connections (when the proxy stops).
    """

    factory: ProxyFactory
    settings: Any
    closeIdle: Callable[[], None]
    cache: CacheParts | None
    #: the content filters (built again on reload); in force when an option asks for one.
    filters: ReloadableFilterChain | None = None
    #: what the filters did (kept across reloads), for the status page and metrics.
    filterCounters: FilterCounters | None = None
    #: the options in force (a reload replaces them).
    options: Mapping[str, Any] = field(default_factory=dict)
    #: builds the filter chain that options describe (may run in a thread).
    chainFor: Callable[[Mapping[str, Any]], FilterChain] | None = None

    def openConnections(self) -> int:
        """
        The proxy's client connections open now (a stopping worker waits for them).
        """
        return len(self.factory.channels)

    def reconfigure(self, options: Mapping[str, Any], policy: PolicyParts) -> None:
        """
        Use the settings that a reload may change (L{applyOptions}), and whether filters
        run (their rules are read again by their own reload step).
        """
        self.options = options
        applyOptions(self.settings, options, policy)
        self.settings.filters = self.filters if anyFilter(options) else None


def applyOptions(settings: Any, options: Mapping[str, Any], policy: PolicyParts) -> None:
    """
    Set the proxy settings that C{options} give and a reload may change: the client
    networks, the CONNECT ports, C{X-Forwarded-For}, the lists and the authenticator.  The
    one place that turns these options into settings, at start-up and at every reload.
    """
    from caplab.proxy.admission import LOOPBACK

    settings.allow = tuple(options["allow"] or LOOPBACK)
    settings.connectPorts = frozenset(options["connect-ports"])
    settings.forwardedFor = bool(options["x-forwarded-for"])
    settings.hostPolicy = policy.hostPolicy
    settings.authenticator = policy.authenticator


def hasLists(options: Mapping[str, Any]) -> bool:
    """
    Whether C{options} name block or allow lists (or C{--default-deny}) for the proxy.
    """
    if options["no-proxy"]:
        return False
    return bool(options["block-list"] or options["allow-list"] or options["default-deny"])


@dataclass
class IdleOriginsClosed:
    """
    The reload step after the lists: the pooled idle origin connections are closed, so the
    next request to each origin connects anew under the rules now in force (address rules
    are checked when connecting: a connection made under the old lists would skip them).
    """

    closeIdle: Callable[[], None]

    def load(self) -> None:
        return None

    def use(self, loaded: None) -> str:
        self.closeIdle()
        return "closed; the next requests connect under the rules in force"


@dataclass
class Parts:
    """
    Every component of one caplab process (or of one C{--workers} worker), built from the
    options.

    @ivar listeners: what listens, in order: the uppercase services, the proxy, the admin
        endpoint.
    @ivar reloader: what C{SIGHUP} (L{reloadSteps}, then L{logSteps}) and C{SIGUSR1}
        (L{logSteps}) run.
    @ivar admin: the admin site (C{--admin-endpoint}), serving the networks that the
        options in force name.
    @ivar worker: the sockets inherited from the C{--workers} parent, in a worker.
    @ivar drain: waits for open connections when a worker stops.
    """

    options: Any
    reactor: Any
    metrics: Metrics
    policy: PolicyParts
    tracer: Tracer | None
    accessLog: AccessLog | None
    tcp: UppercaseFactory | None
    udp: UppercaseDatagramProtocol | None
    proxy: ProxyParts | None
    admin: Any
    listeners: list[IListener]
    worker: InheritedSockets | None
    drain: Drain | None
    notifier: Notifier
    #: more services of this process (a worker's metrics publisher).
    services: list[Any] = field(default_factory=list)
    reloader: Reloader = field(init=False)
    #: reads the C{--config} file again on C{SIGHUP} (L{caplab.reconfigure.ConfigReload}).
    configReload: IReloadable | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.reloader = Reloader(
            self.reloadSteps,
            lambda f: deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f),
            self.metrics,
            logs=self.logSteps,
            notifier=self.notifier,
            clock=self.reactor,
        )

    def reloadSteps(self) -> list[tuple[str, IReloadable]]:
        """
        What C{SIGHUP} reads again, in order: the configuration file first (it may name
        other lists), then the lists and the auth file.
        """
        steps: list[tuple[str, IReloadable]] = []
        if self.configReload is not None:
            steps.append((f"configuration {self.options['config']}", self.configReload))
        lists = hasLists(self.options)
        if lists:
            steps.append(("block/allow lists", self.policy.hostPolicy))
        proxy = self.proxy
        if proxy is not None and (lists or self.configReload is not None):
            steps.append(("idle origin connections", IdleOriginsClosed(proxy.closeIdle)))
        if self.policy.authenticator is not None:
            name = os.path.basename(self.policy.authenticator.path)
            steps.append((f"auth file {name}", self.policy.authenticator))
        if proxy is not None and proxy.filters is not None:
            if anyFilter(proxy.options) or self.configReload is not None:
                steps.append(("filters", proxy.filters))
        return steps

    def logSteps(self) -> list[tuple[str, IReloadable]]:
        """
        The log files C{SIGUSR1} and C{SIGHUP} reopen.
        """
        steps: list[tuple[str, IReloadable]] = []
        if self.accessLog is not None and not self.accessLog.toLog:
            steps.append(("access log", self.accessLog.reopener()))
        if self.tracer is not None and self.tracer.path is not None:
            steps.append(("trace", self.tracer.reopener()))
        return steps

    def summary(self) -> str:
        """
        What is in force, in one line for the start-up log.
        """
        return describeParts(self)


# --- building ----------------------------------------------------------------------------


def build(options: Any, reactor: Any) -> Parts:
    """
    Every component of this process (a single process or a C{--workers} worker).

    @raise ConfigError: a file the options name cannot be used.
    """
    worker = InheritedSockets.fromEnvironment()
    metrics = Metrics()
    offloader = Offloader(reactor)
    policy = buildPolicy(options, reactor)
    tracer = Tracer.open(options["trace"], reactor) if options["trace"] else None
    accessLog = buildAccessLog(options, reactor)
    tcp = None if options["no-tcp"] else buildUppercaseTCP(options, reactor, metrics)
    udp = None if options["no-udp"] else buildUppercaseUDP(options, reactor, tracer, metrics)
    proxy = None
    if not options["no-proxy"]:
        proxy = buildProxy(options, reactor, metrics, policy, accessLog, worker)
    cacheAdmin = proxy.cache.admin if proxy is not None and proxy.cache is not None else None
    services: list[Any] = []
    shared = os.environ.get(METRICS_ENVIRONMENT)
    if worker is not None and shared:
        # The worker's figures go to the parent's directory; its pages show the whole server.
        services.append(
            WorkerPublisher(metrics, shared, reactor, offloader, worker.index, cache=cacheAdmin)
        )
    drain = None
    if worker is not None:
        drain = Drain(reactor, options["worker-grace"])
        if tcp is not None:
            drain.watch(lambda: tcp.active)
        if proxy is not None:
            drain.watch(proxy.openConnections)
    parts = Parts(
        options=options,
        reactor=reactor,
        metrics=metrics,
        policy=policy,
        tracer=tracer,
        accessLog=accessLog,
        tcp=tcp,
        udp=udp,
        proxy=proxy,
        admin=None,
        listeners=[],
        worker=worker,
        drain=drain,
        notifier=Notifier() if worker is None else Notifier({}),
        services=services,
    )
    if options["admin-endpoint"] and worker is None:
        # A worker leaves the admin endpoint to the parent, which adds up every worker's.
        parts.admin = AdminSite(
            adminResource(LocalScrape(metrics, offloader), cacheAdmin),
            lambda: adminNetworks(parts.options["admin-allow"], parts.options["allow"]),
            reactor,
        )
    parts.listeners = buildListeners(parts)
    return parts


def buildPolicy(options: Mapping[str, Any], reactor: Any) -> PolicyParts:
    """
    The lists, the authenticator, the parent proxy and the PAC file.

    @raise ConfigError: a list or the auth file cannot be used.
    """
    proxy = not options["no-proxy"]
    lists = hasLists(options)
    try:
        hostPolicy = ReloadableHostPolicy(
            options["block-list"] if lists else [],
            options["allow-list"] if lists else [],
            bool(options["default-deny"]) if lists else False,
        )
    except PolicyFileError as e:
        raise ConfigError(f"--block-list/--allow-list: {e}") from None
    authenticator = None
    if proxy and options["auth-file"]:
        authenticator = buildAuthenticator(options["auth-file"], reactor)
    parent = parseProxyURL(options["upstream-proxy"]) if options["upstream-proxy"] else None
    return PolicyParts(
        hostPolicy=hostPolicy,
        authenticator=authenticator,
        router=UpstreamRouter(parent, options["no-upstream-for"]),
        parent=parent,
        pac=PacPage(options["pac-bypass"]),
    )


def buildAuthenticator(path: str, reactor: Any) -> HtpasswdAuthenticator:
    """
    @raise ConfigError: the file cannot be used.
    """
    try:
        return HtpasswdAuthenticator(path, reactor=reactor)
    except AuthFileError as e:
        raise ConfigError(f"--auth-file: {e}") from None


def buildAccessLog(options: Mapping[str, Any], reactor: Any) -> AccessLog | None:
    path = options["access-log"]
    if not path or options["no-proxy"]:
        return None
    if path == "-":
        return AccessLog(path, reactor)
    return AccessLog(path, reactor, runInThread=Offloader(reactor, "caplab-access-log").run)


def buildUppercaseTCP(options: Mapping[str, Any], reactor: Any, metrics: Metrics) -> Any:
    factory = UppercaseFactory(
        unicode=options["unicode"],
        idleTimeout=options["idle-timeout"] or None,
        maxConnections=options["max-connections"],
        clock=reactor,
    )
    metrics.watchTCPFactory(factory)
    return factory


def buildUppercaseUDP(
    options: Mapping[str, Any], reactor: Any, tracer: Tracer | None, metrics: Metrics
) -> Any:
    protocol = UppercaseDatagramProtocol(unicode=options["unicode"], tracer=tracer, clock=reactor)
    metrics.watchDatagramProtocol(protocol)
    return protocol


def buildCache(
    options: Mapping[str, Any], inner: IFetcher, reactor: Any, metrics: Any
) -> CacheParts | None:
    """
    The cache the options describe around C{inner} (None with C{--no-cache}).
    """
    from caplab.proxy.cache.disk import DiskStore
    from caplab.proxy.cache.fetcher import CachingFetcher
    from caplab.proxy.cache.quick import QuickHits
    from caplab.proxy.cache.storage import MemoryStore

    if options["no-cache"]:
        return None
    size, maxObject = options["cache-size"], options["cache-max-object"]
    sizes = f"up to {humanSize(size)}, objects up to {humanSize(maxObject)}"
    fetcher: IFetcher
    hits: IQuickHits | None = None
    if options["cache-redis"]:
        from caplab.proxy.cache.redisstore import PrimingFetcher, RedisStore, connectRedis

        client, where = connectRedis(options["cache-redis"], reactor)
        store: Any = RedisStore(client, reactor, size, maxObject, where=where)
        caching = CachingFetcher(inner, store, reactor, metrics=metrics)
        fetcher = PrimingFetcher(caching, store, lambda request: request.target.uri)
        place = f"shared in Redis at {where}, near cache {sizes}"
    elif options["cache-dir"]:
        directory = options["cache-dir"]
        store = DiskStore(
            directory,
            size,
            maxObject,
            clock=reactor,
            runInThread=lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f),
        )
        held = f"{_count(len(store), 'entry', 'entries')}, {_count(store.size, 'byte')}"
        place = f"on disk in {directory} ({held}), {sizes}"
        fetcher = caching = CachingFetcher(inner, store, reactor, metrics=metrics)
    else:
        store = MemoryStore(size, maxObject, callLater=reactor.callLater)
        place = f"in memory, {sizes}"
        fetcher = caching = CachingFetcher(inner, store, reactor, metrics=metrics)
        hits = QuickHits(caching)
    metrics.watchCache(
        lambda: CacheFigures(store.size, len(store), getattr(store, "variantEvictions", None))
    )
    admin = caching if hasattr(caching, "purge") and hasattr(caching, "flush") else None
    return CacheParts(fetcher, store, place, admin, hits)


def buildProxy(
    options: Mapping[str, Any],
    reactor: Any,
    metrics: Metrics,
    policy: PolicyParts,
    accessLog: AccessLog | None,
    worker: InheritedSockets | None = None,
) -> ProxyParts:
    """
    The web proxy: the one place that calls the proxy core's constructors.

    Origins are reached through the connector (C{--resolve}, C{--upstream-ca}, address rules
    checked on the addresses it connects to), or through the parent proxy; the forwarder
    pools those connections; the cache sits in front of it; the settings carry the policy
    and the proxy's own pages; the factory serves clients; CONNECT tunnels are opened through
    the same connector.
    """
    from caplab.proxy.channel import ProxySettings
    from caplab.proxy.connect import EndpointConnector
    from caplab.proxy.factory import ProxyFactory
    from caplab.proxy.forward import Forwarder
    from caplab.proxy.tunnel import TunnelOpener
    from caplab.proxy.upstream import ChainingConnector, ChainingFetcher

    timeout = options["upstream-timeout"]
    parent = policy.parent
    connector: Any = EndpointConnector(
        reactor,
        resolve=options["resolve"],
        caFile=options["upstream-ca"],
        connectTimeout=timeout or 30.0,
        hostPolicy=policy.hostPolicy,
        trusted=[(parent.host, parent.port)] if parent is not None else [],
    )
    if parent is not None:
        connector = ChainingConnector(connector, policy.router, reactor)
    forwarder = Forwarder(reactor, connector, timeout=timeout, latency=metrics.upstreamLatency)
    upstream: IFetcher = forwarder
    if parent is not None:
        upstream = ChainingFetcher(forwarder, policy.router)
    cache = buildCache(options, upstream, reactor, metrics)
    settings = ProxySettings(
        fetcher=cache.fetcher if cache is not None else upstream,
        upstream=upstream,
        clock=reactor,
        cacheAdmin=cache.admin if cache is not None else None,
        hits=cache.hits if cache is not None else None,
        metrics=metrics,
        pseudonym=b"caplab-%d" % (os.getpid(),),
        headerTimeout=options["header-timeout"],
        idleTimeout=options["keep-alive-timeout"],
        maxConnections=options["max-connections"],
        maxRequestBody=options["max-request-body"],
    )
    factory = ProxyFactory(settings, accessLog)
    settings.tunnels = TunnelOpener(connector, reactor, metrics)
    parts = ProxyParts(factory, settings, forwarder.closeIdle, cache, options=options)
    answeredBy = None
    if worker is not None:
        answeredBy = f"worker {worker.index} (pid {os.getpid()}) of {options['workers']}"
    figures = ServerFigures(metrics)
    filterCard = FilterCard(lambda: settings.filters is not None, COUNTERS)
    settings.pages[b"/"] = StatusPage(
        figures,
        __version__,
        lambda: configInForce(parts.options, policy, cache),  # after a reload too
        answeredBy,
        filters=filterCard,
    )
    settings.pages[b"/stats"] = StatsPage(figures, answeredBy)
    settings.pages[b"/proxy.pac"] = policy.pac
    parts.filters = buildFilters(parts, policy, reactor)
    if parts.filterCounters is not None:
        metrics.watchFilters(parts.filterCounters)  # read at scrape time, zeros included
    parts.reconfigure(options, policy)
    return parts


def buildFilters(proxy: ProxyParts, policy: PolicyParts, reactor: Any) -> ReloadableFilterChain:
    """
    The content filters, built from the options in force each time they are (re)loaded;
    their counts go on across reloads.

    @raise ConfigError: a filter cannot be built (a plugin that is not installed ...).
    """
    counters = proxy.filterCounters = FilterCounters()
    log = filterLog(reactor)

    def chainFor(options: Mapping[str, Any]) -> FilterChain:
        return buildChain(
            filterConfig(options), policy.hostPolicy, counters, log, reactor.callLater
        )

    proxy.chainFor = chainFor
    try:
        chain = ReloadableFilterChain(lambda: chainFor(proxy.options))
    except FilterConfigError as e:
        raise ConfigError(str(e)) from None
    return chain


class ServerFigures:
    """
    The figures the proxy's pages show: this process's, or under C{--workers} the whole
    server's once the worker's publisher is there (looked up when a page is rendered).
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def figures(self) -> Figures:
        return sourceOf(self.metrics).figures()


def configInForce(
    options: Mapping[str, Any], policy: PolicyParts, cache: CacheParts | None
) -> dict[str, object]:
    """
    The configuration the status page shows: what a person checking the proxy wants to
    see, never a secret (the parent proxy and Redis without their credentials).
    """
    shown: dict[str, object] = {
        "proxy endpoint": options["proxy-endpoint"],
        "clients from": ", ".join(str(n) for n in options["allow"]) or "loopback",
        "CONNECT ports": ", ".join(str(p) for p in sorted(options["connect-ports"])),
        "block lists": ", ".join(options["block-list"]) or "none",
        "allow lists": ", ".join(options["allow-list"]) or "none",
        "default deny": bool(options["default-deny"]),
        "auth file": options["auth-file"] or "none",
        "parent proxy": policy.parent.address if policy.parent is not None else "none",
        "cache": cache.where if cache is not None else "off",
        "upstream timeout": f"{options['upstream-timeout']:g} s",
        "keep-alive timeout": f"{options['keep-alive-timeout']:g} s",
        "max connections": options["max-connections"],
        "max request body": humanSize(options["max-request-body"])
        if options["max-request-body"]
        else "no limit",
        "access log": options["access-log"] or "none",
        "workers": options["workers"],
    }
    return shown


def buildListeners(parts: Parts) -> list[IListener]:
    """
    What listens: on the options' endpoints, or in a worker on the parent's sockets; with
    C{--trace}, every stream is traced.
    """
    options, reactor, worker, drain = parts.options, parts.reactor, parts.worker, parts.drain
    listeners: list[IListener] = []

    def stream(label: str, description: str, factory: Any) -> None:
        if parts.tracer is not None:
            factory = parts.tracer.wrapFactory(label, factory)
        if worker is not None and drain is not None:
            endpoint: Any = worker.streamEndpoint(reactor, label)
        else:
            endpoint = serverFromString(reactor, description)
        listeners.append(StreamListener(label, description, endpoint, factory))

    if parts.tcp is not None:
        stream("tcp", options["tcp-endpoint"], parts.tcp)
    if parts.udp is not None:
        adopt = None
        if worker is not None:
            inherited = worker
            adopt = lambda protocol: inherited.adoptDatagram(reactor, "udp", protocol)  # noqa: E731
        listeners.append(
            DatagramListener(
                "udp", options["udp-port"], options["interface"], parts.udp, reactor, adopt
            )
        )
    if parts.proxy is not None:
        stream("proxy", options["proxy-endpoint"], parts.proxy.factory)
    if parts.admin is not None:
        description = options["admin-endpoint"]
        listeners.append(
            StreamListener(
                "admin", description, serverFromString(reactor, description), parts.admin
            )
        )
    return listeners


@dataclass
class SupervisorParts:
    """
    The parent process under C{--workers N}: the shared sockets it binds, the supervisor of
    the workers, the admin endpoint adding up every worker's metrics.
    """

    options: Any
    reactor: Any
    supervisor: WorkerSupervisor
    listeners: list[IListener]
    notifier: Notifier

    def summary(self) -> str:
        return (
            f"caplab configuration: {self.supervisor.count} workers on the sockets above; "
            "each logs what is in force in it"
        )


def buildSupervisor(options: Any, reactor: Any) -> SupervisorParts:
    """
    The parent of C{--workers N}: it binds every listening socket, runs the workers on them
    and serves C{--admin-endpoint} itself.  It reads the files a worker would refuse first
    (L{checkFiles}), so that a bad one stops it before it binds; a worker that exits with a
    configuration error all the same (a file changed since) stops it and it exits 64.

    @raise ConfigError: a file the options name cannot be used.
    """
    checkFiles(options, reactor)
    directory = MetricsDirectory(Offloader(reactor))
    shared = sharedSockets(options)
    supervisor = WorkerSupervisor(
        reactor,
        options["workers"],
        options.argv if hasattr(options, "argv") else [],
        lambda: [listener.shared for listener in shared if listener.shared is not None],
        options["worker-grace"],
        handleSignals=True,
        metricsDirectory=directory,
        waitForSockets=True,
        stopWith=lambda status: stopWithStatus(reactor, status),
    )
    listeners: list[IListener] = list(shared)
    description = options["admin-endpoint"]
    if description:
        listeners.append(
            StreamListener(
                "admin",
                description,
                serverFromString(reactor, description),
                AdminSite(
                    adminResource(directory, WorkersCacheAdmin(directory, reactor)),
                    adminNetworks(options["admin-allow"], options["allow"]),
                    reactor,
                ),
            )
        )
    return SupervisorParts(options, reactor, supervisor, listeners, Notifier())


def checkFiles(options: Any, reactor: Any) -> None:
    """
    Read what L{build} reads and may refuse (the lists, the auth file, the filters), and
    throw it away: the C{--workers} parent's check before it binds.

    @raise ConfigError: a file the options name cannot be used.
    """
    policy = buildPolicy(options, reactor)
    if options["no-proxy"] or not anyFilter(options):
        return
    try:
        buildChain(filterConfig(options), policy.hostPolicy, FilterCounters())
    except FilterConfigError as e:
        raise ConfigError(str(e)) from None


# --- what is in force --------------------------------------------------------------------


def describeParts(parts: Parts) -> str:
    """
    One line: the services, lists and files with their counts, auth, parent, cache, workers.
    """
    options = parts.options
    said: list[str] = []
    policy = parts.policy
    if parts.proxy is not None:
        if hasLists(options):
            current = policy.hostPolicy.current
            lists = ", ".join(
                [f"block list {path}" for path in options["block-list"]]
                + [f"allow list {path}" for path in options["allow-list"]]
            )
            deny = "; default deny" if options["default-deny"] else ""
            said.append(
                f"policy: {_count(len(current.blocked), 'block rule')} and "
                f"{_count(len(current.allowed), 'allow rule')} from {lists or 'no file'}{deny}"
            )
        else:
            said.append("policy: no block or allow lists (every host may be reached)")
        if policy.authenticator is not None:
            said.append(
                f"auth: {_count(len(policy.authenticator.users), 'user')} in "
                f"{policy.authenticator.path}"
            )
        else:
            said.append("auth: none (no --auth-file)")
        if policy.parent is not None:
            direct = ", ".join(options["no-upstream-for"])
            said.append(
                f"parent proxy: {policy.parent.address}"
                + (f" (direct for {direct})" if direct else "")
            )
        cache = parts.proxy.cache
        said.append(f"cache: {cache.where}" if cache is not None else "cache: off")
        networks = ", ".join(str(network) for network in options["allow"]) or "loopback"
        said.append(f"clients from {networks}")
    if parts.worker is not None:
        said.append(f"worker {parts.worker.index} of {options['workers']}")
    else:
        said.append("workers: 1 (this process)")
    return "caplab configuration: " + "; ".join(said)


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"
