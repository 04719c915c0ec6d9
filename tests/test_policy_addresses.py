"""
Tests for L{caplab.proxy.addresses}: every spelling of an address a resolver accepts, and the
network table of block and allow lists.
"""

from __future__ import annotations

import ipaddress
import socket

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.addresses import (
    NetworkTable,
    canonicalAddress,
    loopbackFor,
    parseAddress,
    parseNetwork,
)

#: Spellings of 127.0.0.1: the first six are issue 9's (each reached the blocked address).
LOOPBACK_SPELLINGS = [
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.000.000.001",
    "[::ffff:127.0.0.1]",
    "::ffff:7f00:1",
    "0X7F.0.0.1",
    "127.0.1",
    "127.1.",
]


def _atonPart(value: int, style: str) -> str:
    if style == "hex":
        return hex(value)
    if style == "HEX":
        return "0X" + format(value, "X")
    if style == "oct":
        return "0" + format(value, "o")
    return str(value)


@st.composite
def atonSpellings(draw: st.DrawFn) -> tuple[str, int]:
    """
    An IPv4 address in one of C{inet_aton}'s forms (1 to 4 parts, each decimal, octal or
    hexadecimal), and its value.
    """
    value = draw(st.integers(0, 2**32 - 1))
    parts = draw(st.integers(1, 4))
    octets = value.to_bytes(4, "big")
    numbers = list(octets[: parts - 1]) + [int.from_bytes(octets[parts - 1 :], "big")]
    styles = draw(
        st.lists(st.sampled_from(["dec", "hex", "HEX", "oct"]), min_size=parts, max_size=parts)
    )
    return ".".join(_atonPart(n, s) for n, s in zip(numbers, styles, strict=True)), value


class ParseAddressTests(SynchronousTestCase):
    """
    L{parseAddress} and L{canonicalAddress}.
    """

    def test_loopbackSpellings(self) -> None:
        """
        Each spelling of 127.0.0.1 that C{getaddrinfo} connects to is 127.0.0.1.
        """
        for spelling in LOOPBACK_SPELLINGS:
            self.assertEqual(canonicalAddress(spelling), "127.0.0.1", spelling)

    @given(atonSpellings())
    def test_sameAsInetAton(self, spelled: tuple[str, int]) -> None:
        """
        Every C{inet_aton} form reads as the C library's C{inet_aton} reads it.
        """
        text, value = spelled
        self.assertEqual(socket.inet_aton(text), value.to_bytes(4, "big"))
        self.assertEqual(parseAddress(text), ipaddress.IPv4Address(value))

    @given(st.text(alphabet="0123456789xXabcdefABCDEF.", min_size=1, max_size=20))
    def test_agreesWithInetAtonOnAnyDigits(self, text: str) -> None:
        """
        On any string of digits, dots and hex letters, L{parseAddress} finds an address
        exactly where C{inet_aton} does (a trailing dot aside, which URLs allow), and the
        same one.
        """
        try:
            expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(
                socket.inet_aton(text.removesuffix("."))
            )
        except OSError:
            expected = None
        if text.endswith("..") or text == ".":
            expected = None
        self.assertEqual(parseAddress(text), expected)

    def test_notAddresses(self) -> None:
        """
        Names, overflowing parts, bad octal and hex digits are not addresses.
        """
        for text in [
            "example.com",
            "cafe.babe",
            "4294967296",
            "1.16777216",
            "256.0.0.1",
            "08.0.0.1",
            "0x",
            "1.2.3.4.5",
            "1..2",
            "",
            "[example.com]",
            "::ffff::1::",
        ]:
            self.assertIsNone(parseAddress(text), text)

    def test_ipv6(self) -> None:
        """
        IPv6 is canonical, with brackets and zone index dropped; only IPv4-mapped addresses
        become IPv4 (IPv4-compatible and NAT64 ones are other addresses).
        """
        self.assertEqual(canonicalAddress("[2001:DB8:0::1]"), "2001:db8::1")
        self.assertEqual(canonicalAddress("fe80::1%eth0"), "fe80::1")
        self.assertEqual(canonicalAddress("::ffff:10.1.2.3"), "10.1.2.3")
        self.assertEqual(canonicalAddress("::127.0.0.1"), "::7f00:1")
        self.assertEqual(canonicalAddress("64:ff9b::127.0.0.1"), "64:ff9b::7f00:1")


class NetworkTests(SynchronousTestCase):
    """
    L{parseNetwork} and L{NetworkTable}.
    """

    def test_parse(self) -> None:
        """
        CIDR networks are read, IPv4-mapped ones as IPv4; host bits set is an error.
        """
        self.assertIsNone(parseNetwork("10.0.0.1"))
        self.assertEqual(parseNetwork("10.0.0.0/8"), ipaddress.IPv4Network("10.0.0.0/8"))
        self.assertEqual(parseNetwork("::ffff:127.0.0.0/104"), ipaddress.IPv4Network("127.0.0.0/8"))
        self.assertEqual(parseNetwork("fc00::/7"), ipaddress.IPv6Network("fc00::/7"))
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "x/8"]:
            with self.assertRaises(ValueError):
                parseNetwork(bad)

    def test_mostSpecificWins(self) -> None:
        """
        The longest network holding the address is found, with its value; addresses are
        networks of full length, written without a length.
        """
        table: NetworkTable[str] = NetworkTable()
        table.add(ipaddress.ip_network("10.0.0.0/8"), "wide")
        table.add(ipaddress.ip_network("10.1.0.0/16"), "narrow")
        table.add(ipaddress.ip_network("10.1.2.3"), "one")
        table.add(ipaddress.ip_network("2001:db8::/32"), "v6")
        self.assertEqual(table.lookup(ipaddress.ip_address("10.1.2.3")), ("10.1.2.3", "one"))
        self.assertEqual(table.lookup(ipaddress.ip_address("10.1.9.9")), ("10.1.0.0/16", "narrow"))
        self.assertEqual(table.lookup(ipaddress.ip_address("10.9.9.9")), ("10.0.0.0/8", "wide"))
        self.assertIsNone(table.lookup(ipaddress.ip_address("11.0.0.1")))
        self.assertEqual(table.lookup(ipaddress.ip_address("2001:db8::5")), ("2001:db8::/32", "v6"))
        self.assertIsNone(table.lookup(ipaddress.ip_address("2001:db9::5")))
        self.assertEqual(len(table), 4)

    @given(
        networks=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=8),
        address=st.integers(0, 2**32 - 1),
    )
    def test_sameAsNaiveScan(self, networks: list[tuple[int, int]], address: int) -> None:
        """
        The table finds what a scan of every network for the longest match finds.
        """
        table: NetworkTable[int] = NetworkTable()
        parsed = []
        for value, length in networks:
            network = ipaddress.IPv4Network((value, length), strict=False)
            table.add(network, length)
            parsed.append(network)
        target = ipaddress.IPv4Address(address)
        holding = [n for n in parsed if target in n]
        found = table.lookup(target)
        if not holding:
            self.assertIsNone(found)
        else:
            best = max(holding, key=lambda n: n.prefixlen)
            assert found is not None
            self.assertEqual(found[1], best.prefixlen)
            self.assertEqual(ipaddress.ip_network(found[0]), best)


class ReachesThisMachineTests(SynchronousTestCase):
    """
    L{loopbackFor}: the unspecified addresses, which a connection delivers to the machine
    itself, and the loopback address each counts as.
    """

    def test_unspecified(self) -> None:
        """
        C{0.0.0.0/8} counts as C{127.0.0.1} and C{::} as C{::1}, in every spelling
        (C{0}, C{[::ffff:0.0.0.0]}, C{[0:0:0:0:0:0:0:0]}).
        """
        for spelling in ["0.0.0.0", "0", "0x0", "0.1.2.3", "[::ffff:0.0.0.0]", "::ffff:0:0"]:
            address = parseAddress(spelling)
            assert address is not None, spelling
            self.assertEqual(loopbackFor(address), ipaddress.IPv4Address("127.0.0.1"), spelling)
        for spelling in ["::", "[::]", "[0:0:0:0:0:0:0:0]", "::0.0.0.0"]:
            address = parseAddress(spelling)
            assert address is not None, spelling
            self.assertEqual(loopbackFor(address), ipaddress.IPv6Address("::1"), spelling)

    def test_othersNot(self) -> None:
        """
        Every other address, loopback ones included, counts as itself (None).
        """
        for text in ["127.0.0.1", "1.0.0.0", "::1", "::2", "::ffff:1.2.3.4", "2001:db8::"]:
            address = parseAddress(text)
            assert address is not None, text
            self.assertIsNone(loopbackFor(address), text)


def test_onlyShortTextsRemembered() -> None:
    """
    L{parseAddress} and L{normaliseHost} remember their answers for short texts only: a
    client's long hosts (up to the request line's 8 KiB) are read each time, never kept
    alive by the memo; short ones are read once.
    """
    from caplab.proxy import addresses, hostnames

    zoned = "[fe80::1%" + "z" * 8000 + "]"  # an address, however long its zone index
    size = addresses._remembered.cache_info().currsize
    assert str(addresses.parseAddress(zoned)) == "fe80::1"
    assert addresses._remembered.cache_info().currsize == size
    size = hostnames._remembered.cache_info().currsize
    assert hostnames.normaliseHost(zoned) == "fe80::1"
    assert hostnames._remembered.cache_info().currsize == size

    short = "0x7f.000.0.01"
    addresses.parseAddress(short)
    hits = addresses._remembered.cache_info().hits
    assert str(addresses.parseAddress(short)) == "127.0.0.1"
    assert addresses._remembered.cache_info().hits == hits + 1
    hostnames.normaliseHost("Cache.Example.")
    hits = hostnames._remembered.cache_info().hits
    assert hostnames.normaliseHost("Cache.Example.") == "cache.example"
    assert hostnames._remembered.cache_info().hits == hits + 1
