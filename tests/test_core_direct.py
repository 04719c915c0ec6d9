"""
Tests for the exchange told directly by the forwarder (L{Forwarder.fetchInto}, no Deferred):
the same answers as through a Deferred, for a response, an origin that fails, a connection
that cannot be made, and a client that goes away while its fetch is under way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.python.failure import Failure

from caplab.proxy.exchange import Exchange
from caplab.proxy.forward import Forwarder
from tests.test_core_cycles import REQUEST, RESPONSE
from tests.test_proxy_channel import Harness
from tests.test_proxy_forward import FakeConnector


def _recording(method: Callable[[Exchange], None], into: list[Exchange]) -> Any:
    def recorded(exchange: Exchange) -> None:
        into.append(exchange)
        method(exchange)

    return recorded


class DirectFetchTests(Harness):
    """
    A proxy whose fetcher is the forwarder itself (no cache, no parent).
    """

    def setUp(self) -> None:
        super().setUp()
        self.connector = FakeConnector()
        self.fetcher = Forwarder(self.clock, self.connector, timeout=30)  # type: ignore[assignment]
        self.channel, self.transport = self.connect()

    def test_told(self) -> None:
        """
        The response reaches the client, and the fetch is told without a Deferred.
        """
        called: list[str] = []
        self.patch(
            Forwarder,
            "fetch",
            lambda *a: called.append("fetch"),  # never used when fetchInto is there
        )
        self.channel.dataReceived(REQUEST)
        origin = self.connector.protocols[0]
        self.assertTrue(origin.transport.value().startswith(b"GET /a HTTP/1.1\r\n"))
        origin.dataReceived(RESPONSE)
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(self.transport.value().endswith(b"\r\n\r\nhello"))
        self.assertEqual(called, [])

    def test_originCloses(self) -> None:
        """
        An origin that closes without a response is a 502 for the client.
        """
        self.channel.dataReceived(REQUEST)
        self.connector.protocols[0].connectionLost(Failure(ConnectionLost()))
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 502 "), self.transport.value())

    def test_connectRefused(self) -> None:
        """
        An origin that cannot be reached is a 502 that says so; a fetch that failed at once
        leaves the exchange nothing to cancel.
        """
        self.connector.failure = Failure(ConnectionRefusedError())
        exchanges: list[Exchange] = []
        self.patch(Exchange, "start", _recording(Exchange.start, exchanges))
        self.channel.dataReceived(REQUEST)
        reply = self.transport.value()
        self.assertTrue(reply.startswith(b"HTTP/1.1 502 "), reply)
        self.assertIn(b"refused", reply)
        [exchange] = exchanges
        self.assertIsNone(exchange._fetching)

    def test_clientGone(self) -> None:
        """
        A client that goes away while its fetch waits: the origin connection is aborted,
        the client is told nothing, and nothing is logged as an error.
        """
        self.channel.dataReceived(REQUEST)
        origin = self.connector.protocols[0]
        self.channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(origin.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")
        origin.dataReceived(RESPONSE)  # too late: dropped
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])
