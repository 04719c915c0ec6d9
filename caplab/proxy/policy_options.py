"""
Command-line options of proxy policy and operations (block/allow lists, authentication,
parent proxy, PAC, admin endpoint), mixed into L{caplab.tap.Options}, and the objects they
describe.

L{policyComponents} builds those objects once per configuration, so that the proxy (which
uses them), the reload-on-SIGHUP service and the admin endpoint (which reload and expose
them) share the same ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.python import usage

from caplab.listening import DatagramListener, StreamListener
from caplab.metrics import (
    AdminSite,
    Metrics,
    adminResource,
    instrumentDatagramProtocol,
    instrumentTCPFactory,
)
from caplab.proxy.auth import AuthFileError, HtpasswdAuthenticator
from caplab.proxy.pac import PacResource
from caplab.proxy.policy import PolicyFileError, ReloadableHostPolicy, normaliseName
from caplab.proxy.upstream import ParentProxy, UpstreamRouter, parseProxyURL
from caplab.reload import Reloader, SignalReloadService
from caplab.workers import WORKER_ENVIRONMENT

#: The repeatable options and the list each appends to.
_LISTS = ("block-list", "allow-list", "no-upstream-for", "pac-bypass")


def adminDescription(value: str) -> str:
    """
    An admin endpoint: a server endpoint description, or just a port (on loopback).
    """
    value = value.strip()
    if value.isdigit():
        return f"tcp:{value}:interface=127.0.0.1"
    return value


class PolicyOptions:
    """
    Options of proxy policy and operations.
    """

    optParameters: list[list[Any]] = [
        [
            "auth-file",
            None,
            None,
            "Require proxy authentication (407 until the client sends good credentials) "
            "against this htpasswd file: bcrypt (htpasswd -B) or SHA-crypt ($5$/$6$) hashes.",
        ],
        [
            "upstream-proxy",
            None,
            None,
            "Send all traffic (plain requests and CONNECT tunnels) through this parent "
            "proxy: http://[user:password@]host:port.",
        ],
        [
            "admin-endpoint",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this endpoint (e.g. "
            "tcp:9100:interface=127.0.0.1, or just a port on loopback). Default: off.",
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

    def _append(self, name: str, value: str) -> None:
        config: Any = self
        config[name].append(value)

    def checkPolicyOptions(self) -> None:
        """
        Check the policy options: every file readable and well-formed, every domain and URL
        valid; raise L{usage.UsageError} (naming the file and line) otherwise.
        """
        config: Any = self
        if config["default-deny"] and not config["allow-list"]:
            raise usage.UsageError("--default-deny without an --allow-list blocks every host")
        try:
            checked = ReloadableHostPolicy(
                config["block-list"], config["allow-list"], config["default-deny"]
            )
        except PolicyFileError as e:
            raise usage.UsageError(f"--block-list/--allow-list: {e}") from None
        if config["block-list"] or config["allow-list"]:
            config[_CHECKED] = checked  # loaded once: policyComponents takes it over
        if config["auth-file"] is not None:
            try:
                HtpasswdAuthenticator(config["auth-file"], reactor=_NoReactor())
            except AuthFileError as e:
                raise usage.UsageError(f"--auth-file: {e}") from None
        if config["upstream-proxy"] is not None:
            try:
                parseProxyURL(config["upstream-proxy"])
            except ValueError as e:
                raise usage.UsageError(f"--upstream-proxy: {e}") from None
        elif config["no-upstream-for"]:
            raise usage.UsageError("--no-upstream-for needs an --upstream-proxy")
        for option in ("no-upstream-for", "pac-bypass"):
            for domain in config[option]:
                try:
                    normaliseName(domain.removeprefix("*."))
                except ValueError as e:
                    raise usage.UsageError(f"--{option}: {e}") from None
        description = config["admin-endpoint"]
        if description is not None:
            from twisted.internet import reactor

            try:
                serverFromString(reactor, description)
            except Exception as e:  # ValueError, OSError ...: all mean "bad option"
                raise usage.UsageError(f"--admin-endpoint {description!r}: {e}") from None


class _NoReactor:
    """
    Stands in for a reactor where an object is built only to check its file.
    """


@dataclass
class PolicyComponents:
    """
    The objects the policy options describe, shared by the proxy, reload and admin services.

    @ivar hostPolicy: the block/allow lists, None if no list is given.
    @ivar authenticator: None without C{--auth-file}.
    @ivar router: the next hop of each request (direct without C{--upstream-proxy}).
    @ivar parent: the parent proxy, or None.
    @ivar pac: the C{/proxy.pac} resource.
    @ivar metrics: the metrics of every service in this process.
    """

    hostPolicy: ReloadableHostPolicy | None
    authenticator: HtpasswdAuthenticator | None
    router: UpstreamRouter
    parent: ParentProxy | None
    pac: PacResource
    metrics: Metrics


_KEY = "_caplab.policyComponents"
_CHECKED = "_caplab.checkedHostPolicy"


def policyComponents(config: MutableMapping[str, Any], reactor: Any) -> PolicyComponents:
    """
    The L{PolicyComponents} for C{config} (built on first use, then the same ones).

    @param config: parsed options (a L{PolicyOptions}, or a mapping with some of its keys;
        missing keys take the defaults).
    @raise PolicyFileError, AuthFileError, ValueError: a file or value is bad (the options
        check has said so already, unless a file changed since).
    """
    built = config.get(_KEY)
    if built is not None:
        return built
    proxy = not config.get("no-proxy", False)
    blockFiles = list(config.get("block-list", []))
    allowFiles = list(config.get("allow-list", []))
    defaultDeny = bool(config.get("default-deny", False))
    hostPolicy = None
    checked = config.pop(_CHECKED, None)
    if proxy and (blockFiles or allowFiles or defaultDeny):
        if (
            isinstance(checked, ReloadableHostPolicy)
            and checked.blockFiles == blockFiles
            and checked.allowFiles == allowFiles
            and checked.defaultDeny == defaultDeny
        ):
            hostPolicy = checked
        else:
            hostPolicy = ReloadableHostPolicy(blockFiles, allowFiles, defaultDeny)
    authenticator = None
    if proxy and config.get("auth-file"):
        authenticator = HtpasswdAuthenticator(config["auth-file"], reactor=reactor)
    parent = None
    if config.get("upstream-proxy"):
        parent = parseProxyURL(config["upstream-proxy"])
    built = PolicyComponents(
        hostPolicy=hostPolicy,
        authenticator=authenticator,
        router=UpstreamRouter(parent, config.get("no-upstream-for", [])),
        parent=parent,
        pac=PacResource(config.get("pac-bypass", [])),
        metrics=Metrics(),
    )
    config[_KEY] = built
    return built


def reloadables(components: PolicyComponents) -> list[tuple[str, Any]]:
    """
    What C{SIGHUP} reloads: (name for the log, reloadable) pairs.
    """
    found: list[tuple[str, Any]] = []
    if components.hostPolicy is not None:
        found.append(("block/allow lists", components.hostPolicy))
    if components.authenticator is not None:
        found.append(
            (
                f"auth file {os.path.basename(components.authenticator.path)}",
                components.authenticator,
            )
        )
    return found


def addPolicyServices(
    top: MultiService,
    config: MutableMapping[str, Any],
    reactor: Any,
    onListenFailure: Callable[[], None] | None = None,
) -> PolicyComponents:
    """
    Add what the policy options ask for to the service tree C{top}: counting for the
    uppercase services already in it, the C{--admin-endpoint} listener, and reloading on
    C{SIGHUP} (if there is anything to reload).

    @return: the components, as the proxy shares them.
    """
    components = policyComponents(config, reactor)
    metrics = components.metrics
    for service in top:
        if isinstance(service, StreamListener) and service.label == "tcp":
            instrumentTCPFactory(service.factory, metrics)
        elif isinstance(service, DatagramListener) and service.label == "udp":
            instrumentDatagramProtocol(service.protocol, metrics)
    description = config.get("admin-endpoint")
    # A --workers worker leaves the admin endpoint to the parent, which adds up every
    # worker's figures (caplab.workers.supervisorFromConfig).
    if description and WORKER_ENVIRONMENT not in os.environ:
        site = AdminSite(adminResource(metrics))
        StreamListener(
            "admin",
            description,
            serverFromString(reactor, description),
            site,
            reactor,
            onListenFailure,
        ).setServiceParent(top)
    found = reloadables(components)
    if found:

        def runInThread(f: Callable[[], Any]) -> Deferred[Any]:
            return deferToThreadPool(reactor, reactor.getThreadPool(), f)

        SignalReloadService(Reloader(found, runInThread, metrics), reactor).setServiceParent(top)
    return components
