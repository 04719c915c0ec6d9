"""
Unit tests of L{caplab.client}: argument parsing, and each protocol loop against a small
server in a thread on loopback (or no server at all).

Every wait is bounded: sockets carry timeouts, threads are joined with L{WAIT}.
"""

from __future__ import annotations

import io
import os
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from caplab import client
from caplab.client import (
    MAX_DATAGRAM,
    ClientError,
    Status,
    TCPLines,
    TCPStream,
    UDPClient,
    connectTCP,
    interactive,
    main,
    parseArguments,
    run,
    udpLines,
)
from tests.support import WAIT, fullAcceptQueue

# --- helpers ---------------------------------------------------------------------------


@contextmanager
def serverThread(handle: Callable[[socket.socket], object]) -> Iterator[int]:
    """
    Listen on a free loopback TCP port, run C{handle} on each accepted connection in a
    thread (until the test ends), and yield the port.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(WAIT)
    failures: list[BaseException] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(WAIT)
            with conn:
                try:
                    handle(conn)
                except Exception as e:  # reported by the test, not lost in the thread
                    failures.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        # shutdown, not just close, wakes the accept() the thread is blocked in.
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(WAIT)
    assert not failures, failures


def uppercaseEcho(conn: socket.socket) -> None:
    """
    The TCP service in miniature: uppercase whatever arrives; close after the half-close.
    """
    while data := conn.recv(65536):
        conn.sendall(data.upper())


def connected(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def deadPort(kind: socket.SocketKind) -> int:
    """
    A loopback port on which nothing listens (bound once, then closed).
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def feedPipe(data: bytes) -> int:
    """
    A pipe's read end from which C{data} can be read to its end (written by a thread).
    """
    readFd, writeFd = os.pipe()

    def write() -> None:
        with open(writeFd, "wb") as out:
            out.write(data)

    threading.Thread(target=write, daemon=True).start()
    return readFd


def streamThrough(port: int, inputFd: int | None = None, data: bytes = b"", timeout: float = WAIT):
    """
    Run a L{TCPStream} to C{port}; return it and what it wrote.
    """
    output = io.BytesIO()
    with connected(port) as sock:
        stream = TCPStream(sock, output, timeout, "the server", inputFd=inputFd, data=data)
        stream.run()
    return stream, output.getvalue()


def raises(status: Status, call: Callable[[], object]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.status == status, caught.value.message
    return caught.value


# --- arguments -------------------------------------------------------------------------


def test_argumentsDefaults() -> None:
    """
    C{tcp HOST PORT} parses to no message, a 2 s timeout and 3 UDP tries.
    """
    args = parseArguments(["tcp", "10.0.2.5", "12000"])
    assert (args.protocol, args.host, args.port) == ("tcp", "10.0.2.5", 12000)
    assert args.message is None
    assert (args.timeout, args.retries) == (2.0, 3)


def test_argumentsMessageWords() -> None:
    """
    The words of the message are joined with spaces into bytes; C{--} lets a message start
    with a dash; options may come after the positionals.
    """
    args = parseArguments(["udp", "h", "12005", "hi", "this", "is", "nitish", "--retries", "5"])
    assert args.message == b"hi this is nitish"
    assert args.retries == 5
    assert parseArguments(["tcp", "h", "1", "--", "-x"]).message == b"-x"
    assert parseArguments(["tcp", "h", "1", ""]).message == b""


@pytest.mark.parametrize(
    "argv, complaint",
    [
        (["tcp", "h", "0"], "invalid port '0'"),
        (["tcp", "h", "65536"], "invalid port '65536'"),
        (["tcp", "h", "http"], "invalid port 'http'"),
        (["sctp", "h", "1"], "invalid choice: 'sctp'"),
        (["tcp", "h"], "required: PORT"),
        (["udp", "h", "1", "--timeout", "0"], "invalid number of seconds '0'"),
        (["udp", "h", "1", "--timeout", "nan"], "invalid number of seconds 'nan'"),
        (["udp", "h", "1", "--timeout", "inf"], "invalid number of seconds 'inf'"),
        (["udp", "h", "1", "--retries", "0"], "invalid count '0'"),
        (["udp", "h", "1", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_argumentsBad(argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    """
    A bad argument ends with the usage, a line saying what is wrong, and status 2.
    """
    with pytest.raises(SystemExit) as exited:
        parseArguments(argv)
    assert exited.value.code == Status.USAGE == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: caplab-client")
    assert complaint in err


def test_helpDocumentsModesAndStatuses(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--help} names the lab's prompt, the piped modes and every exit status.
    """
    with pytest.raises(SystemExit) as exited:
        parseArguments(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "Input lowercase sentence:" in out
    assert "--timeout" in out and "--retries" in out
    for status in Status:
        assert f"\n  {status.value:<4} " in out, status


# --- connecting ------------------------------------------------------------------------


def test_connectRefused() -> None:
    """
    No server on the port: L{Status.REFUSED}, and the message says what to check.
    """
    port = deadPort(socket.SOCK_STREAM)
    error = raises(Status.REFUSED, lambda: connectTCP("127.0.0.1", port, WAIT))
    assert f"cannot connect to 127.0.0.1 port {port} over TCP: connection refused" in error.message
    assert "is the server running" in error.message


def test_connectTimeout() -> None:
    """
    A server whose accept queue is full drops the SYN: L{Status.TIMEOUT} after C{timeout}.
    """
    with fullAcceptQueue() as port:
        error = raises(Status.TIMEOUT, lambda: connectTCP("127.0.0.1", port, 0.2))
    assert error.message.endswith("timed out after 0.2 s")


@pytest.mark.parametrize("host", ["no-such-host.invalid", "x" * 64 + ".invalid"])
def test_connectUnknownHost(host: str) -> None:
    """
    A name that does not resolve (C{.invalid} never does, RFC 6761), or cannot be a host
    name at all (a label over 63 characters): L{Status.NAME_RESOLUTION}.
    """
    error = raises(Status.NAME_RESOLUTION, lambda: connectTCP(host, 12000, WAIT))
    assert error.message.startswith(f"cannot resolve host {host!r}: ")
    raises(Status.NAME_RESOLUTION, lambda: UDPClient(host, 12005, WAIT, 1))


def test_connectTriesEachAddress(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A host with several addresses (C{localhost}: C{::1} and C{127.0.0.1}) is tried address
    by address, so a refusal on the first is not the end.
    """
    dead = deadPort(socket.SOCK_STREAM)
    with serverThread(uppercaseEcho) as port:
        entries = [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", dead)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]
        monkeypatch.setattr(client, "resolve", lambda host, port, kind: entries)
        with connectTCP("twice", port, WAIT) as sock:
            assert sock.getpeername() == ("127.0.0.1", port)


# --- the TCP stream --------------------------------------------------------------------


def test_streamMessage() -> None:
    """
    A message goes out, the sending side is shut, and the whole reply comes back.
    """
    with serverThread(uppercaseEcho) as port:
        stream, output = streamThrough(port, data=b"welcome to cn lab, &*!")
    assert output == b"WELCOME TO CN LAB, &*!"
    assert (stream.sent, stream.received, stream.last) == (22, 22, output)


def test_streamLargerThanBuffers() -> None:
    """
    Several MB of every byte value stream through while the replies are read: a client that
    sent everything before reading would stall with both sides' buffers full.
    """
    data = bytes(range(256)) * (6 * 4096)  # 6 MiB
    with serverThread(uppercaseEcho) as port:
        stream, output = streamThrough(port, inputFd=feedPipe(data))
    assert output == data.upper()
    assert stream.sent == stream.received == len(data)


def test_streamFromRegularFile(tmp_path: Path) -> None:
    """
    Input redirected from a file (C{< big.txt}) works: regular files cannot be watched by
    epoll, so the stream must not depend on it.
    """
    data = b"notes from the lab\n" * 50_000
    path = tmp_path / "notes.txt"
    path.write_bytes(data)
    with serverThread(uppercaseEcho) as port, open(path, "rb") as source:
        _, output = streamThrough(port, inputFd=source.fileno())
    assert output == data.upper()


def test_streamReadsUntilServerCloses() -> None:
    """
    After the half-close the client keeps reading: what the server sends after seeing the
    end of the input is part of the output.
    """

    def answerAtEnd(conn: socket.socket) -> None:
        received = b""
        while data := conn.recv(65536):
            received += data
        conn.sendall(b"GOT " + str(len(received)).encode() + b" BYTES")

    with serverThread(answerAtEnd) as port:
        _, output = streamThrough(port, data=b"x" * 1000)
    assert output == b"GOT 1000 BYTES"


def test_streamStalledServerTimesOut() -> None:
    """
    A server that stops reading makes the client give up after C{timeout} without progress,
    having read only a bounded amount of its input (it never reads ahead of the socket).
    """
    stop = threading.Event()

    def neverRead(conn: socket.socket) -> None:
        stop.wait(WAIT)

    readFd, writeFd = os.pipe()
    written = 0

    def produce() -> None:
        nonlocal written
        chunk = b"a" * 65536
        try:
            while written < 512 * 1024 * 1024:
                written += os.write(writeFd, chunk)
        except OSError:
            pass  # the client closed the pipe

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        with serverThread(neverRead) as port:
            error = raises(Status.TIMEOUT, lambda: streamThrough(port, inputFd=readFd, timeout=0.3))
            stop.set()
    finally:
        os.close(readFd)
        producer.join(WAIT)
        os.close(writeFd)
    assert "stopped answering over TCP (nothing for 0.3 s)" in error.message
    # Socket buffers on both sides plus one chunk, far from the 512 MiB on offer.
    assert written < 32 * 1024 * 1024


def test_streamSilentServerTimesOut() -> None:
    """
    A server that takes the input but never answers nor closes: L{Status.TIMEOUT}.
    """

    gaveUp = threading.Event()

    def silent(conn: socket.socket) -> None:
        while conn.recv(65536):
            pass
        gaveUp.wait(WAIT)  # hold the connection open until the client gives up

    with serverThread(silent) as port:
        raises(Status.TIMEOUT, lambda: streamThrough(port, data=b"hello", timeout=0.3))
        gaveUp.set()


def test_streamServerClosesEarly() -> None:
    """
    A server that closes before the input has ended (an idle timeout, a connection cap):
    L{Status.NETWORK}, saying so.
    """
    readFd, writeFd = os.pipe()
    os.write(writeFd, b"first part, the rest never comes")
    try:
        with serverThread(lambda conn: conn.sendall(conn.recv(65536).upper())) as port:
            error = raises(Status.NETWORK, lambda: streamThrough(port, inputFd=readFd))
    finally:
        os.close(readFd)
        os.close(writeFd)
    assert "closed the TCP connection before the end of the input" in error.message


def test_streamClosedWithoutReply() -> None:
    """
    A server that takes the whole input and closes without a byte of reply did not serve
    the client (over its connection cap, say): L{Status.NETWORK}, not an empty answer.
    """

    def swallow(conn: socket.socket) -> None:
        while conn.recv(65536):
            pass

    with serverThread(swallow) as port:
        error = raises(Status.NETWORK, lambda: streamThrough(port, data=b"hello"))
        _, output = streamThrough(port, data=b"")
    assert "closed the TCP connection without replying (5 bytes sent)" in error.message
    assert output == b""


def test_streamReset() -> None:
    """
    A connection reset in the middle of the stream: L{Status.NETWORK}, "connection reset".
    """

    def reset(conn: socket.socket) -> None:
        conn.recv(1000)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with serverThread(reset) as port:
        error = raises(Status.NETWORK, lambda: streamThrough(port, inputFd=feedPipe(b"x" * 10**7)))
    assert "reset by the server" in error.message or "before taking all the input" in error.message


def test_streamOutputClosed() -> None:
    """
    An output that was closed (C{| head}) ends the stream with L{Status.IO_ERROR} and no
    message (a reader going away is a normal end for a pipe).
    """

    class Closed(io.BytesIO):
        def write(self, data: object) -> int:
            raise BrokenPipeError()

    with serverThread(uppercaseEcho) as port, connected(port) as sock:
        stream = TCPStream(sock, Closed(), WAIT, "the server", data=b"hello")
        error = raises(Status.IO_ERROR, stream.run)
    assert error.message == ""


# --- interactive TCP -------------------------------------------------------------------


def lineServer(conn: socket.socket) -> None:
    """
    Answer line by line, the reply split in two writes, as TCP may deliver it.
    """
    reader = conn.makefile("rb")
    for line in reader:
        upper = line.upper()
        conn.sendall(upper[:2])
        conn.sendall(upper[2:])


def test_linesExchange() -> None:
    """
    Each line (with a newline added if it has none) comes back up to its newline, however
    the reply is split; one connection serves them all.
    """
    with serverThread(lineServer) as port:
        lines = TCPLines("127.0.0.1", port, WAIT)
        try:
            assert lines.exchange(b"welcome to cn lab\n") == b"WELCOME TO CN LAB\n"
            assert lines.exchange(b"no newline") == b"NO NEWLINE\n"
        finally:
            lines.close()


def test_linesReconnectAfterServerClosed() -> None:
    """
    If the server closed the connection while the user was typing (its idle timeout), the
    next line goes over a new connection instead of failing.
    """
    connections = []
    closedFirst = threading.Event()

    def closeFirst(conn: socket.socket) -> None:
        connections.append(conn)
        if len(connections) == 1:
            closedFirst.set()
            return
        lineServer(conn)

    with serverThread(closeFirst) as port:
        lines = TCPLines("127.0.0.1", port, WAIT)
        try:
            assert closedFirst.wait(WAIT)
            assert select.select([lines.sock], [], [], WAIT)[0], "the close never arrived"
            assert lines.exchange(b"still there?\n") == b"STILL THERE?\n"
        finally:
            lines.close()
    assert len(connections) == 2


def test_linesSilentServer() -> None:
    """
    A server that never answers a line: L{Status.TIMEOUT} after C{timeout}.
    """
    gaveUp = threading.Event()
    with serverThread(lambda conn: gaveUp.wait(WAIT)) as port:
        lines = TCPLines("127.0.0.1", port, 0.2)
        try:
            error = raises(Status.TIMEOUT, lambda: lines.exchange(b"hello\n"))
        finally:
            gaveUp.set()
            lines.close()
    assert error.message == f"no reply from 127.0.0.1 port {port} over TCP within 0.2 s"


def test_linesServerClosesWithoutReply() -> None:
    """
    A server that reads the line and closes without a reply: L{Status.NETWORK}.
    """
    with serverThread(lambda conn: conn.recv(100) and None) as port:
        lines = TCPLines("127.0.0.1", port, WAIT)
        try:
            error = raises(Status.NETWORK, lambda: lines.exchange(b"hello\n"))
        finally:
            lines.close()
    assert "closed the TCP connection before replying" in error.message


# --- UDP -------------------------------------------------------------------------------


@contextmanager
def udpServer(
    answer: Callable[[bytes, int], bytes | None], extra: bytes | None = None
) -> Iterator[tuple[int, list[bytes]]]:
    """
    A loopback UDP server in a thread: C{answer(datagram, count)} gives the reply, or
    C{None} for none; C{extra}, if given, is sent after the first reply, as a duplicate
    or late reply would come.  Yields the port and the list of datagrams received.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if not select.select([sock], [], [], WAIT)[0]:
                return
            datagram, address = sock.recvfrom(65536)
            if datagram == b"__stop__":
                return
            received.append(datagram)
            reply = answer(datagram, len(received))
            if reply is not None:
                sock.sendto(reply, address)
            if extra is not None and len(received) == 1:
                sock.sendto(extra, address)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    try:
        yield port, received
    finally:
        stop.set()
        sock.sendto(b"__stop__", ("127.0.0.1", port))
        thread.join(WAIT)
        sock.close()


def test_udpExchange() -> None:
    """
    A datagram goes out, its reply comes back; up to the 65,507-byte maximum.
    """
    with udpServer(lambda data, n: data.upper()) as (port, received):
        udp = UDPClient("127.0.0.1", port, WAIT, 3)
        try:
            assert udp.exchange(b"hi this is nitish") == b"HI THIS IS NITISH"
            assert udp.exchange(b"") == b""
            biggest = b"z" * MAX_DATAGRAM
            assert udp.exchange(biggest) == biggest.upper()
        finally:
            udp.close()
    assert udp.tries == 3
    assert received[0] == b"hi this is nitish"


def test_udpTooLarge() -> None:
    """
    One byte over the maximum is L{Status.TOO_LARGE}, before anything is sent.
    """
    with udpServer(lambda data, n: data.upper()) as (port, received):
        udp = UDPClient("127.0.0.1", port, WAIT, 3)
        try:
            error = raises(Status.TOO_LARGE, lambda: udp.exchange(b"z" * (MAX_DATAGRAM + 1)))
        finally:
            udp.close()
    assert "65508-byte message does not fit in one UDP datagram" in error.message
    assert received == []


def test_udpRefused() -> None:
    """
    No server on the port: the ICMP port unreachable reaches the connected socket and is
    reported as L{Status.REFUSED} at once, not after the timeouts.
    """
    port = deadPort(socket.SOCK_DGRAM)
    udp = UDPClient("127.0.0.1", port, WAIT, 3)
    try:
        error = raises(Status.REFUSED, lambda: udp.exchange(b"anyone?"))
    finally:
        udp.close()
    assert error.message == (
        f"127.0.0.1 port {port} refused the UDP datagram (ICMP port unreachable): "
        "no server is listening on that port"
    )
    assert udp.tries == 1


def test_udpSilentServerRetriesThenTimesOut() -> None:
    """
    A server that never answers gets the datagram C{retries} times, C{timeout} apart, and
    the client ends with L{Status.TIMEOUT}.
    """
    with udpServer(lambda data, n: None) as (port, received):
        udp = UDPClient("127.0.0.1", port, 0.1, 4)
        try:
            error = raises(Status.TIMEOUT, lambda: udp.exchange(b"hello?"))
        finally:
            udp.close()
    assert received == [b"hello?"] * 4
    assert error.message.startswith(f"no reply from 127.0.0.1 port {port} over UDP after 4 tries")


def test_udpRetrySucceeds() -> None:
    """
    A datagram lost once is sent again, and the second try's reply is the answer.
    """
    with udpServer(lambda data, n: None if n == 1 else data.upper()) as (port, received):
        udp = UDPClient("127.0.0.1", port, 0.2, 3)
        try:
            assert udp.exchange(b"again") == b"AGAIN"
        finally:
            udp.close()
    assert udp.tries == 2
    assert received == [b"again", b"again"]


def test_udpStaleReplyDiscarded() -> None:
    """
    A reply that arrived after its try gave up is dropped, not taken for the next reply.
    """
    with udpServer(lambda data, n: data.upper(), extra=b"STALE") as (port, received):
        udp = UDPClient("127.0.0.1", port, WAIT, 3)
        try:
            assert udp.exchange(b"first") == b"FIRST"
            assert udp.sock is not None
            assert select.select([udp.sock], [], [], WAIT)[0], "the extra reply never came"
            assert udp.exchange(b"fresh") == b"FRESH"
        finally:
            udp.close()


def test_udpNextAddressAfterRefusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    When the host's first address refuses (C{localhost} as C{::1} while the server listens
    on C{127.0.0.1}), the next address is tried.
    """
    dead = deadPort(socket.SOCK_DGRAM)
    with udpServer(lambda data, n: data.upper()) as (port, _):
        entries = [
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", dead)),
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", port)),
        ]
        monkeypatch.setattr(client, "resolve", lambda host, port, kind: entries)
        udp = UDPClient("twice", port, WAIT, 3)
        try:
            assert udp.exchange(b"second") == b"SECOND"
        finally:
            udp.close()


def test_udpSkipsUnreachableAddress(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    An address the socket cannot even be connected to (no route, here the broadcast address
    without permission) is skipped; only when it is the last one is it an error.
    """
    with udpServer(lambda data, n: data.upper()) as (port, _):
        broadcast = (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("255.255.255.255", port))
        good = (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", port))
        monkeypatch.setattr(client, "resolve", lambda host, port, kind: [broadcast, good])
        udp = UDPClient("twice", port, WAIT, 3)
        try:
            assert udp.exchange(b"reached") == b"REACHED"
        finally:
            udp.close()
        monkeypatch.setattr(client, "resolve", lambda host, port, kind: [broadcast])
        error = raises(Status.NETWORK, lambda: UDPClient("once", port, WAIT, 3))
    assert error.message == f"cannot reach once port {port} over UDP: Permission denied"


# --- the line loops --------------------------------------------------------------------


class Recorder:
    """
    A stand-in for a client's C{exchange}: records what is sent, answers in uppercase.
    """

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def __call__(self, data: bytes) -> bytes:
        self.sent.append(data)
        return data.upper()


def test_interactiveTCP() -> None:
    """
    The lab's prompt before each line and once more before the end of input; TCP lines go
    out with their newline; replies on lines of their own; a final newline after Ctrl-D.
    """
    exchange, stdout, prompt = Recorder(), io.BytesIO(), io.BytesIO()
    interactive(exchange, io.BytesIO(b"hello\nworld\n"), stdout, prompt, keepNewline=True)
    assert exchange.sent == [b"hello\n", b"world\n"]
    assert stdout.getvalue() == b"HELLO\nWORLD\n"
    assert prompt.getvalue() == b"Input lowercase sentence:" * 3 + b"\n"


def test_interactiveUDP() -> None:
    """
    UDP lines go out without their newline, as the lab's C{UDPClient.py} sent them; the
    reply is printed with one.  Text ended by Ctrl-D instead of Enter still counts.
    """
    exchange, stdout, prompt = Recorder(), io.BytesIO(), io.BytesIO()
    interactive(exchange, io.BytesIO(b"hi\nlast"), stdout, prompt, keepNewline=False)
    assert exchange.sent == [b"hi", b"last"]
    assert stdout.getvalue() == b"HI\nLAST\n"


def test_udpLines() -> None:
    """
    One datagram per line, without its newline (an empty line is an empty datagram), one
    reply per output line; the longest line that fits is sent.
    """
    longest = b"q" * MAX_DATAGRAM
    exchange, stdout = Recorder(), io.BytesIO()
    udpLines(exchange, io.BytesIO(b"one\n\ntwo\n" + longest + b"\nend"), stdout)
    assert exchange.sent == [b"one", b"", b"two", longest, b"end"]
    assert stdout.getvalue() == b"ONE\n\nTWO\n" + longest.upper() + b"\nEND\n"


def test_udpLinesTooLong() -> None:
    """
    A line longer than a datagram can carry stops the loop with L{Status.TOO_LARGE}, after
    the lines before it were answered, without reading the long line into memory whole.
    """
    exchange, stdout = Recorder(), io.BytesIO()
    stdin = io.BytesIO(b"fine\n" + b"x" * (MAX_DATAGRAM + 1) + b"\n")
    error = raises(Status.TOO_LARGE, lambda: udpLines(exchange, stdin, stdout))
    assert exchange.sent == [b"fine"]
    assert stdout.getvalue() == b"FINE\n"
    assert "longer than one UDP datagram can carry" in error.message


# --- run and main ----------------------------------------------------------------------


class TerminalInput(io.BytesIO):
    """
    Input that says it is a terminal.
    """

    def isatty(self) -> bool:
        return True


def test_runPromptOnStderrWhenOutputRedirected() -> None:
    """
    Interactive, with the output redirected to a file: the prompts go to stderr, so the file
    holds only the replies.
    """
    stdout, stderr = io.BytesIO(), io.BytesIO()
    with udpServer(lambda data, n: data.upper()) as (port, _):
        args = parseArguments(["udp", "127.0.0.1", str(port)])
        run(args, TerminalInput(b"hi\nthere\n"), stdout, stderr)
    assert stdout.getvalue() == b"HI\nTHERE\n"
    assert stderr.getvalue() == b"Input lowercase sentence:" * 3 + b"\n"


def test_runMessageOnTerminal() -> None:
    """
    A message given on the command line is sent even when stdin is a terminal: no prompt.
    """
    stdout, stderr = io.BytesIO(), io.BytesIO()
    with serverThread(uppercaseEcho) as port:
        args = parseArguments(["tcp", "127.0.0.1", str(port), "no", "prompt"])
        run(args, TerminalInput(b"never read\n"), stdout, stderr)
    assert (stdout.getvalue(), stderr.getvalue()) == (b"NO PROMPT\n", b"")


def test_mainReportsOneLine(capsys: pytest.CaptureFixture[str]) -> None:
    """
    L{main} turns a failure into its exit status and one line on stderr, no traceback.
    """
    port = deadPort(socket.SOCK_STREAM)
    assert main(["tcp", "127.0.0.1", str(port), "hello"]) == Status.REFUSED
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"caplab-client: cannot connect to 127.0.0.1 port {port} over TCP")
    assert err.count("\n") == 1
