"""
Tests for L{caplab.proxy.pac}: the PAC file's content, run by a real JavaScript engine.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from caplab.proxy import pac
from caplab.proxy.hooks import IPage, PageRequest, PageResponse
from caplab.proxy.pac import PAC_CONTENT_TYPE, PacPage, PacResource, bypassDomain, pacScript
from tests.conftest import requireProgram

#: (host, expected answer) pairs the PAC file is asked about in the JavaScript tests.
CASES = [
    ("intranet.example", "DIRECT"),
    ("www.intranet.example", "DIRECT"),
    ("WWW.Intranet.Example.", "DIRECT"),
    ("xn--bcher-kva.example", "DIRECT"),
    ("a.b.xn--bcher-kva.example", "DIRECT"),
    ("notintranet.example", "PROXY 127.0.0.1:8080"),
    ("intranet.example.evil.net", "PROXY 127.0.0.1:8080"),
    ("example", "PROXY 127.0.0.1:8080"),
    ("www.example.org", "PROXY 127.0.0.1:8080"),
    ("lab.example", "PROXY 127.0.0.1:8080"),
    ("www.lab.example", "DIRECT"),
    ("a.b.lab.example", "DIRECT"),
    ("xlab.example", "PROXY 127.0.0.1:8080"),
]

#: The bypass list of the JavaScript tests: a domain with its subdomains, an IDN, and
#: subdomains only.
BYPASS = ["intranet.example", "bücher.example", "*.Lab.Example"]


def render(
    page: PacPage,
    host: bytes | None,
    local: tuple[str, int] = ("127.0.0.1", 8080),
    method: bytes = b"GET",
) -> PageResponse:
    headers = [(b"Accept", b"*/*")]
    if host is not None:
        headers.append((b"Host", host))
    return page.render(PageRequest(method, b"/proxy.pac", b"", headers, "127.0.0.1", local))


def header(response: PageResponse, name: bytes) -> list[bytes]:
    return [v for n, v in response.headers if n.lower() == name.lower()]


class ScriptTests(SynchronousTestCase):
    """
    The text of the PAC file.
    """

    def test_content(self) -> None:
        """
        It defines C{FindProxyForURL}, names the proxy and the normalised bypass domains.
        """
        script = pacScript("127.0.0.1:8080", ["Intranet.Example.", "bücher.example"])
        self.assertIn("function FindProxyForURL(url, host)", script)
        self.assertIn('return "PROXY 127.0.0.1:8080";', script)
        self.assertIn('var BYPASS = ["intranet.example", "xn--bcher-kva.example"];', script)

    def test_noBypass(self) -> None:
        """
        Without bypass domains everything goes through the proxy.
        """
        self.assertIn("var BYPASS = [];", pacScript("[::1]:3128"))
        self.assertIn('"PROXY [::1]:3128"', pacScript("[::1]:3128"))

    def test_nothingInjected(self) -> None:
        """
        A proxy address or bypass entry that is not what it claims is refused.
        """
        for address in ['a:1"; alert(1); "', "127.0.0.1", "host:port", ""]:
            self.assertRaises(ValueError, pacScript, address)
        for domain in ['x"];alert(1);//', "a b", "http://x/"]:
            self.assertRaises(ValueError, pacScript, "p:1", [domain])


class BypassTests(SynchronousTestCase):
    """
    L{bypassDomain}: the one reading of a C{--pac-bypass} entry.
    """

    def test_domainsAndWildcards(self) -> None:
        """
        A domain is normalised (case, trailing dot, IDNA); C{*.domain} (its subdomains only)
        keeps its C{*.}.
        """
        self.assertEqual(bypassDomain("Intranet.Example."), "intranet.example")
        self.assertEqual(bypassDomain("bücher.example"), "xn--bcher-kva.example")
        self.assertEqual(bypassDomain(" *.Lab.Example "), "*.lab.example")
        for bad in ["*", "*.", "**.example", "*.*.example", "a.*.example", "http://x/", "a b"]:
            self.assertRaises(ValueError, bypassDomain, bad)

    def test_script(self) -> None:
        """
        A wildcard entry is in the script as written canonically.
        """
        script = pacScript("127.0.0.1:8080", BYPASS)
        self.assertIn(
            'var BYPASS = ["*.lab.example", "intranet.example", "xn--bcher-kva.example"];',
            script,
        )


class PageTests(SynchronousTestCase):
    """
    L{PacPage} serves the script for the address the browser used.
    """

    def test_isAPage(self) -> None:
        """
        It is an L{IPage} (no twisted.web resource), under its old name too.
        """
        page: IPage = PacPage()
        self.assertNotIsInstance(page, Resource)
        self.assertIs(PacResource, PacPage)

    def test_fromHostHeader(self) -> None:
        """
        The C{Host} header names the proxy, with the PAC media type and a cache lifetime.
        """
        response = render(PacPage(["intranet.example"]), b"proxy.lab.example:3128")
        self.assertEqual(response.code, 200)
        self.assertIn(b'"PROXY proxy.lab.example:3128"', response.body)
        self.assertIn(b'"intranet.example"', response.body)
        self.assertEqual(header(response, b"content-type"), [PAC_CONTENT_TYPE])
        self.assertEqual(header(response, b"cache-control"), [b"max-age=300"])

    def test_badHostHeader(self) -> None:
        """
        Without a usable C{Host} header the local address is named, IPv6 bracketed.
        """
        for value in [None, b"no-port.example", b'x:1"+alert(1)+"', b"a:1\r\nX: y"]:
            response = render(PacPage(), value)
            self.assertIn(b'"PROXY 127.0.0.1:8080"', response.body)
        response = render(PacPage(), None, ("::1", 8081))
        self.assertIn(b'"PROXY [::1]:8081"', response.body)

    def test_wildcardBypass(self) -> None:
        """
        A C{*.domain} entry, which the option check accepts, is served (it used to make
        every C{/proxy.pac} an error).
        """
        response = render(PacPage(["*.Example.com"]), b"p:1")
        self.assertEqual(response.code, 200)
        self.assertIn(b'var BYPASS = ["*.example.com"];', response.body)

    def test_bypassNormalisedWhenSet(self) -> None:
        """
        The bypass list is read when it is set (at start and by a reload, which assigns
        C{bypass}), not for each request; a bad entry is refused then, and the old list
        stays.
        """
        page = PacPage(["a.example"])
        page.bypass = ["*.Lab.Example", "Intranet.Example.", "intranet.example"]
        self.assertEqual(page.bypass, ["*.lab.example", "intranet.example"])
        with self.assertRaises(ValueError):
            page.bypass = ["not a domain"]
        self.assertEqual(page.bypass, ["*.lab.example", "intranet.example"])
        read: list[str] = []

        def counting(entry: str) -> str:
            read.append(entry)
            return bypassDomain(entry)

        self.patch(pac, "bypassDomain", counting)
        self.patch(pac, "normaliseName", counting)
        response = render(page, b"p:1")
        self.assertIn(b'["*.lab.example", "intranet.example"]', response.body)
        self.assertEqual(read, [])

    def test_fixedAddress(self) -> None:
        """
        A configured address wins over the request's.
        """
        response = render(PacPage(proxyAddress="10.0.0.1:80"), b"other:1")
        self.assertIn(b'"PROXY 10.0.0.1:80"', response.body)

    def test_head(self) -> None:
        """
        C{HEAD} gets the same answer (the writer leaves the body out).
        """
        self.assertEqual(render(PacPage(), b"p:1", method=b"HEAD"), render(PacPage(), b"p:1"))

    def test_otherMethods(self) -> None:
        """
        Other methods get 405 with C{Allow}.
        """
        response = render(PacPage(), b"p:1", method=b"POST")
        self.assertEqual(response.code, 405)
        self.assertEqual(header(response, b"allow"), [b"GET, HEAD"])


class JavaScriptTests(SynchronousTestCase):
    """
    The script run by headless Chromium's JavaScript engine answers as a browser expects.
    """

    def test_answers(self) -> None:
        """
        Bypass domains and their subdomains go DIRECT (any case, trailing dot), all else
        through the proxy.
        """
        requireProgram("chromium")
        from tests.browser.browsers import _baseEnvironment, runBounded

        script = pacScript("127.0.0.1:8080", BYPASS)
        hosts = json.dumps([host for host, _ in CASES])
        page = (
            "<html><body><script>\n"
            f"{script}\n"
            f"var hosts = {hosts}; var answers = [];\n"
            "for (var i = 0; i < hosts.length; i++) {\n"
            "  answers.push(FindProxyForURL('http://' + hosts[i] + '/', hosts[i]));\n"
            "}\n"
            "document.body.setAttribute('data-answers', JSON.stringify(answers));\n"
            "</script></body></html>\n"
        )
        with tempfile.TemporaryDirectory() as directory:
            workdir = Path(directory)
            html = workdir / "pac.html"
            html.write_text(page)
            run = runBounded(
                [
                    "chromium",
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    f"--user-data-dir={workdir / 'profile'}",
                    "--disable-background-networking",
                    "--dump-dom",
                    html.as_uri(),
                ],
                _baseEnvironment(workdir / "home"),
            )
        found = re.search(r"data-answers=\"([^\"]*)\"", run.stdout)
        self.assertIsNotNone(found, run.describe())
        assert found is not None
        answers = json.loads(found.group(1).replace("&quot;", '"'))
        self.assertEqual(list(zip([h for h, _ in CASES], answers, strict=True)), CASES)
