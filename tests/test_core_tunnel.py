"""
Tests for a CONNECT tunnel whose client half-closes while the origin connection is being
made (L{caplab.proxy.tunnel}, L{caplab.proxy.channel}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from caplab.proxy.tunnel import TunnelOpener
from tests.test_proxy_channel import Harness


class HalfClosingTransport(StringTransport):
    """
    A transport that records a half-close (C{loseWriteConnection}).
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


class Connector:
    """
    Connects when the test fires the attempt.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[Any, Deferred[Any]]] = []

    def endpoint(self, host: str, port: int) -> Any:
        attempts = self.attempts

        class Endpoint:
            def connect(self, factory: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                attempts.append((factory, d))
                return d

        return Endpoint()


class EarlyHalfCloseTests(Harness):
    def test_halfCloseDeliveredOnOpen(self) -> None:
        """
        A client that sends its first bytes and its FIN before the tunnel is open has both
        delivered, in order, once it opens; and while it opens the client is sent nothing
        (no C{100 Continue} probe before the C{200}).
        """
        connector = Connector()
        channel, transport = self.connect()
        self.factory.settings.tunnels = TunnelOpener(connector, self.clock)
        channel.dataReceived(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\nHELLO")
        channel.readConnectionLost()
        self.clock.pump([0.5] * 8)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        factory, d = connector.attempts[0]
        origin = factory.buildProtocol(None)
        originTransport = HalfClosingTransport()
        origin.makeConnection(originTransport)
        d.callback(origin)
        self.assertEqual(transport.value(), b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.assertEqual(originTransport.value(), b"HELLO")
        self.assertTrue(originTransport.writeClosed)
        self.assertFalse(originTransport.disconnecting)
        origin.dataReceived(b"reply")
        self.assertTrue(transport.value().endswith(b"reply"))
