"""
End-to-end tests of C{caplab-client}: the installed console script (and C{python -m
caplab.client}) against the real C{twist caplab} process on loopback, against ports where
nothing listens, a host that does not exist, and servers that never answer.

Every wait is bounded (L{tests.support.WAIT}) and waits on an event: the client's exit, its
output on a pseudo-terminal, a datagram.
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support import WAIT, CaplabProcess, fullAcceptQueue, runningCaplab

pytestmark = pytest.mark.e2e

PROMPT = b"Input lowercase sentence:"


def clientCommand() -> list[str]:
    """
    The installed C{caplab-client} next to this Python (the README's install puts it there).
    """
    script = Path(sys.executable).with_name("caplab-client")
    assert script.exists(), f"{script} is missing: install caplab (pip install -e .)"
    return [str(script)]


def runClient(
    *args: str,
    input: bytes | None = b"",
    command: Sequence[str] | None = None,
    stdin: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """
    Run the client to its end (within L{WAIT}) and collect its output.
    """
    return subprocess.run(
        [*(command or clientCommand()), *args],
        input=input if stdin is None else None,
        stdin=stdin,
        capture_output=True,
        timeout=WAIT,
    )


@pytest.fixture(scope="module")
def caplab() -> Iterator[CaplabProcess]:
    """
    One C{twist caplab --no-proxy} on free ports for the whole module.
    """
    with runningCaplab("--no-proxy") as process:
        yield process


def ports(caplab: CaplabProcess) -> tuple[str, str]:
    return str(caplab.port("tcp")), str(caplab.port("udp"))


def deadPort(kind: socket.SocketKind) -> str:
    """
    A loopback port on which nothing listens (bound once, then closed).
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


# --- with a message --------------------------------------------------------------------


@pytest.mark.parametrize("service", ["tcp", "udp"])
def test_message(caplab: CaplabProcess, service: str) -> None:
    """
    C{caplab-client tcp|udp HOST PORT MESSAGE} prints the uppercase reply and exits 0;
    several words make one message.
    """
    port = str(caplab.port(service))
    result = runClient(service, "127.0.0.1", port, "welcome to", "cn lab, &*!")
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"WELCOME TO CN LAB, &*!\n"


@pytest.mark.parametrize("service", ["tcp", "udp"])
def test_pythonDashM(caplab: CaplabProcess, service: str) -> None:
    """
    C{python -m caplab.client} is the same program.
    """
    port = str(caplab.port(service))
    result = runClient(
        service,
        "localhost",
        port,
        "hi this is nitish",
        command=[sys.executable, "-m", "caplab.client"],
    )
    assert (result.returncode, result.stdout) == (0, b"HI THIS IS NITISH\n"), result.stderr


# --- piped -----------------------------------------------------------------------------


def test_tcpPipedStream(caplab: CaplabProcess) -> None:
    """
    Several MB of every byte value piped through TCP come back as C{data.upper()}, byte for
    byte, with nothing added.
    """
    data = random.Random(5).randbytes(6 * 1024 * 1024) + b"tail without newline"
    tcp, _ = ports(caplab)
    result = runClient("tcp", "127.0.0.1", tcp, input=data)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == data.upper()


def test_tcpPipedBoundedMemory(caplab: CaplabProcess, tmp_path: Path) -> None:
    """
    C{caplab-client tcp h p < big > out} streams in bounded memory: piping 64 MB from a file
    to a file, the client's peak resident size stays far below the data's size.
    """
    source, target = tmp_path / "big.txt", tmp_path / "BIG.txt"
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    with open(source, "wb") as out:
        for _ in range(64):
            out.write(line * (1024 * 1024 // len(line) + 1))
    tcp, _ = ports(caplab)
    # A small Python parent runs the client and reports its children's peak RSS (KiB): the
    # client is its only child, so that is the client's own peak.
    measure = (
        "import resource, subprocess, sys\n"
        "with open(sys.argv[1], 'rb') as i, open(sys.argv[2], 'wb') as o:\n"
        "    status = subprocess.run(sys.argv[3:], stdin=i, stdout=o).returncode\n"
        "print(status, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, source, target, *clientCommand(), "tcp", "127.0.0.1", tcp],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
    )
    status, peakKiB = map(int, result.stdout.split())
    assert status == 0, result.stderr
    size = source.stat().st_size
    assert target.stat().st_size == size
    with open(source, "rb") as original, open(target, "rb") as upper:
        while chunk := original.read(1024 * 1024):
            assert upper.read(len(chunk)) == chunk.upper()
    assert peakKiB * 1024 < size / 2, f"peak RSS {peakKiB} KiB for {size} bytes"


def test_udpPipedLines(caplab: CaplabProcess) -> None:
    """
    Piped into UDP, each line is one datagram and each reply one line, an empty line
    included, in order.
    """
    _, udp = ports(caplab)
    result = runClient(
        "udp", "127.0.0.1", udp, input=b"hi this is nitish\n\nwelcome to cn lab\nend"
    )
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"HI THIS IS NITISH\n\nWELCOME TO CN LAB\nEND\n"


def test_udpLineTooLong(caplab: CaplabProcess) -> None:
    """
    A line longer than a datagram can carry: the lines before it are answered, then status
    7 and one line saying why.
    """
    _, udp = ports(caplab)
    result = runClient("udp", "127.0.0.1", udp, input=b"short\n" + b"x" * 70_000 + b"\n")
    assert result.returncode == 7
    assert result.stdout == b"SHORT\n"
    assert result.stderr.count(b"\n") == 1
    assert b"longer than one UDP datagram can carry (65507 bytes)" in result.stderr


# --- interactive -----------------------------------------------------------------------


class Terminal:
    """
    The client on a pseudo-terminal (stdin and stdout), as a user at a shell runs it.
    """

    def __init__(self, *args: str) -> None:
        master, slave = os.openpty()
        self.master = master
        self.process = subprocess.Popen(
            [*clientCommand(), *args], stdin=slave, stdout=slave, stderr=subprocess.PIPE
        )
        os.close(slave)
        self.seen = b""

    def expect(self, expected: bytes) -> bytes:
        """
        Read the terminal until C{expected} appears (within L{WAIT}); return what came
        after what was expected before.
        """
        start = len(self.seen)
        deadline = time.monotonic() + WAIT
        while expected not in self.seen[start:]:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(remaining, 0))
            assert ready, f"{expected!r} not seen within {WAIT}s; got {self.seen[start:]!r}"
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the client has exited and closed the terminal
                chunk = b""
            assert chunk, f"terminal closed before {expected!r}; got {self.seen[start:]!r}"
            self.seen += chunk
        return self.seen[start:]

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def close(self) -> tuple[int, bytes]:
        try:
            status = self.process.wait(WAIT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(WAIT)
            os.close(self.master)
        assert self.process.stderr is not None
        with self.process.stderr as errors:
            return status, errors.read()


@pytest.mark.parametrize("service", ["tcp", "udp"])
def test_interactive(caplab: CaplabProcess, service: str) -> None:
    """
    On a terminal without a message: the lab's prompt, the reply to each typed line, the
    prompt again, until Ctrl-D, then exit 0.
    """
    terminal = Terminal(service, "127.0.0.1", str(caplab.port(service)))
    try:
        terminal.expect(PROMPT)
        terminal.type(b"hi this is nitish, welcome to cn lab\n")
        answer = terminal.expect(PROMPT)
        assert b"HI THIS IS NITISH, WELCOME TO CN LAB\r\n" in answer
        terminal.type(b"second line\n")
        assert b"SECOND LINE\r\n" in terminal.expect(PROMPT)
        terminal.type(b"\x04")  # Ctrl-D at the start of a line: end of input
    finally:
        status, errors = terminal.close()
    assert (status, errors) == (0, b"")


def test_interactiveInterrupted(caplab: CaplabProcess) -> None:
    """
    Ctrl-C (SIGINT) at the prompt ends the client with status 130 and no traceback.
    """
    terminal = Terminal("tcp", "127.0.0.1", str(caplab.port("tcp")))
    try:
        terminal.expect(PROMPT)
        terminal.process.send_signal(signal.SIGINT)
    finally:
        status, errors = terminal.close()
    assert status == 130
    assert b"Traceback" not in errors


# --- the lab's questions: no server, wrong port, unknown host, silence -----------------


def test_tcpNoServer() -> None:
    """
    TCPClient before TCPServer (or on the wrong port): connection refused, status 3, one
    line on stderr; with a message, piped, and on a terminal alike.
    """
    port = deadPort(socket.SOCK_STREAM)
    for input in (b"", b"piped\n"):
        result = runClient("tcp", "127.0.0.1", port, "hello", input=input)
        assert result.returncode == 3
        assert result.stdout == b""
        assert (
            result.stderr
            == (
                f"caplab-client: cannot connect to 127.0.0.1 port {port} over TCP: connection "
                "refused (is the server running, and on that port?)\n"
            ).encode()
        )
    terminal = Terminal("tcp", "127.0.0.1", port)
    status, errors = terminal.close()
    assert status == 3 and b"connection refused" in errors


def test_udpNoServer() -> None:
    """
    UDPClient before UDPServer: the lab expected a wait forever; the ICMP port unreachable
    that loopback sends back is reported as refused at once, status 3.
    """
    port = deadPort(socket.SOCK_DGRAM)
    started = time.monotonic()
    result = runClient("udp", "127.0.0.1", port, "anyone there?", "--timeout", str(WAIT))
    assert time.monotonic() - started < WAIT  # not the timeout: the refusal
    assert result.returncode == 3
    assert (
        result.stderr
        == (
            f"caplab-client: 127.0.0.1 port {port} refused the UDP datagram (ICMP port "
            "unreachable): no server is listening on that port\n"
        ).encode()
    )


@pytest.mark.parametrize("service", ["tcp", "udp"])
def test_unknownHost(service: str) -> None:
    """
    A host name that does not resolve (C{.invalid} never does, RFC 6761): status 5.
    """
    result = runClient(service, "no-such-host.invalid", "12000", "hello")
    assert result.returncode == 5
    assert result.stderr.startswith(b"caplab-client: cannot resolve host 'no-such-host.invalid': ")
    assert result.stderr.count(b"\n") == 1


def test_udpSilentServer() -> None:
    """
    A UDP server that receives but never answers: the datagram is sent C{--retries} times,
    C{--timeout} apart, then status 4 and one line; never a hang.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = str(silent.getsockname()[1])
        started = time.monotonic()
        result = runClient("udp", "127.0.0.1", port, "hello?", "--timeout", "0.2", "--retries", "4")
        elapsed = time.monotonic() - started
        silent.setblocking(False)
        received = []
        while True:
            try:
                received.append(silent.recv(65536))
            except BlockingIOError:
                break
    assert received == [b"hello?"] * 4
    assert result.returncode == 4
    assert (
        result.stderr
        == (
            f"caplab-client: no reply from 127.0.0.1 port {port} over UDP after 4 tries of 0.2 s "
            "(server not running, wrong port, or datagrams dropped on the way)\n"
        ).encode()
    )
    assert 0.8 <= elapsed < WAIT


def test_udpSilentServerDefaults() -> None:
    """
    Without options: 3 tries of 2 s.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = str(silent.getsockname()[1])
        result = runClient("udp", "127.0.0.1", port, "hello?")
        silent.setblocking(False)
        count = 0
        while True:
            try:
                silent.recv(65536)
            except BlockingIOError:
                break
            count += 1
    assert (result.returncode, count) == (4, 3)
    assert b"after 3 tries of 2 s" in result.stderr


def test_tcpConnectTimeout() -> None:
    """
    A TCP server that does not complete the handshake (its accept queue is full, so SYNs
    are dropped): status 4 after C{--timeout}.
    """
    with fullAcceptQueue() as port:
        result = runClient("tcp", "127.0.0.1", str(port), "hello", "--timeout", "0.3")
    assert result.returncode == 4
    expected = f"cannot connect to 127.0.0.1 port {port} over TCP: timed out after 0.3 s"
    assert result.stderr == f"caplab-client: {expected}\n".encode()


def test_tcpSilentServer() -> None:
    """
    A TCP server that accepts and reads but never answers nor closes (another service on
    the port, say): status 4 after C{--timeout}.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = runClient("tcp", "127.0.0.1", str(port), "hello", "--timeout", "0.3")
    assert result.returncode == 4
    assert b"stopped answering over TCP (nothing for 0.3 s)" in result.stderr


def test_tcpServerAtCapacity() -> None:
    """
    A server over its connection cap closes the connection at once: status 6 and one line,
    not an empty reply with status 0.
    """
    with runningCaplab(
        "--no-proxy", "--no-udp", "--max-connections", "1", services=["tcp"]
    ) as server:
        port = server.port("tcp")
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as holder:
            holder.sendall(b"x")
            assert holder.recv(1) == b"X"  # accepted and counted
            result = runClient("tcp", "127.0.0.1", str(port), "hello")
    assert result.returncode == 6, result.stderr
    assert result.stdout == b""
    assert result.stderr.startswith(b"caplab-client: ")
    assert result.stderr.count(b"\n") == 1
    assert b"without replying" in result.stderr or b"reset" in result.stderr


def test_badPort() -> None:
    """
    A port that is not one: the usage and status 2.
    """
    result = runClient("udp", "127.0.0.1", "12o05", "hello")
    assert result.returncode == 2
    assert result.stderr.startswith(b"usage: caplab-client")
    assert b"argument PORT: invalid port '12o05' (expected 1-65535)" in result.stderr


def test_help() -> None:
    """
    C{--help} exits 0 and documents the exit statuses.
    """
    result = runClient("--help")
    assert result.returncode == 0
    for line in (b"3    connection refused", b"4    timeout", b"5    the host name"):
        assert line in result.stdout
