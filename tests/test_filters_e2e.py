"""
End-to-end tests of the filters through the real C{twist caplab}, with its filter options,
and real clients (curl): a rewrite on a gzip origin read with C{curl --compressed}, the
privacy rules as the origin sees them, a large body transformed with flat memory, and a
cache hit transformed per client while the stored entry stays the origin's bytes.

The origin is this module run as a program (C{python -m tests.test_filters_e2e}): a small
twisted.web site that logs C{caplab origin listening on ...}, so that
L{tests.support.CaplabProcess} runs it, and serves its request log at C{/_log}.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from pathlib import Path
from typing import Any, cast

import pytest

from caplab.proxy.filters.reporting import COUNTERS
from tests.conftest import requireProgram
from tests.support import WAIT, CaplabProcess
from tests.test_e2e_metrics import get, scrape
from tests.test_e2e_workers import adminSamples, waitFor, workerPids

ROOT = Path(__file__).resolve().parent.parent

#: The host name of the test origin's pages, and of the third party the element blocker
#: removes (the proxy resolves both to the origin; nothing else does).
SITE = "site.caplab.test"
THIRD_PARTY = "blocked.caplab.test"

#: The page the browsers load: a script and an image from the blocked third party, a
#: script of the site's own that reports what it finds, and text a rewrite changes.
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>filters</title>
<script src="http://{third}:{port}/evil.js"></script>
</head><body>
<p id="greeting">hello from the lab</p>
<img id="ad" src="http://{third}:{port}/evil.png" width="10" height="10">
<IMG SRC='http://{third}:{port}/evil2.png'>
<div id="result">pending</div>
<script src="/own.js"></script>
</body></html>
"""
OWN_JS = """
var found = document.querySelectorAll('script[src*="blocked"], img[src*="blocked"]').length;
var text = document.getElementById('greeting').textContent;
document.getElementById('result').textContent = 'blocked elements: ' + found + '; ' + text;
new Image().src = '/beacon?found=' + found + '&text=' + encodeURIComponent(text) +
    '&page=' + encodeURIComponent(location.search.slice(1));
"""

pytestmark = pytest.mark.e2e


# --- the program: origin and filtered proxy --------------------------------------------


def serveOrigin() -> None:
    """
    Run the origin until SIGTERM.
    """
    from twisted.internet import reactor
    from twisted.internet.address import IPv4Address
    from twisted.internet.protocol import ServerFactory
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.web import resource, server

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    requests: list[dict[str, Any]] = []

    class Origin(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> Any:
            host = (request.getHeader(b"host") or b"").decode()
            path = request.uri.decode()
            raw = request.requestHeaders.getAllRawHeaders()
            lines = [[n.decode(), v.decode()] for n, values in raw for v in values]
            entry = {"host": host, "uri": path, "headers": lines}
            if not path.startswith("/_log"):
                requests.append(entry)
                print("ORIGIN " + json.dumps(entry), flush=True)
            name = request.path.decode()
            if name == "/_log":
                request.setHeader(b"content-type", b"application/json")
                return json.dumps(requests).encode()
            if name == "/echo":
                request.setHeader(b"content-type", b"application/json")
                request.setHeader(b"set-cookie", b"tracking=1")
                return json.dumps(entry).encode()
            if name == "/gzip":
                request.setHeader(b"content-type", b"text/html; charset=utf-8")
                request.setHeader(b"content-encoding", b"gzip")
                request.setHeader(b"etag", b'"gz1"')
                return gzip.compress(b"<p>hello gzip world, hello again</p>\n" * 1000)
            if name == "/cached":
                request.setHeader(b"content-type", b"text/plain")
                request.setHeader(b"cache-control", b"public, max-age=600")
                return b"hello from the cache\n"
            if name == "/big":
                return self.big(request, int(request.args.get(b"mib", [b"1"])[0]))
            if name == "/page.html":
                request.setHeader(b"content-type", b"text/html")
                return PAGE.format(third=THIRD_PARTY, port=originPort).encode()
            if name == "/own.js":
                request.setHeader(b"content-type", b"application/javascript")
                return OWN_JS.encode()
            if name in ("/evil.js", "/beacon"):
                request.setHeader(b"content-type", b"application/javascript")
                return b"document.title = 'evil';" if name == "/evil.js" else b""
            if name in ("/evil.png", "/evil2.png"):
                request.setHeader(b"content-type", b"image/png")
                return b"\x89PNG"
            request.setResponseCode(404)
            return b"no such page\n"

        def big(self, request: Any, mib: int) -> Any:
            line = b"hello " + b"x" * 1017 + b"\n"
            chunk = line * 64  # 64 KiB
            total = mib * 16
            request.setHeader(b"content-type", b"text/plain")
            request.setHeader(b"content-length", b"%d" % (total * len(chunk)))

            class Pull:
                sent = 0

                def resumeProducing(self) -> None:
                    if self.sent >= total:
                        request.unregisterProducer()
                        request.finish()
                        return
                    self.sent += 1
                    request.write(chunk)

                def stopProducing(self) -> None:
                    self.sent = total

            producer = Pull()
            request.registerProducer(producer, False)
            request.notifyFinish().addErrback(lambda _: producer.stopProducing())
            return server.NOT_DONE_YET

    site = server.Site(Origin())
    site.displayTracebacks = False
    # cast: Twisted annotates listenTCP's factory as a ServerFactory; any factory works
    listening = reactor.listenTCP(0, cast(ServerFactory, site), interface="127.0.0.1")
    address = listening.getHost()
    assert isinstance(address, IPv4Address)
    originPort = address.port
    print(f"caplab origin listening on 127.0.0.1:{originPort}", flush=True)
    reactor.run()


if __name__ == "__main__":
    serveOrigin()
    raise SystemExit(0)


# --- the tests --------------------------------------------------------------------------


class FilteredProxy:
    """
    The origin above and C{twist caplab} in front of it, running.
    """

    def __init__(self, origin: CaplabProcess, proxy: CaplabProcess) -> None:
        self.process = proxy
        self.proxyPort = proxy.port("proxy")
        self.originPort = origin.port("origin")

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.proxyPort}"

    def url(self, path: str, host: str = SITE) -> str:
        return f"http://{host}:{self.originPort}{path}"

    def originLog(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.originPort}/_log", timeout=WAIT) as f:
            return json.loads(f.read())

    def curl(
        self, *args: str, path: str = "/", host: str = SITE
    ) -> subprocess.CompletedProcess[bytes]:
        curl = requireProgram("curl")
        return subprocess.run(
            [curl, "-sS", "--max-time", str(WAIT), "-x", self.proxy, *args, self.url(path, host)],
            capture_output=True, timeout=WAIT + 5, check=True,
        )  # fmt: skip


@contextmanager
def runningFiltered(options: list[str], workdir: Path) -> Iterator[FilteredProxy]:
    """
    Run the origin, and C{twist caplab} with C{options} in front of it (the test hosts
    resolved to the origin; C{--block-list} files given as C{block:HOST} are written to
    C{workdir}), until the block ends.
    """
    environment = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "tests.test_filters_e2e"]
    origin = CaplabProcess([], env=environment, command=command).start()
    arguments = ["--no-tcp", "--no-udp", "--proxy-port", "0"]
    arguments += ["--resolve", f"{SITE}=127.0.0.1", "--resolve", f"{THIRD_PARTY}=127.0.0.1"]
    for option in options:
        if option.startswith("block:"):
            listFile = workdir / "blocked.txt"
            listFile.write_text(option[len("block:") :] + "\n")
            arguments += ["--block-list", str(listFile)]
        else:
            arguments.append(option)
    try:
        origin.waitListening("origin")
        proxy = CaplabProcess(arguments).start()
        try:
            proxy.waitListening("proxy")
            yield FilteredProxy(origin, proxy)
        finally:
            proxy.stop()
    finally:
        origin.stop()


@pytest.fixture
def filtered(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FilteredProxy]:
    with runningFiltered(request.param, tmp_path) as running:
        yield running


REWRITE = ["--no-cache", "--rewrite", f"{SITE} s/hello/HOWDY/g"]


@pytest.mark.parametrize("filtered", [REWRITE], indirect=True)
def test_rewriteOnGzipOriginWithCurlCompressed(filtered: FilteredProxy) -> None:
    """
    curl asks for compressed content; the origin sends gzip; the proxy decodes, rewrites
    and sends identity, which curl reads whole.
    """
    done = filtered.curl("--compressed", "-D", "-", path="/gzip")
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert body == b"<p>HOWDY gzip world, HOWDY again</p>\n" * 1000
    fields = head.lower()
    assert b"content-encoding" not in fields
    assert b"transfer-encoding: chunked" in fields
    assert b'etag: w/"gz1"' in fields


PRIVACY = ["--no-cache", "--privacy"]


@pytest.mark.parametrize("filtered", [PRIVACY], indirect=True)
def test_privacyRulesSeenAtTheOrigin(filtered: FilteredProxy) -> None:
    """
    A third-party request through the proxy reaches the origin without its tracking
    parameters and cookie, with the Referer reduced to its origin and C{Sec-GPC: 1}; its
    C{Set-Cookie} does not reach the client.
    """
    done = filtered.curl(
        "-D", "-",
        "-H", "Referer: http://news.example/2026/story.html?id=7",
        "-H", "Cookie: uid=42",
        "-H", "Accept: image/webp,*/*",
        path="/echo?utm_source=newsletter&id=3&fbclid=abc",
    )  # fmt: skip
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    seen = json.loads(body)
    assert seen["uri"] == "/echo?id=3"
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["referer"] == "http://news.example/"
    assert headers["sec-gpc"] == "1"
    assert "cookie" not in headers
    assert b"set-cookie" not in head.lower()


BIG = ["--no-cache", "--rewrite", f"{SITE} s/hello/HOWDY/g"]


@pytest.mark.parametrize("filtered", [BIG], indirect=True)
def test_largeBodyWithFlatMemory(filtered: FilteredProxy) -> None:
    """
    1 GiB of text is rewritten on its way through (every line of it, read as it comes,
    never stored), and the proxy's memory stays flat.
    """
    assert filtered.process.process is not None
    pid = filtered.process.process.pid
    before = _rss(pid)
    curl = requireProgram("curl")
    argv = [curl, "-sS", "--max-time", "120", "-x", filtered.proxy, filtered.url("/big?mib=1024")]
    size = lines = 0
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as reader:
        assert reader.stdout is not None
        carry = b""
        for block in iter(lambda: reader.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
            size += len(block)
            text = carry + block
            assert b"hello" not in text
            lines += block.count(b"\n")
            carry = text[-8:]
        assert reader.wait(WAIT) == 0
    after = _rss(pid)
    assert size == 1 << 30
    assert lines == size // 1024
    assert after - before < 32 << 20, (before, after)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


CACHED = ["--rewrite", f"{SITE} s/hello/HOWDY/g"]


@pytest.mark.parametrize("filtered", [CACHED], indirect=True)
def test_cacheHitTransformedPerClient(filtered: FilteredProxy) -> None:
    """
    The first request stores the origin's bytes and is rewritten; a hit is rewritten too;
    a client that asks for C{no-transform} gets the stored original from the cache.
    """
    first = filtered.curl("-D", "-", path="/cached").stdout
    second = filtered.curl("-D", "-", path="/cached").stdout
    original = filtered.curl("-D", "-", "-H", "Cache-Control: no-transform", path="/cached").stdout
    assert first.endswith(b"\r\n\r\nHOWDY from the cache\n")
    assert second.endswith(b"\r\n\r\nHOWDY from the cache\n")
    assert original.endswith(b"\r\n\r\nhello from the cache\n")
    assert b"hit" in second.lower().split(b"cache-status:")[1].split(b"\r\n")[0]
    assert b"hit" in original.lower().split(b"cache-status:")[1].split(b"\r\n")[0]
    assert [r["uri"] for r in filtered.originLog()].count("/cached") == 1


# --- what the filters did, on /metrics and the status page --------------------------------

ADMIN = ["--admin-endpoint", "tcp:0:interface=127.0.0.1"]

#: What a third-party request with tracking parameters, a Cookie and a cross-site Referer,
#: answered with a Set-Cookie, makes the privacy rules count.
PRIVACY_EVENTS = {
    "tracking-parameters": 2,
    "referers-reduced": 1,
    "gpc-sent": 1,
    "cookies-dropped": 1,
    "set-cookies-dropped": 1,
}


def thirdPartyRequest(filtered: FilteredProxy) -> None:
    done = filtered.curl(
        "-D", "-",
        "-H", "Referer: http://news.example/story.html",
        "-H", "Cookie: uid=42",
        path="/echo?utm_source=newsletter&id=3&fbclid=abc",
    )  # fmt: skip
    assert b"set-cookie" not in done.stdout.partition(b"\r\n\r\n")[0].lower()


def filterEvents(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """
    C{caplab_filter_events_total} of a scrape, by C{what}.
    """
    return {
        dict(labels)["what"]: value
        for (name, labels), value in samples.items()
        if name == "caplab_filter_events_total"
    }


def filterCard(page: bytes) -> dict[str, float] | None:
    """
    The status page's Filters card, by C{what} (each row's C{data-metric} names its
    sample as C{/metrics} does), or None if the page has no such card.
    """
    card = re.search(rb'<section class="card" id="filters">(.*?)</section>', page, re.DOTALL)
    if card is None:
        return None
    rows = {}
    for metric, value in re.findall(rb'data-metric="([^"]+)" data-value="([^"]+)"', card[1]):
        found = re.fullmatch(
            r'caplab_filter_events_total\{what="([^"]+)"\}', unescape(metric.decode())
        )
        assert found is not None, metric
        rows[found[1]] = float(value)
    return rows


@pytest.mark.parametrize("filtered", [[*PRIVACY, *ADMIN]], indirect=True)
def test_privacyCountedOnMetricsAndStatusPage(filtered: FilteredProxy) -> None:
    """
    What the privacy rules removed is counted in C{/metrics}
    (C{caplab_filter_events_total{what=...}}, every kind there, at 0 if it did not happen),
    and the status page's Filters card shows the same figures.
    """
    filtered.process.waitListening("admin")
    admin = filtered.process.port("admin")
    thirdPartyRequest(filtered)
    events = filterEvents(scrape(admin))
    assert events == {**dict.fromkeys(COUNTERS, 0), **PRIVACY_EVENTS}
    code, _, page = get(filtered.proxyPort, "/")
    assert code == 200
    assert filterCard(page) == events
    assert f"<th>{COUNTERS['set-cookies-dropped']}</th><td>1</td>".encode() in page


@pytest.mark.parametrize("filtered", [["--workers", "2", *PRIVACY, *ADMIN]], indirect=True)
def test_privacyCountedOverWorkers(filtered: FilteredProxy) -> None:
    """
    Under C{--workers} the counts are the whole server's: with each worker stopped in turn
    while the other answers, the parent's C{/metrics} adds up both workers' (within a
    second), and a worker's status page shows the same.
    """
    process = filtered.process
    process.waitListening("admin")
    for index in (1, 2):
        process.waitForLine(rf"\[worker {index} pid \d+\] caplab proxy listening on ")
    admin = process.port("admin")
    pids = workerPids(process)
    sent = 0
    for frozen in (1, 2):
        os.kill(pids[frozen], signal.SIGSTOP)
        try:
            for _ in range(3):
                thirdPartyRequest(filtered)
                sent += 1
        finally:
            os.kill(pids[frozen], signal.SIGCONT)
    expected = {what: count * sent for what, count in PRIVACY_EVENTS.items()}

    def counted() -> dict[str, float] | None:
        events = filterEvents(adminSamples(admin))
        return events if events == {**dict.fromkeys(COUNTERS, 0), **expected} else None

    events = waitFor(counted, f"/metrics counting {sent} requests' privacy events")

    def shown() -> bool:
        code, _, page = get(filtered.proxyPort, "/")
        return code == 200 and filterCard(page) == events

    waitFor(shown, "the status page's Filters card showing the whole server's counts")
