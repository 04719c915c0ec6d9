"""
Command-line options of the web proxy, mixed into L{caplab.tap.Options}.
"""

from __future__ import annotations

from typing import Any


class ProxyOptions:
    """
    The proxy's own options (where it listens is L{caplab.tap}'s business).
    """

    optParameters: list[list[Any]] = []
    optFlags: list[list[Any]] = []

    def checkProxyOptions(self) -> None:
        """
        Check the proxy options together; raise L{usage.UsageError} on a bad combination.
        """
