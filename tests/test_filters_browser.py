"""
Real browsers through the filtering proxy: headless Chromium and Firefox ESR load a page
from an allowed site whose script and image come from a third party the element blocker
removes.  The rendered page has no such element (Chromium's DOM; Firefox's report through
the page's own script), the third party's origin saw no request at all, and a rewrite rule
changed the text the browser rendered.

The third party is on the proxy's block list, which C{--block-elements} uses: had an element
slipped through, the browser would have asked the proxy for it (and got a 403), so the
proxy's access log, which must have no line for the third party, shows that its requests
never even started.  The proxy under test is the one of L{tests.test_filters_e2e}.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.browsers import _baseEnvironment, firefox, runBounded
from tests.conftest import requireProgram
from tests.test_filters_e2e import SITE, THIRD_PARTY, FilteredProxy, runningFiltered

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

OPTIONS = [
    "--no-cache",
    "--access-log",
    "-",
    "--block-elements",
    SITE,
    "--rewrite",
    f"{SITE} s/hello/HOWDY/g",
    f"block:{THIRD_PARTY}",
]


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilteredProxy]:
    with runningFiltered(OPTIONS, tmp_path_factory.mktemp("filtered")) as running:
        yield running


def pacURL(proxy: str) -> str:
    """
    A PAC file as a C{data:} URL sending both test hosts through C{proxy}, all else DIRECT.
    """
    script = (
        "function FindProxyForURL(url, host) {"
        f' if (host == "{SITE}" || host == "{THIRD_PARTY}") return "PROXY {proxy}";'
        ' return "DIRECT"; }'
    )
    return (
        "data:application/x-ns-proxy-autoconfig;base64,"
        + base64.b64encode(script.encode()).decode()
    )


def assertNothingFromTheThirdParty(filtered: FilteredProxy, browser: str) -> dict[str, str]:
    """
    The origin saw the page, the site's own script and its beacon for C{browser}'s load,
    and nothing for the third party; the beacon's report.
    """
    log = filtered.originLog()
    assert not [r for r in log if r["host"].startswith(THIRD_PARTY)], log
    asked = [line for line in filtered.process.output.splitlines() if THIRD_PARTY in line]
    assert not [line for line in asked if "GET http://" in line], asked
    beacons = [r for r in log if r["uri"].startswith("/beacon?")]
    reports = [dict(p.split("=", 1) for p in r["uri"].split("?", 1)[1].split("&")) for r in beacons]
    mine = [r for r in reports if r["page"] == browser]
    assert mine, log
    return mine[-1]


def test_chromium(filtered: FilteredProxy, tmp_path: Path) -> None:
    requireProgram("chromium")
    proxy = f"127.0.0.1:{filtered.proxyPort}"
    argv = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--no-default-browser-check", f"--user-data-dir={tmp_path / 'profile'}",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-default-apps",
        f"--proxy-pac-url={pacURL(proxy)}", "--proxy-bypass-list=<-loopback>",
        "--dump-dom", filtered.url("/page.html?chromium"),
    ]  # fmt: skip
    run = runBounded(argv, _baseEnvironment(tmp_path / "home"))
    assert run.returncode == 0, run.describe()
    dom = run.stdout
    assert THIRD_PARTY not in dom, run.describe()
    assert "blocked elements: 0; HOWDY from the lab" in dom, run.describe()
    report = assertNothingFromTheThirdParty(filtered, "chromium")
    assert report["found"] == "0"


def test_firefox(filtered: FilteredProxy, tmp_path: Path) -> None:
    requireProgram("firefox-esr")
    run = firefox(
        filtered.url("/page.html?firefox"),
        f"127.0.0.1:{filtered.proxyPort}",
        tmp_path,
        tmp_path / "page.png",
    )
    assert run.returncode == 0, run.describe()
    report = assertNothingFromTheThirdParty(filtered, "firefox")
    assert report["found"] == "0"
    assert report["text"] == "HOWDY%20from%20the%20lab"
