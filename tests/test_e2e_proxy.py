"""
End-to-end tests of the web proxy: the real C{twist caplab} process, C{curl -x} and Python
clients, in front of the local test origin (L{tests.origins}) whose host name
(C{origin.caplab.test}) only the proxy can resolve (C{--resolve}).
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.clients import codeAndBody, curl, rawExchange
from tests.conftest import requireProgram
from tests.origins import WAIT, OriginProcess
from tests.origins.proxy import ProxyUnderTest, runningProxy
from tests.support import runningCaplab
from tests.tls import TEST_HOST

pytestmark = pytest.mark.e2e


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
            (proxy.host, proxy.port),
            f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
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
    assert rawExchange((proxy.host, proxy.port), longLine).startswith(b"HTTP/1.1 414 ")
    bigHeaders = b"GET http://" + TEST_HOST.encode() + b"/ HTTP/1.1\r\n"
    bigHeaders += b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(80)) + b"\r\n"
    assert rawExchange((proxy.host, proxy.port), bigHeaders).startswith(b"HTTP/1.1 431 ")
    assert rawExchange((proxy.host, proxy.port), b"NOT HTTP AT ALL\r\n\r\n").startswith(
        b"HTTP/1.1 400 "
    )


def test_idleKeepAliveClosed(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--keep-alive-timeout 1}, a client connection left idle after its response is
    closed by the proxy about a second later.
    """
    with runningProxy(origin, tmp_path, "--keep-alive-timeout", "1") as proxy:
        with socket.create_connection((proxy.host, proxy.port), timeout=WAIT) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n")
            reply = s.recv(65536)
            started = time.monotonic()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
            elapsed = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert 0.5 <= elapsed < 5, elapsed


def test_xForwardedForOnlyWhenAsked(
    origin: OriginProcess, proxy: ProxyUnderTest, tmp_path: Path
) -> None:
    """
    By default the origin is not told the client's address; with C{--x-forwarded-for} it
    is.
    """

    def forwardedFor(p: ProxyUnderTest) -> list[str]:
        result = curl(p, origin.url("/echo"))
        headers = json.loads(result.stdout)["headers"]
        return [value for name, value in headers if name == "x-forwarded-for"]

    assert forwardedFor(proxy) == []
    with runningProxy(origin, tmp_path, "--x-forwarded-for") as telling:
        assert forwardedFor(telling) == ["127.0.0.1"]


class _V6Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"v6 {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _V6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def test_ipv6(tmp_path: Path) -> None:
    """
    A proxy listening on C{::1} forwards to an IPv6 literal origin (C{http://[::1]:port/}).
    """
    server = _V6Server(("::1", 0), _V6Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        log = tmp_path / "access.log"
        with runningCaplab(
            "--no-tcp", "--no-udp", "--proxy-endpoint", "tcp6:0:interface=\\:\\:1",
            "--access-log", str(log), services=("proxy",),
        ) as caplab:  # fmt: skip
            host, proxyPort = caplab.addresses["proxy"]
            assert host == "::1"
            result = subprocess.run(
                ["curl", "-sS", "--max-time", str(WAIT), "-x", f"http://[::1]:{proxyPort}",
                 f"http://[::1]:{port}/six"],
                capture_output=True, timeout=WAIT + 5,
            )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.stdout == b"v6 /six\n", result.stderr
    assert f'"GET http://[::1]:{port}/six HTTP/1.1" 200' in log.read_text()


def vmRSS(pid: int) -> int:
    """
    The resident set size of process C{pid} now, in bytes.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_uploadBackPressure() -> None:
    """
    A 256 MiB upload to an origin that stops reading: the client is held back (it gets only
    a few MiB into the sockets and the proxy) and the proxy's memory stays flat; once the
    origin reads, every byte arrives and the response comes back.
    """
    MiB = 1 << 20
    size = 256 * MiB
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    originPort = listener.getsockname()[1]
    sent = [0]
    reply: list[bytes] = []

    with runningCaplab("--no-tcp", "--no-udp", "--no-cache", services=("proxy",)) as caplab:
        host, port = caplab.addresses["proxy"]
        assert caplab.process is not None
        baseline = vmRSS(caplab.process.pid)

        def upload() -> None:
            with socket.create_connection((host, port), timeout=3 * WAIT) as s:
                s.sendall(
                    b"POST http://127.0.0.1:%d/up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                    % (originPort, size)
                )
                block = b"u" * MiB
                for _ in range(size // MiB):
                    s.sendall(block)
                    sent[0] += MiB
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                reply.append(data)

        client = threading.Thread(target=upload, daemon=True)
        client.start()
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(WAIT)
            head = b""
            while b"\r\n\r\n" not in head:
                head += connection.recv(65536)
            # Wait (bounded) until the client can send no more: the proxy holds it back.
            deadline = time.monotonic() + WAIT
            last, stableSince = -1, time.monotonic()
            while time.monotonic() < deadline:
                if sent[0] != last:
                    last, stableSince = sent[0], time.monotonic()
                elif time.monotonic() - stableSince > 1.0:
                    break
                time.sleep(0.05)
            held = sent[0]
            growth = vmRSS(caplab.process.pid) - baseline
            received = len(head) - head.index(b"\r\n\r\n") - 4
            while received < size:
                chunk = connection.recv(1 << 20)
                assert chunk, "proxy closed the upstream connection early"
                received += len(chunk)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            client.join(WAIT)
    listener.close()
    assert held < 64 * MiB, f"the client sent {held / MiB:.0f} MiB to a stalled upload"
    assert growth < 48 * MiB, f"proxy RSS grew by {growth / MiB:.0f} MiB"
    assert received == size
    assert reply and reply[0].startswith(b"HTTP/1.1 200 "), reply


def test_servedAmongSlowClients(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    While 300 connections sit with half a header block each (slow-loris), a normal client
    is still served promptly.
    """
    slow = []
    try:
        for _ in range(300):
            s = socket.create_connection((proxy.host, proxy.port), timeout=WAIT)
            s.sendall(b"GET " + origin.url("/hello/slow").encode() + b" HTTP/1.1\r\nX-A: b\r\n")
            slow.append(s)
        started = time.monotonic()
        result = curl(proxy, origin.url("/hello/among-slow"))
        elapsed = time.monotonic() - started
    finally:
        for s in slow:
            s.close()
    assert result.stdout == b"hello among-slow\n", result.stderr
    assert elapsed < 5, elapsed


def test_maxForwardsZeroAnsweredByProxy(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    C{OPTIONS} with C{Max-Forwards: 0} is answered by the proxy itself; the origin never
    sees it.
    """
    result = curl(
        proxy, "-X", "OPTIONS", "-H", "Max-Forwards: 0", "-D", "-", "-o", "/dev/null",
        origin.url("/hello/max-forwards"),
    )  # fmt: skip
    assert result.stdout.startswith(b"HTTP/1.1 200 "), result.stdout
    assert b"\r\nAllow: " in result.stdout
    assert not [r for r in origin.requests() if r["path"] == "/hello/max-forwards"]


def test_maxConnections(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--max-connections 2}, a third connection is closed at once (and logged) while two
    are open; once one closes, new clients are served again.
    """
    with runningProxy(origin, tmp_path, "--max-connections", "2") as proxy:
        held = [socket.create_connection((proxy.host, proxy.port), timeout=WAIT) for _ in range(2)]
        try:
            # The two are accepted: each answers a request.
            for s in held:
                s.sendall(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
            with socket.create_connection((proxy.host, proxy.port), timeout=WAIT) as third:
                third.sendall(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n")
                try:
                    assert third.recv(65536) == b""
                except ConnectionResetError:
                    pass
            proxy.process.waitForLine("refused")
        finally:
            held.pop().close()
        deadline = time.monotonic() + WAIT
        while True:
            result = curl(proxy, "-w", "\n%{http_code}", origin.url("/hello/after-cap"))
            if result.stdout.startswith(b"hello after-cap"):
                break
            assert time.monotonic() < deadline, result
        for s in held:
            s.close()


def test_clientGoneCancelsUpstream() -> None:
    """
    A client that goes away while the origin is still thinking makes the proxy drop the
    upstream connection at once: the origin sees it close.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    originPort = listener.getsockname()[1]
    with runningCaplab("--no-tcp", "--no-udp", "--no-cache", services=("proxy",)) as caplab:
        host, port = caplab.addresses["proxy"]
        client = socket.create_connection((host, port), timeout=WAIT)
        client.sendall(b"GET http://127.0.0.1:%d/slow HTTP/1.1\r\nHost: x\r\n\r\n" % originPort)
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(WAIT)
            head = b""
            while b"\r\n\r\n" not in head:
                head += connection.recv(65536)
            assert head.startswith(b"GET /slow HTTP/1.1\r\n")
            client.close()
            started = time.monotonic()
            try:
                assert connection.recv(65536) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 5
    listener.close()


def test_internationalHostName(origin: OriginProcess, tmp_path: Path) -> None:
    """
    curl asks for an international host name in its IDNA form (the one DNS knows, here
    given with C{--resolve}); the proxy reaches that host and tells the origin that name.
    """
    port = origin.ports["http"]
    with runningProxy(
        origin, tmp_path, "--resolve", "xn--bcher-kva.caplab.test=127.0.0.1"
    ) as proxy:
        result = curl(proxy, f"http://bücher.caplab.test:{port}/echo")
        proxy.waitForAccess("GET", f"http://xn--bcher-kva.caplab.test:{port}/echo", 200)
    assert result.returncode == 0, result.stderr
    headers = dict(json.loads(result.stdout)["headers"])
    assert headers["host"] == f"xn--bcher-kva.caplab.test:{port}"
