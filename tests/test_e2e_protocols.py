"""
Clients the proxy serves through its own HTTP/1.1 layer, through the real C{twist caplab}:
clients that half-close after their request (socat, C{nc -N}: how the lab's readers test a
proxy), HTTP/1.0 keep-alive (C{ab -k}), a WebSocket upgrade over plain C{http://} in absolute
form (aiohttp, a real WebSocket client library), and the request-body limit.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients import codeAndBody, curl
from tests.conftest import requireProgram
from tests.origins import WAIT, OriginProcess
from tests.origins.proxy import ProxyUnderTest
from tests.origins.scripted import OriginClosed, OriginConnection, ScriptedOrigin
from tests.origins.websocket import EchoServer
from tests.support import runningCaplab

pytestmark = pytest.mark.e2e


def _request(port: int, path: str) -> bytes:
    return (
        f"GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


# Half-closing clients


@pytest.mark.parametrize("client", ["socat", "nc"])
@pytest.mark.parametrize("path", ["/hello/half-close", "/drip?parts=3&interval=0.6"])
def test_halfClosingClient(
    origin: OriginProcess, proxy: ProxyUnderTest, client: str, path: str
) -> None:
    """
    C{printf 'GET ...' | socat - TCP:proxy} and C{nc -N}: the client sends its request and
    shuts down its sending side; it still gets the whole response on a cache miss (from a
    quick origin, and from a slow one that takes longer than a second), and the access log
    has the request.
    """
    program = requireProgram(client)
    tag = f"{client}-{len(path)}"
    path = path + ("&" if "?" in path else "?") + f"client={tag}"
    argv = (
        # socat stops 0.5 s after its input ends unless told to wait longer (-t)
        [program, "-t", "10", "-", f"TCP:{proxy.host}:{proxy.port}"]
        if client == "socat"
        else [program, "-N", proxy.host, str(proxy.port)]
    )
    result = subprocess.run(
        argv, input=_request(origin.ports["http"], path), capture_output=True, timeout=WAIT
    )
    assert result.returncode == 0, result.stderr
    reply = result.stdout
    while reply.startswith(b"HTTP/1.1 1"):  # an interim 100 while a slow origin works
        reply = reply.split(b"\r\n\r\n", 1)[1]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), result.stdout
    if path.startswith("/hello"):
        assert body == b"hello half-close\n", result.stdout
    else:
        assert body.endswith(b"\r\n0\r\n\r\n"), result.stdout  # the chunked body, whole
    proxy.waitForAccess("GET", f"http://127.0.0.1:{origin.ports['http']}{path}", 200)


# HTTP/1.0 keep-alive


def test_http10KeepAlive(origin: OriginProcess, proxy: ProxyUnderTest) -> None:
    """
    ab, an HTTP/1.0 client, asks for keep-alive through the proxy (C{ab -k -X}): every
    request is kept alive (the origin's responses have a length).
    """
    ab = requireProgram("ab")
    result = subprocess.run(
        [
            ab,
            "-k",
            "-n",
            "40",
            "-c",
            "2",
            "-X",
            proxy.address,
            f"http://127.0.0.1:{origin.ports['http']}/hello/ab",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"Keep-Alive requests:\s+40\b", result.stdout), result.stdout
    assert re.search(r"Failed requests:\s+0\b", result.stdout), result.stdout


# WebSocket over plain http://, in absolute form


def _websocket(proxy: str, url: str, messages: list[Any]) -> list[Any]:
    """
    Open C{url} with aiohttp through C{proxy} (absolute-form C{GET ws://...} with
    C{Upgrade}), send C{messages} and return the answers.
    """
    import aiohttp

    async def talk() -> list[Any]:
        answers = []
        timeout = aiohttp.ClientTimeout(total=WAIT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.ws_connect(url, proxy=f"http://{proxy}") as ws:
                for message in messages:
                    if isinstance(message, str):
                        await ws.send_str(message)
                    else:
                        await ws.send_bytes(message)
                    answers.append((await ws.receive(timeout=WAIT)).data)
        return answers

    return asyncio.run(talk())


def test_webSocketUpgrade(echo: EchoServer, tmp_path: Path) -> None:
    """
    A WebSocket client sending its handshake to the proxy in absolute form gets it relayed
    with C{Upgrade}/C{Connection}; after the origin's 101 the connection is a tunnel both
    ways: text and a 1 MiB binary message (back-pressure both ways) come back.
    """
    with runningCaplab("--no-tcp", "--no-udp", services=("proxy",)) as caplab:
        host, port = caplab.addresses["proxy"]
        big = bytes(range(256)) * 4096
        answers = _websocket(
            f"{host}:{port}", f"ws://127.0.0.1:{echo.port}/echo", ["hello", big, "bye"]
        )
    assert answers == ["HELLO", big, "BYE"]
    [handshake] = echo.handshakes
    assert handshake["Upgrade"].lower() == "websocket"
    assert "upgrade" in handshake["Connection"].lower()
    assert "caplab" in handshake["Via"]


def test_webSocketRefusedRelayed(echo: EchoServer) -> None:
    """
    An origin that refuses the upgrade (a plain 403) is relayed as a normal response.
    """
    import aiohttp

    with runningCaplab("--no-tcp", "--no-udp", services=("proxy",)) as caplab:
        host, port = caplab.addresses["proxy"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            _websocket(f"{host}:{port}", f"ws://127.0.0.1:{echo.port}/refuse", ["x"])
    assert caught.value.status == 403


def test_webSocketPolicyFirst(echo: EchoServer, tmp_path: Path) -> None:
    """
    Policy applies before an upgrade: a blocked host gets 403, the origin no handshake.
    """
    import aiohttp

    blocked = tmp_path / "block.txt"
    blocked.write_text("127.0.0.1\n")
    with runningCaplab(
        "--no-tcp", "--no-udp", "--block-list", str(blocked), services=("proxy",)
    ) as caplab:
        host, port = caplab.addresses["proxy"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            _websocket(f"{host}:{port}", f"ws://127.0.0.1:{echo.port}/echo", ["x"])
    assert caught.value.status == 403
    assert echo.handshakes == []


# The request-body limit


def test_maxRequestBody(tmp_path: Path) -> None:
    """
    With C{--max-request-body 1M}: a 2 MiB upload with C{Content-Length} is answered 413
    before the origin is asked; a chunked one is cut off once it passes the limit, with its
    upstream request aborted; one under the limit goes through.
    """
    upload = tmp_path / "upload"
    upload.write_bytes(b"u" * (2 * 1024 * 1024))
    small = tmp_path / "small"
    small.write_bytes(b"s" * 1000)
    aborted: list[bool] = []

    def chunkedUpload(conn: OriginConnection) -> None:
        try:
            conn.readRequest()
        except OriginClosed:
            aborted.append(True)
            return
        conn.respond(body=b"took it all")  # pragma: no cover - the limit failed

    def echoLength(conn: OriginConnection) -> None:
        request = conn.readRequest()
        conn.respond(body=b"%d" % len(request.body))
        conn.close()

    with (
        ScriptedOrigin() as origin,
        runningCaplab(
            "--no-tcp", "--no-udp", "--max-request-body", "1M", services=("proxy",)
        ) as caplab,
    ):
        host, port = caplab.addresses["proxy"]
        proxy = f"{host}:{port}"
        declared = curl(
            proxy, "-w", "\n%{http_code}", "--data-binary", f"@{upload}", origin.url("/up")
        )
        assert codeAndBody(declared)[0] == 413, declared
        assert b"--max-request-body" in declared.stdout
        assert origin.connections == 0
        origin.script(chunkedUpload, echoLength)
        chunked = curl(
            proxy,
            "-w",
            "\n%{http_code}",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            f"@{upload}",
            origin.url("/up"),
        )
        assert chunked.returncode != 0 or codeAndBody(chunked)[0] == 413, chunked
        fine = curl(proxy, "--data-binary", f"@{small}", origin.url("/small"))
        assert fine.stdout == b"1000"
    assert aborted == [True]
