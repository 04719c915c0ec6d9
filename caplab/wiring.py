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
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from caplab.config import humanSize
from caplab.listening import DatagramListener, IListener, StreamListener
from caplab.metrics import (
    AdminSite,
    LatencyFetcher,
    Metrics,
    MetricsDirectory,
    StatsResource,
    adminResource,
    countReceivedBytes,
    instrumentDatagramProtocol,
    instrumentTCPFactory,
)
from caplab.proxy.accesslog import AccessLog, ThreadWriter
from caplab.proxy.auth import AuthFileError, HtpasswdAuthenticator
from caplab.proxy.hooks import IFetcher
from caplab.proxy.pac import PacResource
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

    @ivar hostPolicy: the block/allow lists, None without any.
    @ivar authenticator: None without C{--auth-file}.
    @ivar router: the next hop of each request (direct without C{--upstream-proxy}).
    """

    hostPolicy: ReloadableHostPolicy | None
    authenticator: HtpasswdAuthenticator | None
    router: UpstreamRouter
    parent: ParentProxy | None
    pac: PacResource


@dataclass
class CacheParts:
    """
    The proxy's HTTP cache: the fetcher in front of the origin, its store, and where it is
    (for the start-up line).
    """

    fetcher: IFetcher
    store: Any
    where: str


@dataclass
class ProxyParts:
    """
    The web proxy: its server factory and what the rest of caplab reaches into.

    @ivar factory: the proxy's server factory (what listens).
    @ivar settings: the proxy's settings (L{ProxyParts.reconfigure} changes some at reload).
    @ivar closeIdle: closes the pooled idle origin connections (when the proxy stops).
    """

    factory: IProtocolFactory
    settings: Any
    closeIdle: Callable[[], None]
    cache: CacheParts | None
    accessLog: AccessLog | None

    def reconfigure(self, options: Mapping[str, Any], policy: PolicyParts) -> None:
        """
        Use the settings that a reload may change: the client networks, the CONNECT ports,
        C{X-Forwarded-For}, the lists and the authenticator.
        """
        from caplab.proxy.channel import LOOPBACK

        settings = self.settings
        settings.allow = tuple(options["allow"] or LOOPBACK)
        settings.connectPorts = frozenset(options["connect-ports"])
        settings.forwardedFor = bool(options["x-forwarded-for"])
        settings.hostPolicy = policy.hostPolicy
        settings.authenticator = policy.authenticator


@dataclass
class Parts:
    """
    Every component of one caplab process (or of one C{--workers} worker), built from the
    options.

    @ivar listeners: what listens, in order: the uppercase services, the proxy, the admin
        endpoint.
    @ivar reloader: what C{SIGHUP} (L{reloadSteps}, then L{logSteps}) and C{SIGUSR1}
        (L{logSteps}) run.
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
        )

    def reloadSteps(self) -> list[tuple[str, IReloadable]]:
        """
        What C{SIGHUP} reads again, in order: the configuration file first (it may name
        other lists), then the lists and the auth file.
        """
        steps: list[tuple[str, IReloadable]] = []
        if self.configReload is not None:
            steps.append((f"configuration {self.options['config']}", self.configReload))
        if self.policy.hostPolicy is not None:
            steps.append(("block/allow lists", self.policy.hostPolicy))
        if self.policy.authenticator is not None:
            name = os.path.basename(self.policy.authenticator.path)
            steps.append((f"auth file {name}", self.policy.authenticator))
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
    policy = buildPolicy(options, reactor)
    tracer = Tracer.open(options["trace"]) if options["trace"] else None
    accessLog = buildAccessLog(options, reactor)
    tcp = None if options["no-tcp"] else buildUppercaseTCP(options, reactor, metrics)
    udp = None if options["no-udp"] else buildUppercaseUDP(options, reactor, tracer, metrics)
    proxy = None
    if not options["no-proxy"]:
        proxy = buildProxy(options, reactor, metrics, policy, accessLog, worker)
    admin = None
    if options["admin-endpoint"] and worker is None:
        # A worker leaves the admin endpoint to the parent, which adds up every worker's.
        admin = AdminSite(adminResource(metrics))
    drain = Drain(reactor, options["worker-grace"]) if worker is not None else None
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
        admin=admin,
        listeners=[],
        worker=worker,
        drain=drain,
        notifier=Notifier() if worker is None else Notifier({}),
    )
    parts.listeners = buildListeners(parts)
    return parts


def buildPolicy(options: Mapping[str, Any], reactor: Any) -> PolicyParts:
    """
    The lists, the authenticator, the parent proxy and the PAC file.

    @raise ConfigError: a list or the auth file cannot be used.
    """
    proxy = not options["no-proxy"]
    hostPolicy = None
    if proxy and (options["block-list"] or options["allow-list"] or options["default-deny"]):
        try:
            hostPolicy = ReloadableHostPolicy(
                options["block-list"], options["allow-list"], options["default-deny"]
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
        pac=PacResource(options["pac-bypass"]),
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
    return AccessLog(path, reactor, runInThread=ThreadWriter(reactor, "caplab access log"))


def buildUppercaseTCP(options: Mapping[str, Any], reactor: Any, metrics: Metrics) -> Any:
    factory = UppercaseFactory(
        unicode=options["unicode"],
        idleTimeout=options["idle-timeout"] or None,
        maxConnections=options["max-connections"],
        clock=reactor,
    )
    instrumentTCPFactory(factory, metrics)
    return factory


def buildUppercaseUDP(
    options: Mapping[str, Any], reactor: Any, tracer: Tracer | None, metrics: Metrics
) -> Any:
    protocol = UppercaseDatagramProtocol(unicode=options["unicode"], tracer=tracer, clock=reactor)
    instrumentDatagramProtocol(protocol, metrics)
    return protocol


def buildCache(
    options: Mapping[str, Any], inner: IFetcher, reactor: Any, metrics: Any
) -> CacheParts | None:
    """
    The cache the options describe around C{inner} (None with C{--no-cache}).
    """
    from caplab.proxy.cache.disk import DiskStore
    from caplab.proxy.cache.fetcher import CachingFetcher
    from caplab.proxy.cache.storage import MemoryStore

    if options["no-cache"]:
        return None
    size, maxObject = options["cache-size"], options["cache-max-object"]
    sizes = f"up to {humanSize(size)}, objects up to {humanSize(maxObject)}"
    if options["cache-redis"]:
        from caplab.proxy.cache.redisstore import PrimingFetcher, RedisStore, connectRedis

        client, where = connectRedis(options["cache-redis"], reactor)
        shared = RedisStore(client, reactor, size, maxObject, where=where)
        caching = CachingFetcher(inner, shared, reactor, metrics=metrics)
        fetcher = PrimingFetcher(caching, shared, lambda request: request.target.uri)
        return CacheParts(fetcher, shared, f"shared in Redis at {where}, near cache {sizes}")
    directory = options["cache-dir"]
    if directory:
        disk = DiskStore(
            directory,
            size,
            maxObject,
            callLater=reactor.callLater,
            runInThread=lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f),
        )
        held = f"{_count(len(disk), 'entry', 'entries')}, {_count(disk.size, 'byte')}"
        where = f"on disk in {directory} ({held}), {sizes}"
        return CacheParts(CachingFetcher(inner, disk, reactor, metrics=metrics), disk, where)
    memory = MemoryStore(size, maxObject, callLater=reactor.callLater)
    return CacheParts(
        CachingFetcher(inner, memory, reactor, metrics=metrics), memory, f"in memory, {sizes}"
    )


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

    Origins are reached through the connector (C{--resolve}, C{--upstream-ca}), or through
    the parent proxy; the forwarder pools those connections; the cache sits in front of it;
    the settings carry the policy; the factory serves clients; CONNECT tunnels are opened
    through the same connector.
    """
    from caplab.proxy.channel import LOOPBACK, ProxySettings
    from caplab.proxy.connect import EndpointConnector
    from caplab.proxy.factory import ProxyFactory
    from caplab.proxy.forward import Forwarder
    from caplab.proxy.service import WorkerProxyFactory
    from caplab.proxy.tunnel import TunnelOpener
    from caplab.proxy.upstream import ChainingConnector, ChainingFetcher

    timeout = options["upstream-timeout"]
    connector: Any = EndpointConnector(
        reactor,
        resolve=options["resolve"],
        caFile=options["upstream-ca"],
        connectTimeout=timeout or 30.0,
    )
    if policy.parent is not None:
        connector = ChainingConnector(connector, policy.router, reactor)
    forwarder = Forwarder(reactor, connector, timeout=timeout)
    upstream = LatencyFetcher(ChainingFetcher(forwarder, policy.router), metrics, reactor)
    cache = buildCache(options, upstream, reactor, metrics)
    settings = ProxySettings(
        fetcher=cache.fetcher if cache is not None else upstream,
        clock=reactor,
        hostPolicy=policy.hostPolicy,
        authenticator=policy.authenticator,
        metrics=metrics,
        allow=tuple(options["allow"] or LOOPBACK),
        connectPorts=frozenset(options["connect-ports"]),
        forwardedFor=bool(options["x-forwarded-for"]),
        pseudonym=b"caplab-%d" % (os.getpid(),),
        headerTimeout=options["header-timeout"],
        idleTimeout=options["keep-alive-timeout"],
        maxConnections=options["max-connections"],
    )
    answeredBy = None
    if worker is not None and metrics.shared is not None:
        answeredBy = f"worker {worker.index} (pid {os.getpid()}) of {options['workers']}"
    settings.statusResources[b"/proxy.pac"] = policy.pac
    settings.statusResources[b"/stats"] = StatsResource(metrics, answeredBy)
    factory: Any
    if answeredBy is not None:
        factory = WorkerProxyFactory(settings, accessLog, answeredBy)
    else:
        factory = ProxyFactory(settings, accessLog)
    countReceivedBytes(factory, metrics)
    settings.tunnels = TunnelOpener(connector, factory, metrics)
    return ProxyParts(factory, settings, forwarder.closeIdle, cache, accessLog)


def buildListeners(parts: Parts) -> list[IListener]:
    """
    What listens: on the options' endpoints, or in a worker on the parent's sockets (each
    factory then counted by the L{Drain}); with C{--trace}, every stream is traced.
    """
    options, reactor, worker, drain = parts.options, parts.reactor, parts.worker, parts.drain
    listeners: list[IListener] = []

    def stream(label: str, description: str, factory: Any) -> None:
        if parts.tracer is not None:
            factory = parts.tracer.wrapFactory(label, factory)
        if worker is not None and drain is not None:
            endpoint: Any = worker.streamEndpoint(reactor, label)
            factory = drain.track(factory)
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
    and serves C{--admin-endpoint} itself.
    """
    directory = MetricsDirectory()
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
    )
    listeners: list[IListener] = list(shared)
    description = options["admin-endpoint"]
    if description:
        listeners.append(
            StreamListener(
                "admin",
                description,
                serverFromString(reactor, description),
                AdminSite(adminResource(directory.registry())),
            )
        )
    return SupervisorParts(options, reactor, supervisor, listeners, Notifier())


# --- what is in force --------------------------------------------------------------------


def describeParts(parts: Parts) -> str:
    """
    One line: the services, lists and files with their counts, auth, parent, cache, workers.
    """
    options = parts.options
    said: list[str] = []
    policy = parts.policy
    if parts.proxy is not None:
        if policy.hostPolicy is not None:
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
