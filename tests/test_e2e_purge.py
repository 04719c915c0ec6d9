"""
Removing stored responses through the real C{twist caplab}: a C{PURGE} request to the proxy
(from an allowed client, authenticated when C{--auth-file} is on), and C{POST /cache/purge}
and C{/cache/flush} on the admin endpoint; afterwards the origin is asked again.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tests.clients import codeAndBody, curl
from tests.origins import WAIT, OriginProcess
from tests.origins.proxy import runningProxy

pytestmark = pytest.mark.e2e


def _admin(port: int, path: str, method: str = "POST") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_purgeRequest(origin: OriginProcess, tmp_path: Path) -> None:
    """
    C{PURGE URL} removes every stored variant of the URL (200, saying how many); the next
    request goes to the origin again; a URL with nothing stored is a 404; nothing of this
    reaches the origin.
    """
    path = "/cache/max-age=600"
    with runningProxy(origin, tmp_path) as proxy:
        url = origin.url(path)
        assert curl(proxy, url).stdout.endswith(b"request 1\n")
        assert curl(proxy, url).stdout.endswith(b"request 1\n")  # a hit
        code, body = codeAndBody(curl(proxy, "-X", "PURGE", "-w", "\n%{http_code}", url))
        assert code == 200 and b"purged 1 stored response" in body, body
        assert curl(proxy, url).stdout.endswith(b"request 2\n")
        code, _ = codeAndBody(
            curl(proxy, "-X", "PURGE", "-w", "\n%{http_code}", origin.url("/never-stored"))
        )
        assert code == 404
    assert not [r for r in origin.requests() if r["method"] == "PURGE"]


def test_purgeNeedsCredentials(origin: OriginProcess, tmp_path: Path) -> None:
    """
    With C{--auth-file}, a C{PURGE} without credentials gets 407 and purges nothing.
    """
    users = tmp_path / "users"
    users.write_text(f"alice:{bcrypt.hashpw(b'secret', bcrypt.gensalt(rounds=4)).decode()}\n")
    path = "/cache/max-age=601"
    with runningProxy(origin, tmp_path, "--auth-file", str(users)) as proxy:
        url = origin.url(path)
        assert curl(proxy, "-U", "alice:secret", url).stdout.endswith(b"request 1\n")
        code, _ = codeAndBody(curl(proxy, "-X", "PURGE", "-w", "\n%{http_code}", url))
        assert code == 407
        assert curl(proxy, "-U", "alice:secret", url).stdout.endswith(b"request 1\n")
        purged = curl(proxy, "-U", "alice:secret", "-X", "PURGE", "-w", "\n%{http_code}", url)
        assert codeAndBody(purged)[0] == 200


def test_adminPurgeAndFlush(origin: OriginProcess, tmp_path: Path) -> None:
    """
    The admin endpoint's C{POST /cache/purge?url=...} and C{POST /cache/flush} reach the
    proxy's cache; C{GET} on them is refused.
    """
    with runningProxy(origin, tmp_path, "--admin-endpoint", "tcp:0:interface=127.0.0.1") as proxy:
        admin = proxy.process.waitForLine(r"caplab admin listening on \S+:(\d+)")
        port = int(admin.group(1))
        first, second = (
            origin.url("/cache/max-age=602"),
            origin.url("/cache/max-age=603"),
        )
        curl(proxy, first)
        curl(proxy, second)
        assert _admin(port, "/cache/purge", "GET")[0] == 405
        code, answer = _admin(port, f"/cache/purge?url={urllib.parse.quote(first)}")
        assert (code, answer["purged"]) == (200, 1), answer
        assert curl(proxy, first).stdout.endswith(b"request 2\n")
        code, answer = _admin(port, "/cache/flush")
        assert code == 200 and answer["flushed"] >= 2, answer
        assert curl(proxy, second).stdout.endswith(b"request 2\n")
