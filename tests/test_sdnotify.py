"""
Tests for L{caplab.sdnotify}: the C{sd_notify} protocol on a datagram socket the test binds.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from twisted.logger import capturedLogs

from caplab.sdnotify import Notifier


def receiver(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock


def test_messages(tmp_path: Path) -> None:
    """
    Each call sends one datagram of C{KEY=VALUE} lines to C{NOTIFY_SOCKET}.
    """
    path = str(tmp_path / "notify")
    with receiver(path) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.enabled
        assert notifier.ready("serving")
        assert sock.recv(1024) == f"READY=1\nSTATUS=serving\nMAINPID={os.getpid()}".encode()
        assert notifier.reloading()
        fields = sock.recv(1024).decode().split("\n")
        assert fields[0] == "RELOADING=1" and fields[1].startswith("MONOTONIC_USEC=")
        assert int(fields[1].split("=")[1]) > 0
        assert notifier.stopping()
        assert sock.recv(1024) == b"STOPPING=1"


def test_abstractNamespace() -> None:
    """
    C{@name} is a socket in Linux's abstract namespace, as systemd names some.
    """
    name = f"caplab-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).stopping()
        assert sock.recv(1024) == b"STOPPING=1"


def test_outsideSystemd() -> None:
    """
    Without C{NOTIFY_SOCKET} nothing is sent and nothing is logged.
    """
    with capturedLogs() as events:
        notifier = Notifier({})
        assert not notifier.enabled
        assert not notifier.ready("serving")
    assert events == []


def test_failuresLogged(tmp_path: Path) -> None:
    """
    A socket that is not there, or an address of a kind caplab does not speak, is one
    warning, never an exception.
    """
    with capturedLogs() as events:
        assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready("x")
        assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).ready("x")
    assert len(events) == 2
    assert "could not notify systemd" in events[0]["log_format"]
    assert "only AF_UNIX sockets" in events[1]["log_format"]
