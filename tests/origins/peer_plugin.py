"""
A proxy.py plugin that resolves the test host name to loopback, as caplab's C{--resolve} does.

Only used when C{CAPLAB_TEST_PEER_PROXY} is set (see L{tests.origins.proxy}), to check the
real-client harness against a proxy that caplab's engineers did not write.
"""

from __future__ import annotations

from typing import Any

from proxy.http.proxy import HttpProxyBasePlugin

from tests.tls import TEST_HOST


class ResolveTestHost(HttpProxyBasePlugin):
    """
    C{origin.caplab.test} -> 127.0.0.1; every other name through the system resolver.
    """

    def resolve_dns(self, host: str, port: int) -> tuple[Any, Any]:
        if host == TEST_HOST:
            return "127.0.0.1", None
        return None, None
