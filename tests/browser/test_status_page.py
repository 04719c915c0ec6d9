"""
The proxy's status page in headless Chromium: the figures it shows are those of C{/metrics},
and a screenshot has the page's structure (a header band, figure cards, the rate chart with
its bars below them), compared by regions and colours rather than pixel by pixel.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from caplab.metrics.chart import BAR_COLOUR
from tests.browser.browsers import _baseEnvironment, pixelsPerRow, pngSize, runBounded
from tests.conftest import requireProgram
from tests.origins import OriginProcess
from tests.origins.proxy import runningProxy
from tests.support import CaplabProcess
from tests.test_e2e_metrics import Samples, scrape, total
from tests.test_e2e_policy import codes, curl
from tests.test_metrics_pages import rowsOf

pytestmark = pytest.mark.browser

#: The header band's colour (the page's style sheet).
HEADER_COLOUR = (0x1D, 0x35, 0x57)
WIDTH, HEIGHT = 1200, 1000


def rgb(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


def chromium(url: str, workdir: Path, *action: str) -> str:
    requireProgram("chromium")
    run = runBounded(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={workdir / 'profile'}", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--no-proxy-server", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}",
            *action, url,
        ],
        _baseEnvironment(workdir / "home"),
    )  # fmt: skip
    assert run.returncode == 0, run.describe()
    return run.stdout


def test_statusPageInChromium(origin: OriginProcess, tmp_path: Path) -> None:
    """
    After some traffic (forwarded requests, a cache miss and a hit), the status page
    Chromium renders shows exactly the figures C{/metrics} had just before it was loaded
    (the counts as a person reads them too), and its screenshot has a header band on top,
    then the chart's bars further down.
    """
    with runningProxy(origin, tmp_path, "--admin-endpoint", "tcp:0:interface=127.0.0.1") as proxy:
        assert isinstance(proxy.process, CaplabProcess)
        proxy.process.waitListening("admin")
        admin = proxy.process.port("admin")
        for _ in range(4):
            assert codes(curl(proxy.address, origin.url("/hello/status-page")))[0] == 200
        cached = origin.url("/run/status-page/cache/max-age=600")
        for _ in range(2):
            assert codes(curl(proxy.address, cached))[0] == 200
        proxy.waitForAccess("GET", cached, 200, cacheStatus="hit")
        before: Samples = scrape(admin)
        dom = chromium(f"http://{proxy.address}/", tmp_path / "dom", "--dump-dom")
        after: Samples = scrape(admin)
        screenshot = tmp_path / "status.png"
        chromium(f"http://{proxy.address}/", tmp_path / "shot", f"--screenshot={screenshot}")

    assert "<h1>caplab proxy</h1>" in dom, dom
    rows = rowsOf(dom.encode())
    # Counted when a response is done: the page's own request is not in it yet.
    for metric in (
        "caplab_proxy_requests_total",
        "caplab_proxy_sent_bytes_total",
        "caplab_proxy_tunnels_total",
        "caplab_proxy_blocked_requests_total",
        "caplab_proxy_auth_failures_total",
        "caplab_cache_hits_total",
        "caplab_cache_misses_total",
        "caplab_cache_stored_bytes",
    ):
        assert rows.values[metric] == total(before, metric), (metric, rows.values[metric])
    for metric in ("caplab_proxy_requests_total", "caplab_cache_hits_total"):
        assert int(rows.shown[metric].replace(",", "")) == rows.values[metric], metric
    assert rows.values["caplab_proxy_requests_total"] == 6
    assert rows.values["caplab_cache_hits_total"] >= 1
    # The browser's own connection is open while the page is made.
    opened = rows.values["caplab_proxy_connections_total"]
    assert total(before, "caplab_proxy_connections_total") < opened
    assert opened <= total(after, "caplab_proxy_connections_total")
    assert rows.values["caplab_proxy_active_connections"] >= 1
    hits, misses = (
        total(before, "caplab_cache_hits_total"),
        total(before, "caplab_cache_misses_total"),
    )
    ratio = re.search(r'id="hit-ratio" data-value="([0-9.]+)"', dom)
    assert ratio is not None and float(ratio.group(1)) == pytest.approx(hits / (hits + misses))
    assert re.search(r"<svg[^>]*class=\"rate-chart\"", dom) and ">requests/s</text>" in dom

    assert pngSize(screenshot) == (WIDTH, HEIGHT)
    header = pixelsPerRow(screenshot, HEADER_COLOUR)
    bars = pixelsPerRow(screenshot, rgb(BAR_COLOUR))
    headerRows = [y for y, count in enumerate(header) if count > WIDTH * 0.9]
    barRows = [y for y, count in enumerate(bars) if count]
    assert headerRows and headerRows[0] < 5 and 40 < len(headerRows) < 150, headerRows[:3]
    assert barRows, "no bar of the rate chart was drawn"
    assert barRows[0] > headerRows[-1] + 100, (headerRows[-1], barRows[0])
    assert sum(bars) > 500, sum(bars)
