"""
Whether a request may be served, decided before anything is forwarded: the client's network,
the request target, loops back into the proxy, the CONNECT port, and the host policy.

Pure functions: each returns None (go on) or the L{Refusal} to answer with; proxy
authentication, which needs a thread, is the request flow's (L{caplab.proxy.exchange}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from caplab.proxy.headers import loops
from caplab.proxy.hooks import IHostPolicy, ProxyError, Target

#: The networks clients may come from unless C{--allow} says otherwise.
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


#: A request refused: the status, the page's title and why, and extra fields.
Refusal = ProxyError


def clientAllowed(allow: Sequence[Any], host: str) -> bool:
    """
    Whether a client at address C{host} may use the proxy (IPv4-mapped IPv6 counts as IPv4;
    a client that is not at an IP address, on a UNIX socket, is the endpoint's business).
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return True
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in allow)


def clientRefusal(host: str) -> Refusal:
    """
    The 403 for a client outside the allowed networks: it says how to allow it.
    """
    return Refusal(
        403,
        "Forbidden",
        f"clients from {host} may not use this proxy. The proxy's operator can allow them "
        "with --allow (e.g. --allow 192.168.1.0/24); by default only loopback clients are "
        "served.",
    )


def loopRefusal(
    target: Target, via: Iterable[bytes], pseudonym: bytes, local: Any
) -> Refusal | None:
    """
    A 508 if the request already came through this proxy (its C{Via} values name
    C{pseudonym}), or is for the proxy's own address (C{local}: the address the client
    connected to).
    """
    if loops(via, pseudonym):
        return Refusal(508, "Loop Detected", "the request has passed through this proxy before")
    if getattr(local, "port", None) == target.port and _isLocal(target.host, local):
        return Refusal(
            508,
            "Loop Detected",
            f"{target.authority} is this proxy itself; open http://{target.authority}/ "
            "without the proxy for its status page",
        )
    return None


def connectPortRefusal(port: int, connectPorts: frozenset[int]) -> Refusal | None:
    """
    A 403 for a CONNECT to a port outside C{connectPorts}.
    """
    if port in connectPorts:
        return None
    allowed = ", ".join(str(p) for p in sorted(connectPorts))
    return Refusal(
        403,
        "Forbidden",
        f"CONNECT to port {port} is not allowed (allowed: {allowed}; see --connect-ports)",
    )


def policyRefusal(policy: IHostPolicy | None, host: str) -> Refusal | None:
    """
    A 403 naming the rule and its source if the host policy blocks C{host}.
    """
    if policy is None:
        return None
    verdict = policy.check(host)
    if verdict is None:
        return None
    return Refusal(
        403,
        "Forbidden",
        f"access to {host} is blocked by the rule {verdict.rule!r} ({verdict.source})",
    )


def authRefusal(realm: str) -> Refusal:
    """
    The 407 asking for proxy credentials.
    """
    realm = realm.replace('"', "")
    return Refusal(
        407,
        "Proxy Authentication Required",
        "this proxy needs a user name and password",
        [(b"Proxy-Authenticate", f'Basic realm="{realm}"'.encode())],
    )


def bodyTooLarge(length: int, limit: int) -> Refusal:
    """
    The 413 for a request body over C{--max-request-body}.
    """
    return Refusal(
        413,
        "Content Too Large",
        f"the request body ({length} bytes or more) is over this proxy's limit of {limit} "
        "bytes (--max-request-body)",
    )


def _isLocal(host: str, local: Any) -> bool:
    if host in ("localhost", getattr(local, "host", None)):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified
