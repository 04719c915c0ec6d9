"""
End-to-end: under C{--workers}, the access log line of a request served while a worker
drains its open connections at SIGTERM is in the file once the server has exited.
"""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.support import WAIT, CaplabProcess

pytestmark = pytest.mark.e2e


def readResponse(reader: BinaryIO) -> bytes:
    """
    One response (its head and its C{Content-Length} body) from C{reader}.
    """
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        assert line, f"connection closed after {head!r}"
        head += line
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    assert length is not None, head
    return head + reader.read(int(length.group(1)))


def test_drainedRequestLogged(tmp_path: Path) -> None:
    """
    A request whose head is finished only after SIGTERM (its worker is draining) is
    answered, and its line is written before the worker exits.
    """
    accessLog = tmp_path / "access.log"
    process = CaplabProcess(
        [
            "--workers",
            "2",
            "--no-tcp",
            "--no-udp",
            "--proxy-port",
            "0",
            "--access-log",
            str(accessLog),
            "--worker-grace",
            "15",
        ]
    ).start()
    try:
        process.waitListening("proxy")
        for index in (1, 2):
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab configuration: ")
        with socket.create_connection(("127.0.0.1", process.port("proxy")), timeout=WAIT) as conn:
            # A first exchange: the connection is then surely a worker's.
            conn.sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            reader = conn.makefile("rb")
            assert readResponse(reader).startswith(b"HTTP/1.1 200 ")
            conn.sendall(b"GET /stats?again HTTP/1.1\r\n")
            mark = len(process.lines)
            assert process.process is not None
            process.process.send_signal(signal.SIGTERM)
            process.waitForLine(r"waiting up to 15\.0s for 1 open connections", start=mark)
            conn.sendall(b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert readResponse(reader).startswith(b"HTTP/1.1 200 ")
        assert process.wait(WAIT) == -signal.SIGTERM
    finally:
        process.stop()
    lines = accessLog.read_text().splitlines()
    assert len(lines) == 2, lines
    assert '"GET /stats HTTP/1.1" 200 ' in lines[0]
    assert '"GET /stats?again HTTP/1.1" 200 ' in lines[1]
