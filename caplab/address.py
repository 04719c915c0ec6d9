"""
Human-readable forms of Twisted addresses, for log lines and messages.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress


def hostPort(host: str, port: int) -> str:
    """
    C{host:port}, with an IPv6 host in brackets (C{[::1]:8080}).
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describeAddress(address: IAddress | None) -> str:
    """
    C{127.0.0.1:40123}, C{[::1]:40123} or C{unix:/path}.
    """
    if isinstance(address, IPv4Address | IPv6Address):
        return hostPort(address.host, address.port)
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name}"
    return str(address)
