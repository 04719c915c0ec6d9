"""
C{caplab-client}: the lab's C{TCPClient.py} and C{UDPClient.py} as one command that never hangs.

    caplab-client tcp HOST PORT [MESSAGE]
    caplab-client udp HOST PORT [MESSAGE]

With a MESSAGE it sends it and prints the reply.  Without one, on a terminal, it asks the
lab's C{Input lowercase sentence:} question in a loop until end of input (Ctrl-D); with
piped input, TCP streams all of it through the service (any size, in bounded memory) and UDP
sends one datagram per line.

The lab's questions ("what if the client runs before the server?", "what if the ports
differ?") become behaviour: every failure ends with one line on stderr and an exit status of
its own (L{Status}), after a bounded wait.

The client is built on plain blocking sockets and C{selectors} rather than the reactor: it
talks to one server over one socket, and a C{poll} loop is all the concurrency the TCP stream
needs (reading the replies while it is still sending, so neither side's buffers fill up).
"""

from __future__ import annotations

import argparse
import enum
import errno
import os
import selectors
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

from caplab import __version__

#: The lab's prompt, character for character (the lab's C{raw_input} had no trailing space).
PROMPT = b"Input lowercase sentence:"

#: The largest UDP payload over IPv4 (65,535 - 8 byte UDP header - 20 byte IP header).
MAX_DATAGRAM = 65507

#: How many bytes one read from stdin or the socket asks for in the TCP stream.
CHUNK = 65536

#: One entry of C{socket.getaddrinfo}: family, kind, protocol, canonical name, address.
AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]

#: Sends one line or message and returns the reply.
Exchange = Callable[[bytes], bytes]


class Status(enum.IntEnum):
    """
    The exit statuses of C{caplab-client}, one per kind of failure.
    """

    #: Every exchange succeeded.
    OK = 0
    #: Local input or output failed, e.g. stdout was closed early (C{| head}).
    IO_ERROR = 1
    #: Bad arguments (argparse's own status).
    USAGE = 2
    #: Nobody listens there: TCP connection refused, or ICMP port unreachable for UDP.
    REFUSED = 3
    #: No answer in time: TCP connect or reply, or every UDP try.
    TIMEOUT = 4
    #: The host name does not resolve.
    NAME_RESOLUTION = 5
    #: Any other network failure: connection reset or closed mid-stream, unreachable network.
    NETWORK = 6
    #: A UDP message or line is larger than one datagram can carry.
    TOO_LARGE = 7
    #: Interrupted with Ctrl-C (the shell's 128 + SIGINT).
    INTERRUPTED = 130


class ClientError(Exception):
    """
    A failure that ends the client with C{status} and the one-line C{message} on stderr.
    """

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


EPILOG = """\
without MESSAGE:
  on a terminal   asks 'Input lowercase sentence:' until end of input (Ctrl-D)
  tcp, piped      streams all of stdin through the service to stdout (any size, binary-safe)
  udp, piped      sends one datagram per line and prints one reply per line

exit status:
  0    success
  1    local input/output error (e.g. stdout closed early)
  2    usage error (bad arguments)
  3    connection refused: no server on that host and port (for UDP, where the OS reports
       the ICMP port unreachable)
  4    timeout: TCP connect or reply, or no UDP reply after --retries tries of --timeout s
  5    the host name does not resolve
  6    other network error (connection reset or closed mid-stream, network unreachable)
  7    a UDP message or line longer than 65507 bytes
  130  interrupted (Ctrl-C)
"""


def _port(text: str) -> int:
    """
    An argparse type: a port number to connect to, 1 to 65535.
    """
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (expected 1-65535)")
    return port


def _positiveFloat(text: str) -> float:
    """
    An argparse type: a number of seconds greater than zero.
    """
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r} (expected > 0)")
    return value


def _positiveInt(text: str) -> int:
    """
    An argparse type: a whole number of at least 1.
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r} (expected 1 or more)")
    return value


def buildParser() -> argparse.ArgumentParser:
    """
    The command line of C{caplab-client}; C{--help} documents the modes and exit statuses.
    """
    parser = argparse.ArgumentParser(
        prog="caplab-client",
        description="Send text to caplab's uppercase TCP or UDP service and print the reply.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("protocol", choices=["tcp", "udp"], help="the service to talk to")
    parser.add_argument("host", metavar="HOST", help="server name or address (IPv4 or IPv6)")
    parser.add_argument(
        "port", metavar="PORT", type=_port, help="server port (caplab: tcp 12000, udp 12005)"
    )
    parser.add_argument(
        "message",
        metavar="MESSAGE",
        nargs="*",
        help="text to send (several words are joined with spaces; put -- before a message "
        "that starts with -); without it, read standard input",
    )
    parser.add_argument(
        "--timeout",
        type=_positiveFloat,
        default=2.0,
        metavar="SECONDS",
        help="how long to wait for the server: for a TCP connection, for a reply while it is "
        "owed, for each UDP try (default: %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=_positiveInt,
        default=3,
        metavar="N",
        help="UDP: how many times to send a datagram before giving up (default: %(default)s)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parseArguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """
    Parse C{argv}; a bad argument prints the usage and exits with L{Status.USAGE}.

    C{message} becomes C{None} (no MESSAGE given) or the words joined with spaces, as bytes
    (undecodable command-line bytes pass through unchanged).
    """
    args = buildParser().parse_args(argv)
    args.message = os.fsencode(" ".join(args.message)) if args.message else None
    return args


def _describe(host: str, port: int) -> str:
    """
    C{host port N}, the way the messages name the server.
    """
    return f"{host} port {port}"


def resolve(host: str, port: int, kind: socket.SocketKind) -> Sequence[AddressInfo]:
    """
    The addresses of C{host}, for sockets of C{kind}; L{Status.NAME_RESOLUTION} if none.
    """
    try:
        found = socket.getaddrinfo(host, port, type=kind)
    except socket.gaierror as e:
        reason = e.strerror
    except UnicodeError:
        # A label over 63 characters, say: the IDNA codec refuses it before any lookup.
        reason = "not a valid host name"
    else:
        return found
    raise ClientError(Status.NAME_RESOLUTION, f"cannot resolve host {host!r}: {reason}")


def _networkError(error: OSError, what: str) -> ClientError:
    """
    The L{ClientError} for an C{OSError} that happened while doing C{what}.
    """
    if isinstance(error, ConnectionRefusedError):
        return ClientError(Status.REFUSED, f"{what}: connection refused")
    if isinstance(error, TimeoutError):
        return ClientError(Status.TIMEOUT, f"{what}: timed out")
    if isinstance(error, ConnectionResetError):
        return ClientError(Status.NETWORK, f"{what}: connection reset by the server")
    reason = error.strerror or str(error) or type(error).__name__
    return ClientError(Status.NETWORK, f"{what}: {reason}")


def connectTCP(host: str, port: int, timeout: float) -> socket.socket:
    """
    Connect to C{host} C{port}, trying each of its addresses, within C{timeout} per address.

    @raise ClientError: L{Status.REFUSED} when nothing listens there (the lab's "run the
        client before the server"), L{Status.TIMEOUT}, L{Status.NAME_RESOLUTION}, or
        L{Status.NETWORK}.
    """
    where = _describe(host, port)
    lastError: OSError | None = None
    for family, kind, proto, _, address in resolve(host, port, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError as e:
            sock.close()
            lastError = e
            continue
        sock.settimeout(None)
        return sock
    assert lastError is not None  # getaddrinfo returns at least one address or raises
    error = _networkError(lastError, f"cannot connect to {where} over TCP")
    if error.status == Status.REFUSED:
        error.message += " (is the server running, and on that port?)"
    elif error.status == Status.TIMEOUT:
        error.message += f" after {timeout:g} s"
    raise error


class TCPStream:
    """
    Pumps bytes through one TCP connection: input out, replies in, both at once.

    Reading the replies while still sending is what lets any amount of data through: the
    server stops reading when its replies are not taken, so a client that first sent
    everything and only then read would deadlock with both sides' buffers full.  At most one
    chunk of input and one of reply are held at a time, so memory stays flat whatever the
    size.  At end of input the sending side is shut down (a TCP half-close); the server
    then finishes its reply and closes, and the end of the reply stream is the end of the
    exchange.

    The wait is bounded wherever the server owes something: input that cannot be sent, or
    the rest of the reply after the half-close, for C{timeout} seconds without progress.
    While the input itself is slow (a pipe from a program still writing), nothing is owed
    and there is no time limit.

    @ivar sent: bytes sent so far.
    @ivar received: reply bytes received so far.
    @ivar last: the last chunk of reply received.
    """

    def __init__(
        self,
        sock: socket.socket,
        output: BinaryIO,
        timeout: float,
        where: str,
        inputFd: int | None = None,
        data: bytes = b"",
    ) -> None:
        """
        @param sock: a connected TCP socket; the stream closes nothing, the caller does.
        @param output: where the reply goes, flushed after each chunk.
        @param inputFd: a file descriptor to read the input from, to its end, or C{None}
            when the input is just C{data}.
        @param data: input to send before what C{inputFd} gives.
        @param where: the server, as error messages name it.
        """
        self.sock = sock
        self.output = output
        self.timeout = timeout
        self.where = where
        self.inputFd = inputFd
        self.pending = memoryview(data)
        self.inputDone = inputFd is None
        self.sent = 0
        self.received = 0
        self.last = b""

    def run(self) -> None:
        """
        Send all the input, copy the whole reply to C{output}; return at the reply's end.

        @raise ClientError: L{Status.TIMEOUT}, L{Status.NETWORK} (reset, or the server
            closed before taking all the input), L{Status.IO_ERROR}.
        """
        self.sock.setblocking(False)
        # poll, not epoll: epoll refuses regular files, and stdin is often one (< big.txt).
        with selectors.PollSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            halfClosed = False
            while True:
                if not self.pending and self.inputDone and not halfClosed:
                    self._shutdownWrite()
                    halfClosed = True
                self._watch(selector, halfClosed)
                owed = halfClosed or bool(self.pending)
                events = selector.select(self.timeout if owed else None)
                if not events:
                    raise ClientError(
                        Status.TIMEOUT,
                        f"{self.where} stopped answering over TCP (nothing for {self.timeout:g} s)",
                    )
                for key, mask in events:
                    if key.fileobj is self.sock:
                        if mask & selectors.EVENT_READ and not self._receive(halfClosed):
                            return
                        if mask & selectors.EVENT_WRITE:
                            self._send()
                    else:
                        self._readInput()

    def _watch(self, selector: selectors.BaseSelector, halfClosed: bool) -> None:
        """
        Watch the socket for writing only while there is input to send, and the input only
        while there is none waiting (that is what keeps memory bounded).
        """
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.pending else 0)
        if selector.get_key(self.sock).events != wanted:
            selector.modify(self.sock, wanted)
        if self.inputFd is None:
            return
        wantInput = not self.pending and not self.inputDone
        registered = self.inputFd in selector.get_map()
        if wantInput and not registered:
            selector.register(self.inputFd, selectors.EVENT_READ)
        elif registered and not wantInput:
            selector.unregister(self.inputFd)

    def _readInput(self) -> None:
        """
        Take the next chunk of input to send (only asked for once the previous one is sent).
        """
        assert self.inputFd is not None
        try:
            chunk = os.read(self.inputFd, CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            raise ClientError(Status.IO_ERROR, f"cannot read the input: {e.strerror}") from None
        if chunk:
            self.pending = memoryview(chunk)
        else:
            self.inputDone = True

    def _send(self) -> None:
        """
        Send what the socket takes of the pending chunk.
        """
        try:
            count = self.sock.send(self.pending)
        except (BlockingIOError, InterruptedError):
            return
        except (BrokenPipeError, ConnectionResetError):
            raise ClientError(
                Status.NETWORK,
                f"{self.where} closed the TCP connection before taking all the input "
                f"({self.sent} bytes sent)",
            ) from None
        except OSError as e:
            raise _networkError(e, f"sending to {self.where} over TCP") from None
        self.sent += count
        self.pending = self.pending[count:]

    def _shutdownWrite(self) -> None:
        """
        Tell the server the input has ended (TCP half-close), so it can finish and close.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            # ENOTCONN: the server already reset the connection; the read reports it.
            if e.errno != errno.ENOTCONN:
                raise _networkError(e, f"closing the input to {self.where}") from None

    def _receive(self, halfClosed: bool) -> bool:
        """
        Copy one chunk of reply to the output; C{False} at the end of the reply.
        """
        try:
            chunk = self.sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return True
        except ConnectionResetError:
            raise ClientError(
                Status.NETWORK,
                f"connection reset by {self.where} "
                f"({self.sent} bytes sent, {self.received} received)",
            ) from None
        except OSError as e:
            raise _networkError(e, f"receiving from {self.where} over TCP") from None
        if not chunk:
            if halfClosed and (self.received or not self.sent):
                return False
            if not self.received:
                # Every byte gets a reply; none at all is a server that did not serve us
                # (over its connection cap, or not an uppercase service), not an answer.
                raise ClientError(
                    Status.NETWORK,
                    f"{self.where} closed the TCP connection without replying "
                    f"({self.sent} bytes sent)",
                )
            raise ClientError(
                Status.NETWORK,
                f"{self.where} closed the TCP connection before the end of the input "
                f"({self.sent} bytes sent, {self.received} received)",
            )
        self.received += len(chunk)
        self.last = chunk
        _write(self.output, chunk)
        return True


def _write(output: BinaryIO, data: bytes) -> None:
    """
    Write and flush C{data}; a closed or failing output is L{Status.IO_ERROR}.
    """
    try:
        output.write(data)
        output.flush()
    except BrokenPipeError:
        # The reader went away (| head): a normal way for a pipe to end, not worth a line.
        raise ClientError(Status.IO_ERROR, "") from None
    except OSError as e:
        raise ClientError(Status.IO_ERROR, f"cannot write the output: {e.strerror}") from None


class TCPLines:
    """
    The interactive TCP client: one connection, one line out and one line back at a time.

    Each line goes out with its newline and the reply is read up to the newline that ends
    it (the service keeps newlines, and replies in any mode may differ in length from the
    line, so the newline is the one reliable end).  If the server closed the connection
    while the user was typing (its idle timeout), the client connects again before sending.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.where = _describe(host, port)
        self.sock = connectTCP(host, port, timeout)

    def close(self) -> None:
        self.sock.close()

    def _closedByServer(self) -> bool:
        """
        Whether the server has closed the idle connection: it is readable, and at its end.
        """
        with selectors.PollSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            if not selector.select(0):
                return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def exchange(self, line: bytes) -> bytes:
        """
        Send C{line} (a newline is added if it has none), return the reply up to its newline.
        """
        if not line.endswith(b"\n"):
            line += b"\n"
        if self._closedByServer():
            self.sock.close()
            self.sock = connectTCP(self.host, self.port, self.timeout)
        self.sock.settimeout(self.timeout)
        what = f"talking to {self.where} over TCP"
        try:
            self.sock.sendall(line)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = self.sock.recv(CHUNK)
                if not chunk:
                    raise ClientError(
                        Status.NETWORK, f"{self.where} closed the TCP connection before replying"
                    )
                reply += chunk
        except TimeoutError:
            raise ClientError(
                Status.TIMEOUT, f"no reply from {self.where} over TCP within {self.timeout:g} s"
            ) from None
        except OSError as e:
            raise _networkError(e, what) from None
        return reply


class UDPClient:
    """
    Sends datagrams to one server over a I{connected} UDP socket and waits for each reply.

    Connecting the socket is what lets Linux report the ICMP port unreachable that a host
    sends back when nothing listens on the port: the next C{recv} fails with
    C{ECONNREFUSED}, so "the server is not running" is known at once instead of after the
    timeout.  Where no ICMP comes back (a firewall, another OS), each datagram is sent up
    to C{retries} times, C{timeout} seconds apart.  If the host has several addresses
    (C{localhost}: C{::1} and C{127.0.0.1}) and one refuses, the next is tried.

    @ivar tries: datagrams sent so far, retries included.
    """

    def __init__(self, host: str, port: int, timeout: float, retries: int) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.where = _describe(host, port)
        self.addresses = list(resolve(host, port, socket.SOCK_DGRAM))
        self.tries = 0
        self.sock: socket.socket | None = None
        self._connectNext()

    def _connectNext(self) -> None:
        """
        Connect a new socket to the next address of the host that can be reached at all (a
        UDP connect sends nothing; it fails only without a route, e.g. IPv6 switched off).
        """
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        while self.addresses:
            family, kind, proto, _, address = self.addresses.pop(0)
            sock = socket.socket(family, kind, proto)
            try:
                sock.connect(address)
            except OSError as e:
                sock.close()
                if not self.addresses:
                    raise _networkError(e, f"cannot reach {self.where} over UDP") from None
                continue
            self.sock = sock
            return

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def exchange(self, datagram: bytes) -> bytes:
        """
        Send C{datagram}, return the reply.

        @raise ClientError: L{Status.TOO_LARGE}, L{Status.REFUSED}, L{Status.TIMEOUT}, or
            L{Status.NETWORK}.
        """
        if len(datagram) > MAX_DATAGRAM:
            raise ClientError(
                Status.TOO_LARGE,
                f"a {len(datagram)}-byte message does not fit in one UDP datagram "
                f"(at most {MAX_DATAGRAM} bytes)",
            )
        while True:
            try:
                return self._tryAll(datagram)
            except ConnectionRefusedError:
                if not self.addresses:
                    raise ClientError(
                        Status.REFUSED,
                        f"{self.where} refused the UDP datagram (ICMP port unreachable): "
                        "no server is listening on that port",
                    ) from None
                self._connectNext()

    def _tryAll(self, datagram: bytes) -> bytes:
        """
        Send C{datagram} up to C{retries} times, C{timeout} apart, until a reply comes.

        @raise ConnectionRefusedError: the current address refused (ICMP port unreachable).
        """
        sock = self.sock
        assert sock is not None
        with selectors.PollSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            for _ in range(self.retries):
                self._discardStale(sock)
                try:
                    sock.send(datagram)
                except ConnectionRefusedError:
                    raise
                except OSError as e:
                    raise _networkError(e, f"sending to {self.where} over UDP") from None
                self.tries += 1
                if selector.select(self.timeout):
                    try:
                        return sock.recv(CHUNK)
                    except ConnectionRefusedError:
                        raise
                    except OSError as e:
                        raise _networkError(e, f"receiving from {self.where} over UDP") from None
        raise ClientError(
            Status.TIMEOUT,
            f"no reply from {self.where} over UDP after {self.retries} "
            f"{'try' if self.retries == 1 else 'tries'} of {self.timeout:g} s "
            "(server not running, wrong port, or datagrams dropped on the way)",
        )

    @staticmethod
    def _discardStale(sock: socket.socket) -> None:
        """
        Drop replies that arrived after their try timed out, so they cannot be taken for the
        reply to the next datagram.  A pending refusal is raised.
        """
        while True:
            try:
                sock.recv(CHUNK, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return


def _withNewline(reply: bytes) -> bytes:
    """
    C{reply} ending in a newline, the way C{print} shows it.
    """
    return reply if reply.endswith(b"\n") else reply + b"\n"


def _readLine(stdin: BinaryIO) -> bytes:
    """
    The next line of C{stdin}, but never more than one byte over a datagram's maximum (so
    an endless line cannot fill the memory); C{b""} at the end of input.
    """
    try:
        return stdin.readline(MAX_DATAGRAM + 1)
    except OSError as e:
        raise ClientError(Status.IO_ERROR, f"cannot read the input: {e.strerror}") from None


def interactive(
    exchange: Exchange, stdin: BinaryIO, stdout: BinaryIO, prompt: BinaryIO, keepNewline: bool
) -> None:
    """
    The lab's loop: prompt, read a line, print the reply, until end of input.

    @param keepNewline: send the line with its newline (TCP, where it ends the reply) or
        without it (UDP, as the lab's C{UDPClient.py} did).
    """
    while True:
        _write(prompt, PROMPT)
        line = _readLine(stdin)
        if not line:
            # Ctrl-D: leave the shell prompt on a line of its own.
            _write(prompt, b"\n")
            return
        if not line.endswith(b"\n"):
            # Text then Ctrl-D: the terminal has not moved to a new line.
            _write(prompt, b"\n")
        elif not keepNewline:
            line = line[:-1]
        _write(stdout, _withNewline(exchange(line)))


def udpLines(exchange: Exchange, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """
    One datagram per line of C{stdin} (without its newline), one reply per line of output.
    """
    while line := _readLine(stdin):
        if line.endswith(b"\n"):
            line = line[:-1]
        elif len(line) > MAX_DATAGRAM:
            raise ClientError(
                Status.TOO_LARGE,
                f"an input line is longer than one UDP datagram can carry ({MAX_DATAGRAM} bytes)",
            )
        _write(stdout, exchange(line) + b"\n")


def run(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO) -> None:
    """
    Do what the parsed C{args} ask, reading C{stdin} and writing replies to C{stdout}.

    Without a message, a terminal on C{stdin} means the interactive loop; its prompt goes
    to C{stdout}, or to C{stderr} when C{stdout} is redirected, so a file of replies holds
    only replies.

    @raise ClientError: on any failure.
    """
    interactively = args.message is None and stdin.isatty()
    prompt = stdout if stdout.isatty() else stderr
    if args.protocol == "tcp":
        runTCP(args, stdin, stdout, prompt if interactively else None)
    else:
        runUDP(args, stdin, stdout, prompt if interactively else None)


def runTCP(
    args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO, prompt: BinaryIO | None
) -> None:
    """
    The TCP client: the interactive loop when there is a C{prompt}, else the message or all
    of C{stdin} through one connection.
    """
    if prompt is not None:
        lines = TCPLines(args.host, args.port, args.timeout)
        try:
            interactive(lines.exchange, stdin, stdout, prompt, keepNewline=True)
        finally:
            lines.close()
        return
    where = _describe(args.host, args.port)
    with connectTCP(args.host, args.port, args.timeout) as sock:
        if args.message is None:
            TCPStream(sock, stdout, args.timeout, where, inputFd=stdin.fileno()).run()
            return
        stream = TCPStream(sock, stdout, args.timeout, where, data=args.message)
        stream.run()
        # Like print(): the reply on a line of its own.
        if not stream.last.endswith(b"\n"):
            _write(stdout, b"\n")


def runUDP(
    args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO, prompt: BinaryIO | None
) -> None:
    """
    The UDP client: the message, the interactive loop when there is a C{prompt}, or one
    datagram per line of C{stdin}.
    """
    udp = UDPClient(args.host, args.port, args.timeout, args.retries)
    try:
        if args.message is not None:
            _write(stdout, udp.exchange(args.message) + b"\n")
        elif prompt is not None:
            interactive(udp.exchange, stdin, stdout, prompt, keepNewline=False)
        else:
            udpLines(udp.exchange, stdin, stdout)
    finally:
        udp.close()


def main(argv: Sequence[str] | None = None) -> int:
    """
    The C{caplab-client} console script; returns the exit status (L{Status}).
    """
    args = parseArguments(argv)
    stderr = sys.stderr
    try:
        run(args, sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer)
    except ClientError as e:
        if e.message:
            stderr.write(f"caplab-client: {e.message}\n")
        status = e.status
    except KeyboardInterrupt:
        stderr.write("\n")
        status = Status.INTERRUPTED
    else:
        status = Status.OK
    if status == Status.IO_ERROR:
        # stdout is gone: keep the interpreter's final flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
