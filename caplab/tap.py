"""
C{twist caplab} / C{twistd -n caplab}: the options, and the service tree built from the
components that L{caplab.wiring} (the composition root) makes of them.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from caplab import __version__
from caplab.address import describeAddress
from caplab.coerce import seconds
from caplab.config import ConfigurableOptions, OptionError
from caplab.listening import EXIT_USAGE, Listening, exitWithFailureStatus
from caplab.proxy.accesslog import AccessLog
from caplab.proxy.cache.options import CacheOptions
from caplab.proxy.filters.options import FilterOptions
from caplab.proxy.options import ProxyOptions
from caplab.proxy.policy_options import PolicyOptions
from caplab.reconfigure import watchConfig
from caplab.reload import SignalReloadService
from caplab.trace import TracerService
from caplab.wiring import ConfigError, Parts, SupervisorParts, build, buildSupervisor
from caplab.workers import WORKER_ENVIRONMENT, WORKER_READY, Drain, WorkerOptions

log = Logger(namespace="caplab.tap")

#: Seconds a stopping process waits for the access log's last lines to be written, at most.
CLOSE_TIMEOUT = 3.0


def portNumber(value: str) -> int:
    """
    A TCP/UDP port number, 0 (pick a free port) to 65535.
    """
    try:
        port = int(value)
    except ValueError:
        raise ValueError("not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise ValueError("not a port number (0-65535)")
    return port


portNumber.coerceDoc = "0 picks a free port."  # type: ignore[attr-defined]


def positiveInt(value: str) -> int:
    """
    A whole number of at least 1.
    """
    try:
        number = int(value)
    except ValueError:
        raise ValueError("not a whole number") from None
    if number < 1:
        raise ValueError("must be at least 1")
    return number


positiveInt.metavar = "N"  # type: ignore[attr-defined]


def listenAddress(value: str) -> str:
    """
    An IPv4 or IPv6 address to listen on.
    """
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("not an IPv4 or IPv6 address") from None


listenAddress.metavar = "ADDRESS"  # type: ignore[attr-defined]


def traceFile(value: str) -> str:
    """
    A file the trace can be appended to (created if need be), checked now so that a bad
    path is a usage error rather than a traceback at start-up.
    """
    try:
        with open(value, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise ValueError(f"cannot write to it: {e.strerror or e}") from None
    return value


traceFile.metavar = "FILE"  # type: ignore[attr-defined]


def tcpDescription(port: int, interface: str) -> str:
    """
    The server endpoint description for C{port} on C{interface} (IPv6 colons escaped).
    """
    if ":" in interface:
        return f"tcp6:{port}:interface={interface.replace(':', chr(92) + ':')}"
    return f"tcp:{port}:interface={interface}"


class Options(
    ProxyOptions, PolicyOptions, CacheOptions, FilterOptions, WorkerOptions, ConfigurableOptions
):
    """
    Options of C{twist caplab}.
    """

    helpGroup = "services"
    helpGroupOf = {
        "trace": "operations",
        "config": "operations",
        "help": "operations",
        "version": "operations",
    }
    synopsis = "[options]"
    longdesc = (
        "Runs the uppercase TCP service, the uppercase UDP service and the HTTP forward "
        "proxy. Every service listens on loopback unless told otherwise."
    )

    optParameters = [
        [
            "interface",
            None,
            "127.0.0.1",
            "Address every service listens on, unless an --*-endpoint says otherwise. "
            "0.0.0.0 or :: lets other machines connect (the two-machine lab setup).",
            listenAddress,
        ],
        ["tcp-port", None, 12000, "Port of the uppercase TCP service.", portNumber],
        [
            "tcp-endpoint",
            None,
            None,
            "Full server endpoint description for the uppercase TCP service, overriding "
            "--interface/--tcp-port: e.g. ssl:12443:privateKey=key.pem, "
            "tcp6:12000:interface=\\:\\:1, unix:/run/caplab.sock.",
        ],
        ["udp-port", None, 12005, "Port of the uppercase UDP service.", portNumber],
        ["proxy-port", None, 8080, "Port of the HTTP forward proxy.", portNumber],
        [
            "proxy-endpoint",
            None,
            None,
            "Full server endpoint description for the proxy, overriding "
            "--interface/--proxy-port (tcp6:, ssl:, unix:, systemd: ...).",
        ],
        [
            "idle-timeout",
            None,
            300.0,
            "Seconds without input before an uppercase TCP connection is closed (0: never).",
            seconds,
        ],
        [
            "max-connections",
            None,
            1000,
            "Concurrent connections per TCP service (uppercase and proxy each); further "
            "connections are closed at once and logged.",
            positiveInt,
        ],
        [
            "trace",
            None,
            None,
            "Record every byte each service sends and receives, per connection, in this "
            "file (the lab's Wireshark 'Follow stream' view).",
            traceFile,
        ],
    ]

    optFlags = [
        ["no-tcp", None, "Do not run the uppercase TCP service."],
        ["no-udp", None, "Do not run the uppercase UDP service."],
        ["no-proxy", None, "Do not run the HTTP forward proxy."],
        [
            "unicode",
            None,
            "Full Unicode uppercasing of UTF-8 text (straße -> STRASSE) instead of the "
            "lab's ASCII-only a-z -> A-Z. A UDP reply is never larger than its request: "
            "where Unicode rules would make it grow, the ASCII rule is used.",
        ],
    ]

    def opt_help(self) -> None:
        """
        List the options with their defaults and exit.
        """
        try:
            print(self)
        except BrokenPipeError:  # | head
            pass
        raise SystemExit(0)

    def opt_version(self) -> None:
        """
        Print caplab's version and exit.
        """
        print(f"caplab {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self["no-tcp"] and self["no-udp"] and self["no-proxy"]:
            raise usage.UsageError("--no-tcp, --no-udp and --no-proxy leave nothing to run")
        if not self["no-tcp"]:
            self["tcp-endpoint"] = self._checkEndpoint(
                "tcp-endpoint", self["tcp-endpoint"], self["tcp-port"]
            )
        if not self["no-proxy"]:
            self["proxy-endpoint"] = self._checkEndpoint(
                "proxy-endpoint", self["proxy-endpoint"], self["proxy-port"]
            )
            self.checkProxyOptions()
            self.checkPolicyOptions()
            self.checkCacheOptions()
            self.checkFilterOptions()
        self.checkWorkerOptions()

    def _checkEndpoint(self, option: str, description: str | None, port: int) -> str:
        """
        The endpoint description to use, checked by parsing it now so that a typo or a
        missing key file is a usage error rather than a traceback at start-up.
        """
        if description is None:
            return tcpDescription(port, self["interface"])
        from twisted.internet import reactor

        try:
            serverFromString(reactor, description)
        except IndexError:
            # systemd:...:index=N without a socket N handed over (LISTEN_FDS)
            raise OptionError(
                option,
                f"--{option} {description!r}: no such socket was passed to this process "
                "(systemd socket activation sets LISTEN_FDS)",
            ) from None
        except Exception as e:  # ValueError, OSError, OpenSSL errors: all mean "bad option"
            raise OptionError(option, f"--{option} {description!r}: {e}") from None
        return description


def makeService(
    config: Options,
    reactor: Any = None,
    onListenFailure: Callable[[], None] | None = exitWithFailureStatus,
) -> IService:
    """
    Build the service tree that C{config} asks for.

    @param reactor: the reactor to listen with (by default the global one, in a process of
        its own: its start-up objects are then frozen once it serves, see
        L{freezeStartupObjects}).
    @param onListenFailure: called when a service cannot listen; by default it makes the
        process exit non-zero.
    """
    whenReady: list[Callable[[], None]] = []
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
        whenReady.append(freezeStartupObjects)
    inWorker = WORKER_ENVIRONMENT in os.environ
    try:
        if not inWorker and config["workers"] > 1:
            return supervisorService(buildSupervisor(config, reactor), onListenFailure)
        parts = watchConfig(build(config, reactor))
    except ConfigError as e:
        sys.stderr.write(f"Error: {e}\n")
        raise SystemExit(EXIT_USAGE) from None
    if inWorker:
        # Ctrl-C reaches the whole process group; the parent stops its workers itself
        # (SIGTERM, with --worker-grace), so a worker ignores the terminal's SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return serviceTree(parts, onListenFailure, whenReady)


def freezeStartupObjects() -> None:
    """
    Hide every object alive once the process serves (modules, classes, the configuration,
    the listeners: hundreds of thousands) from the garbage collector for good
    (C{gc.freeze}).  Its full collections then scan only what serving made since: without
    this, each one paused the proxy for about 20 ms and set its 99th percentile latency at
    5x the median (benchmarks/proxy.py, c=50: p99 23 ms, 5.5 ms frozen).
    """
    gc.collect()
    gc.freeze()


def serviceTree(
    parts: Parts,
    onListenFailure: Callable[[], None] | None = None,
    whenReady: Sequence[Callable[[], None]] = (),
) -> MultiService:
    """
    The services of one caplab process (or worker) made of C{parts}.

    @param whenReady: also called once every listener listens (after the summary is
        logged).
    """
    top = MultiService()
    if parts.drain is not None:
        parts.drain.setServiceParent(top)
    if parts.tracer is not None:
        TracerService(parts.tracer).setServiceParent(top)
    for service in parts.services:
        service.setServiceParent(top)
    if parts.proxy is not None:
        ProxyService(parts).setServiceParent(top)
    if parts.accessLog is not None:
        AccessLogService(parts.accessLog, parts.reactor, parts.drain).setServiceParent(top)

    def ready() -> None:
        if parts.proxy is not None and parts.worker is None:
            # Under --workers the parent, which bound the socket, says it once.
            warnIfReachable(listening.ports.get("proxy"), parts.options)
        summary = parts.summary()
        # In a worker this line also tells the parent that SIGHUP may be sent now.
        ready = {WORKER_READY: True} if parts.worker is not None else {}
        log.info("{summary}", summary=summary, **ready)
        parts.notifier.ready(f"serving; {summary}")
        for callback in whenReady:
            callback()

    listening = Listening(parts.listeners, parts.reactor, onListenFailure, [ready])
    listening.setServiceParent(top)
    SignalReloadService(parts.reloader, parts.reactor).setServiceParent(top)
    NotifyStopping(parts.notifier).setServiceParent(top)
    return top


def supervisorService(
    parts: SupervisorParts, onListenFailure: Callable[[], None] | None = None
) -> MultiService:
    """
    The services of the C{--workers} parent: it binds the sockets, then starts the workers.
    """
    top = MultiService()
    parts.supervisor.setServiceParent(top)

    def ready() -> None:
        if not parts.options["no-proxy"]:
            warnIfReachable(listening.ports.get("proxy"), parts.options)
        log.info("{summary}", summary=parts.summary())
        parts.supervisor.startWorkers()
        parts.notifier.ready(f"serving with {parts.supervisor.count} workers")

    listening = Listening(parts.listeners, parts.reactor, onListenFailure, [ready])
    listening.setServiceParent(top)
    NotifyStopping(parts.notifier).setServiceParent(top)
    return top


class ProxyService(Service):
    """
    Closes the proxy's idle origin connections when the services stop.
    """

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def stopService(self) -> None:
        super().stopService()
        if self.parts.proxy is not None:
            self.parts.proxy.closeIdle()


class AccessLogService(Service):
    """
    Closes the access log when the services stop: once the open connections are done (a
    stopping worker's L{Drain}, up to C{--worker-grace}), so that their lines are written
    too, then waiting for the last writes at most L{CLOSE_TIMEOUT} seconds (a disk that
    hangs must not hold the stop; the C{--workers} parent kills a worker 5 s after its
    grace).
    """

    def __init__(
        self,
        accessLog: AccessLog,
        clock: IReactorTime,
        drain: Drain | None = None,
        timeout: float | None = None,
    ) -> None:
        self.accessLog = accessLog
        self.clock = clock
        self.drain = drain
        self.timeout = CLOSE_TIMEOUT if timeout is None else timeout

    def stopService(self) -> Deferred[None]:
        super().stopService()
        drained = self.drain.whenDrained() if self.drain is not None else succeed(None)
        return drained.addCallback(lambda _: self._close())

    def _close(self) -> Deferred[None]:
        closed: Deferred[None] = Deferred()

        def giveUp() -> None:
            log.warn(
                "caplab access log {path}: the last lines are still not written after "
                "{timeout}s; stopping without them",
                path=self.accessLog.path,
                timeout=self.timeout,
            )
            closed.callback(None)

        timer = self.clock.callLater(self.timeout, giveUp)

        def done(result: object) -> None:
            if timer.active():
                timer.cancel()
                closed.callback(None)

        self.accessLog.close().addBoth(done)
        return closed


class NotifyStopping(Service):
    """
    Tells systemd C{STOPPING=1} when the services stop.
    """

    def __init__(self, notifier: Any) -> None:
        self.notifier = notifier

    def stopService(self) -> None:
        super().stopService()
        self.notifier.stopping()


def reachableFromElsewhere(address: object) -> bool:
    """
    Whether other machines may connect to a socket bound to C{address} (a Twisted address):
    an IP address that is not a loopback one (C{0.0.0.0} and C{::} included); never a UNIX
    socket.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_loopback


def warnIfReachable(port: Any, config: Any) -> None:
    """
    Warn when the proxy's socket, as bound (whatever option or endpoint description named
    it), may be reached from other machines, saying who it serves there.
    """
    if port is None:
        return
    address = port.getHost()
    if not reachableFromElsewhere(address):
        return
    networks = ", ".join(str(network) for network in config["allow"])
    log.warn(
        "caplab proxy listening on {address} may be reachable from other machines; it "
        "serves only clients from {clients}, {auth}",
        address=describeAddress(address),
        clients=networks or "loopback (--allow names other networks)",
        auth="who must log in (--auth-file)"
        if config["auth-file"]
        else "without authentication (no --auth-file)",
    )
