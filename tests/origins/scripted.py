"""
A raw-socket origin that misbehaves on demand, for tests of what the proxy does with a dying
or lying origin: resets, stalls, raw control bytes in fields, 1xx, a 304 with extra fields,
bodies cut short.

Each accepted connection is handed to the next I{script} queued with L{ScriptedOrigin.script}
(or the default one): a function that drives an L{OriginConnection} in a thread of its own,
reading requests and sending exactly the bytes it is told to::

    with ScriptedOrigin() as origin:
        def cut(conn):
            conn.readRequest()
            conn.send(b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\n\\r\\n" + b"x" * 50000)
            conn.reset()
        origin.script(cut)
        ...  # a request through the proxy to origin.url("/cut")

Every wait is bounded (L{WAIT}); an exception in a script (a timeout included) is kept and
raised again when the origin closes, so a script that did not run as planned fails the test.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

#: Seconds any single wait of a script may take.
WAIT = 20.0


@dataclass
class ReceivedRequest:
    """
    A request as the origin read it: the request line's parts, the field lines in order
    (raw bytes), and the body (de-chunked).
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """
        The first value of the field C{name} (any case), or None.
        """
        lower = name.lower()
        for n, v in self.headers:
            if n.lower() == lower:
                return v
        return None

    def headerValues(self, name: bytes) -> list[bytes]:
        lower = name.lower()
        return [v for n, v in self.headers if n.lower() == lower]


class OriginClosed(Exception):
    """
    The proxy closed (or reset) the connection while the script was reading.
    """


class OriginConnection:
    """
    One accepted connection, driven by a script.
    """

    def __init__(self, origin: ScriptedOrigin, sock: socket.socket) -> None:
        self.origin = origin
        self.sock = sock
        self.sock.settimeout(WAIT)
        self._buffer = b""

    # Reading

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            raise OriginClosed("the peer reset the connection") from None
        if not data:
            raise OriginClosed("the peer closed the connection")
        self._buffer += data

    def readUntil(self, marker: bytes) -> bytes:
        """
        Read up to and including C{marker}.
        """
        while marker not in self._buffer:
            self._fill()
        index = self._buffer.index(marker) + len(marker)
        data, self._buffer = self._buffer[:index], self._buffer[index:]
        return data

    def readExactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def readRequest(self) -> ReceivedRequest:
        """
        Read one request (head and body, framed by Content-Length or chunked) and record it
        in L{ScriptedOrigin.requests}.
        """
        head = self.readUntil(b"\r\n\r\n")[:-4]
        lines = head.split(b"\r\n")
        method, target, version = lines[0].split(b" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name, value.strip()))
        request = ReceivedRequest(method, target, version, headers)
        length = request.header(b"content-length")
        if request.header(b"transfer-encoding") is not None:
            request.body = self._readChunked()
        elif length is not None:
            request.body = self.readExactly(int(length))
        self.origin._record(request)
        return request

    def _readChunked(self) -> bytes:
        body: list[bytes] = []
        while True:
            size = int(self.readUntil(b"\r\n")[:-2].split(b";")[0], 16)
            if size == 0:
                while self.readUntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(body)
            body.append(self.readExactly(size))
            self.readExactly(2)

    def waitClosed(self) -> bytes:
        """
        Read until the peer closes its side; return what came meanwhile.
        """
        got = [self._buffer]
        self._buffer = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            got.append(data)
        return b"".join(got)

    # Writing

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def respond(
        self,
        status: bytes = b"200 OK",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
        length: bool = True,
    ) -> None:
        """
        Send a whole response: status, C{headers} as given (raw), C{Content-Length} unless
        C{length} is False, and C{body}.
        """
        lines = [b"HTTP/1.1 " + status]
        lines += [n + b": " + v for n, v in headers or []]
        if length:
            lines.append(b"Content-Length: %d" % len(body))
        self.send(b"\r\n".join(lines) + b"\r\n\r\n" + body)

    # Ending

    def close(self) -> None:
        """
        An orderly close (FIN).
        """
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def shutdownWrite(self) -> None:
        """
        Half-close: FIN on the sending side, reading goes on.
        """
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self) -> None:
        """
        Abort with a TCP reset (RST), not a FIN.
        """
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def stall(self, until: threading.Event | None = None) -> None:
        """
        Send nothing until C{until} is set, or the peer closes, or L{WAIT} seconds pass.
        """
        if until is not None:
            until.wait(WAIT)
            return
        try:
            self.waitClosed()
        except TimeoutError:
            pass


Script = Callable[[OriginConnection], None]


class ScriptedOrigin:
    """
    Listens on a free loopback port; each connection runs the next queued script.

    @ivar requests: every request any script read, in order.
    """

    def __init__(self, default: Script | None = None, interface: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        self._listener = socket.create_server((interface, 0), family=family, backlog=128)
        self.host = interface
        self.port: int = self._listener.getsockname()[1]
        self._default = default
        self._scripts: deque[Script] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.requests: list[ReceivedRequest] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.authority}{path}"

    def script(self, *scripts: Script) -> None:
        """
        Queue C{scripts}: the next connections run them, one each, in order.
        """
        with self._lock:
            self._scripts.extend(scripts)

    def waitForRequests(self, count: int, timeout: float = WAIT) -> list[ReceivedRequest]:
        """
        Wait (bounded) until scripts have read C{count} requests; return them all.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(
                    f"the origin read {len(self.requests)} requests, not {count}, within {timeout}s"
                )
            return list(self.requests)

    def _record(self, request: ReceivedRequest) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self.connections += 1
                script = self._scripts.popleft() if self._scripts else self._default
            thread = threading.Thread(target=self._run, args=(script, sock), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, script: Script | None, sock: socket.socket) -> None:
        connection = OriginConnection(self, sock)
        try:
            if script is None:
                raise AssertionError("a connection arrived with no script queued for it")
            script(connection)
        except OriginClosed:
            pass  # the proxy went away first: what the script did until then stands
        except BaseException as e:  # kept for close(): the test must see it
            with self._lock:
                self.errors.append(e)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        """
        Stop listening, wait (bounded) for running scripts, and raise the first script error.
        """
        with self._lock:
            self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listener.close()
        self._acceptor.join(WAIT)
        for thread in self._threads:
            thread.join(WAIT)
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> ScriptedOrigin:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            try:
                self.close()
            except BaseException:
                pass  # the test's own failure is the one to report
