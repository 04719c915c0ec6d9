"""
End-to-end tests of the web proxy: the real C{twist caplab} process, C{curl -x} and Python
clients, in front of the local test origin (L{tests.origins}) whose host name
(C{origin.caplab.test}) only the proxy can resolve (C{--resolve}).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import requireProgram
from tests.origins import WAIT, OriginProcess, runningOrigin
from tests.origins.proxy import ProxyUnderTest, runningProxy
from tests.tls import TEST_HOST, TestPKI, makePKI

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return makePKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def origin(pki: TestPKI) -> Iterator[OriginProcess]:
    with runningOrigin(pki.caCert.parent) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(
    origin: OriginProcess, pki: TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyUnderTest]:
    with runningProxy(origin, tmp_path_factory.mktemp("proxy"), caCert=pki.caCert) as running:
        yield running


def curl(
    proxy: ProxyUnderTest, *args: str, input: bytes | None = None, timeout: float = WAIT
) -> subprocess.CompletedProcess[bytes]:
    """
    C{curl -sS -x PROXY ARGS}, bounded by C{timeout}.
    """
    requireProgram("curl")
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(timeout), "-x", f"http://{proxy.address}", *args],
        input=input,
        capture_output=True,
        timeout=timeout + 5,
    )


def codeAndBody(result: subprocess.CompletedProcess[bytes]) -> tuple[int, bytes]:
    """
    The status printed by C{-w '\\n%{http_code}'} and the body before it.
    """
    body, _, code = result.stdout.rpartition(b"\n")
    return int(code), body


def rawExchange(proxy: ProxyUnderTest, data: bytes, timeout: float = WAIT) -> bytes:
    """
    Send C{data} on a new connection to the proxy and read until it closes.
    """
    with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_getAndPost(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    curl's GET and POST go through the proxy: the origin's body comes back, the POST body
    reaches it, and both requests are in the access log.
    """
    url = origin.url("/hello/e2e")
    result = curl(proxy, url)
    assert (result.returncode, result.stdout) == (0, b"hello e2e\n"), result.stderr
    posted = curl(proxy, "--data-binary", "field=value", origin.url("/upload"))
    received = json.loads(posted.stdout)
    assert (received["method"], received["bodyLength"]) == ("POST", 11)
    proxy.waitForAccess("GET", url, 200)
    proxy.waitForAccess("POST", origin.url("/upload"), 200)


def test_httpsAbsoluteFormVerified(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    An https:// URL in absolute form is fetched by the proxy over TLS, the origin's
    certificate verified against C{--upstream-ca}.
    """
    requireProgram("curl")
    url = origin.url("/hello/tls-fetch", "https")
    with socket.create_connection((proxy.host, proxy.port), timeout=WAIT) as s:
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
    assert reply.endswith(b"hello tls-fetch\n")


def test_httpsUntrustedCertificate502(origin: OriginProcess, tmp_path: Path) -> None:
    """
    Without the throw-away CA, the origin's certificate fails verification: a 502 page that
    says so, and the origin never sees the request.
    """
    with runningProxy(origin, tmp_path) as proxy:
        url = origin.url("/hello/untrusted", "https")
        reply = rawExchange(
            proxy, f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
    assert reply.startswith(b"HTTP/1.1 502 "), reply[:300]
    assert b"could not be verified" in reply
    assert not [r for r in origin.requests() if r["path"] == "/hello/untrusted"]


def test_statusPage(proxy: ProxyUnderTest) -> None:
    """
    Opening the proxy's own address (origin form, C{GET /}) shows its status page.
    """
    requireProgram("curl")
    result = subprocess.run(
        ["curl", "-sS", "--max-time", str(WAIT), f"http://{proxy.address}/"],
        capture_output=True,
        timeout=WAIT + 5,
    )
    assert b"caplab proxy" in result.stdout
    assert b"requests since start" in result.stdout


def test_loopRefused(proxy: ProxyUnderTest) -> None:
    """
    A request whose target is the proxy itself is refused with 508, not forwarded forever.
    """
    result = curl(proxy, "-w", "\n%{http_code}", f"http://{proxy.address}/")
    assert codeAndBody(result)[0] == 508


def test_notAllowedClient403(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--allow 192.0.2.0/24} a loopback client is not served: 403 and a page that names
    the option.
    """
    with runningProxy(origin, tmp_path, "--allow", "192.0.2.0/24") as proxy:
        result = curl(proxy, "-w", "\n%{http_code}", origin.url("/hello/denied"))
    code, body = codeAndBody(result)
    assert code == 403
    assert b"--allow" in body


def test_headerTimeout(origin: OriginProcess, tmp_path: Path) -> None:
    """
    A client trickling its header block is cut off after C{--header-timeout} although it
    keeps sending, while another client is served meanwhile.
    """
    with runningProxy(origin, tmp_path, "--header-timeout", "1") as proxy:
        slow = socket.create_connection((proxy.host, proxy.port), timeout=WAIT)
        try:
            slow.sendall(b"GET " + origin.url("/hello/slow").encode() + b" HTTP/1.1\r\n")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 10:
                try:
                    slow.sendall(b"X-A: b\r\n")
                except OSError:
                    closed = True
                    break
                result = curl(proxy, origin.url("/hello/fast"))
                assert result.stdout == b"hello fast\n"
                slow.settimeout(0.2)
                try:
                    data = slow.recv(65536)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    data = b""  # closed while our header lines were unread
                closed = True
                assert data == b"" or data.startswith(b"HTTP/1.1 408 ")
                break
            elapsed = time.monotonic() - started
        finally:
            slow.close()
    assert closed
    assert 0.9 <= elapsed < 5, elapsed


def test_limits(proxy: ProxyUnderTest) -> None:
    """
    An over-long request line is a 414; an over-large header block a 431.
    """
    longLine = b"GET http://" + TEST_HOST.encode() + b"/" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"
    assert rawExchange(proxy, longLine).startswith(b"HTTP/1.1 414 ")
    bigHeaders = b"GET http://" + TEST_HOST.encode() + b"/ HTTP/1.1\r\n"
    bigHeaders += b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(80)) + b"\r\n"
    assert rawExchange(proxy, bigHeaders).startswith(b"HTTP/1.1 431 ")
