"""
C{--allow} and C{--admin-allow} read their networks with one strict helper
(L{caplab.proxy.addresses.parseClientNetwork}, as list files read theirs).
"""

from __future__ import annotations

import ipaddress

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.addresses import parseClientNetwork
from caplab.proxy.admission import clientAllowed
from caplab.tap import Options

OPTIONS = ("allow", "admin-allow")


def parsed(option: str, value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    config = Options()
    config.parseOptions([f"--{option}", value])
    return list(config[option])


class ClientNetworkTests(SynchronousTestCase):
    def test_sameReading(self) -> None:
        """
        Both options read a network, or one address, the same way.
        """
        for value, network in [
            ("192.168.1.0/24", "192.168.1.0/24"),
            (" 2001:db8::/32 ", "2001:db8::/32"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("::1", "::1/128"),
        ]:
            for option in OPTIONS:
                self.assertEqual(parsed(option, value), [ipaddress.ip_network(network)])

    def test_hostBitsRefused(self) -> None:
        """
        A network with host bits set is refused by both, as in list files, naming the
        network meant, rather than quietly widened to it.
        """
        for option in OPTIONS:
            with self.assertRaises(usage.UsageError) as caught:
                parsed(option, "192.168.1.7/24")
            self.assertEqual(
                str(caught.exception),
                f"--{option} '192.168.1.7/24': host bits set: write the network, 192.168.1.0/24",
            )

    def test_notANetwork(self) -> None:
        """
        Anything else is "not a network (CIDR)", for both.
        """
        for value in ["nonsense", "10.0.0.0/33", "127.1", "", "10.0.0.0/8/8"]:
            for option in OPTIONS:
                with self.assertRaises(usage.UsageError) as caught:
                    parsed(option, value)
                self.assertEqual(
                    str(caught.exception), f"--{option} {value!r}: not a network (CIDR)"
                )

    def test_mappedIsIPv4(self) -> None:
        """
        An IPv4-mapped network is its IPv4 network, so that it holds for the clients it
        names: their addresses are read as IPv4 (L{clientAllowed}).
        """
        network = parseClientNetwork("::ffff:192.0.2.0/120")
        self.assertEqual(network, ipaddress.ip_network("192.0.2.0/24"))
        self.assertTrue(clientAllowed([network], "::ffff:192.0.2.9"))
        self.assertTrue(clientAllowed([network], "192.0.2.9"))
        for option in OPTIONS:
            self.assertEqual(
                parsed(option, "::ffff:192.0.2.9"), [ipaddress.ip_network("192.0.2.9/32")]
            )
