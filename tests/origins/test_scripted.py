"""
The scripted origin itself: scripts run per connection, requests are read and recorded,
resets are resets, and a script's failure reaches the test.
"""

from __future__ import annotations

import socket

import pytest

from tests.origins.scripted import OriginConnection, ScriptedOrigin


def _exchange(origin: ScriptedOrigin, request: bytes) -> bytes:
    with socket.create_connection((origin.host, origin.port), timeout=10) as sock:
        sock.sendall(request)
        got = []
        try:
            while data := sock.recv(65536):
                got.append(data)
        except ConnectionResetError:
            got.append(b"<reset>")
        return b"".join(got)


def test_scriptReadsRequestAndResponds() -> None:
    """
    A script reads the request (chunked body de-chunked) and sends what it is told.
    """

    def script(conn: OriginConnection) -> None:
        request = conn.readRequest()
        conn.respond(headers=[(b"X-Got", request.body)], body=b"ok")
        conn.close()

    with ScriptedOrigin() as origin:
        origin.script(script)
        reply = _exchange(
            origin,
            b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        [request] = origin.waitForRequests(1)
    assert request.method == b"POST" and request.target == b"/x"
    assert request.header(b"host") == b"h"
    assert reply == b"HTTP/1.1 200 OK\r\nX-Got: abcde\r\nContent-Length: 2\r\n\r\nok"


def test_reset() -> None:
    """
    L{OriginConnection.reset} aborts with a RST: the client's read fails with a reset.
    """

    def script(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.send(b"HTTP/1.1 200 OK\r\n\r\npartial")
        conn.reset()

    with ScriptedOrigin() as origin:
        origin.script(script)
        reply = _exchange(origin, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reply.endswith(b"<reset>")


def test_scriptFailureReachesTheTest() -> None:
    """
    An exception in a script is raised again when the origin closes.
    """

    def script(conn: OriginConnection) -> None:
        raise ValueError("script broke")

    origin = ScriptedOrigin()
    origin.script(script)
    _exchange(origin, b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ValueError, match="script broke"):
        origin.close()


def test_noScriptQueued() -> None:
    """
    A connection nobody scripted is a test failure, not a hang.
    """
    origin = ScriptedOrigin()
    _exchange(origin, b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(AssertionError, match="no script"):
        origin.close()
