"""
Headless Chromium opens a C{ws://} WebSocket through the real C{twist caplab} proxy.

Browsers tunnel C{ws://} through C{CONNECT} (not as an absolute-form upgrade), so the proxy
must allow the WebSocket port for CONNECT (C{--connect-ports}); the page comes through the
proxy as a plain request, its WebSocket through a tunnel, and only the proxy can resolve the
test host, so the echo the page shows came through it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.browsers import chromium
from tests.conftest import requireProgram
from tests.origins.proxy import ProxyUnderTest
from tests.origins.websocket import PAGE_OK, EchoServer
from tests.support import runningCaplab
from tests.tls import TEST_HOST

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_chromiumWebSocketThroughConnect(echo: EchoServer, tmp_path: Path) -> None:
    """
    With the WebSocket's port in C{--connect-ports}, Chromium loads the page and talks to
    the echo server through a CONNECT tunnel: the page shows the echo, and the access log
    has the page's request and the tunnel.
    """
    requireProgram("chromium")
    with runningCaplab(
        "--no-tcp",
        "--no-udp",
        "--resolve",
        f"{TEST_HOST}=127.0.0.1",
        "--connect-ports",
        f"443,{echo.port}",
        "--access-log",
        "-",
        services=("proxy",),
    ) as caplab:
        host, port = caplab.addresses["proxy"]
        proxy = ProxyUnderTest(host, port, caplab)
        run = chromium(
            f"http://{TEST_HOST}:{echo.port}/page",
            proxy.address,
            tmp_path,
            extra=["--virtual-time-budget=10000"],
        )
        assert f'<p id="result">{PAGE_OK}</p>' in run.stdout, run.describe()
        proxy.waitForAccess("GET", f"http://{TEST_HOST}:{echo.port}/page", 200)
        proxy.waitForAccess("CONNECT", f"{TEST_HOST}:{echo.port}", 200)
    assert len(echo.handshakes) == 1
