"""
Shared pytest configuration.

Browser and end-to-end tests need programs from Debian packages; outside CI they skip with
a reason when one is missing, in CI (C{CI=true}) they fail instead, so that a missing
install step can never pass silently.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.origins import OriginProcess, runningOrigin
from tests.origins.proxy import ProxyUnderTest, runningProxy
from tests.origins.websocket import EchoServer
from tests.tls import TestPKI, makePKI


def requireProgram(name: str) -> str:
    """
    The path of program C{name}; the test fails, saying what to install, when it is not
    installed (a skipped test would prove nothing).
    """
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install ci-packages.txt (see README.rst)")
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """
    A throw-away CA and server certificate for the test origin, one per test module.
    """
    return makePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def origin(pki: TestPKI) -> Iterator[OriginProcess]:
    """
    The local test origin (L{tests.origins}) on HTTP and HTTPS, one per test module.
    """
    with runningOrigin(pki.caCert.parent) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(
    origin: OriginProcess, pki: TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyUnderTest]:
    """
    The real C{twist caplab} proxy in front of L{origin}, trusting the test CA upstream.
    """
    with runningProxy(origin, tmp_path_factory.mktemp("proxy"), caCert=pki.caCert) as running:
        yield running


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    """
    A WebSocket origin (L{tests.origins.websocket}) on loopback, for one test.
    """
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()
