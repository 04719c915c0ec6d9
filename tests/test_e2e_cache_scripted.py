"""
The cache end to end against origins that misbehave or say exactly what a test needs
(L{tests.origins.scripted.ScriptedOrigin}): the real C{twist caplab} proxy, raw bytes from the
origin, and what the next clients get.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from tests.origins import WAIT
from tests.origins.proxy import ProxyUnderTest
from tests.origins.scripted import OriginConnection, Script, ScriptedOrigin
from tests.support import runningCaplab

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyUnderTest]:
    with runningCaplab("--no-tcp", "--no-udp", "--access-log", "-", services=("proxy",)) as run:
        host, port = run.addresses["proxy"]
        yield ProxyUnderTest(host, port, run)


@pytest.fixture
def origin() -> Iterator[ScriptedOrigin]:
    with ScriptedOrigin() as running:
        yield running


class Response:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    @property
    def cacheStatus(self) -> str:
        return self.headers.get("Cache-Status", "")


def fetch(
    proxy: ProxyUnderTest,
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Response:
    """
    One request through the proxy, in absolute form, on a connection of its own.
    """
    connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=WAIT)
    try:
        connection.request(method, url, headers=headers or {})
        return Response(connection.getresponse())
    finally:
        connection.close()


def answer(status: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> Script:
    """
    A script that reads one request and sends this response, then closes.
    """

    def script(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.respond(status, [*headers, (b"Connection", b"close")], body)
        conn.close()

    return script


def test_cookieOf304NeverStored(proxy: ProxyUnderTest, origin: ScriptedOrigin) -> None:
    """
    A 304 that carries C{Set-Cookie} for the client that caused the revalidation: that
    client gets the cookie; the refreshed entry, served to the next client as a hit, does
    not carry it (issue 9 item 1).
    """
    url = origin.url("/session")
    origin.script(
        answer(b"200 OK", [(b"Cache-Control", b"max-age=0"), (b"ETag", b'"v1"')], b"page"),
        answer(
            b"304 Not Modified",
            [
                (b"Cache-Control", b"max-age=600"),
                (b"ETag", b'"v1"'),
                (b"Set-Cookie", b"session=alice-secret"),
                (b"Set-Cookie2", b"old=alice"),
                (b"Authentication-Info", b'nextnonce="alice"'),
            ],
        ),
    )
    first = fetch(proxy, url)
    assert (first.status, first.body) == (200, b"page")
    assert first.cacheStatus.endswith("stored")
    revalidated = fetch(proxy, url)
    assert (revalidated.status, revalidated.body) == (200, b"page")
    assert revalidated.cacheStatus == "caplab; fwd=stale; fwd-status=304"
    assert revalidated.headers["Set-Cookie"] == "session=alice-secret"
    requests = origin.waitForRequests(2)
    assert requests[1].header(b"if-none-match") == b'"v1"'
    other = fetch(proxy, url)
    assert (other.status, other.body) == (200, b"page")
    assert other.cacheStatus.startswith("caplab; hit")
    for name in ("Set-Cookie", "Set-Cookie2", "Authentication-Info"):
        assert name not in other.headers, other.headers
    assert origin.connections == 2
