"""
Tests that a proxied request leaves no reference cycle behind: its exchange, answer, transfer
and response are freed as soon as the request is over, by reference counting, not later by
the garbage collector (whose passes over them cost about 5 % of a small request's time).
"""

from __future__ import annotations

import gc
from typing import Any

from caplab.proxy.answer import Answer
from caplab.proxy.exchange import Exchange
from caplab.proxy.forward import Forwarder
from caplab.proxy.hooks import UpstreamRequest, UpstreamResponse
from caplab.proxy.origin import Transfer
from tests.test_proxy_channel import Harness
from tests.test_proxy_forward import FakeConnector

#: The objects of one request, which must never be left in a cycle.
PER_REQUEST = (Exchange, Answer, Transfer, UpstreamRequest, UpstreamResponse)

REQUEST = b"GET http://origin.test:8000/a HTTP/1.1\r\nHost: origin.test:8000\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
    b"Content-Type: text/plain\r\n\r\nhello"
)


class CycleTests(Harness):
    """
    Requests through the real upstream leg (L{Forwarder}, L{OriginConnection}) on memory
    transports, with the garbage collector off: whatever a collection then finds was only
    reachable from itself.
    """

    def _leftInCycles(self, exchanges: int) -> list[str]:
        connector = FakeConnector()
        self.fetcher = Forwarder(self.clock, connector)  # type: ignore[assignment]
        channel, transport = self.connect()
        gc.collect()
        gc.disable()
        try:
            for _ in range(exchanges):
                transport.clear()
                channel.dataReceived(REQUEST)
                origin = connector.protocols[-1]
                origin.transport.clear()
                origin.dataReceived(RESPONSE)
                self.assertTrue(transport.value().endswith(b"\r\n\r\nhello"), transport.value())
            self.assertEqual(len(connector.protocols), 1)  # one pooled connection, reused
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            return [type(o).__name__ for o in gc.garbage if isinstance(o, PER_REQUEST)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()

    def test_noCycles(self) -> None:
        """
        Three requests on one client connection, relayed over one pooled origin
        connection, leave nothing for the collector.
        """
        self.assertEqual(self._leftInCycles(3), [])

    def test_detectsCycles(self) -> None:
        """
        The check finds a cycle when there is one: an answer made to hold itself.
        """
        original = Answer.__init__

        def holdingItself(answer: Answer, *args: Any) -> None:
            original(answer, *args)
            answer.itself = answer  # type: ignore[attr-defined]

        self.patch(Answer, "__init__", holdingItself)
        left = self._leftInCycles(2)
        self.assertEqual(left.count("Answer"), 2)
