"""
End-to-end tests of address rules through the real C{twist caplab} with curl (issue 9, item
4): a rule for C{127.0.0.1} holds for every spelling of that address a resolver accepts, for
plain requests and CONNECT alike, and for the address a name resolves to.

curl writes IPv4 literals canonically itself, so the spellings are sent as they are with
C{--request-target} (plain requests) and C{--connect-to} (the host of the CONNECT request).
"""

from __future__ import annotations

import html
import signal
from pathlib import Path

import pytest

from tests.origins import OriginProcess, runningOrigin
from tests.origins.proxy import runningProxy
from tests.support import CaplabProcess
from tests.test_e2e_policy import body, codes, curl
from tests.test_policy_addresses import LOOPBACK_SPELLINGS
from tests.tls import TEST_HOST, TestPKI

pytestmark = pytest.mark.e2e

#: Spellings of 127.0.0.1 that getaddrinfo connects to (the first six, of issue 9, each got
#: 200 before).
SPELLINGS = LOOPBACK_SPELLINGS[:6]


def test_everySpellingBlocked(origin: OriginProcess, pki: TestPKI, tmp_path: Path) -> None:
    """
    With C{127.0.0.1} blocked, GET and CONNECT to each other spelling of it get the 403 page,
    which names the canonical address, the rule and its file and line.
    """
    block = tmp_path / "block.txt"
    block.write_text("# loopback\n127.0.0.1\n")
    http, https = origin.ports["http"], origin.ports["https"]
    with runningProxy(origin, tmp_path, "--block-list", str(block), caCert=pki.caCert) as proxy:
        for spelling in SPELLINGS:
            target = f"http://{spelling}:{http}/hello/spelled"
            plain = curl(
                proxy.address, "--request-target", target, f"http://127.0.0.1:{http}/hello/x"
            )
            assert codes(plain)[0] == 403, (spelling, plain)
            page = html.unescape(body(plain).decode())
            assert "access to 127.0.0.1 is blocked by the rule '127.0.0.1'" in page, page
            assert f"{block}:2" in page, page

            tunnel = curl(
                proxy.address,
                "--cacert", str(pki.caCert),
                "--connect-to", f"{TEST_HOST}:{https}:{spelling}:{https}",
                origin.url("/hello/tunnel", "https"),
            )  # fmt: skip
            assert codes(tunnel)[1] == 403, (spelling, tunnel)
            assert tunnel.returncode != 0


def test_resolvedAddressBlocked(origin: OriginProcess, pki: TestPKI, tmp_path: Path) -> None:
    """
    A name that resolves (here through C{--resolve}, and C{localhost} through the system's
    resolver) to a blocked address is refused with a 403 naming the address and the rule,
    GET and CONNECT alike.
    """
    block = tmp_path / "block.txt"
    block.write_text("127.0.0.0/8\n::1\n")
    with runningProxy(origin, tmp_path, "--block-list", str(block), caCert=pki.caCert) as proxy:
        plain = curl(proxy.address, origin.url("/hello/resolved"))
        assert codes(plain)[0] == 403, plain
        page = html.unescape(body(plain).decode())
        assert f"access to {TEST_HOST} is blocked: it is at 127.0.0.1" in page, page
        assert f"{block}:1" in page, page

        tunnel = curl(proxy.address, "--cacert", str(pki.caCert), origin.url("/x", "https"))
        assert codes(tunnel)[1] == 403, tunnel

        local = curl(proxy.address, f"http://localhost:{origin.ports['http']}/hello/local")
        assert codes(local)[0] == 403, local


def test_reloadClosesPooledConnections(origin: OriginProcess, tmp_path: Path) -> None:
    """
    A reload that blocks the address an origin's name resolves to holds at once: the
    connection pooled under the old lists is closed, not used again past the new rule.
    """
    block = tmp_path / "block.txt"
    block.write_text("ads.example\n")
    with runningProxy(origin, tmp_path, "--no-cache", "--block-list", str(block)) as proxy:
        assert isinstance(proxy.process, CaplabProcess)
        assert codes(curl(proxy.address, origin.url("/hello/pooled")))[0] == 200
        start = len(proxy.process.lines)
        block.write_text("ads.example\n127.0.0.0/8\n")
        proxy.process.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        proxy.process.waitForLine(r"caplab reloaded idle origin connections", start=start)
        again = curl(proxy.address, origin.url("/hello/pooled"))
        assert codes(again)[0] == 403, again
        assert f"access to {TEST_HOST} is blocked: it is at 127.0.0.1" in html.unescape(
            body(again).decode()
        )


def test_unspecifiedAddressesBlocked(origin: OriginProcess, pki: TestPKI, tmp_path: Path) -> None:
    """
    With loopback blocked, the unspecified addresses (which a connection delivers to the
    proxy's own machine) are refused too, in every spelling, written in the request or as
    where a name is: C{0.0.0.0}, C{0} and C{[::ffff:0.0.0.0]} reach an origin on
    C{127.0.0.1}, C{[::]} and C{[0:0:0:0:0:0:0:0]} one on C{::1}.  The 403 page says why.
    """
    block = tmp_path / "block.txt"
    block.write_text("127.0.0.0/8\n::1\n")
    v4 = "0.0.0.0 reaches this machine, so the rules for 127.0.0.1 hold for it"
    v6 = ":: reaches this machine, so the rules for ::1 hold for it"
    http, https = origin.ports["http"], origin.ports["https"]
    with (
        runningOrigin(pki.caCert.parent, "::1") as origin6,
        runningProxy(
            origin, tmp_path, "--block-list", str(block), "--resolve",
            "zero.caplab.test=0.0.0.0", caCert=pki.caCert,
        ) as proxy,
    ):  # fmt: skip
        for spelling, port, why in [
            ("0.0.0.0", http, v4),
            ("0", http, v4),
            ("[::ffff:0.0.0.0]", http, v4),
            ("[::]", origin6.ports["http"], v6),
            ("[0:0:0:0:0:0:0:0]", origin6.ports["http"], v6),
            ("zero.caplab.test", http, v4),
        ]:
            target = f"http://{spelling}:{port}/hello/unspecified"
            plain = curl(
                proxy.address, "--request-target", target, f"http://127.0.0.1:{port}/hello/x"
            )
            assert codes(plain)[0] == 403, (spelling, plain)
            page = html.unescape(body(plain).decode())
            assert f"({block}:" in page and why in page, page

        tunnel = curl(
            proxy.address,
            "--cacert", str(pki.caCert),
            "--connect-to", f"{TEST_HOST}:{https}:0.0.0.0:{https}",
            origin.url("/hello/unspecified-tunnel", "https"),
        )  # fmt: skip
        assert codes(tunnel)[1] == 403, tunnel
    assert not any(r["path"].startswith("/hello/unspecified") for r in origin.requests())
    assert not any(r["path"].startswith("/hello/unspecified") for r in origin6.requests())


@pytest.mark.parametrize("startWithLists", [False, True])
def test_reloadChangesAddressRules(
    origin: OriginProcess, tmp_path: Path, startWithLists: bool
) -> None:
    """
    The address rules checked when connecting follow a C{--config} reload (SIGHUP) both
    ways: a block list of C{127.0.0.0/8} added by a reload blocks C{localhost} from then on,
    and one removed by a reload no longer does.
    """
    block = tmp_path / "block.txt"
    block.write_text("127.0.0.0/8\n::1\n")
    config = tmp_path / "caplab.toml"
    withLists = f'block-list = ["{block}"]\n'
    config.write_text(withLists if startWithLists else "")
    url = f"http://localhost:{origin.ports['http']}/hello/local"
    with runningProxy(origin, tmp_path, "--no-cache", "--config", str(config)) as proxy:
        assert isinstance(proxy.process, CaplabProcess)
        before = curl(proxy.address, url)
        assert codes(before)[0] == (403 if startWithLists else 200), before
        start = len(proxy.process.lines)
        config.write_text("" if startWithLists else withLists)
        proxy.process.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        proxy.process.waitForLine(
            rf"caplab reloaded configuration {config}: changed --block-list", start=start
        )
        proxy.process.waitForLine(r"caplab reloaded idle origin connections", start=start)
        after = curl(proxy.address, url)
        assert codes(after)[0] == (200 if startWithLists else 403), after
    assert "Traceback" not in proxy.process.output
