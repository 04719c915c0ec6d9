"""
Real browsers browse through the real C{twist caplab} proxy: headless Chromium and Firefox ESR
each load a page with a stylesheet, an image and a script over plain HTTP and over HTTPS
(CONNECT), from a local origin whose host name (C{origin.caplab.test}) only the proxy can
resolve, so nothing the browser shows could have come any other way.

Chromium's rendered DOM carries the text the page's script wrote after checking the stylesheet
was applied and the image decoded; Firefox's screenshot is checked to be a PNG, and the script's
findings reach the origin's log through its beacon request. The proxy's access log must show
each request (HTTP) or the tunnel (HTTPS).
"""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest

from tests.browser.browsers import chromium, countPixels, firefox, pngSize
from tests.conftest import requireProgram
from tests.origins import OriginProcess
from tests.origins.proxy import ProxyUnderTest
from tests.origins.site import IMAGE_RGB, PAGE_OK
from tests.tls import TEST_HOST, TestPKI

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

#: The page's subresources, as the origin sees them requested.
SUBRESOURCES = ("style.css", "image.png", "script.js")

#: What the script reports through its beacon when every subresource arrived.
BEACON = "beacon?style=applied&image=16x16"

_tokens = itertools.count()


def pageURL(origin: OriginProcess, scheme: str, browser: str) -> tuple[str, str]:
    """
    A page URL whose requests are this run's alone: C{/run/TOKEN/page.html}; and its base.
    """
    base = f"/run/{browser}-{scheme}-{next(_tokens)}/"
    return origin.url(base + "page.html", scheme), base


def assertPageLoadedThroughProxy(
    origin: OriginProcess, proxy: ProxyUnderTest, scheme: str, base: str
) -> None:
    """
    The origin received the page, its subresources and the beacon saying the script found the
    stylesheet applied and the image decoded, all over C{scheme} for the test host (which only
    the proxy resolves); the proxy logged every request, or for HTTPS, the tunnel.
    """
    for name in ("page.html", *SUBRESOURCES, BEACON):
        request = origin.waitForRequest(base + name, scheme)
        assert dict(request["headers"])["host"] == f"{TEST_HOST}:{origin.ports[scheme]}"
    if scheme == "http":
        for name in ("page.html", *SUBRESOURCES, BEACON):
            proxy.waitForAccess("GET", origin.url(base + name, scheme), 200)
    else:
        proxy.waitForAccess("CONNECT", f"{TEST_HOST}:{origin.ports['https']}", 200)


def test_testHostUnreachableWithoutProxy(origin: OriginProcess, tmp_path: Path) -> None:
    """
    Without the proxy Chromium cannot even resolve the test host, so whatever the other tests
    see rendered came through the proxy.
    """
    requireProgram("chromium")
    url, base = pageURL(origin, "http", "direct")
    run = chromium(url, None, tmp_path)
    assert PAGE_OK not in run.stdout
    assert "ERR_NAME_NOT_RESOLVED" in run.stderr, run.describe()
    assert not [r for r in origin.requests() if r["path"].startswith(base)]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_chromiumRendersPageThroughProxy(
    scheme: str, pki: TestPKI, origin: OriginProcess, proxy: ProxyUnderTest, tmp_path: Path
) -> None:
    """
    Headless Chromium, sent to the proxy by a PAC file for the test host only, renders the
    page with its stylesheet, image and script; for HTTPS it trusts only the throw-away CA
    (no certificate errors switched off).
    """
    requireProgram("chromium")
    if scheme == "https":
        requireProgram("certutil")
    url, base = pageURL(origin, scheme, "chromium")

    run = chromium(url, proxy.address, tmp_path, pki.caCert if scheme == "https" else None)

    assert run.returncode == 0, run.describe()
    assert f'<p id="result">{PAGE_OK}</p>' in run.stdout, run.describe()
    assertPageLoadedThroughProxy(origin, proxy, scheme, base)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_firefoxRendersPageThroughProxy(
    scheme: str, pki: TestPKI, origin: OriginProcess, proxy: ProxyUnderTest, tmp_path: Path
) -> None:
    """
    Headless Firefox ESR, with the proxy set by hand in a fresh profile (the throw-away CA
    imported into it for HTTPS), loads the page and takes a screenshot that shows the 16x16
    image; the script ran and found the stylesheet and image, as its beacon tells the origin.
    """
    requireProgram("firefox-esr")
    if scheme == "https":
        requireProgram("certutil")
    url, base = pageURL(origin, scheme, "firefox")
    screenshot = tmp_path / "page.png"

    run = firefox(
        url, proxy.address, tmp_path, screenshot, pki.caCert if scheme == "https" else None
    )

    assert run.returncode == 0, run.describe()
    assert screenshot.exists(), run.describe()
    width, height = pngSize(screenshot)
    assert width >= 100 and height >= 100, (width, height)
    assert countPixels(screenshot, IMAGE_RGB) == 16 * 16, "the image is not on the screenshot"
    assertPageLoadedThroughProxy(origin, proxy, scheme, base)


def test_chromiumHTTPSTunnelIsNotIntercepted(
    origin: OriginProcess, proxy: ProxyUnderTest, tmp_path: Path
) -> None:
    """
    Without the throw-away CA, Chromium refuses the origin's certificate through the tunnel:
    the proxy relays the origin's own TLS, it does not terminate or replace it.
    """
    requireProgram("chromium")
    url, base = pageURL(origin, "https", "chromium-untrusting")
    run = chromium(url, proxy.address, tmp_path)
    assert "ERR_CERT_AUTHORITY_INVALID" in run.stderr, run.describe()
    assert PAGE_OK not in run.stdout
    assert not [r for r in origin.requests() if r["path"].startswith(base)]
    proxy.waitForAccess("CONNECT", f"{TEST_HOST}:{origin.ports['https']}", 200)


def test_chromiumShowsProxyErrorPage(
    origin: OriginProcess, proxy: ProxyUnderTest, tmp_path: Path
) -> None:
    """
    When the origin refuses the connection, Chromium renders the proxy's 502 page with the
    reason.
    """
    requireProgram("chromium")
    with socket.socket() as held:  # bound, not listening: connections to it are refused
        held.bind(("127.0.0.1", 0))
        url = f"http://{TEST_HOST}:{held.getsockname()[1]}/"
        run = chromium(url, proxy.address, tmp_path)
    assert "<h1>502 Bad Gateway</h1>" in run.stdout, run.describe()
    assert "refused the connection" in run.stdout, run.describe()
    proxy.waitForAccess("GET", url, 502)


def test_chromiumShowsProxyStatusPage(proxy: ProxyUnderTest, tmp_path: Path) -> None:
    """
    Opening the proxy's own address in a browser (no proxy configured) shows its status page.
    """
    requireProgram("chromium")
    run = chromium(f"http://{proxy.address}/", None, tmp_path)
    assert "<h1>caplab proxy</h1>" in run.stdout, run.describe()
    assert "requests since start" in run.stdout, run.describe()
