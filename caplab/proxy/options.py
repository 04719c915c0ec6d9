"""
Command-line options of the web proxy, mixed into L{caplab.tap.Options}.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from caplab.coerce import timeoutSeconds
from caplab.config import OptionError
from caplab.proxy.addresses import parseClientNetwork
from caplab.proxy.cache.options import byteSize
from caplab.proxy.connect import parseResolve


def networkOption(option: str, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """
    The network C{--option text} names (L{parseClientNetwork}: strict CIDR or one address),
    for C{--allow} and C{--admin-allow} alike.

    @raise OptionError: not one, naming the option and the value.
    """
    try:
        return parseClientNetwork(text)
    except ValueError as e:
        raise OptionError(option, f"--{option} {text!r}: {e}") from None


def portList(value: str) -> frozenset[int]:
    """
    A comma-separated list of ports (C{443,8443}).
    """
    ports = set()
    for item in value.split(","):
        item = item.strip()
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise ValueError(f"{item!r} is not a port (1-65535)")
        ports.add(int(item))
    if not ports:
        raise ValueError("name at least one port")
    return frozenset(ports)


portList.coerceDoc = "Comma-separated ports, e.g. 443,8443."  # type: ignore[attr-defined]
portList.metavar = "PORTS"  # type: ignore[attr-defined]


class ProxyOptions:
    """
    The proxy's own options (where it listens is L{caplab.tap}'s business).
    """

    helpGroup = "proxy"
    helpGroupOf = {"access-log": "operations"}

    optParameters: list[list[Any]] = [
        [
            "connect-ports",
            None,
            "443",
            "Ports CONNECT may tunnel to; CONNECT to any other port gets 403.",
            portList,
        ],
        [
            "header-timeout",
            None,
            30.0,
            "Seconds a client may take to send a request's whole header block (slow-loris "
            "defence); 0: no limit.",
            timeoutSeconds,
        ],
        [
            "keep-alive-timeout",
            None,
            60.0,
            "Seconds an idle client connection is kept open between requests; 0: forever.",
            timeoutSeconds,
        ],
        [
            "upstream-timeout",
            None,
            60.0,
            "Seconds an origin may take to accept the connection and answer (504 after), or "
            "stall in the middle of a body; 0: no limit.",
            timeoutSeconds,
        ],
        [
            "access-log",
            None,
            None,
            "Write an access log in Combined Log Format to this file ('-': into twist's own "
            "log, one event per request, namespace caplab.access).",
        ],
        [
            "max-request-body",
            None,
            None,
            "Largest request body forwarded (e.g. 100M); a larger declared one gets 413 before "
            "the origin is asked, a chunked one that grows past it is cut off. Default: no "
            "limit.",
            byteSize,
        ],
        [
            "upstream-ca",
            None,
            None,
            "PEM file of extra CA certificates to trust, besides the system's, when the proxy "
            "fetches https:// URLs itself.",
        ],
    ]
    optFlags: list[list[Any]] = [
        [
            "x-forwarded-for",
            None,
            "Tell origins the client's address in X-Forwarded-For (off: better privacy).",
        ],
    ]

    def opt_allow(self, network: str) -> None:
        config: Any = self
        config.setdefault("allow", []).append(networkOption("allow", network))

    def opt_resolve(self, entry: str) -> None:
        try:
            host, address = parseResolve(entry)
        except ValueError as e:
            raise OptionError("resolve", f"--resolve {e}") from None
        self.setdefault("resolve", {})[host] = address  # type: ignore[attr-defined]

    # --help shows these; set here so that they are one line each.
    opt_allow.__doc__ = (
        "Serve clients from this network (CIDR, e.g. 192.168.1.0/24 or 2001:db8::/32, or "
        "one address); repeatable. Default: loopback only (127.0.0.0/8 and ::1)."
    )
    opt_resolve.__doc__ = (
        "Connect to ADDRESS for HOST instead of asking DNS (like curl --resolve); repeatable."
    )
    opt_allow.metavar = "CIDR"  # type: ignore[attr-defined]
    opt_resolve.metavar = "HOST=ADDRESS"  # type: ignore[attr-defined]

    def checkProxyOptions(self) -> None:
        """
        Check the proxy options together; raise L{usage.UsageError} on a bad combination.
        """
        config: Any = self
        config.setdefault("allow", [])
        config.setdefault("resolve", {})
        if isinstance(config.get("connect-ports"), str):
            try:
                config["connect-ports"] = portList(config["connect-ports"])
            except ValueError as e:
                raise OptionError("connect-ports", f"--connect-ports: {e}") from None
        caFile = config.get("upstream-ca")
        if caFile is not None:
            try:
                with open(caFile, "rb") as f:
                    if b"-----BEGIN CERTIFICATE-----" not in f.read():
                        raise OptionError(
                            "upstream-ca", f"--upstream-ca {caFile!r}: holds no PEM certificate"
                        )
            except OSError as e:
                raise OptionError(
                    "upstream-ca", f"--upstream-ca {caFile!r}: {e.strerror}"
                ) from None
        accessLog = config.get("access-log")
        if accessLog not in (None, "-"):
            try:
                open(accessLog, "a").close()
            except OSError as e:
                raise OptionError(
                    "access-log", f"--access-log {accessLog!r}: {e.strerror}"
                ) from None
