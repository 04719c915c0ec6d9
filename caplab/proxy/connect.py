"""
How the proxy reaches origins: TCP (IPv4, IPv6, or a name resolved by the reactor's
resolver, unless C{--resolve} maps it), and TLS with the origin's certificate verified for
C{https} targets.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from caplab.internals import PlatformPlusFile
from caplab.proxy.hooks import Target


def parseResolve(entry: str) -> tuple[str, str]:
    """
    A C{--resolve HOST=ADDRESS} entry as (normalised host, address).

    @raise ValueError: not C{HOST=ADDRESS} with an IP address.
    """
    from caplab.proxy.policy import normaliseHost

    host, sep, address = entry.partition("=")
    if not sep or not host.strip():
        raise ValueError(f"{entry!r} is not HOST=ADDRESS")
    try:
        address = str(ipaddress.ip_address(address.strip().strip("[]")))
    except ValueError:
        raise ValueError(f"{address!r} in {entry!r} is not an IP address") from None
    return normaliseHost(host), address


class EndpointConnector:
    """
    Connects to a L{Target}, by endpoint: the L{caplab.proxy.forward.Connector} and the
    tunnel's way out.

    @ivar resolve: host name -> IP address overrides, consulted before DNS.
    """

    def __init__(
        self,
        reactor: Any,
        resolve: dict[str, str] | None = None,
        caFile: str | None = None,
        connectTimeout: float = 30.0,
    ) -> None:
        self.reactor = reactor
        self.resolve = dict(resolve or {})
        self.trustRoot = PlatformPlusFile(caFile)
        self.connectTimeout = connectTimeout
        self._tlsOptions: dict[str, Any] = {}

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
        endpoint: IStreamClientEndpoint
        if ":" in address:
            endpoint = TCP6ClientEndpoint(self.reactor, address, port, timeout=timeout)
        elif address[-1:].isdigit() and _isIPv4(address):
            endpoint = TCP4ClientEndpoint(self.reactor, address, port, timeout=timeout)
        else:
            endpoint = HostnameEndpoint(self.reactor, address, port, timeout=timeout)
        if tls:
            options = self._tlsOptions.get(host)
            if options is None:
                options = ssl.optionsForClientTLS(host, trustRoot=self.trustRoot)
                self._tlsOptions[host] = options
            endpoint = wrapClientTLS(options, endpoint)
        return endpoint

    def connect(self, target: Target, protocol: Protocol) -> Deferred[Any]:
        """
        Connect C{protocol} to C{target} (TLS for https).
        """
        endpoint = self.endpoint(target.host, target.port, target.scheme == "https")
        return connectQuietly(endpoint, protocol)


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
