"""
How the proxy reaches origins: TCP (IPv4, IPv6, or a name resolved by the reactor's
resolver, unless C{--resolve} maps it), and TLS with the origin's certificate verified for
C{https} targets; with a host policy, only to addresses its address and network rules let
through, checked after resolution (see L{EndpointConnector}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from caplab.internals import PlatformPlusFile
from caplab.proxy.addresses import canonicalAddress
from caplab.proxy.hooks import Target, UpstreamError, Verdict


def parseResolve(entry: str) -> tuple[str, str]:
    """
    A C{--resolve HOST=ADDRESS} entry as (normalised host, canonical address).

    @raise ValueError: not C{HOST=ADDRESS} with an IP address.
    """
    from caplab.proxy.hostnames import normaliseHost

    host, sep, address = entry.partition("=")
    if not sep or not host.strip():
        raise ValueError(f"{entry!r} is not HOST=ADDRESS")
    canonical = canonicalAddress(address)
    if canonical is None:
        raise ValueError(f"{address!r} in {entry!r} is not an IP address")
    return normaliseHost(host), canonical


#: How many hosts' TLS options an L{EndpointConnector} keeps (one per distinct https host
#: reached, so without a bound a proxy would keep every one it ever reached).
TLS_OPTIONS_KEPT = 1024


class AddressPolicy(TypingProtocol):
    """
    Which addresses the proxy may connect to (L{caplab.proxy.policy.HostPolicy}).
    """

    def checkAddress(self, address: str) -> Verdict | None:
        """
        None if C{address} may be connected to, else the L{Verdict} that blocks it.
        """


class EndpointConnector:
    """
    Connects to a L{Target}, by endpoint: the L{caplab.proxy.forward.Connector} and the
    tunnel's way out.

    With a host policy, the address actually connected to is checked, whichever way it was
    found (an address in the request, a C{--resolve} override, or every address the name
    resolves to, before any connection is made): blocked addresses are never connected to,
    and when none is left the connection fails with an L{UpstreamError} 403 naming the rule.

    @ivar resolve: host name -> IP address overrides, consulted before DNS.
    """

    def __init__(
        self,
        reactor: Any,
        resolve: dict[str, str] | None = None,
        caFile: str | None = None,
        connectTimeout: float = 30.0,
        hostPolicy: AddressPolicy | None = None,
        resolver: IHostnameResolver | None = None,
        trusted: Iterable[tuple[str, int]] = (),
    ) -> None:
        """
        @param hostPolicy: checks every address before it is connected to (None: none is).
        @param resolver: resolves names (default: the reactor's C{nameResolver}).
        @param trusted: the (host, port) pairs whose addresses are not checked: the parent
            proxy the operator configured, which is no origin (its host on another port is
            checked as any origin is).
        """
        self.reactor = reactor
        self.resolve = dict(resolve or {})
        self.trustRoot = PlatformPlusFile(caFile)
        self.connectTimeout = connectTimeout
        self.hostPolicy = hostPolicy
        self.resolver = resolver
        self.trusted = frozenset(trusted)
        #: host -> its TLS options (L{tlsOptions}), at most L{TLS_OPTIONS_KEPT}
        self._tlsOptions: dict[str, IOpenSSLClientConnectionCreator] = {}

    def address(self, host: str) -> str:
        """
        Where C{host} is, if known without DNS: the override, or C{host} if it is an address.
        """
        return self.resolve.get(host, host)

    def endpoint(self, host: str, port: int, tls: bool = False) -> IStreamClientEndpoint:
        """
        The client endpoint for C{host:port}, TLS-wrapped (verifying C{host}) if C{tls}.
        """
        address = self.address(host)
        timeout = self.connectTimeout or 30
        policy = self.hostPolicy if (host, port) not in self.trusted else None
        endpoint: IStreamClientEndpoint
        literal = ":" in address or (address[-1:].isdigit() and _isIPv4(address))
        if literal and policy is not None:
            verdict = policy.checkAddress(address)
            if verdict is not None:
                return _Refused(blockedError(host, address, verdict, address != host))
        if ":" in address:
            endpoint = TCP6ClientEndpoint(self.reactor, address, port, timeout=timeout)
        elif literal:
            endpoint = TCP4ClientEndpoint(self.reactor, address, port, timeout=timeout)
        elif policy is None:
            endpoint = HostnameEndpoint(self.reactor, address, port, timeout=timeout)
        else:
            resolver = CheckingResolver(self.resolver or self.reactor.nameResolver, policy)
            endpoint = _CheckedEndpoint(
                HostnameEndpoint(
                    _ReactorResolvingWith(self.reactor, resolver), address, port, timeout=timeout
                ),
                resolver,
                host,
            )
        if tls:
            endpoint = wrapClientTLS(self.tlsOptions(host), endpoint)
        return endpoint

    def tlsOptions(self, host: str) -> IOpenSSLClientConnectionCreator:
        """
        The TLS options of a connection to C{host}, verifying its certificate (for C{host},
        against L{trustRoot}): made once per host and kept, for at most
        L{TLS_OPTIONS_KEPT} hosts (then all are dropped and made again as needed).
        """
        options = self._tlsOptions.get(host)
        if options is None:
            if len(self._tlsOptions) >= TLS_OPTIONS_KEPT:
                self._tlsOptions.clear()
            options = ssl.optionsForClientTLS(host, trustRoot=self.trustRoot)
            self._tlsOptions[host] = options
        return options

    def connect(self, target: Target, protocol: Protocol) -> Deferred[Any]:
        """
        Connect C{protocol} to C{target} (TLS for https).
        """
        endpoint = self.endpoint(target.host, target.port, target.scheme == "https")
        return connectQuietly(endpoint, protocol)


def blockedError(host: str, address: str, verdict: Verdict, found: bool = True) -> UpstreamError:
    """
    The 403 for connecting to C{host} at C{address}, which C{verdict} blocks.

    @param found: C{address} was found for C{host} (resolved or overridden), not written in
        the request.
    """
    why = f"the rule {verdict.rule!r} ({verdict.source})"
    if not found:
        return UpstreamError(403, "Forbidden", f"access to {host} is blocked by {why}")
    return UpstreamError(
        403, "Forbidden", f"access to {host} is blocked: it is at {address}, which {why} blocks"
    )


@implementer(IHostnameResolver)
class CheckingResolver:
    """
    Resolves through another L{IHostnameResolver} and passes on only the addresses a host
    policy lets the proxy connect to (an IPv4-mapped IPv6 address is checked as the IPv4
    address it is); remembers the first address it dropped and why.

    One per connection attempt, so that what it remembers is that attempt's.

    @ivar blocked: (address, verdict) of the first address dropped, or None.
    """

    def __init__(self, resolver: IHostnameResolver, policy: AddressPolicy) -> None:
        self.resolver = resolver
        self.policy = policy
        self.blocked: tuple[str, Verdict] | None = None

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        return self.resolver.resolveHostName(
            _CheckingReceiver(self, resolutionReceiver),
            hostName,
            portNumber,
            addressTypes,
            transportSemantics,
        )

    def permits(self, address: IAddress) -> bool:
        """
        Whether the policy lets the proxy connect to C{address}; if not, remember why.
        """
        host = getattr(address, "host", None)
        if not isinstance(host, str):
            return True  # not an IP address: nothing an address rule could name
        verdict = self.policy.checkAddress(host)
        if verdict is None:
            return True
        if self.blocked is None:
            self.blocked = (canonicalAddress(host) or host, verdict)
        return False


@implementer(IResolutionReceiver)
class _CheckingReceiver:
    def __init__(self, resolver: CheckingResolver, receiver: IResolutionReceiver) -> None:
        self._resolver = resolver
        self._receiver = receiver

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        self._receiver.resolutionBegan(resolutionInProgress)

    def addressResolved(self, address: IAddress) -> None:
        if self._resolver.permits(address):
            self._receiver.addressResolved(address)

    def resolutionComplete(self) -> None:
        self._receiver.resolutionComplete()


@implementer(IReactorPluggableNameResolver)
class _ReactorResolvingWith:
    """
    A reactor that resolves names with a resolver of its own and is otherwise C{reactor}:
    how a L{HostnameEndpoint} (which takes its resolver from its reactor) is given one.
    """

    def __init__(self, reactor: Any, resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        previous, self.nameResolver = self.nameResolver, resolver
        return previous

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@implementer(IStreamClientEndpoint)
class _CheckedEndpoint:
    """
    Connects with C{endpoint}, whose resolver is C{resolver}; a failure after the resolver
    dropped a blocked address is the 403 of that address's rule (the block, not the
    remaining addresses' failures, is why the host cannot be reached).
    """

    def __init__(self, endpoint: IStreamClientEndpoint, resolver: CheckingResolver, host: str):
        self._endpoint = endpoint
        self._resolver = resolver
        self._host = host

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        def failed(reason: Failure) -> Failure:
            blocked = self._resolver.blocked
            if blocked is None or reason.check(CancelledError, ConnectingCancelledError):
                return reason
            address, verdict = blocked
            return Failure(blockedError(self._host, address, verdict))

        return self._endpoint.connect(protocolFactory).addErrback(failed)


@implementer(IStreamClientEndpoint)
class _Refused:
    """
    An endpoint that never connects: the address is blocked.
    """

    def __init__(self, error: UpstreamError) -> None:
        self._error = error

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return fail(self._error)


class _OneShotFactory(Factory):
    """
    Hands out one protocol instance, silently.
    """

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


def connectQuietly(endpoint: Any, protocol: Protocol) -> Deferred[Any]:
    """
    L{twisted.internet.endpoints.connectProtocol} without its two log lines ("Starting
    factory ...", "Stopping factory ...") for every upstream connection.
    """
    return endpoint.connect(_OneShotFactory(protocol))


def _isIPv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
