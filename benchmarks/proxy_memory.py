#!/usr/bin/env python3
"""
What one connection costs the proxy in memory: its resident set size (RSS) with many idle
keep-alive client connections, and with many open CONNECT tunnels.

This prints figures; it is not a test.  It starts ``twist caplab`` (the proxy alone, with
room for the connections), and, as the tunnels' far end, a second ``twist caplab`` running
only the uppercase TCP service; then, from this process:

  1. opens N client connections, each sending one request (the proxy's own status page, so
     no origin is needed) and reading the answer, so every connection is an idle keep-alive
     connection; the proxy's RSS is read before and after (``/proc/PID/status``);
  2. closes them, and opens M CONNECT tunnels to the uppercase service, each relaying one
     exchange, and reads the RSS again.

    .venv/bin/python benchmarks/proxy_memory.py --idle 10000 --tunnels 1000

The figures are per connection (and per tunnel: a tunnel is two connections in the proxy,
the client's and the origin's).  The file-descriptor limits of this machine must allow
N + a few descriptors in each process (``ulimit -n``).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

WAIT = 60.0


def _raiseLimit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def rss(pid: int) -> int:
    """
    The resident set size of process C{pid}, in bytes.
    """
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def start(args: list[str], needed: int) -> tuple[subprocess.Popen[str], dict[str, int]]:
    """
    Start C{twist caplab ARGS} and wait for its listening lines; returns the process and the
    port of each service.
    """
    twist = shutil.which("twist", path=str(Path(sys.executable).parent)) or "twist"
    process = subprocess.Popen(
        [twist, "--log-format=text", "caplab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: _raiseLimit(needed),
    )
    ports: dict[str, int] = {}
    deadline = time.monotonic() + WAIT
    assert process.stdout is not None
    wanted = {"proxy"} if "--no-proxy" not in args else {"tcp"}
    while not wanted <= ports.keys():
        assert time.monotonic() < deadline, "caplab did not start"
        line = process.stdout.readline()
        if not line:
            raise SystemExit("caplab exited: " + str(process.wait()))
        match = re.search(r"caplab (\w+) listening on \S+:(\d+)", line)
        if match:
            ports[match.group(1)] = int(match.group(2))
    return process, ports


def settle(pid: int) -> int:
    """
    The process's RSS once it has stopped changing (bounded wait).
    """
    last = rss(pid)
    for _ in range(20):
        time.sleep(0.25)
        now = rss(pid)
        if now == last:
            return now
        last = now
    return last


def readAnswer(sock: socket.socket) -> None:
    """
    Read one whole answer with a Content-Length (the status page's).
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        body += chunk


def idleConnections(port: int, count: int) -> list[socket.socket]:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        sock.sendall(request)
        readAnswer(sock)
        sockets.append(sock)
    return sockets


def tunnels(port: int, target: int, count: int) -> list[socket.socket]:
    request = b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (target, target)
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 200 "), head
        sock.sendall(b"ping\n")
        assert sock.recv(100) == b"PING\n"
        sockets.append(sock)
    return sockets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--tunnels", type=int, default=1000)
    options = parser.parse_args()
    needed = max(options.idle, 2 * options.tunnels) + 100
    _raiseLimit(needed)
    target, targetPorts = start(["--no-proxy", "--no-udp", "--tcp-port", "0"], needed)
    proxyArgs = [
        "--no-tcp",
        "--no-udp",
        "--proxy-port",
        "0",
        "--max-connections",
        str(needed),
        "--keep-alive-timeout",
        "600",
        "--connect-ports",
        str(targetPorts["tcp"]),
    ]
    try:
        for kind in ("idle", "tunnels"):
            # A fresh proxy for each: memory a process freed is not given back to the system.
            proxy, ports = start(proxyArgs, needed)
            try:
                # Warm up: the first requests import and allocate what later ones reuse.
                for sock in idleConnections(ports["proxy"], 20):
                    sock.close()
                tunnels(ports["proxy"], targetPorts["tcp"], 5)
                base = settle(proxy.pid)
                if kind == "idle":
                    held = idleConnections(ports["proxy"], options.idle)
                    count, what = options.idle, "idle keep-alive client connections"
                else:
                    held = tunnels(ports["proxy"], targetPorts["tcp"], options.tunnels)
                    count, what = options.tunnels, "open CONNECT tunnels (two connections each)"
                loaded = settle(proxy.pid)
                print(
                    f"{count} {what}: RSS {base / 2**20:.1f} -> {loaded / 2**20:.1f} MiB, "
                    f"{(loaded - base) / count / 1024:.2f} KiB each"
                )
                for sock in held:
                    sock.close()
            finally:
                stop(proxy)
    finally:
        stop(target)


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(WAIT)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
