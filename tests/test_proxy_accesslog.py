"""
Tests for L{caplab.proxy.accesslog}.
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.accesslog import AccessLog


class AccessLogTests(SynchronousTestCase):
    """
    Combined Log Format lines, buffered briefly.
    """

    def test_combinedFormat(self) -> None:
        """
        A line has the client, user, time, request line, status, size, referer and agent,
        quoted where needed, then the cache status if there is one; it reaches the file
        within the flush delay.
        """
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "access.log")
        clock = Clock()
        clock.advance(1795507200)  # 2026-11-24T08:00:00Z
        log = AccessLog(path, clock, flushDelay=0.2)
        log.open()
        self.addCleanup(log.close)
        log.record("::1", "al", b"GET", b'http://h/"x', b"HTTP/1.1", 200, 12, None, b"curl/8")
        log.record("1.2.3.4", None, b"CONNECT", b"h:443", b"HTTP/1.1", 200, 5, b"r", None, "hit")
        with open(path) as f:
            self.assertEqual(f.read(), "")
        clock.advance(0.2)
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual(
            lines,
            [
                '::1 - al [24/Nov/2026:08:00:00 +0000] "GET http://h/\\"x HTTP/1.1" 200 12 "-" '
                '"curl/8"',
                '1.2.3.4 - - [24/Nov/2026:08:00:00 +0000] "CONNECT h:443 HTTP/1.1" 200 5 "r" "-" '
                '"hit"',
            ],
        )
