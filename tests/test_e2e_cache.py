"""
The cache end to end: the real C{twist caplab} proxy in front of the local test origin
(L{tests.origins}), which counts its requests, so a test sees whether a response really came
from the cache.

Each test uses paths of its own (C{/run/TOKEN/...}), so the tests share one proxy and one
origin and do not see each other's entries.
"""

from __future__ import annotations

import http.client
import json
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import requireProgram
from tests.origins import WAIT, OriginProcess, runningOrigin
from tests.origins.proxy import ProxyUnderTest, runningProxy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def origin() -> Iterator[OriginProcess]:
    with runningOrigin() as running:
        yield running


@pytest.fixture(scope="module")
def proxy(
    origin: OriginProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyUnderTest]:
    with runningProxy(origin, tmp_path_factory.mktemp("proxy")) as running:
        yield running


def writeEntryFile(path: str, record: Any, body: bytes = b"") -> None:
    """
    A file in the disk cache's format (blocks of 64 KiB with a CRC-32 each, the JSON
    record, a trailer with the record's length and CRC-32) whatever C{record} holds.
    """
    data = record if isinstance(record, bytes) else json.dumps(record).encode()
    block = 65536
    with open(path, "wb") as f:
        for i in range(0, len(body), block):
            piece = body[i : i + block]
            f.write(struct.pack(">I", len(piece)) + piece + struct.pack(">I", zlib.crc32(piece)))
        f.write(data)
        f.write(struct.pack(">II8s", len(data), zlib.crc32(data), b"CAPLABC1"))


def goodRecord(**changes: Any) -> dict[str, Any]:
    """
    A disk cache record as caplab writes it, with C{changes}.
    """
    record: dict[str, Any] = {
        "uri": "http://example.com/good",
        "varyNames": [],
        "variant": [],
        "code": 200,
        "phrase": "OK",
        "headers": [["Cache-Control", "max-age=60"]],
        "requestTime": 1.0,
        "responseTime": 2.0,
        "bodyLength": 4,
    }
    record.update(changes)
    return record


def unique(route: str) -> str:
    """
    A path for C{route} that no other test uses.
    """
    return f"/run/{uuid.uuid4().hex[:12]}/{route}"


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def cacheStatus(self) -> str:
        return self.headers.get("Cache-Status", "")


def fetch(
    proxy: ProxyUnderTest,
    origin: OriginProcess,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Response:
    """
    One request through the proxy, in absolute form, on a connection of its own.
    """
    connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=WAIT)
    try:
        connection.request(method, origin.url(path), body=body, headers=headers or {})
        response = connection.getresponse()
        return Response(response.status, response.headers, response.read())
    finally:
        connection.close()


def originRequests(origin: OriginProcess, path: str, count: int) -> list[dict[str, object]]:
    """
    The origin's log of the requests for C{path}, once it holds C{count} of them (the log
    is another process's output, read by a thread: it may lag behind the responses).
    """
    origin.waitForCount(path, count)
    return [r for r in origin.requests() if r["path"] == path]


def header(request: dict[str, object], name: str) -> str | None:
    for key, value in request["headers"]:  # type: ignore[attr-defined]
        if key == name:
            return str(value)
    return None


def test_hitSkipsOrigin(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    The second GET of a fresh response is served by the cache: the origin is asked once,
    C{Cache-Status} says miss then hit, and the access log records both.
    """
    path = unique("cache/max-age=60")
    first = fetch(proxy, origin, path)
    second = fetch(proxy, origin, path)
    assert first.body == second.body
    assert first.body.endswith(b"request 1\n")
    assert first.cacheStatus == "caplab; fwd=miss; stored"
    assert second.cacheStatus.startswith("caplab; hit")
    assert int(second.headers["Age"]) >= 0
    assert origin.stats()[path] == 1
    line = proxy.waitForAccess("GET", origin.url(path), 200)
    assert line.endswith('"caplab; fwd=miss; stored"')
    deadline = time.monotonic() + WAIT
    while not any(
        origin.url(path) in line and '"caplab; hit; ttl=' in line for line in proxy.accessLines()
    ):
        assert time.monotonic() < deadline, "no access-log line for the hit"
        time.sleep(0.02)  # the log is another process's file: polled, bounded


def test_head(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    HEAD is answered from a stored GET.
    """
    path = unique("cache/max-age=60")
    body = fetch(proxy, origin, path).body
    head = fetch(proxy, origin, path, method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(body))
    assert head.cacheStatus.startswith("caplab; hit")
    assert origin.stats()[path] == 1


def test_revalidation(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    A stale response is revalidated with the stored validators; the origin's 304 lets
    the cache answer with the stored body.
    """
    path = unique("validate")
    first = fetch(proxy, origin, path)
    second = fetch(proxy, origin, path)
    assert first.body == second.body == b"validated body, request 1\n"
    assert second.cacheStatus == "caplab; fwd=stale; fwd-status=304"
    requests = originRequests(origin, path, 2)
    assert len(requests) == 2
    assert header(requests[0], "if-none-match") is None
    assert header(requests[1], "if-none-match") == '"caplab-v1"'
    assert header(requests[1], "if-modified-since") == first.headers["Last-Modified"]


def test_clientConditional(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    A client's own conditional request is answered 304 when the stored response matches.
    """
    path = unique("validate")
    fetch(proxy, origin, path)
    again = fetch(proxy, origin, path, headers={"If-None-Match": '"caplab-v1"'})
    assert again.status == 304
    assert again.body == b""


@pytest.mark.parametrize("directives", ["private,max-age=60", "no-store", "max-age=0"])
def test_notShared(proxy: ProxyUnderTest, origin: OriginProcess, directives: str) -> None:
    """
    C{private}, C{no-store} and stale-at-once responses never reach another client: every
    request goes to the origin.
    """
    path = unique(f"cache/{directives}")
    bodies = [fetch(proxy, origin, path).body for _ in range(2)]
    assert bodies[0].endswith(b"request 1\n")
    assert bodies[1].endswith(b"request 2\n")
    assert origin.stats()[path] == 2


def test_vary(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    Variants are stored side by side and served to the matching requests only.
    """
    path = unique("vary/Accept-Language")
    english = fetch(proxy, origin, path, headers={"Accept-Language": "en"})
    french = fetch(proxy, origin, path, headers={"Accept-Language": "fr"})
    assert b"en request 1" in english.body and b"fr request 2" in french.body
    assert fetch(proxy, origin, path, headers={"Accept-Language": "en"}).body == english.body
    assert fetch(proxy, origin, path, headers={"Accept-Language": "fr"}).body == french.body
    assert origin.stats()[path] == 2


def test_postInvalidates(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    A successful POST to a URI removes its stored response.
    """
    path = unique("cache/max-age=60")
    fetch(proxy, origin, path)
    fetch(proxy, origin, path, method="POST", body=b"change")
    after = fetch(proxy, origin, path)
    assert after.body.endswith(b"request 3\n")
    assert after.cacheStatus == "caplab; fwd=miss; stored"


def test_curlMaxAgeZero(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    C{curl -x} with C{Cache-Control: max-age=0} makes the cache ask the origin again, and
    the fresh answer replaces the stored one.
    """
    requireProgram("curl")
    url = origin.url(unique("cache/max-age=60"))

    def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["curl", "-sS", "--max-time", str(WAIT), "-x", f"http://{proxy.address}", *args, url],
            capture_output=True,
            timeout=WAIT + 5,
            check=True,
        )

    assert curl().stdout.endswith(b"request 1\n")
    assert curl().stdout.endswith(b"request 1\n")
    reload = curl("-H", "Cache-Control: max-age=0", "-D", "-")
    assert reload.stdout.endswith(b"request 2\n")
    assert b"cache-status: caplab; fwd=request; stored" in reload.stdout.lower()
    assert curl().stdout.endswith(b"request 2\n")


def test_rangeFromCache(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    A range of a stored response is answered 206 by the cache.
    """
    path = unique("cache/max-age=60")
    whole = fetch(proxy, origin, path).body
    partial = fetch(proxy, origin, path, headers={"Range": "bytes=2-7"})
    assert partial.status == 206
    assert partial.body == whole[2:8]
    assert partial.headers["Content-Range"] == f"bytes 2-7/{len(whole)}"
    assert origin.stats()[path] == 1


def test_restartKeepsDiskCache(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--cache-dir}, a fresh entry stored before a restart is served after it.
    """
    path = unique("cache/max-age=600")
    cacheDir = tmp_path / "cache"
    with runningProxy(origin, tmp_path, "--cache-dir", str(cacheDir)) as first:
        stored = fetch(first, origin, path)
        assert stored.cacheStatus == "caplab; fwd=miss; stored"
        # the entry is committed (renamed into place) in a thread: wait for its file
        assert fetch(first, origin, path).cacheStatus.startswith("caplab; hit")
    assert list(cacheDir.glob("*.entry"))
    with runningProxy(origin, tmp_path, "--cache-dir", str(cacheDir)) as second:
        second.process.waitForLine(r"cache: on disk in .* \(1 entry, ")
        again = fetch(second, origin, path)
    assert again.body == stored.body
    assert again.cacheStatus.startswith("caplab; hit")
    assert origin.stats()[path] == 1


def test_diskRevalidation(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--cache-dir}, a response revalidated on every request (C{max-age=0,
    must-revalidate}) is served from its file after each 304.
    """
    path = unique("validate")
    with runningProxy(origin, tmp_path, "--cache-dir", str(tmp_path / "cache")) as proxy:
        responses = [fetch(proxy, origin, path) for _ in range(3)]
    assert {r.body for r in responses} == {b"validated body, request 1\n"}
    assert [r.cacheStatus for r in responses[1:]] == ["caplab; fwd=stale; fwd-status=304"] * 2
    requests = originRequests(origin, path, 3)
    assert [header(r, "if-none-match") for r in requests] == [None, '"caplab-v1"', '"caplab-v1"']


def test_noCache(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--no-cache} every request reaches the origin and no C{Cache-Status} is sent.
    """
    path = unique("cache/max-age=60")
    with runningProxy(origin, tmp_path, "--no-cache") as proxy:
        responses = [fetch(proxy, origin, path) for _ in range(2)]
    assert [r.cacheStatus for r in responses] == ["", ""]
    assert origin.stats()[path] == 2


def test_damagedCacheDirectoryStarts(origin: OriginProcess, tmp_path: Path) -> None:
    """
    A cache directory with a directory named like an entry and an entry whose record (with
    a valid checksum) has C{"phrase": null} does not stop C{twist caplab}: each is logged on
    one line and left out; the proxy serves (issue 9 item 9).
    """
    cacheDir = tmp_path / "cache"
    cacheDir.mkdir()
    (cacheDir / "0123abcd-dir.entry").mkdir()
    writeEntryFile(str(cacheDir / "0123abcd-null.entry"), goodRecord(phrase=None), b"good")
    path = unique("cache/max-age=600")
    with runningProxy(origin, tmp_path, "--cache-dir", str(cacheDir)) as proxy:
        assert proxy.process.process is not None
        proxy.process.waitForLine(r"0123abcd-dir\.entry: not a regular file")
        proxy.process.waitForLine(r"0123abcd-null\.entry: field 'phrase' is NoneType")
        proxy.process.waitForLine(r"cache: on disk in .* \(0 entries")
        assert fetch(proxy, origin, path).status == 200
        assert "Traceback" not in proxy.process.output
    assert (cacheDir / "0123abcd-dir.entry").is_dir()
    assert not (cacheDir / "0123abcd-null.entry").exists()


def test_rangeFormsAndIfRange(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    Suffix and open ranges and a range past the end are answered from a stored response;
    an C{If-Range} that is not the stored strong validator gets the whole response (issue
    12 item 4).
    """
    path = unique("cache/max-age=60")
    whole = fetch(proxy, origin, path).body
    suffix = fetch(proxy, origin, path, headers={"Range": "bytes=-5"})
    assert (suffix.status, suffix.body) == (206, whole[-5:])
    opened = fetch(proxy, origin, path, headers={"Range": "bytes=3-"})
    assert (opened.status, opened.body) == (206, whole[3:])
    assert opened.headers["Content-Range"] == f"bytes 3-{len(whole) - 1}/{len(whole)}"
    past = fetch(proxy, origin, path, headers={"Range": f"bytes={len(whole)}-"})
    assert (past.status, past.headers["Content-Range"]) == (416, f"bytes */{len(whole)}")
    weak = fetch(proxy, origin, path, headers={"Range": "bytes=0-1", "If-Range": '"nope"'})
    assert (weak.status, weak.body) == (200, whole)
    assert origin.stats()[path] == 1


def test_varyNormalised(proxy: ProxyUnderTest, origin: OriginProcess) -> None:
    """
    C{Accept-Language} values that differ only in order, case and whitespace are one
    variant (issue 12 item 8).
    """
    path = unique("vary/Accept-Language")
    first = fetch(proxy, origin, path, headers={"Accept-Language": "en-US, fr;q=0.5"})
    again = fetch(proxy, origin, path, headers={"Accept-Language": "FR; q=0.5,en-us"})
    assert again.body == first.body
    assert again.cacheStatus.startswith("caplab; hit")
    assert origin.stats()[path] == 1
