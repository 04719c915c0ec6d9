"""
Command-line options of proxy policy and operations (block/allow lists, authentication,
parent proxy, PAC, admin endpoint), mixed into L{caplab.tap.Options}.

They are parsed and checked here; the files they name are read by the composition root
(L{caplab.wiring.buildPolicy}), which reports a broken one in one line.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from caplab.config import OptionError
from caplab.proxy.auth import MAX_CHECK_THREADS
from caplab.proxy.options import networkOption
from caplab.proxy.pac import bypassDomain
from caplab.proxy.policy import normaliseName
from caplab.proxy.upstream import parseProxyURL

#: The repeatable options and the list each appends to.
_LISTS = ("block-list", "allow-list", "no-upstream-for", "pac-bypass")


def _noUpstreamDomain(entry: str) -> str:
    """
    A C{--no-upstream-for} entry checked: a domain or C{*.domain}.
    """
    return normaliseName(entry.removeprefix("*."))


def adminDescription(value: str) -> str:
    """
    An admin endpoint: a server endpoint description, or just a port (on loopback).
    """
    value = value.strip()
    if value.isdigit():
        return f"tcp:{value}:interface=127.0.0.1"
    return value


adminDescription.metavar = "ENDPOINT"  # type: ignore[attr-defined]


class PolicyOptions:
    """
    Options of proxy policy and operations.
    """

    helpGroup = "policy"
    helpGroupOf = {
        "upstream-proxy": "proxy",
        "no-upstream-for": "proxy",
        "admin-endpoint": "operations",
        "admin-allow": "operations",
    }

    optParameters: list[list[Any]] = [
        [
            "auth-file",
            None,
            None,
            "Require proxy authentication (407 until the client sends good credentials) "
            "against this htpasswd file: bcrypt (htpasswd -B) or SHA-crypt ($5$/$6$) hashes; "
            "Apache MD5 ($apr1$, htpasswd's default) is accepted with a warning. Hashes are "
            f"checked in threads of their own (half the cores, 1 to {MAX_CHECK_THREADS}).",
        ],
        [
            "upstream-proxy",
            None,
            None,
            "Send all traffic (plain requests and CONNECT tunnels) through this parent "
            "proxy: http://[user:password@]host:port. A password here is visible to every "
            "user of the machine (ps): put it in the --config file instead.",
        ],
        [
            "admin-endpoint",
            None,
            None,
            "Serve Prometheus metrics at /metrics and the cache's purge and flush on this "
            "endpoint (e.g. tcp:9100:interface=127.0.0.1, or just a port on loopback), to the "
            "admin networks (--admin-allow). Default: off.",
            adminDescription,
        ],
    ]
    optFlags: list[list[Any]] = [
        [
            "default-deny",
            None,
            "Block every host no --allow-list names (allow-list-only mode).",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        config: Any = self
        for name in _LISTS:
            config[name] = []

    def opt_block_list(self, path: str) -> None:
        """
        Block the hosts in this file (repeatable): one rule a line, a domain (with its
        subdomains), *.domain (subdomains only), an address, or a hosts-file line
        (0.0.0.0 ads.example.com); # comments.
        """
        self._append("block-list", path)

    def opt_allow_list(self, path: str) -> None:
        """
        Allow the hosts in this file (repeatable, same syntax as --block-list): allow rules
        win over block rules.
        """
        self._append("allow-list", path)

    def opt_no_upstream_for(self, domain: str) -> None:
        """
        Reach this domain and its subdomains directly, not through --upstream-proxy
        (repeatable).
        """
        self._append("no-upstream-for", domain)

    def opt_pac_bypass(self, domain: str) -> None:
        """
        In the PAC file served at /proxy.pac, send this domain and its subdomains DIRECT
        (repeatable).
        """
        self._append("pac-bypass", domain)

    def opt_admin_allow(self, network: str) -> None:
        """
        Serve the admin endpoint only to clients from this network (CIDR, or one address);
        repeatable.
        Without it, the proxy's --allow networks (loopback by default).
        """
        config: Any = self
        config.setdefault("admin-allow", []).append(networkOption("admin-allow", network))

    opt_admin_allow.metavar = "CIDR"  # type: ignore[attr-defined]
    opt_no_upstream_for.metavar = "DOMAIN"  # type: ignore[attr-defined]
    opt_pac_bypass.metavar = "DOMAIN"  # type: ignore[attr-defined]

    def _append(self, name: str, value: str) -> None:
        config: Any = self
        config[name].append(value)

    def checkPolicyOptions(self) -> None:
        """
        Check the policy options: every domain and URL valid, no contradiction; raise
        L{usage.UsageError} otherwise.  (The files are read when the proxy is built.)
        """
        config: Any = self
        config.setdefault("admin-allow", [])
        if config["default-deny"] and not config["allow-list"]:
            raise usage.UsageError("--default-deny without an --allow-list blocks every host")
        if config["upstream-proxy"] is not None:
            try:
                parseProxyURL(config["upstream-proxy"])
            except ValueError as e:
                raise OptionError("upstream-proxy", f"--upstream-proxy: {e}") from None
        elif config["no-upstream-for"]:
            raise usage.UsageError("--no-upstream-for needs an --upstream-proxy")
        for option, read in (("no-upstream-for", _noUpstreamDomain), ("pac-bypass", bypassDomain)):
            for domain in config[option]:
                try:
                    read(domain)
                except ValueError as e:
                    raise OptionError(option, f"--{option}: {e}") from None
        description = config["admin-endpoint"]
        if description is not None:
            from twisted.internet import reactor

            try:
                serverFromString(reactor, description)
            except Exception as e:  # ValueError, OSError ...: all mean "bad option"
                raise OptionError(
                    "admin-endpoint", f"--admin-endpoint {description!r}: {e}"
                ) from None
