"""
Tests for the fields a header rule may not name: the proxy's hop-by-hop fields
(L{caplab.proxy.headers.HOP_BY_HOP}, one list for both), the framing and C{Host}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.headerrules import PROTECTED, parseHeaderRule
from caplab.proxy.filters.hosts import FilterConfigError
from caplab.proxy.headers import HOP_BY_HOP


class ProtectedTests(SynchronousTestCase):
    def test_hopByHop(self) -> None:
        """
        Every field the proxy treats as hop-by-hop is protected, as it writes: a rule
        naming one, in any case and with any action, is refused (C{Proxy-Authentication-
        Info}, the next client's, was not).
        """
        self.assertLessEqual(HOP_BY_HOP, PROTECTED)
        for name in sorted(PROTECTED):
            for rule in (
                f"* remove {name.decode()}",
                f"* set {name.decode().title()}: x",
                f"example.com add {name.decode().upper()}: x",
            ):
                with self.assertRaises(FilterConfigError, msg=rule) as raised:
                    parseHeaderRule(rule)
                self.assertIn("rules may not change it", str(raised.exception))

    def test_framingAndHost(self) -> None:
        self.assertLessEqual({b"content-length", b"content-encoding", b"host"}, PROTECTED)
        self.assertIn(b"proxy-authentication-info", PROTECTED)
