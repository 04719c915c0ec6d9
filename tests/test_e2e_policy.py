"""
End-to-end tests of proxy policy and operations through the real C{twist caplab} process with
C{curl -x}: block and allow lists (plain and CONNECT), proxy authentication, chaining through
a second caplab as parent proxy, SIGHUP reload while a response is in flight, the PAC file and
the Prometheus metrics of the admin endpoint.

The origin's host name (C{origin.caplab.test}) resolves only inside the proxy (C{--resolve}),
so every answer checked here came through it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from caplab.proxy.auth import basicCredentials
from tests.conftest import requireProgram
from tests.origins import WAIT, OriginProcess
from tests.origins.proxy import runningProxy
from tests.support import CaplabProcess, runningCaplab
from tests.test_auth import BCRYPT
from tests.tls import TEST_HOST, TestPKI

pytestmark = pytest.mark.e2e

#: A host under the test domain that no list allows (never resolved: blocked first).
OTHER_HOST = "other.caplab.test"


def curl(proxy: str, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[bytes]:
    """
    Run C{curl -sS -x http://PROXY ARGS} (bounded); stdout holds the body, then a last line
    with C{%{http_code} %{http_connect}}.
    """
    requireProgram("curl")
    return subprocess.run(
        [
            "curl", "-sS", "--max-time", str(timeout), "-x", f"http://{proxy}",
            "-w", "\n%{http_code} %{http_connect}", *args,
        ],
        capture_output=True,
        timeout=timeout + 5,
    )  # fmt: skip


def codes(result: subprocess.CompletedProcess[bytes]) -> tuple[int, int]:
    """
    (response status, CONNECT response status) curl reported; 0 where there was none.
    """
    code, connect = result.stdout.rsplit(b"\n", 1)[-1].split()
    return int(code), int(connect)


def body(result: subprocess.CompletedProcess[bytes]) -> bytes:
    return result.stdout.rsplit(b"\n", 1)[0]


def test_blockAndAllow(origin: OriginProcess, pki: TestPKI, tmp_path: Path) -> None:
    """
    A block rule for the test domain blocks a host under it, plain and CONNECT, with a 403
    page naming the host, the rule and its file and line; the allow rule for the origin wins.
    """
    block = tmp_path / "block.txt"
    block.write_text("# lab block list\n0.0.0.0 ads.example\ncaplab.test\n")
    allow = tmp_path / "allow.txt"
    allow.write_text(f"{TEST_HOST}\n")
    with runningProxy(
        origin, tmp_path, "--block-list", str(block), "--allow-list", str(allow),
        caCert=pki.caCert,
    ) as proxy:  # fmt: skip
        blocked = curl(proxy.address, f"http://{OTHER_HOST}/x")
        assert codes(blocked)[0] == 403, blocked
        page = body(blocked).decode()
        assert OTHER_HOST in page and "caplab.test" in page and f"{block}:3" in page, page

        connect = curl(proxy.address, f"https://{OTHER_HOST}/")
        assert codes(connect)[1] == 403, connect
        assert connect.returncode != 0

        allowed = curl(proxy.address, origin.url("/hello/world"))
        assert codes(allowed)[0] == 200, allowed
        assert body(allowed) == b"hello world\n"

        tunnel = curl(proxy.address, "--cacert", str(pki.caCert), origin.url("/hello/tls", "https"))
        assert codes(tunnel) == (200, 200), tunnel
        assert body(tunnel) == b"hello tls\n"


def test_defaultDeny(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--default-deny} a host no allow list names is blocked.
    """
    allow = tmp_path / "allow.txt"
    allow.write_text(f"{TEST_HOST}\n")
    with runningProxy(origin, tmp_path, "--default-deny", "--allow-list", str(allow)) as proxy:
        assert codes(curl(proxy.address, f"http://{OTHER_HOST}/"))[0] == 403
        assert codes(curl(proxy.address, origin.url("/hello/x")))[0] == 200


def test_authentication(origin: OriginProcess, tmp_path: Path) -> None:
    """
    Without credentials 407 with a Basic challenge; with C{--proxy-user} 200, and the origin
    never sees the credentials; wrong ones 407 again; the password is never logged.
    """
    users = tmp_path / "users.htpasswd"
    users.write_text(f"alice:{BCRYPT}\n")
    with runningProxy(origin, tmp_path, "--auth-file", str(users)) as proxy:
        denied = curl(proxy.address, "-D", "-", origin.url("/echo"))
        assert codes(denied)[0] == 407, denied
        assert b'proxy-authenticate: basic realm="caplab proxy"' in denied.stdout.lower()

        good = curl(proxy.address, "--proxy-user", "alice:s3cret", origin.url("/echo"))
        assert codes(good)[0] == 200, good
        seen = json.loads(body(good))
        names = [name.lower() for name, _ in seen["headers"]]
        assert "proxy-authorization" not in names, seen

        wrong = curl(proxy.address, "--proxy-user", "alice:nope", origin.url("/echo"))
        assert codes(wrong)[0] == 407
        assert isinstance(proxy.process, CaplabProcess)
        output = proxy.process.output
        assert "s3cret" not in output and "nope" not in output
        assert basicCredentials("alice", "s3cret").decode()[6:] not in output


def test_chainedThroughParent(origin: OriginProcess, pki: TestPKI, tmp_path: Path) -> None:
    """
    A caplab with C{--upstream-proxy} reaches the origin through a second caplab (which
    wants credentials): plain requests and a CONNECT tunnel.
    """
    users = tmp_path / "users.htpasswd"
    users.write_text(f"alice:{BCRYPT}\n")
    parentDir = tmp_path / "parent"
    parentDir.mkdir()
    with runningProxy(origin, parentDir, "--auth-file", str(users), caCert=pki.caCert) as parent:
        with runningCaplab(
            "--no-tcp", "--no-udp",
            "--upstream-proxy", f"http://alice:s3cret@{parent.address}",
            "--connect-ports", f"443,{origin.ports['https']}",
            services=("proxy",),
        ) as child:  # fmt: skip
            host, port = child.addresses["proxy"]
            plain = curl(f"{host}:{port}", origin.url("/hello/chained"))
            assert codes(plain)[0] == 200, (plain, child.output)
            assert body(plain) == b"hello chained\n"
            parent.waitForAccess("GET", origin.url("/hello/chained"), 200)

            tunnel = curl(
                f"{host}:{port}", "--cacert", str(pki.caCert), origin.url("/hello/tunnel", "https")
            )
            assert codes(tunnel) == (200, 200), (tunnel, child.output)
            assert body(tunnel) == b"hello tunnel\n"
            assert "s3cret" not in child.output


def test_chainedParentRefuses(origin: OriginProcess, tmp_path: Path) -> None:
    """
    A parent that wants other credentials gives the client a 502 naming the parent.
    """
    users = tmp_path / "users.htpasswd"
    users.write_text(f"alice:{BCRYPT}\n")
    with runningProxy(origin, tmp_path, "--auth-file", str(users)) as parent:
        with runningCaplab(
            "--no-tcp", "--no-udp",
            "--upstream-proxy", f"http://alice:wrong@{parent.address}",
            services=("proxy",),
        ) as child:  # fmt: skip
            host, port = child.addresses["proxy"]
            tunnel = curl(f"{host}:{port}", f"https://{TEST_HOST}/")
            assert codes(tunnel)[1] == 502, tunnel
            plain = curl(f"{host}:{port}", origin.url("/hello/refused"))
            assert codes(plain)[0] == 502, plain
            assert f"parent proxy {parent.address}" in body(plain).decode()
            assert "wrong" not in child.output


def test_reloadWhileInFlight(origin: OriginProcess, tmp_path: Path) -> None:
    """
    SIGHUP reloads the block list: a response under way goes on to its end, later requests
    see the new rule; a broken list then keeps the rules in force and the log says why.
    """
    block = tmp_path / "block.txt"
    block.write_text("ads.example\n")
    with runningProxy(origin, tmp_path, "--block-list", str(block)) as proxy:
        assert isinstance(proxy.process, CaplabProcess)
        slow = subprocess.Popen(
            [
                "curl", "-sSN", "--max-time", str(WAIT * 2), "-x", f"http://{proxy.address}",
                origin.url("/drip?parts=60&interval=0.1"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert slow.stdout is not None
            assert slow.stdout.readline() == b"drip 0\n"  # the response is under way

            start = len(proxy.process.lines)
            block.write_text(f"ads.example\n{TEST_HOST}\n")
            proxy.process.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            proxy.process.waitForLine(r"caplab reloaded block/allow lists", start=start)
            assert codes(curl(proxy.address, origin.url("/hello/late")))[0] == 403
            assert slow.poll() is None, "the slow response ended before the reload"

            rest, errors = slow.communicate(timeout=WAIT * 2)
            assert slow.returncode == 0, errors
            assert rest == b"".join(b"drip %d\n" % i for i in range(1, 60))
        finally:
            if slow.poll() is None:
                slow.kill()
                slow.wait(WAIT)

        start = len(proxy.process.lines)
        block.write_text("ads.example\nhttp://broken/\n")
        proxy.process.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        proxy.process.waitForLine(rf"keeping the old rules: .*{block.name}:2", start=start)
        assert codes(curl(proxy.address, origin.url("/hello/still")))[0] == 403


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics(origin: OriginProcess, tmp_path: Path) -> None:
    """
    C{/metrics} on the admin endpoint, parsed by prometheus-client, counts requests by method
    and status, blocked requests, bytes both ways and upstream latency.
    """
    block = tmp_path / "block.txt"
    block.write_text("caplab.test\n")
    allow = tmp_path / "allow.txt"
    allow.write_text(f"{TEST_HOST}\n")
    with runningProxy(
        origin, tmp_path, "--block-list", str(block), "--allow-list", str(allow),
        "--admin-endpoint", "tcp:0:interface=127.0.0.1",
    ) as proxy:  # fmt: skip
        assert isinstance(proxy.process, CaplabProcess)
        proxy.process.waitListening("admin")
        admin = proxy.process.port("admin")
        for _ in range(3):
            assert codes(curl(proxy.address, origin.url("/hello/m")))[0] == 200
        assert codes(curl(proxy.address, f"http://{OTHER_HOST}/"))[0] == 403
        samples = scrape(admin)
        get200 = ("caplab_proxy_requests_total", (("code", "200"), ("method", "GET")))
        assert samples[get200] >= 3, samples
        blocked = ("caplab_proxy_blocked_requests_total", (("method", "other"),))
        assert samples[blocked] == 1
        assert samples[("caplab_proxy_sent_bytes_total", ())] > 0
        assert samples[("caplab_proxy_received_bytes_total", ())] > 4 * len("GET http://")
        assert samples[("caplab_proxy_active_connections", ())] >= 0
        assert samples[("caplab_proxy_upstream_latency_seconds_count", ())] >= 3


def test_pac(origin: OriginProcess, tmp_path: Path) -> None:
    """
    C{/proxy.pac} on the proxy port (origin-form, no credentials even with C{--auth-file})
    points at the proxy, with the bypass domains DIRECT.
    """
    users = tmp_path / "users.htpasswd"
    users.write_text(f"alice:{BCRYPT}\n")
    with runningProxy(
        origin, tmp_path, "--pac-bypass", "intranet.example", "--auth-file", str(users)
    ) as proxy:
        url = f"http://{proxy.address}/proxy.pac"
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            assert response.headers["content-type"] == "application/x-ns-proxy-autoconfig"
            script = response.read().decode()
        assert f'"PROXY {proxy.address}"' in script
        assert '"intranet.example"' in script

        # Under the name the browser used; HEAD gets the head only.
        head = subprocess.run(
            [
                "curl", "-sS", "--max-time", str(WAIT), "-I", "-H", "Host: proxy.lab.test:3128",
                url,
            ],
            capture_output=True, timeout=WAIT + 5,
        )  # fmt: skip
        assert head.stdout.startswith(b"HTTP/1.1 200 "), head
        length = re.search(rb"(?i)content-length: (\d+)", head.stdout)
        assert length is not None, head
        named = subprocess.run(
            ["curl", "-sS", "--max-time", str(WAIT), "-H", "Host: proxy.lab.test:3128", url],
            capture_output=True, timeout=WAIT + 5,
        )  # fmt: skip
        assert b'"PROXY proxy.lab.test:3128"' in named.stdout, named
        assert int(length.group(1)) == len(named.stdout)


@pytest.mark.browser
def test_statsPageInChromium(origin: OriginProcess, tmp_path: Path) -> None:
    """
    The proxy's stats page, loaded by headless Chromium from the proxy's own port, shows the
    request-rate chart with a bar for the requests just made, and the figures.
    """
    requireProgram("chromium")
    from tests.browser.browsers import _baseEnvironment, runBounded

    with runningProxy(origin, tmp_path) as proxy:
        for _ in range(5):
            assert codes(curl(proxy.address, origin.url("/hello/chart")))[0] == 200
        run = runBounded(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}", "--disable-background-networking",
                "--no-proxy-server", "--dump-dom", f"http://{proxy.address}/stats",
            ],
            _baseEnvironment(tmp_path / "home"),
        )  # fmt: skip
    dom = run.stdout
    assert "caplab proxy figures" in dom, run.describe()
    assert dom.count("<rect ") == 60, run.describe()
    peak = re.search(r'data-peak="([0-9.]+)"', dom)
    assert peak is not None and float(peak.group(1)) >= 0.5, run.describe()
    assert "<td>GET</td><td>200</td><td>5</td>" in dom, run.describe()


@pytest.mark.browser
def test_pacInChromium(origin: OriginProcess, tmp_path: Path) -> None:
    """
    Headless Chromium configured with the proxy's C{/proxy.pac} URL loads a page through the
    proxy; with the page's domain in C{--pac-bypass} it goes DIRECT instead (and, the test
    host resolving only inside the proxy, gets nothing).
    """
    requireProgram("chromium")
    from tests.browser.browsers import _baseEnvironment, runBounded

    def load(proxy: str, url: str, workdir: Path) -> str:
        run = runBounded(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={workdir / 'profile'}", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                f"--proxy-pac-url=http://{proxy}/proxy.pac", "--proxy-bypass-list=<-loopback>",
                "--dump-dom", url,
            ],
            _baseEnvironment(workdir / "home"),
        )  # fmt: skip
        return run.stdout

    through = tmp_path / "through"
    through.mkdir()
    with runningProxy(origin, through, "--pac-bypass", "intranet.example") as proxy:
        dom = load(proxy.address, origin.url("/hello/pac"), through)
        assert "hello pac" in dom, dom
        proxy.waitForAccess("GET", origin.url("/hello/pac"), 200)

    direct = tmp_path / "direct"
    direct.mkdir()
    with runningProxy(origin, direct, "--pac-bypass", "caplab.test") as proxy:
        dom = load(proxy.address, origin.url("/hello/direct"), direct)
        assert "hello direct" not in dom, dom
        assert not any("/hello/direct" in line for line in proxy.accessLines())


def test_reloadWithWorkers(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--workers 2}, SIGHUP to the supervisor reloads the lists in every worker.
    """
    block = tmp_path / "block.txt"
    block.write_text("ads.example\n")
    process = CaplabProcess(
        [
            "--workers", "2", "--no-tcp", "--no-udp", "--proxy-port", "0",
            "--resolve", f"{TEST_HOST}=127.0.0.1", "--block-list", str(block),
        ]
    ).start()  # fmt: skip
    try:
        for index in (1, 2):
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab proxy listening on ")
        address = f"127.0.0.1:{process.port('proxy')}"
        assert codes(curl(address, origin.url("/hello/workers")))[0] == 200
        start = len(process.lines)
        block.write_text(f"{TEST_HOST}\n")
        process.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        for index in (1, 2):
            process.waitForLine(
                rf"\[worker {index} pid \d+\] .*caplab reloaded block/allow lists", start=start
            )
        for _ in range(6):  # new connections, spread over both workers
            assert codes(curl(address, origin.url("/hello/workers")))[0] == 403
    finally:
        process.stop()


def test_brokenListAtStart(tmp_path: Path) -> None:
    """
    A list with a line that is not a rule stops C{twist caplab} at once with a usage error
    naming the file and line (no traceback).
    """
    block = tmp_path / "block.txt"
    block.write_text("ads.example\nhttps://tracker.example/pixel\n")
    process = CaplabProcess(
        ["--no-tcp", "--no-udp", "--proxy-port", "0", "--block-list", str(block)]
    )
    process.start()
    try:
        assert process.wait() != 0
    finally:
        process.stop()
    assert f"{block}:2" in process.output, process.output
    assert "Traceback" not in process.output, process.output


def test_noUpstreamFor(origin: OriginProcess, tmp_path: Path) -> None:
    """
    C{--no-upstream-for} reaches its domain directly: with a parent that is not there, the
    origin still answers, while other hosts get a 502 naming the parent.
    """
    with runningProxy(
        origin, tmp_path,
        "--upstream-proxy", "http://127.0.0.1:9", "--no-upstream-for", "caplab.test",
    ) as proxy:  # fmt: skip
        direct = curl(proxy.address, origin.url("/hello/direct"))
        assert codes(direct)[0] == 200, direct
        assert body(direct) == b"hello direct\n"
        chained = curl(proxy.address, "http://elsewhere.example/")
        assert codes(chained)[0] == 502, chained
        assert "parent proxy 127.0.0.1:9" in body(chained).decode()
