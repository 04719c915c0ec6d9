"""
Tests for the address check of L{caplab.proxy.connect.EndpointConnector}: rules hold for the
address actually connected to, after resolution, with fake resolvers on a memory reactor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from caplab.proxy import connect
from caplab.proxy.connect import CheckingResolver, EndpointConnector, connectQuietly
from caplab.proxy.hooks import Target, UpstreamError, Verdict
from tests.test_policy import policyOf


@implementer(IReactorPluggableNameResolver)
class ResolvingReactor(MemoryReactorClock):
    """
    A memory reactor whose name resolver a test installs (the oldest Twisted caplab admits,
    24.7, has no C{installNameResolver} on its memory reactor).
    """

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        old = getattr(self, "nameResolver", None)
        self.nameResolver = resolver
        return old  # type: ignore[return-value]


@implementer(IHostResolution)
@dataclass
class _Resolution:
    name: str

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class FakeResolver:
    """
    Resolves names to the addresses given, at once; records the names asked for.
    """

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type[IAddress]] | None = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.asked.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        for address in self.answers.get(hostName, []):
            kind = IPv6Address if ":" in address else IPv4Address
            resolutionReceiver.addressResolved(kind("TCP", address, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


BLOCK = "127.0.0.0/8\n10.0.0.0/8\n"
ALLOW = "10.1.2.3\n"


class ConnectorPolicyTests(SynchronousTestCase):
    """
    L{EndpointConnector} with a host policy.
    """

    def setUp(self) -> None:
        self.reactor = ResolvingReactor()
        self.resolver = FakeResolver(
            {
                "loopback.example": ["127.0.0.1"],
                "mapped.example": ["::ffff:127.0.0.1"],
                "mixed.example": ["127.0.0.1", "192.0.2.1", "10.9.9.9"],
                "allowed.example": ["10.1.2.3"],
                "zero.example": ["0.0.0.0"],
                "zero6.example": ["::"],
                "public.example": ["192.0.2.1", "2001:db8::1"],
            }
        )
        self.connector = EndpointConnector(
            self.reactor,
            resolve={"override.example": "127.0.0.2", "parent.example": "127.0.0.3"},
            hostPolicy=policyOf(BLOCK, ALLOW),
            resolver=self.resolver,
            trusted={("parent.example", 80)},
        )

    def connect(self, host: str, scheme: str = "http") -> Deferred[Any]:
        d = self.connector.connect(Target(scheme, host, 80, b"/"), Protocol())
        self.reactor.advance(1)  # every address HostnameEndpoint will try
        return d

    def attempted(self) -> list[str]:
        return [client[0] for client in self.reactor.tcpClients]

    def assertBlocked(self, d: Deferred[Any], detail: str) -> None:
        failure = self.failureResultOf(d, UpstreamError)
        error = failure.value
        assert isinstance(error, UpstreamError)
        self.assertEqual((error.code, error.title), (403, "Forbidden"))
        self.assertEqual(error.detail, detail)

    def test_resolvedToBlocked(self) -> None:
        """
        A name that resolves only to blocked addresses is a 403 naming the address and the
        rule, and nothing is connected to.
        """
        self.assertBlocked(
            self.connect("loopback.example"),
            "access to loopback.example is blocked: it is at 127.0.0.1, which the rule "
            "'127.0.0.0/8' (block.txt:1) blocks",
        )
        self.assertEqual(self.attempted(), [])

    def test_ipv4MappedResolution(self) -> None:
        """
        An IPv4-mapped IPv6 address a name resolves to is checked as its IPv4 address.
        """
        self.assertBlocked(
            self.connect("mapped.example"),
            "access to mapped.example is blocked: it is at 127.0.0.1, which the rule "
            "'127.0.0.0/8' (block.txt:1) blocks",
        )
        self.assertEqual(self.attempted(), [])

    def test_onlyPermittedAddressesTried(self) -> None:
        """
        Of a name's addresses, only those the rules let through are connected to.
        """
        d = self.connect("mixed.example")
        self.assertEqual(self.attempted(), ["192.0.2.1"])
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        protocol.makeConnection(StringTransport())
        self.assertIsInstance(self.successResultOf(d), Protocol)

    def test_permittedAddressFails(self) -> None:
        """
        When the addresses left all fail, the block (the reason the others were not tried)
        is what the client is told.
        """
        d = self.connect("mixed.example")
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        connector = self.reactor.connectors[0]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.assertBlocked(
            d,
            "access to mixed.example is blocked: it is at 127.0.0.1, which the rule "
            "'127.0.0.0/8' (block.txt:1) blocks",
        )

    def test_addressAllowRule(self) -> None:
        """
        An allow rule for an address wins over the network block rule holding it.
        """
        self.connect("allowed.example")
        self.assertEqual(self.attempted(), ["10.1.2.3"])

    def test_publicUnaffected(self) -> None:
        """
        Addresses no rule names are connected to as before, IPv6 included.
        """
        self.connect("public.example")
        self.assertEqual(sorted(self.attempted()), ["192.0.2.1", "2001:db8::1"])

    def test_literalAddresses(self) -> None:
        """
        An address in the request is checked without resolving; IPv6 too.
        """
        self.assertBlocked(
            self.connect("127.0.0.1"),
            "access to 127.0.0.1 is blocked by the rule '127.0.0.0/8' (block.txt:1)",
        )
        self.connect("10.1.2.3")
        self.connect("2001:db8::1")
        self.assertEqual(self.resolver.asked, [])
        self.assertEqual(self.attempted(), ["10.1.2.3", "2001:db8::1"])

    def test_unspecifiedIsLoopback(self) -> None:
        """
        An unspecified address (which reaches the proxy's own machine) is refused by the
        loopback rules, written in the request or resolved, and the refusal says why.
        """
        why = "0.0.0.0 reaches this machine, so the rules for 127.0.0.1 hold for it"
        self.assertBlocked(
            self.connect("0.0.0.0"),
            f"access to 0.0.0.0 is blocked by the rule '127.0.0.0/8' (block.txt:1; {why})",
        )
        self.assertBlocked(
            self.connect("zero.example"),
            "access to zero.example is blocked: it is at 0.0.0.0, which the rule "
            f"'127.0.0.0/8' (block.txt:1; {why}) blocks",
        )
        connector = EndpointConnector(
            self.reactor, hostPolicy=policyOf("::1\n"), resolver=self.resolver
        )
        for host in ["::", "zero6.example"]:
            d = connector.connect(Target("http", host, 80, b"/"), Protocol())
            self.reactor.advance(1)
            self.assertEqual(self.failureResultOf(d, UpstreamError).value.code, 403, host)
        self.assertEqual(self.attempted(), [])

    def test_resolveOverride(self) -> None:
        """
        A C{--resolve} override is checked like a resolved address.
        """
        self.assertBlocked(
            self.connect("override.example"),
            "access to override.example is blocked: it is at 127.0.0.2, which the rule "
            "'127.0.0.0/8' (block.txt:1) blocks",
        )
        self.assertEqual(self.resolver.asked, [])

    def test_tls(self) -> None:
        """
        An C{https} target's connection is refused the same way, before any TLS.
        """
        self.assertBlocked(
            self.connect("loopback.example", "https"),
            "access to loopback.example is blocked: it is at 127.0.0.1, which the rule "
            "'127.0.0.0/8' (block.txt:1) blocks",
        )

    def test_tunnelEndpoint(self) -> None:
        """
        The endpoint a CONNECT tunnel uses is checked too.
        """
        d = connectQuietly(self.connector.endpoint("mapped.example", 443), Protocol())
        self.assertBlocked(
            d,
            "access to mapped.example is blocked: it is at 127.0.0.1, which the rule "
            "'127.0.0.0/8' (block.txt:1) blocks",
        )

    def test_trustedParent(self) -> None:
        """
        The parent proxy (a trusted host and port) is connected to wherever it is; its host
        on another port is an origin like any other, held to the address rules.
        """
        self.connect("parent.example")
        self.assertEqual(self.attempted(), ["127.0.0.3"])
        d = self.connector.connect(Target("http", "parent.example", 81, b"/"), Protocol())
        self.reactor.advance(1)
        failure = self.failureResultOf(d, UpstreamError)
        self.assertEqual(failure.value.code, 403)
        self.assertEqual(self.attempted(), ["127.0.0.3"])

    def test_cancelledNotBlocked(self) -> None:
        """
        Cancelling an attempt gives the cancellation, not a 403.
        """
        d = self.connector.connect(Target("http", "mixed.example", 80, b"/"), Protocol())
        d.cancel()
        self.assertIsNone(self.failureResultOf(d).check(UpstreamError))

    def test_noPolicy(self) -> None:
        """
        Without a host policy every address is connected to, through the reactor's own
        resolver.
        """
        connector = EndpointConnector(self.reactor)
        self.reactor.installNameResolver(self.resolver)
        connector.connect(Target("http", "loopback.example", 80, b"/"), Protocol())
        self.reactor.advance(1)
        self.assertEqual(self.attempted(), ["127.0.0.1"])


class TLSOptionsTests(SynchronousTestCase):
    """
    L{EndpointConnector.tlsOptions}: one set of TLS options per host, for a while.
    """

    def setUp(self) -> None:
        self.built: list[str] = []

        def building(host: str, trustRoot: Any = None) -> object:
            self.built.append(host)
            return object()

        self.patch(connect.ssl, "optionsForClientTLS", building)
        reactor = ResolvingReactor()
        reactor.installNameResolver(FakeResolver({}))
        self.connector = EndpointConnector(reactor)

    def test_reused(self) -> None:
        """
        A host's options are made once and used for each of its connections.
        """
        first = self.connector.tlsOptions("a.example")
        self.assertIs(self.connector.tlsOptions("a.example"), first)
        self.connector.endpoint("a.example", 443, tls=True)
        self.assertEqual(self.built, ["a.example"])

    def test_bounded(self) -> None:
        """
        However many hosts are reached, at most L{connect.TLS_OPTIONS_KEPT} hosts' options
        are kept.
        """
        for number in range(3 * connect.TLS_OPTIONS_KEPT):
            self.connector.endpoint(f"host{number}.example", 443, tls=True)
            self.assertLessEqual(len(self.connector._tlsOptions), connect.TLS_OPTIONS_KEPT)
        self.assertEqual(len(self.built), 3 * connect.TLS_OPTIONS_KEPT)


class CheckingResolverTests(SynchronousTestCase):
    """
    L{CheckingResolver} on its own.
    """

    def test_remembersFirstBlocked(self) -> None:
        """
        It passes on permitted addresses only and remembers the first it dropped.
        """
        resolver = CheckingResolver(
            FakeResolver({"x.example": ["10.0.0.1", "192.0.2.1", "127.0.0.1"]}),
            policyOf(BLOCK),
        )
        got: list[str] = []

        @implementer(IResolutionReceiver)
        class Receiver:
            def resolutionBegan(self, resolution: IHostResolution) -> None:
                pass

            def addressResolved(self, address: IAddress) -> None:
                got.append(address.host)  # type: ignore[attr-defined]

            def resolutionComplete(self) -> None:
                got.append("done")

        resolver.resolveHostName(Receiver(), "x.example", 80)
        self.assertEqual(got, ["192.0.2.1", "done"])
        self.assertEqual(resolver.blocked, ("10.0.0.1", Verdict("10.0.0.0/8", "block.txt:2")))


class ParseResolveTests(SynchronousTestCase):
    """
    C{--resolve HOST=ADDRESS} takes the address in any spelling, kept canonical.
    """

    def test_canonical(self) -> None:
        from caplab.proxy.connect import parseResolve

        self.assertEqual(parseResolve("Test.Example=0x7f000001"), ("test.example", "127.0.0.1"))
        self.assertEqual(parseResolve("a.example=[::ffff:10.0.0.1]"), ("a.example", "10.0.0.1"))
        self.assertEqual(parseResolve("a.example=[2001:DB8::1]"), ("a.example", "2001:db8::1"))
        for bad in ["a.example", "=1.2.3.4", "a.example=name.example"]:
            self.assertRaises(ValueError, parseResolve, bad)
