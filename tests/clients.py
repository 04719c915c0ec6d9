"""
Clients the end-to-end tests drive the proxy with: curl (nobody here wrote it) and raw
sockets, every wait bounded.
"""

from __future__ import annotations

import socket
import subprocess

from tests.conftest import requireProgram
from tests.origins import WAIT
from tests.origins.proxy import ProxyUnderTest


def curl(
    proxy: ProxyUnderTest | str, *args: str, input: bytes | None = None, timeout: float = WAIT
) -> subprocess.CompletedProcess[bytes]:
    """
    Run C{curl -sS -x PROXY ARGS} (bounded by C{timeout}); stdout holds the body.
    """
    requireProgram("curl")
    address = proxy if isinstance(proxy, str) else proxy.address
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(timeout), "-x", f"http://{address}", *args],
        input=input,
        capture_output=True,
        timeout=timeout + 5,
    )


def codeAndBody(result: subprocess.CompletedProcess[bytes]) -> tuple[int, bytes]:
    """
    The status printed by C{-w '\\n%{http_code}'} and the body before it.
    """
    body, _, code = result.stdout.rpartition(b"\n")
    return int(code), body


def rawExchange(
    address: tuple[str, int], data: bytes, timeout: float = WAIT, halfClose: bool = False
) -> bytes:
    """
    Send C{data} on a new connection to C{address} (half-closing after it if C{halfClose})
    and read until the peer closes; a reset ends the reading too (marked C{<reset>}).
    """
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(data)
        if halfClose:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunks.append(b"<reset>")
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def readResponseHead(sock: socket.socket) -> bytes:
    """
    Read from C{sock} up to the end of one head (C{CRLF CRLF}); bounded by its timeout.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data
