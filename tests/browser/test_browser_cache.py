"""
The browser test's second page load is served from the proxy's cache (the cache issue): two
fresh profiles of each browser load the same cacheable page through the real C{twist caplab};
the origin is asked for the page and its subresources once, and the proxy logs cache hits.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.browser.browsers import BrowserRun, chromium, countPixels, firefox
from tests.browser.test_browsers import SUBRESOURCES
from tests.conftest import requireProgram
from tests.origins import OriginProcess
from tests.origins.proxy import ProxyUnderTest
from tests.origins.site import IMAGE_RGB, PAGE_OK

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

_tokens = itertools.count()


def load(browser: str, url: str, proxy: ProxyUnderTest, workdir: Path) -> BrowserRun:
    """
    Load C{url} in a fresh profile of C{browser} and check that the page rendered whole.
    """
    if browser == "chromium":
        run = chromium(url, proxy.address, workdir)
        assert f'<p id="result">{PAGE_OK}</p>' in run.stdout, run.describe()
    else:
        screenshot = workdir / "page.png"
        run = firefox(url, proxy.address, workdir, screenshot)
        assert countPixels(screenshot, IMAGE_RGB) == 16 * 16, run.describe()
    assert run.returncode == 0, run.describe()
    return run


@pytest.mark.parametrize("browser", ["chromium", "firefox-esr"])
def test_secondLoadServedFromCache(
    browser: str, origin: OriginProcess, proxy: ProxyUnderTest, tmp_path: Path
) -> None:
    """
    A cacheable page (C{public, max-age=600} on the page and its subresources) loaded by two
    fresh profiles renders both times, but the origin is asked for the page and its
    subresources only once: the second load is served from the proxy's cache, as its access
    log says. (The beacon is C{no-store}, so the origin hears from the script both times:
    the cached script ran and found the cached stylesheet and image.)
    """
    requireProgram(browser)
    base = f"/cacheable/{browser}-{next(_tokens)}/"
    url = origin.url(base + "page.html")

    load(browser, url, proxy, tmp_path / "first")
    origin.waitForCount(base + "beacon", 1)
    load(browser, url, proxy, tmp_path / "second")
    origin.waitForCount(base + "beacon", 2)

    counts = origin.stats()
    assert {name: counts.get(base + name) for name in ("page.html", *SUBRESOURCES)} == {
        name: 1 for name in ("page.html", *SUBRESOURCES)
    }
    assert counts[base + "beacon"] == 2
    for name in ("page.html", *SUBRESOURCES):
        proxy.waitForAccess("GET", origin.url(base + name), 200, cacheStatus=r"\bhit\b")
