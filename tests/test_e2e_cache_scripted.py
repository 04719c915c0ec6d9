"""
The cache end to end against origins that misbehave or say exactly what a test needs
(L{tests.origins.scripted.ScriptedOrigin}): the real C{twist caplab} proxy, raw bytes from the
origin, and what the next clients get.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from tests.clients import rawExchange
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


def test_interimNeverStored(proxy: ProxyUnderTest, origin: ScriptedOrigin) -> None:
    """
    A C{103 Early Hints} before a cacheable 200: the final response is stored and served as
    the hit, the interim response never is (issue 12 item 2).
    """
    url = origin.url("/hinted")

    def hinted(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        conn.respond(
            b"200 OK",
            [(b"Cache-Control", b"max-age=600"), (b"Connection", b"close")],
            b"final body",
        )
        conn.close()

    origin.script(hinted)
    # Python's http.client takes a 103 for the final response: read the first one raw.
    raw = rawExchange(
        (proxy.host, proxy.port),
        f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    interim, _, final = raw.partition(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 103 Early Hints\r\n"), raw
    assert final.startswith(b"HTTP/1.1 200 OK\r\n") and final.endswith(b"\r\n\r\nfinal body")
    assert b"stored" in final.split(b"Cache-Status: ", 1)[1].split(b"\r\n", 1)[0]
    second = fetch(proxy, url)
    assert (second.status, second.body) == (200, b"final body")
    assert second.cacheStatus.startswith("caplab; hit")
    assert "Link" not in second.headers
    assert origin.connections == 1


def test_staleWhenOriginUnreachable(proxy: ProxyUnderTest, origin: ScriptedOrigin) -> None:
    """
    A stale stored response is served when the origin resets the revalidation without an
    answer, and C{Cache-Status} says why; with C{must-revalidate} the client gets the error
    (issue 12 item 3).
    """
    url = origin.url("/flaky")
    pinned = origin.url("/pinned")

    def reset(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.reset()

    origin.script(
        answer(b"200 OK", [(b"Cache-Control", b"max-age=0"), (b"ETag", b'"v1"')], b"old page"),
        reset,
        answer(
            b"200 OK",
            [(b"Cache-Control", b"max-age=0, must-revalidate"), (b"ETag", b'"v1"')],
            b"pinned page",
        ),
        reset,
    )
    assert fetch(proxy, url).body == b"old page"
    stale = fetch(proxy, url)
    assert (stale.status, stale.body) == (200, b"old page")
    assert stale.cacheStatus.startswith("caplab; fwd=stale; ttl=")
    assert stale.cacheStatus.endswith("detail=origin-unreachable")
    assert fetch(proxy, pinned).body == b"pinned page"
    refused = fetch(proxy, pinned)
    assert refused.status == 502
    assert refused.body != b"pinned page"


def test_strictExpires(proxy: ProxyUnderTest, origin: ScriptedOrigin) -> None:
    """
    An C{Expires} in a zone other than GMT is not a date: the response is stale at once and
    the next request revalidates (issue 12 item 1).
    """
    url = origin.url("/expires-utc")
    origin.script(
        answer(
            b"200 OK",
            [(b"Expires", b"Thu, 01 Jan 2099 00:00:00 UTC"), (b"ETag", b'"v1"')],
            b"dated",
        ),
        answer(b"304 Not Modified", [(b"ETag", b'"v1"')]),
    )
    fetch(proxy, url)
    again = fetch(proxy, url)
    assert again.body == b"dated"
    assert again.cacheStatus == "caplab; fwd=stale; fwd-status=304"
    assert origin.waitForRequests(2)[1].header(b"if-none-match") == b'"v1"'


def test_notModifiedUpdatesContentType(proxy: ProxyUnderTest, origin: ScriptedOrigin) -> None:
    """
    A 304 with another C{Content-Type} updates the stored response's (issue 12 item 5).
    """
    url = origin.url("/retyped")
    origin.script(
        answer(
            b"200 OK",
            [(b"Cache-Control", b"max-age=0"), (b"ETag", b'"v1"'), (b"Content-Type", b"text/a")],
            b"body",
        ),
        answer(
            b"304 Not Modified",
            [(b"Cache-Control", b"max-age=600"), (b"ETag", b'"v1"'), (b"Content-Type", b"text/b")],
        ),
    )
    fetch(proxy, url)
    assert fetch(proxy, url).headers["Content-Type"] == "text/b"
    hit = fetch(proxy, url)
    assert hit.cacheStatus.startswith("caplab; hit")
    assert (hit.headers["Content-Type"], hit.body) == ("text/b", b"body")


def test_headInvalidates(proxy: ProxyUnderTest, origin: ScriptedOrigin) -> None:
    """
    A HEAD response with another validator removes the stored GET response; one with the
    same refreshes it (issue 12 item 5).
    """
    url = origin.url("/headed")

    def headAnswer(etag: bytes) -> Script:
        def script(conn: OriginConnection) -> None:
            request = conn.readRequest()
            assert request.method == b"HEAD"
            conn.send(
                b"HTTP/1.1 200 OK\r\nETag: " + etag + b"\r\nCache-Control: max-age=600\r\n"
                b"Content-Length: 4\r\nConnection: close\r\n\r\n"
            )
            conn.close()

        return script

    origin.script(
        answer(b"200 OK", [(b"Cache-Control", b"max-age=0"), (b"ETag", b'"v1"')], b"one!"),
        headAnswer(b'"v1"'),
        headAnswer(b'"v2"'),
        answer(b"200 OK", [(b"Cache-Control", b"max-age=600"), (b"ETag", b'"v2"')], b"two!"),
    )
    fetch(proxy, url)
    assert fetch(proxy, url, method="HEAD").status == 200
    refreshed = fetch(proxy, url)
    assert (refreshed.body, refreshed.cacheStatus[:11]) == (b"one!", "caplab; hit")
    # stale again only by a client's max-age=0: the HEAD goes to the origin
    assert fetch(proxy, url, method="HEAD", headers={"Cache-Control": "max-age=0"}).status == 200
    replaced = fetch(proxy, url)
    assert replaced.body == b"two!"
    assert replaced.cacheStatus == "caplab; fwd=miss; stored"
    assert [r.method for r in origin.waitForRequests(4)] == [b"GET", b"HEAD", b"HEAD", b"GET"]


def test_partsStoredServedAndCombined(proxy: ProxyUnderTest, origin: ScriptedOrigin) -> None:
    """
    206 responses to single-range requests are stored; a range inside one is served from
    it; once the parts hold the whole representation a plain GET is a hit (issue 12
    item 4).
    """
    url = origin.url("/video")
    body = bytes(range(256)) * 40  # 10240 bytes

    def part(first: int, last: int) -> Script:
        def script(conn: OriginConnection) -> None:
            request = conn.readRequest()
            assert request.header(b"range") == b"bytes=%d-%d" % (first, last)
            conn.respond(
                b"206 Partial Content",
                [
                    (b"Cache-Control", b"max-age=600"),
                    (b"ETag", b'"video-1"'),
                    (b"Content-Range", b"bytes %d-%d/%d" % (first, last, len(body))),
                    (b"Connection", b"close"),
                ],
                body[first : last + 1],
            )
            conn.close()

        return script

    origin.script(part(0, 5999), part(6000, 10239))
    first = fetch(proxy, url, headers={"Range": "bytes=0-5999"})
    assert (first.status, first.body) == (206, body[:6000])
    inside = fetch(proxy, url, headers={"Range": "bytes=100-199"})
    assert (inside.status, inside.body) == (206, body[100:200])
    assert inside.headers["Content-Range"] == "bytes 100-199/10240"
    assert inside.cacheStatus.startswith("caplab; hit")
    second = fetch(proxy, url, headers={"Range": "bytes=6000-10239"})
    assert (second.status, second.body) == (206, body[6000:])
    whole = fetch(proxy, url)
    assert (whole.status, whole.body) == (200, body)
    assert whole.cacheStatus.startswith("caplab; hit")
    suffix = fetch(proxy, url, headers={"Range": "bytes=-40"})
    assert (suffix.status, suffix.body) == (206, body[-40:])
    assert origin.connections == 2


def test_clientPreconditions(proxy: ProxyUnderTest, origin: ScriptedOrigin) -> None:
    """
    C{If-None-Match: *} and a list with the weak form of the stored tag are answered 304 by
    the cache, with the fields a 304 carries; C{If-Modified-Since} counts only without
    C{If-None-Match}; C{If-Match} with another tag is 412 (issue 12 item 6).
    """
    url = origin.url("/conditional")
    modified = b"Mon, 01 Jan 2024 00:00:00 GMT"
    origin.script(
        answer(
            b"200 OK",
            [
                (b"Cache-Control", b"max-age=600"),
                (b"ETag", b'"v1"'),
                (b"Last-Modified", modified),
                (b"Expires", b"Thu, 01 Jan 2099 00:00:00 GMT"),
            ],
            b"body",
        )
    )
    fetch(proxy, url)
    star = fetch(proxy, url, headers={"If-None-Match": "*"})
    assert (star.status, star.body) == (304, b"")
    assert star.headers["ETag"] == '"v1"'
    for name in ("Date", "Cache-Control", "Expires"):
        assert name in star.headers, name
    assert fetch(proxy, url, headers={"If-None-Match": '"x", W/"v1"'}).status == 304
    since = fetch(proxy, url, headers={"If-Modified-Since": modified.decode()})
    assert since.status == 304
    both = fetch(
        proxy, url, headers={"If-None-Match": '"x"', "If-Modified-Since": modified.decode()}
    )
    assert (both.status, both.body) == (200, b"body")
    assert fetch(proxy, url, headers={"If-Match": '"x"'}).status == 412
    assert origin.connections == 1
