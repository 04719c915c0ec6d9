"""
IP addresses as a resolver reads them, and the networks of block and allow lists.

A host in a URL may spell an address in many ways that C{getaddrinfo} accepts and connects
to: besides C{127.0.0.1} there are C{127.1}, C{2130706433}, C{0x7f000001}, C{0177.0.0.1},
C{127.000.000.001} (the forms of C{inet_aton}: one to four parts, each decimal, octal with a
leading C{0} or hexadecimal with C{0x}) and the IPv4-mapped IPv6 C{[::ffff:127.0.0.1]}.
L{canonicalAddress} turns each into the one form address rules are written in, so that a rule
for C{127.0.0.1} holds for all of them.  The unspecified addresses (C{0.0.0.0}, C{0}, C{[::]})
reach the machine itself too: L{loopbackFor} says which loopback address each counts as.

Pure functions and a small lookup structure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Generic, TypeAlias, TypeVar

#: An address as L{parseAddress} gives it.
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: One to four parts of an C{inet_aton} address (checked further by L{_atonValue}), with
#: one trailing dot allowed as the URL standard allows it.
_ATON = re.compile(
    r"(?:0[xX][0-9a-fA-F]+|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]+|[0-9]+)){0,3}\.?",
)

#: The largest value of the last part of an C{inet_aton} address of 1, 2, 3 or 4 parts.
_LAST_PART_LIMIT = (0, 1 << 32, 1 << 24, 1 << 16, 1 << 8)


def _atonPart(text: str) -> int | None:
    if text[:2] in ("0x", "0X"):
        return int(text[2:], 16)
    if text[:1] == "0" and len(text) > 1:
        try:
            return int(text, 8)
        except ValueError:  # 08, 09: not a number inet_aton reads
            return None
    return int(text)


def _atonValue(text: str) -> int | None:
    """
    The 32-bit value of C{inet_aton} form C{text} (already matched by L{_ATON}), or None if
    C{inet_aton} would refuse it.
    """
    parts = text.removesuffix(".").split(".")
    values = []
    for part in parts:
        value = _atonPart(part)
        if value is None:
            return None
        values.append(value)
    last = values.pop()
    if last >= _LAST_PART_LIMIT[len(parts)] or any(v > 255 for v in values):
        return None
    result = 0
    for index, value in enumerate(values):
        result |= value << (24 - 8 * index)
    return result | last


#: How many of the latest texts L{parseAddress} remembers the address of: every request's
#: host is read several times (its target, the block and allow lists), mostly the same few.
PARSED_KEPT = 4096

#: The longest text whose answer is remembered: any address is shorter, and a client's
#: long host names must not be kept alive (4,096 of 8 KiB each would be 32 MiB).
PARSED_LONGEST = 64


def parseAddress(text: str) -> IPAddress | None:
    """
    The address C{text} spells for a resolver, or None if it is not one.

    Brackets and an IPv6 zone index are dropped; IPv4 forms of C{inet_aton} are read as
    C{inet_aton} reads them; an IPv4-mapped IPv6 address (C{::ffff:a.b.c.d}) is its IPv4
    address, which is where a connection to it goes.  The answers for the latest
    L{PARSED_KEPT} short texts are remembered (addresses are immutable).
    """
    if len(text) <= PARSED_LONGEST:
        return _remembered(text)
    return _parseAddress(text)


def _parseAddress(text: str) -> IPAddress | None:
    text = text.strip()
    if text[:1] == "[" and text[-1:] == "]":
        text = text[1:-1]
    if ":" in text:
        try:
            v6 = ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
        mapped = v6.ipv4_mapped
        return mapped if mapped is not None else v6
    if not _ATON.fullmatch(text):
        return None  # the common case, a name: no exception raised and caught
    value = _atonValue(text)
    return None if value is None else ipaddress.IPv4Address(value)


_remembered = lru_cache(maxsize=PARSED_KEPT)(_parseAddress)


def canonicalAddress(text: str) -> str | None:
    """
    The canonical text of the address C{text} spells (see L{parseAddress}), or None.

    C{127.1}, C{0x7f000001} and C{[::ffff:127.0.0.1]} all give C{127.0.0.1}; C{[2001:DB8::1]}
    gives C{2001:db8::1}.
    """
    address = parseAddress(text)
    return None if address is None else str(address)


#: "This host on this network" (RFC 1122): Linux connects C{0.0.0.0} to C{127.0.0.1}.
_THIS_HOST = ipaddress.IPv4Network("0.0.0.0/8")
_LOOPBACK_V4 = ipaddress.IPv4Address("127.0.0.1")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")


def loopbackFor(address: IPAddress) -> IPAddress | None:
    """
    The loopback address that C{address} (as L{parseAddress} gives it) counts as for the
    rules, if it is an unspecified address that a connection delivers to the proxy's own
    machine (Linux connects C{0.0.0.0} to C{127.0.0.1} and C{::} to C{::1}; the rest of
    C{0.0.0.0/8} is taken to be this machine too); None for any other address, loopback
    ones included.
    """
    if address.version == 4:
        return _LOOPBACK_V4 if address in _THIS_HOST else None
    return _LOOPBACK_V6 if not int(address) else None


def parseNetwork(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """
    The network of CIDR C{text} (C{10.0.0.0/8}, C{2001:db8::/32}), or None if C{text} has no
    C{/}.  An IPv4-mapped IPv6 network of at least 96 bits is its IPv4 network.

    @raise ValueError: C{text} has a C{/} but is not a network (host bits set, bad length).
    """
    if "/" not in text:
        return None
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a network ({e})") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def parseClientNetwork(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """
    The network of an option naming where clients may come from (C{--allow},
    C{--admin-allow}): CIDR as list files write it (L{parseNetwork}: no host bits set, an
    IPv4-mapped network its IPv4 one, as clients' addresses are read) or one address in its
    standard form (C{192.0.2.7}, C{::1}: a network of full length).

    @raise ValueError: neither; the message says why (C{"not a network (CIDR)"}, or the
        network meant when host bits are set).
    """
    text = text.strip()
    try:
        if "/" not in text:
            address = ipaddress.ip_address(text)
            text = f"{address}/{address.max_prefixlen}"
        network = parseNetwork(text)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError("not a network (CIDR)") from None
        raise ValueError(f"host bits set: write the network, {loose}") from None
    assert network is not None
    return network


V = TypeVar("V")


class NetworkTable(Generic[V]):
    """
    Networks (an address is a network of full length) with a value each, looked up by
    address: the most specific network that holds it wins.

    A lookup costs one dict lookup per distinct prefix length in the table (at most 33 for
    IPv4 and 129 for IPv6, a handful in practice), whatever the number of networks.
    """

    def __init__(self) -> None:
        #: (version, prefix length) -> {network address as int: value}
        self._tables: dict[tuple[int, int], dict[int, V]] = {}
        #: prefix lengths present, per version, longest first
        self._lengths: dict[int, list[int]] = {4: [], 6: []}

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def __bool__(self) -> bool:
        return bool(self._tables)

    def add(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, value: V) -> None:
        """
        Add C{network} with C{value}, unless it is there already (the first value stays).
        """
        key = (network.version, network.prefixlen)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = {}
            lengths = self._lengths[network.version]
            lengths.append(network.prefixlen)
            lengths.sort(reverse=True)
        table.setdefault(int(network.network_address), value)

    def lookup(self, address: IPAddress) -> tuple[str, V] | None:
        """
        The most specific network holding C{address}, as (its text, its value), or None.
        """
        version = address.version
        bits = 32 if version == 4 else 128
        value = int(address)
        for length in self._lengths[version]:
            base = value & ~((1 << (bits - length)) - 1)
            found = self._tables[(version, length)].get(base)
            if found is not None:
                text = str(type(address)(base))
                return (text if length == bits else f"{text}/{length}"), found
        return None
