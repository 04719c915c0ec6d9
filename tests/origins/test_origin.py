"""
The test origin itself, asked directly (no proxy): the proxy tests trust what its routes do.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.origins import WAIT, OriginProcess, runningOrigin
from tests.origins.site import VALIDATE_ETAG, pattern, patternDigest

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def origin() -> Iterator[OriginProcess]:
    with runningOrigin() as running:
        yield running


def get(
    origin: OriginProcess, path: str, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    """
    GET C{path} from the origin directly; the response and its whole body.
    """
    connection = http.client.HTTPConnection("127.0.0.1", origin.ports["http"], timeout=WAIT)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def test_pageAndSubresources(origin: OriginProcess) -> None:
    """
    Under C{/run/TOKEN/} the page links its subresources relatively; the image is a 16x16 PNG.
    """
    response, page = get(origin, "/run/t1/page.html")
    assert response.status == 200 and response.getheader("cache-control") == "no-store"
    for name in (b'href="style.css"', b'src="image.png"', b'src="script.js"'):
        assert name in page
    response, image = get(origin, "/run/t1/image.png")
    assert (response.getheader("content-type"), image[:8]) == ("image/png", b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", image[16:24]) == (16, 16)
    response, _ = get(origin, "/cacheable/t1/style.css")
    assert response.getheader("cache-control") == "public, max-age=600"


@pytest.mark.parametrize("chunked", [False, True])
def test_bytes(origin: OriginProcess, chunked: bool) -> None:
    """
    C{/bytes/N} streams the pattern, with Content-Length or chunked.
    """
    size = 3 * 65536 + 17
    response, body = get(origin, f"/bytes/{size}" + ("?chunked=1" if chunked else ""))
    assert (len(body), hashlib.sha256(body).hexdigest()) == (size, patternDigest(size))
    assert body == b"".join(pattern(size))
    assert (response.getheader("content-length") is None) == chunked


def test_dieClosesEvenWithAFullSendBuffer(origin: OriginProcess) -> None:
    """
    C{/die} announces 2N bytes, sends N (here far more than the send buffer takes at once),
    and closes: the client reads N bytes and then the end of the connection.
    """
    half = 4 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", origin.ports["http"]), timeout=WAIT) as client:
        client.sendall(f"GET /die?after={half} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while data := client.recv(1 << 20):
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"content-length: %d" % (2 * half) in head.lower()
    assert len(body) == half


def test_validators(origin: OriginProcess) -> None:
    """
    C{/validate} sends ETag and Last-Modified and answers matching conditionals with 304.
    """
    response, body = get(origin, "/validate")
    assert response.status == 200 and body.startswith(b"validated body")
    etag, modified = response.getheader("etag"), response.getheader("last-modified")
    assert etag == VALIDATE_ETAG.decode()
    assert get(origin, "/validate", {"If-None-Match": etag})[0].status == 304
    assert get(origin, "/validate", {"If-Modified-Since": modified or ""})[0].status == 304


def test_cacheVariantsAndCounts(origin: OriginProcess) -> None:
    """
    C{/cache/DIRECTIVES} sets them and counts its requests; C{/vary/H} varies on H and echoes
    it; C{/_stats} counts requests per path.
    """
    first = get(origin, "/cache/max-age=60")
    second = get(origin, "/cache/max-age=60")
    assert first[0].getheader("cache-control") == "max-age=60"
    assert (first[1], second[1]) == (
        b"cache max-age=60 request 1\n",
        b"cache max-age=60 request 2\n",
    )
    response, body = get(origin, "/vary/accept-language", {"Accept-Language": "fr"})
    assert response.getheader("vary") == "accept-language"
    assert body == b"accept-language: fr request 1\n"
    assert origin.stats()["/cache/max-age=60"] == 2


def test_echoKeepsRepeatedHeaders(origin: OriginProcess) -> None:
    """
    C{/echo} returns every header line it received, repeated ones included, in order.
    """
    connection = http.client.HTTPConnection("127.0.0.1", origin.ports["http"], timeout=WAIT)
    try:
        connection.putrequest("POST", "/echo")
        for value in ("one", "two"):
            connection.putheader("X-Twice", value)
        connection.putheader("Content-Length", "5")
        connection.endheaders(b"hello")
        received = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    assert [v for n, v in received["headers"] if n == "x-twice"] == ["one", "two"]
    assert received["bodyLength"] == 5


def test_endOfResponseLogged(origin: OriginProcess) -> None:
    """
    The origin logs when a response ends: complete, or not when the client went away first.
    """
    get(origin, "/hello/ended")
    assert origin.waitForEnd("/hello/ended")["complete"] is True
    with socket.create_connection(("127.0.0.1", origin.ports["http"]), timeout=WAIT) as client:
        client.sendall(b"GET /stall?for=ended HTTP/1.1\r\nHost: x\r\n\r\n")
        origin.waitForRequest("/stall?for=ended")
    assert origin.waitForEnd("/stall?for=ended")["complete"] is False
