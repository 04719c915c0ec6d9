"""
End-to-end tests of the uppercase services: the real C{twist caplab} process on loopback,
driven by the lab's own socket clients, by C{socat} and C{nc}, and by plain sockets.

Every wait is bounded (L{tests.support.WAIT}) and waits on an event: a reply, an end of
stream, a log line, a process exit.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import requireProgram
from tests.support import WAIT, CaplabProcess, runningCaplab, twistCommand

pytestmark = pytest.mark.e2e

#: The lab's TCPClient.py, in Python 3 (input/encode instead of raw_input), unchanged otherwise.
LAB_TCP_CLIENT = """\
from socket import *
serverName = '127.0.0.1'
serverPort = {port}
clientSocket = socket(AF_INET, SOCK_STREAM)
clientSocket.connect((serverName, serverPort))
sentence = input('Input lowercase sentence:')
clientSocket.send(sentence.encode())
modifiedSentence = clientSocket.recv(1024)
print('From Server:', modifiedSentence.decode())
clientSocket.close()
"""

#: The lab's UDPClient.py, in Python 3.
LAB_UDP_CLIENT = """\
from socket import *
serverName = '127.0.0.1'
serverPort = {port}
clientSocket = socket(AF_INET, SOCK_DGRAM)
message = input('Input lowercase sentence:')
clientSocket.sendto(message.encode(), (serverName, serverPort))
modifiedMessage, serverAddress = clientSocket.recvfrom(2048)
print(modifiedMessage.decode())
clientSocket.close()
"""


@pytest.fixture(scope="module")
def caplab() -> Iterator[CaplabProcess]:
    """
    One C{twist caplab --no-proxy} (default options, free ports) for the tests of this module
    that do not need options of their own.
    """
    with runningCaplab("--no-proxy") as process:
        yield process


def runLabClient(tmp_path: Path, template: str, port: int, sentence: str) -> str:
    script = tmp_path / "client.py"
    script.write_text(template.format(port=port))
    result = subprocess.run(
        [sys.executable, str(script)],
        input=sentence + "\n",
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def exchange(port: int, data: bytes) -> bytes:
    """
    Send C{data}, half-close, and read the reply to the end of the stream.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        return readAll(conn)


def readAll(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def udpExchange(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(WAIT)
        sock.sendto(data, ("127.0.0.1", port))
        reply, _ = sock.recvfrom(65535)
        return reply


def readUntil(process: subprocess.Popen[bytes], expected: bytes) -> bytes:
    """
    Read C{process}'s stdout until it holds C{expected}, within L{WAIT}; then stop it.
    """
    assert process.stdout is not None
    received = b""
    try:
        while expected not in received:
            ready, _, _ = select.select([process.stdout], [], [], WAIT)
            assert ready, f"no reply within {WAIT}s; got {received!r}"
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, f"output ended early: {received!r}"
            received += chunk
    finally:
        process.kill()
        process.wait(WAIT)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
    return received


def test_labTCPClient(caplab: CaplabProcess, tmp_path: Path) -> None:
    """
    The lab's TCPClient.py gets its sentence back in uppercase, as in the lab report.
    """
    out = runLabClient(
        tmp_path, LAB_TCP_CLIENT, caplab.port("tcp"), "welcome to cn lab, this is nitish here"
    )
    assert out == "Input lowercase sentence:From Server: WELCOME TO CN LAB, THIS IS NITISH HERE\n"


def test_labUDPClient(caplab: CaplabProcess, tmp_path: Path) -> None:
    """
    The lab's UDPClient.py gets its sentence back in uppercase, as in the lab report.
    """
    out = runLabClient(
        tmp_path, LAB_UDP_CLIENT, caplab.port("udp"), "hi this is nitish, welcome to cn lab"
    )
    assert out == "Input lowercase sentence:HI THIS IS NITISH, WELCOME TO CN LAB\n"


def test_socatTCP(caplab: CaplabProcess) -> None:
    """
    C{socat} sends its stdin and half-closes at the end; the whole reply comes back and the
    service then closes, so socat exits 0.
    """
    socat = requireProgram("socat")
    data = b"special &*! chars stay; UPPER stays; lower goes\n" * 2000
    result = subprocess.run(
        [socat, "-t", str(WAIT), "-", f"TCP:127.0.0.1:{caplab.port('tcp')}"],
        input=data,
        capture_output=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == data.upper()


def test_socatUDP(caplab: CaplabProcess) -> None:
    """
    C{socat} as a UDP client gets its datagram back in uppercase.
    """
    socat = requireProgram("socat")
    process = subprocess.Popen(
        [socat, "-", f"UDP:127.0.0.1:{caplab.port('udp')}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(b"datagram from socat\n")
    process.stdin.flush()
    assert readUntil(process, b"\n") == b"DATAGRAM FROM SOCAT\n"


def test_ncTCP(caplab: CaplabProcess) -> None:
    """
    C{nc -N} (shut down the socket at the end of stdin) gets the whole reply and exits.
    """
    nc = requireProgram("nc")
    result = subprocess.run(
        [nc, "-N", "127.0.0.1", str(caplab.port("tcp"))],
        input=b"netcat was here\n",
        capture_output=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"NETCAT WAS HERE\n"


def test_ncUDP(caplab: CaplabProcess) -> None:
    """
    C{nc -u} gets its datagram back in uppercase.
    """
    nc = requireProgram("nc")
    process = subprocess.Popen(
        [nc, "-u", "127.0.0.1", str(caplab.port("udp"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(b"udp via nc\n")
    process.stdin.flush()
    assert readUntil(process, b"\n") == b"UDP VIA NC\n"


def test_streamManyMegabytes(caplab: CaplabProcess) -> None:
    """
    Several MB through one connection, the client reading while it writes, come back as
    C{input.upper()} byte for byte, binary bytes included.
    """
    data = (bytes(range(256)) + b"the quick brown fox jumps over the lazy dog " * 40) * 4000
    assert len(data) > 8_000_000
    received: list[bytes] = []
    with socket.create_connection(("127.0.0.1", caplab.port("tcp")), timeout=WAIT) as conn:

        def read() -> None:
            received.append(readAll(conn))

        reader = threading.Thread(target=read)
        reader.start()
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        reader.join(WAIT)
        assert not reader.is_alive()
    assert received[0] == data.upper()


def test_halfClose(caplab: CaplabProcess) -> None:
    """
    After C{shutdown(SHUT_WR)} the reply still arrives in full, then the service closes.
    """
    with socket.create_connection(("127.0.0.1", caplab.port("tcp")), timeout=WAIT) as conn:
        conn.sendall(b"first ")
        assert conn.recv(100) == b"FIRST "
        conn.sendall(b"second and last")
        conn.shutdown(socket.SHUT_WR)
        assert readAll(conn) == b"SECOND AND LAST"


def test_connectionStaysOpen(caplab: CaplabProcess) -> None:
    """
    Unlike the lab's server, one connection carries many exchanges.
    """
    with socket.create_connection(("127.0.0.1", caplab.port("tcp")), timeout=WAIT) as conn:
        for i in range(20):
            line = b"line %d\n" % i
            conn.sendall(line)
            reply = b""
            while len(reply) < len(line):
                reply += conn.recv(100)
            assert reply == line.upper()


def test_udpSizes(caplab: CaplabProcess) -> None:
    """
    An empty datagram gets an empty reply; a 65,507-byte datagram is answered in full.
    """
    port = caplab.port("udp")
    assert udpExchange(port, b"") == b""
    big = b"abc\x00\xff" * (65507 // 5) + b"xy"
    assert len(big) == 65507
    assert udpExchange(port, big) == big.upper()


def test_udpBurst(caplab: CaplabProcess) -> None:
    """
    After a burst of thousands of datagrams (some of whose replies the kernel may drop) the
    service is still there and answers.
    """
    port = caplab.port("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for i in range(5000):
            sock.sendto(b"burst %d" % i, ("127.0.0.1", port))
        sock.settimeout(WAIT)
        first, _ = sock.recvfrom(100)
        assert first.startswith(b"BURST ")
    # The server may still be draining the burst, with its receive buffer full: like any UDP
    # client, ask again until it answers (a bounded number of times).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        for _ in range(int(WAIT / 0.5)):
            sock.sendto(b"still there?", ("127.0.0.1", port))
            try:
                reply, _ = sock.recvfrom(100)
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("no answer after the burst")
    assert reply == b"STILL THERE?"
    assert "Traceback" not in caplab.output


def test_backPressure(caplab: CaplabProcess) -> None:
    """
    A client that sends without reading is stopped by TCP flow control: the service stops
    reading while its write buffer is full instead of buffering without bound.  What was
    sent then all comes back once the client reads, and the server stays small.
    """
    limit = 256 * 1024 * 1024
    chunk = b"never read back yet " * 3277  # about 64 KiB
    sent = 0
    with socket.create_connection(("127.0.0.1", caplab.port("tcp")), timeout=WAIT) as conn:
        conn.setblocking(False)
        while sent < limit:
            _, writable, _ = select.select([], [conn], [], 2.0)
            if not writable:
                break  # blocked for 2 s: the server has stopped reading
            try:
                sent += conn.send(chunk)
            except BlockingIOError:
                continue
        assert sent < limit, "the server read everything: no back-pressure"
        assert rssKiB(caplab) < 200 * 1024
        conn.setblocking(True)
        conn.shutdown(socket.SHUT_WR)
        received = readAll(conn)
    assert len(received) == sent
    assert received == (chunk * (sent // len(chunk) + 1))[:sent].upper()


def rssKiB(process: CaplabProcess) -> int:
    assert process.process is not None
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1])


def test_unicode(tmp_path: Path) -> None:
    """
    With C{--unicode}, TCP uppercases full Unicode (a character split across writes
    included) and UDP does so unless the reply would grow, when it falls back to ASCII.
    """
    with runningCaplab("--no-proxy", "--unicode") as process:
        with socket.create_connection(("127.0.0.1", process.port("tcp")), timeout=WAIT) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            word = "straße café".encode()
            conn.sendall(word[:5])  # ends inside ß
            conn.sendall(word[5:])
            conn.shutdown(socket.SHUT_WR)
            assert readAll(conn) == "STRASSE CAFÉ".encode()
        assert udpExchange(process.port("udp"), "café".encode()) == "CAFÉ".encode()
        assert udpExchange(process.port("udp"), "ŉ ok".encode()) == "ŉ OK".encode()


def test_trace(tmp_path: Path) -> None:
    """
    C{--trace FILE} records each TCP connection (open, recv, send, half-close, close) and
    each UDP exchange, with the peer and the bytes.
    """
    path = tmp_path / "trace.txt"
    with runningCaplab("--no-proxy", "--trace", str(path)) as process:
        assert exchange(process.port("tcp"), b"welcome to cn lab") == b"WELCOME TO CN LAB"
        assert udpExchange(process.port("udp"), b"hi") == b"HI"
        assert process.stop() == -signal.SIGTERM
    lines = [line.split(" ", 1)[1] for line in path.read_text().splitlines()]
    events = [" ".join(line.split(" ")[0:1] + line.split(" ")[2:]) for line in lines]
    assert events == [
        "tcp#1 open",
        "tcp#1 recv 17 b'welcome to cn lab'",
        "tcp#1 send 17 b'WELCOME TO CN LAB'",
        "tcp#1 half-close",
        "tcp#1 close",
        "udp#2 recv 2 b'hi'",
        "udp#2 send 2 b'HI'",
    ]
    assert all(line.split(" ")[1].startswith("127.0.0.1:") for line in lines)


def test_maxConnections() -> None:
    """
    With C{--max-connections 1} a second connection is closed at once and logged, while
    the first goes on working.
    """
    with runningCaplab(
        "--no-proxy", "--no-udp", "--max-connections", "1", services=["tcp"]
    ) as process:
        port = process.port("tcp")
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as first:
            first.sendall(b"a")
            assert first.recv(10) == b"A"
            start = len(process.lines)
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as second:
                assert readAll(second) == b""
            process.waitForLine(
                r"caplab tcp refusing connection from 127\.0\.0\.1:\d+", start=start
            )
            first.sendall(b"b")
            assert first.recv(10) == b"B"


def test_idleTimeout() -> None:
    """
    A connection without input for C{--idle-timeout} seconds is closed (an end of stream,
    not a reset) and logged.
    """
    with runningCaplab(
        "--no-proxy", "--no-udp", "--idle-timeout", "0.5", services=["tcp"]
    ) as process:
        with socket.create_connection(("127.0.0.1", process.port("tcp")), timeout=WAIT) as conn:
            assert conn.recv(10) == b""
        process.waitForLine(r"caplab tcp closing idle connection from 127\.0\.0\.1:")


def test_sigtermStopsCleanly() -> None:
    """
    SIGTERM stops the services (ports closed, reactor stopped, no traceback); the process
    then ends as C{twist} always does after a signal, by re-raising it (status 143 in a
    shell), which service managers such as systemd count as a clean stop.
    """
    with runningCaplab("--no-proxy") as process:
        tcp, udp = process.port("tcp"), process.port("udp")
        # An answer shows the reactor is running, so its signal handlers are in place.
        assert exchange(tcp, b"ready?") == b"READY?"
        assert process.stop() == -signal.SIGTERM
    output = process.output
    assert f"(TCP Port {tcp} Closed)" in output
    assert f"(UDP Port {udp} Closed)" in output
    assert "Main loop terminated." in output
    assert "Traceback" not in output


@pytest.mark.parametrize("service", ["tcp", "udp"])
def test_portInUse(service: str) -> None:
    """
    A port already in use ends the process with status 69 and one line saying why, with no
    traceback, printed once (not again on standard error); the other service, which could
    listen, is never announced.
    """
    kind = socket.SOCK_STREAM if service == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as busy:
        busy.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            busy.listen()
        port = busy.getsockname()[1]
        other = "--udp-port" if service == "tcp" else "--tcp-port"
        result = subprocess.run(
            [
                *twistCommand(),
                "--log-format=text",
                "caplab",
                "--no-proxy",
                f"--{service}-port",
                str(port),
                other,
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
    assert result.returncode == 69
    message = f"caplab cannot listen: {service} on {service}:{port}:interface=127.0.0.1: "
    assert [line for line in result.stdout.splitlines() if message in line] != []
    everything = (result.stdout + result.stderr).splitlines()
    assert len([line for line in everything if "cannot listen" in line]) == 1
    assert "Address already in use" in result.stdout
    assert "listening on" not in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args, shown",
    [
        (["--tcp-port", "99999"], "--tcp-port '99999': not a port number"),
        (["--tcp-endpoint", "ssl:0:privateKey=/nonexistent.pem"], "--tcp-endpoint"),
        (["--trace", "/nonexistent/trace.txt"], "--trace '/nonexistent/trace.txt': cannot write"),
    ],
)
def test_usageErrorNoTraceback(args: list[str], shown: str) -> None:
    """
    A bad option ends C{twist caplab} with status 64 (EX_USAGE) and a message, not a
    traceback.
    """
    result = subprocess.run(
        [*twistCommand(), "caplab", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 64
    assert "Traceback" not in result.stdout + result.stderr
    assert shown in result.stdout + result.stderr


def test_ipv6Interface() -> None:
    """
    With C{--interface ::1} both services listen on IPv6 loopback and answer there.
    """
    with runningCaplab("--no-proxy", "--interface", "::1") as process:
        assert process.addresses["tcp"][0] == "::1"
        assert process.addresses["udp"][0] == "::1"
        with socket.create_connection(("::1", process.port("tcp")), timeout=WAIT) as conn:
            conn.sendall(b"over ipv6")
            conn.shutdown(socket.SHUT_WR)
            assert readAll(conn) == b"OVER IPV6"
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.settimeout(WAIT)
            sock.sendto(b"v6 datagram", ("::1", process.port("udp")))
            assert sock.recvfrom(100)[0] == b"V6 DATAGRAM"


def test_unixSocket(tmp_path: Path) -> None:
    """
    C{--tcp-endpoint unix:PATH} serves the TCP service on a UNIX socket, half-close
    included.
    """
    path = tmp_path / "caplab.sock"
    with runningCaplab(
        "--no-proxy", "--no-udp", "--tcp-endpoint", f"unix:{path}", services=["tcp"]
    ) as process:
        process.waitForLine(rf"caplab tcp listening on unix:{path}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(WAIT)
            conn.connect(str(path))
            conn.sendall(b"over a unix socket")
            conn.shutdown(socket.SHUT_WR)
            assert readAll(conn) == b"OVER A UNIX SOCKET"


def test_tls(tmp_path: Path) -> None:
    """
    With an C{ssl:} endpoint the TCP service speaks TLS; a multi-MB stream read
    concurrently comes back uppercased (back-pressure through the TLS layer).
    """
    import ssl

    from tests.tls import makePKI

    pki = makePKI(tmp_path / "pki")
    endpoint = f"ssl:0:interface=127.0.0.1:privateKey={pki.serverKey}:certKey={pki.serverCert}"
    data = b"secret lab sentence, &*! " * 200_000
    context = ssl.create_default_context(cafile=str(pki.caCert))
    with runningCaplab(
        "--no-proxy", "--no-udp", "--tcp-endpoint", endpoint, services=["tcp"]
    ) as process:
        raw = socket.create_connection(("127.0.0.1", process.port("tcp")), timeout=WAIT)
        with context.wrap_socket(raw, server_hostname="localhost") as conn:
            # One thread (an SSL connection is not shared between threads): send a chunk,
            # then take whatever has come back, so that neither side waits on the other.
            received = bytearray()
            for offset in range(0, len(data), 65536):
                conn.sendall(data[offset : offset + 65536])
                while conn.pending() or select.select([conn], [], [], 0)[0]:
                    received += conn.recv(65536)
            while len(received) < len(data):
                chunk = conn.recv(65536)
                assert chunk, "the TLS stream ended early"
                received += chunk
        assert bytes(received) == data.upper()
