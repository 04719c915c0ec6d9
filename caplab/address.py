"""
Human-readable forms of Twisted addresses, for log lines and messages.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress


def bracketed(host: str) -> str:
    """
    C{host} as it stands in a URL or before a port: an IPv6 address in brackets (C{[::1]}).
    """
    return f"[{host}]" if ":" in host else host


def hostPort(host: str, port: int) -> str:
    """
    C{host:port}, with an IPv6 host in brackets (C{[::1]:8080}).
    """
    return f"{bracketed(host)}:{port}"


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
