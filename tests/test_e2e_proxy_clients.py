"""
A real client nobody here wrote, C{curl -x}, and Python's own C{http.client}, through the real
C{twist caplab} proxy to a local test origin (L{tests.origins}): methods, bodies both ways,
a 200 MiB download in bounded memory, CONNECT to a TLS origin, the error statuses, and 200
clients at once. (GET and a small POST, https:// in absolute form, the status page and the
limits are in L{tests.test_e2e_proxy}.)

The origin's host name (C{origin.caplab.test}) resolves only inside the proxy
(C{--resolve}), so every answer checked here came through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients import curl
from tests.conftest import requireProgram
from tests.origins import WAIT, OriginProcess, runningOrigin
from tests.origins.proxy import ProxyUnderTest, runningProxy
from tests.origins.site import pattern, patternDigest
from tests.tls import TEST_HOST, TestPKI

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def statusOf(result: subprocess.CompletedProcess[bytes]) -> int:
    """
    The status curl printed last with C{-w '\\n%{http_code}'}.
    """
    return int(result.stdout.rsplit(b"\n", 1)[-1])


def test_keepAliveBothSides(origin: OriginProcess, tmp_path: Path) -> None:
    """
    curl sends two requests on one connection to the proxy (the second makes no new
    connection), and the proxy sends both to the origin on one pooled connection (a fresh
    proxy, so that no idle connection of another test is in its pool).
    """
    first, second = origin.url("/hello/keep-1"), origin.url("/hello/keep-2")
    with runningProxy(origin, tmp_path) as fresh:
        result = curl(fresh, "-w", "[%{num_connects}]\n", first, second)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello keep-1\n[1]\nhello keep-2\n[0]\n"
    paths = ("/hello/keep-1", "/hello/keep-2")
    ports = {r["peer"] for r in origin.requests() if r["path"] in paths}
    assert len(ports) == 1, ports


def test_postBody(origin: OriginProcess, proxy: ProxyUnderTest, tmp_path: Path) -> None:
    """
    A 1 MiB POST body (Content-Length) reaches the origin whole and unchanged.
    """
    body = tmp_path / "body"
    body.write_bytes(b"".join(pattern(MiB)))
    result = curl(proxy, "--data-binary", f"@{body}", origin.url("/upload"))
    assert result.returncode == 0, result.stderr
    received = json.loads(result.stdout)
    assert received["method"] == "POST"
    assert (received["bodyLength"], received["bodySHA256"]) == (MiB, patternDigest(MiB))
    assert dict(received["headers"])["content-length"] == str(MiB)


def test_expect100Continue(origin: OriginProcess, proxy: ProxyUnderTest, tmp_path: Path) -> None:
    """
    curl's upload with C{Expect: 100-continue} gets its C{100 Continue} (instead of sending
    the body blind after a second's wait), and the body arrives whole.
    """
    body = tmp_path / "body"
    body.write_bytes(b"".join(pattern(MiB)))
    result = curl(proxy, "-v", "-T", str(body), origin.url("/upload"))
    assert result.returncode == 0, result.stderr
    assert b"> Expect: 100-continue" in result.stderr
    assert b"< HTTP/1.1 100 Continue" in result.stderr, result.stderr
    received = json.loads(result.stdout)
    assert (received["bodyLength"], received["bodySHA256"]) == (MiB, patternDigest(MiB))


def test_head(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    HEAD returns the origin's headers (its Content-Length) and no body; the connection stays
    usable, so a GET on the same connection gets its full body.
    """
    url = origin.url("/bytes/1000")
    result = curl(proxy, "-I", url, "--next", "-x", f"http://{proxy.address}", url)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"\r\ncontent-length: 1000" in head.lower()
    assert body == b"".join(pattern(1000))


def test_chunkedUpload(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    C{curl -T -} with C{Transfer-Encoding: chunked} (and curl's C{Expect: 100-continue})
    uploads 3 MiB of unknown length; the origin receives exactly those bytes.
    """
    size = 3 * MiB
    result = curl(
        proxy,
        "-T",
        "-",
        "-H",
        "Transfer-Encoding: chunked",
        origin.url("/upload"),
        input=b"".join(pattern(size)),
    )
    assert result.returncode == 0, result.stderr
    received = json.loads(result.stdout)
    assert received["method"] == "PUT"
    assert (received["bodyLength"], received["bodySHA256"]) == (size, patternDigest(size))


def test_chunkedResponse(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    A chunked response arrives de-chunked once, not double-chunked.
    """
    result = curl(proxy, origin.url("/chunked?parts=5"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"".join(b"part %d\n" % index for index in range(5))


def test_slowOriginRelayedAsItComes(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    An origin that sends a line, then another a second later, then ends: the client has the
    first line well before the origin is done (the proxy relays, it does not collect).
    """
    connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=WAIT)
    try:
        started = time.monotonic()
        connection.request("GET", origin.url("/drip?parts=2&interval=1&for=relay"))
        response = connection.getresponse()
        first = response.readline()
        firstAfter = time.monotonic() - started
        rest = response.read()
        doneAfter = time.monotonic() - started
    finally:
        connection.close()
    assert (first, rest) == (b"drip 0\n", b"drip 1\n")
    assert firstAfter < 0.9 and doneAfter >= 1.9, (firstAfter, doneAfter)


def test_http10Client(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    An HTTP/1.0 client (C{curl -0}) gets a chunked origin response as plain bytes (it cannot
    read chunked framing), ended by the close, and a Content-Length response unchanged.
    """
    size = 300000
    chunked = curl(proxy, "-0", "-i", origin.url(f"/bytes/{size}?chunked=1"))
    sized = curl(proxy, "-0", origin.url(f"/bytes/{size}"))
    assert chunked.returncode == 0 and sized.returncode == 0, (chunked.stderr, sized.stderr)
    head, _, body = chunked.stdout.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower(), head
    assert body == sized.stdout == b"".join(pattern(size))


def test_hopByHopHeadersRemovedAndViaAdded(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    The origin sees none of the hop-by-hop headers curl sent (C{Connection} and the header it
    names, C{Keep-Alive}, C{TE}, C{Proxy-Authorization}), both values of a repeated header,
    and a C{Via} added by the proxy.
    """
    result = curl(
        proxy,
        "-H",
        "Connection: X-Hop",
        "-H",
        "X-Hop: secret",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "TE: trailers",
        "-H",
        "Proxy-Authorization: Basic dXNlcjpwYXNz",
        "-H",
        "X-Twice: one",
        "-H",
        "X-Twice: two",
        origin.url("/echo"),
    )
    assert result.returncode == 0, result.stderr
    headers = json.loads(result.stdout)["headers"]
    names = [name for name, _ in headers]
    for hop in ("connection", "x-hop", "keep-alive", "te", "proxy-authorization"):
        assert hop not in names, headers
    assert [value for name, value in headers if name == "x-twice"] == ["one", "two"]
    assert "via" in names, headers


def vmHWM(pid: int) -> int:
    """
    The peak resident set size of process C{pid}, in bytes.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_largeDownloadStreamsInBoundedMemory(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    200 MiB read by a client slower than the origin arrive complete and unchanged (size and
    SHA-256), and the proxy's peak memory grows by less than 64 MiB: it streams with
    back-pressure instead of buffering what the client has not read yet.
    """
    requireProgram("curl")
    size = 200 * MiB
    before = vmHWM(proxy.pid)
    curlProcess = subprocess.Popen(
        [
            "curl",
            "-sS",
            "--max-time",
            "120",
            "--limit-rate",
            "60M",
            "-x",
            f"http://{proxy.address}",
            origin.url(f"/bytes/{size}"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    digest, received = hashlib.sha256(), 0
    try:
        assert curlProcess.stdout is not None
        for block in iter(lambda: curlProcess.stdout.read(MiB), b""):  # type: ignore[union-attr]
            digest.update(block)
            received += len(block)
        assert curlProcess.wait(timeout=WAIT) == 0, curlProcess.stderr
    finally:
        if curlProcess.poll() is None:
            curlProcess.kill()
            curlProcess.wait(timeout=WAIT)
        curlProcess.stdout.close()  # type: ignore[union-attr]
        curlProcess.stderr.close()  # type: ignore[union-attr]
    assert received == size
    assert digest.hexdigest() == patternDigest(size)
    growth = vmHWM(proxy.pid) - before
    assert growth < 64 * MiB, f"proxy peak RSS grew by {growth / MiB:.0f} MiB"


def test_connectToTLSOrigin(origin: OriginProcess, proxy: ProxyUnderTest, pki: TestPKI) -> None:
    """
    curl tunnels through CONNECT to the TLS origin and verifies its certificate against the
    throw-away CA (the proxy relays the handshake untouched); the tunnel is logged.
    """
    url = origin.url("/hello/tunnel", "https")
    result = curl(proxy, "--cacert", str(pki.caCert), url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello tunnel\n"
    assert origin.waitForRequest("/hello/tunnel", "https")
    proxy.waitForAccess("CONNECT", f"{TEST_HOST}:{origin.ports['https']}", 200)


def test_ipv6Literals(pki: TestPKI, tmp_path: Path) -> None:
    """
    An origin on C{::1} is reached by IPv6 literal, C{http://[::1]:PORT/} in absolute form
    and C{CONNECT [::1]:PORT} (curl verifying the certificate's C{::1} address).
    """
    with runningOrigin(pki.caCert.parent, "::1") as v6, runningProxy(v6, tmp_path) as proxy:
        plain = curl(proxy, f"http://[::1]:{v6.ports['http']}/hello/v6")
        tunnelled = curl(
            proxy, "--cacert", str(pki.caCert), f"https://[::1]:{v6.ports['https']}/hello/v6tls"
        )
        proxy.waitForAccess("CONNECT", f"[::1]:{v6.ports['https']}", 200)
    assert (plain.returncode, plain.stdout) == (0, b"hello v6\n"), plain.stderr
    assert (tunnelled.returncode, tunnelled.stdout) == (0, b"hello v6tls\n"), tunnelled.stderr


@pytest.fixture
def refusedPort() -> Iterator[int]:
    """
    A loopback port held bound but not listening: connecting to it is refused.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_originRefused502(proxy: ProxyUnderTest, refusedPort: int) -> None:
    """
    An origin that refuses the connection is a 502 with an HTML page.
    """
    result = curl(proxy, "-w", "\n%{http_code} %{content_type}", f"http://127.0.0.1:{refusedPort}/")
    code, contentType = result.stdout.rsplit(b"\n", 1)[-1].split(b" ", 1)
    assert (int(code), contentType.split(b";")[0]) == (502, b"text/html")


def test_unknownHost502(proxy: ProxyUnderTest) -> None:
    """
    A host name that does not resolve (C{.invalid} never does) is a 502.
    """
    result = curl(proxy, "-w", "\n%{http_code}", "http://no-such-host.invalid/")
    assert statusOf(result) == 502, result


def test_unsupportedScheme501(proxy: ProxyUnderTest) -> None:
    """
    C{ftp://} through an HTTP proxy (curl sends C{GET ftp://...}) is a 501.
    """
    result = curl(proxy, "-w", "\n%{http_code}", f"ftp://{TEST_HOST}/file")
    assert statusOf(result) == 501, result


def test_connectToPortNotAllowed403(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    CONNECT to a port outside C{--connect-ports} (the origin's plain HTTP port) is a 403.
    """
    result = curl(proxy, "-p", "-w", "\n%{http_connect}", origin.url("/hello/no-tunnel"))
    assert result.returncode != 0
    assert statusOf(result) == 403, result
    assert not [r for r in origin.requests() if r["path"] == "/hello/no-tunnel"]


def test_stalledOrigin504(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--upstream-timeout 1}, an origin that accepts the request but never answers gets
    the client a 504 after about a second.
    """
    with runningProxy(origin, tmp_path, "--upstream-timeout", "1") as proxy:
        started = time.monotonic()
        result = curl(proxy, "-w", "\n%{http_code}", origin.url("/stall"))
        elapsed = time.monotonic() - started
    assert statusOf(result) == 504, result
    assert 0.9 <= elapsed < 10, elapsed


def test_slowClientIsNotAStalledOrigin(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--upstream-timeout 1}, a client that stops reading for 2.5 s in the middle of a
    32 MiB body (so back-pressure holds the origin back) still gets the whole body: only an
    origin that stalls on its own counts as stalled.
    """
    size = 32 * MiB
    with runningProxy(origin, tmp_path, "--upstream-timeout", "1") as proxy:
        connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=WAIT)
        try:
            connection.request("GET", origin.url(f"/bytes/{size}"))
            response = connection.getresponse()
            digest = hashlib.sha256(response.read(MiB))
            time.sleep(2.5)  # the scenario itself: a client that does not read for a while
            rest = response.read()
        finally:
            connection.close()
    digest.update(rest)
    assert (MiB + len(rest), digest.hexdigest()) == (size, patternDigest(size))


def test_originDiesMidBody(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    When the origin closes after 1 MB of its announced 2 MB, curl sees a cut-off transfer at
    once (exit 18, well before any timeout), never a complete-looking response.
    """
    started = time.monotonic()
    result = curl(proxy, origin.url("/die?after=1000000"))
    assert result.returncode == 18, (result.returncode, result.stderr)
    assert len(result.stdout) == 1000000
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "path, read",
    [("/stall?for=client-gone", 0), (f"/bytes/{1024 * MiB}?for=client-gone", MiB)],
    ids=["waiting-for-head", "mid-body"],
)
def test_clientGoneCancelsUpstream(
    origin: OriginProcess, proxy: ProxyUnderTest, path: str, read: int
) -> None:
    """
    A client that goes away, while the origin has not answered yet or in the middle of a
    1 GiB body, makes the proxy drop the upstream request at once: the origin sees its
    connection lost within seconds (the upstream timeout is 60 s, and 1 GiB is never sent).
    """
    with socket.create_connection((proxy.host, proxy.port), timeout=WAIT) as client:
        client.sendall(f"GET {origin.url(path)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        origin.waitForRequest(path)
        received = 0
        while received < read:
            data = client.recv(65536)
            assert data, "the proxy closed the connection"
            received += len(data)
    ended = origin.waitForEnd(path, timeout=5)
    assert ended["complete"] is False


def test_largeChunkedUploadStreamsInBoundedMemory(
    origin: OriginProcess, proxy: ProxyUnderTest
) -> None:
    """
    200 MiB uploaded by C{curl -T -} (chunked, length unknown) reach the origin complete and
    unchanged, and the proxy's peak memory grows by less than 64 MiB: the request body is
    streamed, not collected first.
    """
    requireProgram("curl")
    size = 200 * MiB
    before = vmHWM(proxy.pid)
    upload = subprocess.Popen(
        [
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-x",
            f"http://{proxy.address}",
            "-T",
            "-",
            "-H",
            "Transfer-Encoding: chunked",
            origin.url("/upload"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )

    def feed() -> None:
        assert upload.stdin is not None
        try:
            for block in pattern(size):
                upload.stdin.write(block)
            upload.stdin.close()
        except BrokenPipeError:  # curl gave up; its exit status and output say why
            with contextlib.suppress(BrokenPipeError):
                upload.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        assert upload.stdout is not None and upload.stderr is not None
        stdout = upload.stdout.read()  # curl's --max-time bounds this
        stderr = upload.stderr.read()
        upload.wait(timeout=WAIT)
    finally:
        if upload.poll() is None:
            upload.kill()
            upload.wait(timeout=WAIT)
        upload.stdout.close()  # type: ignore[union-attr]
        upload.stderr.close()  # type: ignore[union-attr]
    feeder.join(WAIT)
    assert upload.returncode == 0, stderr
    received = json.loads(stdout)
    assert (received["bodyLength"], received["bodySHA256"]) == (size, patternDigest(size))
    growth = vmHWM(proxy.pid) - before
    assert growth < 64 * MiB, f"proxy peak RSS grew by {growth / MiB:.0f} MiB"


def test_largeTunnelDownloadInBoundedMemory(
    origin: OriginProcess, proxy: ProxyUnderTest, pki: TestPKI
) -> None:
    """
    100 MiB through a CONNECT tunnel to the TLS origin, read by a client slower than the
    origin, arrive unchanged, and the proxy's peak memory grows by less than 64 MiB: the
    tunnel relays with back-pressure.
    """
    requireProgram("curl")
    size = 100 * MiB
    before = vmHWM(proxy.pid)
    download = subprocess.Popen(
        [
            "curl",
            "-sS",
            "--max-time",
            "120",
            "--limit-rate",
            "40M",
            "--cacert",
            str(pki.caCert),
            "-x",
            f"http://{proxy.address}",
            origin.url(f"/bytes/{size}", "https"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    digest, received = hashlib.sha256(), 0
    try:
        assert download.stdout is not None
        for block in iter(lambda: download.stdout.read(MiB), b""):  # type: ignore[union-attr]
            digest.update(block)
            received += len(block)
        assert download.wait(timeout=WAIT) == 0, download.stderr
    finally:
        if download.poll() is None:
            download.kill()
            download.wait(timeout=WAIT)
        download.stdout.close()  # type: ignore[union-attr]
        download.stderr.close()  # type: ignore[union-attr]
    assert (received, digest.hexdigest()) == (size, patternDigest(size))
    growth = vmHWM(proxy.pid) - before
    assert growth < 64 * MiB, f"proxy peak RSS grew by {growth / MiB:.0f} MiB"


def test_200ConcurrentClients(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    200 clients (threads, one connection each, started together) all get their own body.
    """
    clients = 200
    start = threading.Barrier(clients, timeout=WAIT)
    results: dict[int, object] = {}

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=WAIT)
        try:
            start.wait()
            connection.request("GET", origin.url(f"/hello/client-{index}"))
            response = connection.getresponse()
            results[index] = (response.status, response.read())
        except Exception as error:
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 3 * WAIT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not [thread for thread in threads if thread.is_alive()], "clients still waiting"
    wrong = {
        index: outcome
        for index, outcome in results.items()
        if outcome != (200, b"hello client-%d\n" % index)
    }
    assert len(results) == clients and not wrong, wrong
    counts = origin.stats()
    assert all(counts[f"/hello/client-{index}"] == 1 for index in range(clients))
