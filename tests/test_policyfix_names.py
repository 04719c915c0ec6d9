"""
Host names whose trailing dot is a full stop of another script (U+3002, U+FF0E): the same
host as without it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.hooks import Verdict
from caplab.proxy.hostnames import normaliseHost, normaliseName
from tests.test_policy import policyOf


class TrailingDotTests(SynchronousTestCase):
    """
    A trailing dot is dropped after the IDNA conversion too: the ideographic and full-width
    full stops (U+3002, U+FF0E) become C{.} in it.
    """

    def test_normalised(self) -> None:
        """
        A name ending in any full stop is the name without it.
        """
        for name in ["bücher.example\u3002", "bücher.example\uff0e", "bücher.example."]:
            self.assertEqual(normaliseName(name), "xn--bcher-kva.example", name)
            self.assertEqual(normaliseHost(name), "xn--bcher-kva.example", name)
        self.assertEqual(normaliseName("Example.COM\u3002"), "example.com")

    def test_matched(self) -> None:
        """
        A host with such a dot matches the rule for the name, and a rule written with one
        matches the host without it.
        """
        policy = policyOf("bücher.example\nads.example\uff0e")
        blocked = Verdict("xn--bcher-kva.example", "block.txt:1")
        self.assertEqual(policy.check("www.bücher.example\u3002"), blocked)
        self.assertEqual(policy.check("ads.example"), Verdict("ads.example", "block.txt:2"))
