"""
Fixtures of the browser tests: a throw-away CA, the test origin (HTTP and HTTPS) and the real
C{twist caplab} proxy in front of it, one of each per test module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.origins import OriginProcess, runningOrigin
from tests.origins.proxy import ProxyUnderTest, runningProxy
from tests.tls import TestPKI, makePKI


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return makePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def origin(pki: TestPKI) -> Iterator[OriginProcess]:
    with runningOrigin(pki.caCert.parent) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(
    origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyUnderTest]:
    with runningProxy(origin, tmp_path_factory.mktemp("proxy")) as running:
        yield running
