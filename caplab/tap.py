"""
The composition root: C{twist caplab} / C{twistd -n caplab} options and the service tree.

This is the one place that wires the services together; everything below it takes its
collaborators (reactor, tracer, configuration values) as arguments.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from caplab import __version__
from caplab.coerce import seconds
from caplab.listening import DatagramListener, StreamListener, exitWithFailureStatus
from caplab.proxy.cache.options import CacheOptions
from caplab.proxy.options import ProxyOptions
from caplab.proxy.policy_options import PolicyOptions, addPolicyServices
from caplab.tcp import UppercaseFactory
from caplab.trace import Tracer, TracerService
from caplab.udp import UppercaseDatagramProtocol
from caplab.workers import Drain, InheritedSockets, WorkerOptions, supervisorFromConfig

log = Logger(namespace="caplab.tap")


def portNumber(value: str) -> int:
    """
    A TCP/UDP port number, 0 (pick a free port) to 65535.
    """
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r} is not a port number (0-65535)")
    return port


portNumber.coerceDoc = "A port number, 0-65535; 0 picks a free port."  # type: ignore[attr-defined]


def positiveInt(value: str) -> int:
    """
    A whole number of at least 1.
    """
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise ValueError(f"{value!r} must be at least 1")
    return number


def listenAddress(value: str) -> str:
    """
    An IPv4 or IPv6 address to listen on.
    """
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def traceFile(value: str) -> str:
    """
    A file the trace can be appended to (created if need be), checked now so that a bad
    path is a usage error rather than a traceback at start-up.
    """
    try:
        with open(value, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise ValueError(f"cannot write to {value!r}: {e.strerror or e}") from None
    return value


def isLoopback(interface: str) -> bool:
    """
    Whether only this machine can reach C{interface}.
    """
    return ipaddress.ip_address(interface).is_loopback


def tcpDescription(port: int, interface: str) -> str:
    """
    The server endpoint description for C{port} on C{interface} (IPv6 colons escaped).
    """
    if ":" in interface:
        return f"tcp6:{port}:interface={interface.replace(':', chr(92) + ':')}"
    return f"tcp:{port}:interface={interface}"


class Options(ProxyOptions, PolicyOptions, CacheOptions, WorkerOptions, usage.Options):
    """
    Options of C{twist caplab}.
    """

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
            raise usage.UsageError(
                f"--{option} {description!r}: no such socket was passed to this process "
                "(systemd socket activation sets LISTEN_FDS)"
            ) from None
        except Exception as e:  # ValueError, OSError, OpenSSL errors: all mean "bad option"
            raise usage.UsageError(f"--{option} {description!r}: {e}") from None
        return description


def makeService(
    config: Options | dict[str, Any],
    reactor: Any = None,
    onListenFailure: Callable[[], None] | None = exitWithFailureStatus,
) -> IService:
    """
    Build the service tree that C{config} asks for.

    @param reactor: the reactor to listen with (the global one by default).
    @param onListenFailure: called when a service cannot listen; by default it makes the
        process exit non-zero.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    inherited = InheritedSockets.fromEnvironment()
    if inherited is None and config.get("workers", 1) > 1:
        return supervisorFromConfig(config, reactor, onListenFailure)
    top = MultiService()
    listeners = Listeners(top, reactor, onListenFailure, inherited, config.get("worker-grace", 0))
    tracer = Tracer.open(config["trace"]) if config["trace"] else None
    if tracer is not None:
        TracerService(tracer).setServiceParent(top)

    if not config["no-tcp"]:
        factory: Any = UppercaseFactory(
            unicode=config["unicode"],
            idleTimeout=config["idle-timeout"] or None,
            maxConnections=config["max-connections"],
            clock=reactor,
        )
        if tracer is not None:
            factory = tracer.wrapFactory("tcp", factory)
        listeners.stream("tcp", config["tcp-endpoint"], factory)

    if not config["no-udp"]:
        listeners.datagram(
            "udp",
            config["udp-port"],
            config["interface"],
            UppercaseDatagramProtocol(unicode=config["unicode"], tracer=tracer, clock=reactor),
        )

    if not config["no-proxy"]:
        _addProxy(listeners, config, reactor, tracer)

    addPolicyServices(top, config, reactor, onListenFailure)
    return top


class Listeners:
    """
    Adds listening services to the tree: on endpoints of their own, or, in a C{--workers}
    worker, on the sockets inherited from the parent (with a L{Drain} for a graceful stop).
    """

    def __init__(
        self,
        top: MultiService,
        reactor: Any,
        onListenFailure: Callable[[], None] | None,
        inherited: InheritedSockets | None,
        grace: float,
    ) -> None:
        self.top = top
        self.reactor = reactor
        self.onListenFailure = onListenFailure
        self.inherited = inherited
        self.drain: Drain | None = None
        if inherited is not None:
            self.drain = Drain(reactor, grace)
            self.drain.setServiceParent(top)

    def stream(self, label: str, description: str, factory: Any) -> None:
        if self.inherited is not None and self.drain is not None:
            endpoint: Any = self.inherited.streamEndpoint(self.reactor, label)
            factory = self.drain.track(factory)
        else:
            endpoint = serverFromString(self.reactor, description)
        StreamListener(
            label, description, endpoint, factory, self.reactor, self.onListenFailure
        ).setServiceParent(self.top)

    def datagram(self, label: str, port: int, interface: str, protocol: Any) -> None:
        adopt = None
        if self.inherited is not None:
            inherited = self.inherited
            adopt = lambda protocol: inherited.adoptDatagram(self.reactor, label, protocol)  # noqa: E731
        DatagramListener(
            label, port, interface, protocol, self.reactor, self.onListenFailure, adopt
        ).setServiceParent(self.top)


def _addProxy(
    listeners: Listeners,
    config: Options | dict[str, Any],
    reactor: Any,
    tracer: Tracer | None,
) -> None:
    """
    Add the web proxy, if this version of caplab has one.
    """
    try:
        from caplab.proxy.service import makeProxyFactory
    except ImportError:
        log.warn("caplab proxy is not part of this version yet: not listening")
        return
    factory = makeProxyFactory(config, reactor)
    if tracer is not None:
        factory = tracer.wrapFactory("proxy", factory)
    description = config["proxy-endpoint"]
    if not config["proxy-endpoint"].startswith(("tcp:", "tcp6:")) or not isLoopback(
        config["interface"]
    ):
        log.warn(
            "caplab proxy on {description} may be reachable from other machines; it serves "
            "only clients in its --allow networks",
            description=description,
        )
    listeners.stream("proxy", description, factory)
