"""
C{--trace FILE}: a readable record of every byte each service sends and receives.

It is the lab's Wireshark "Follow stream" view without a packet capture: each line names
the service and connection, the peer, the direction and the bytes, escaped like a Python
bytes literal, e.g.::

    2026-11-24T08:01:02.345678Z tcp#3 127.0.0.1:41234 open
    2026-11-24T08:01:02.346001Z tcp#3 127.0.0.1:41234 recv 17 b'welcome to cn lab'
    2026-11-24T08:01:02.346101Z tcp#3 127.0.0.1:41234 send 17 b'WELCOME TO CN LAB'
    2026-11-24T08:01:02.346300Z tcp#3 127.0.0.1:41234 close

Events are C{open}, C{recv N BYTES}, C{send N BYTES}, C{half-close} (the peer shut down
its sending side), C{close}, and C{refused} (over C{--max-connections}).  A UDP exchange is
one C{recv} and one C{send} line under its own label (C{udp#7}).

Tracing is a debugging aid: it writes to a local file from the reactor thread, which costs
throughput; leave it off in production.  A line that cannot be written (a full disk) is
dropped, never raised into the connection it traces: the failures are counted in one
rate-limited log line, and each new line is tried again, so the trace goes on once the disk
has room.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure

from caplab.address import describeAddress, hostPort
from caplab.ratelimit import LogThrottle
from caplab.wrapping import HalfCloseWrapper

log = Logger(namespace="caplab.trace")


def _utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Tracer:
    """
    Writes trace lines to one file for all services and connections.
    """

    def __init__(
        self,
        output: IO[str],
        now: Callable[[], str] = _utcnow,
        path: str | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param path: the file C{output} writes to, if it is one (L{reopener} opens it again).
        @param clock: times the rate-limited line of write failures (the global reactor if
            None).
        """
        self._output = output
        self._now = now
        self._ids = itertools.count(1)
        self.path = path
        #: Lines that could not be written (a full disk ...) since the trace was opened.
        self.dropped = 0
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self._failures = LogThrottle(
            log,
            clock,
            "caplab cannot write the trace {path}: {reason}; {dropped} lines dropped so far",
            summary="caplab trace {path}: writes failed for {duration}s ({reason}); "
            "{dropped} lines dropped so far",
        )

    @classmethod
    def open(cls, path: str, clock: IReactorTime | None = None) -> Tracer:
        """
        Append to the file at C{path} (line-buffered, so C{tail -f} shows it live).
        """
        return cls(_appendTo(path), path=path, clock=clock)

    def reopener(self) -> TraceReopener:
        """
        What reopens the trace file (an L{IReloadable} of L{caplab.reload}): logrotate
        moves it away, then signals.
        """
        return TraceReopener(self)

    def nextConnection(self, service: str) -> str:
        """
        A new connection label such as C{tcp#3}.
        """
        return f"{service}#{next(self._ids)}"

    def record(self, label: str, peer: str, event: str, data: bytes | None = None) -> None:
        """
        Write one line: an event (C{open}, C{close}) or bytes sent or received.

        Once the file is closed (the services are stopping, while a worker may still drain
        its connections) nothing more is recorded.
        """
        if self._output.closed:
            return
        if data is None:
            line = f"{self._now()} {label} {peer} {event}\n"
        else:
            line = f"{self._now()} {label} {peer} {event} {len(data)} {data!r}\n"
        try:
            self._output.write(line)
        except OSError as e:
            self._failed(e)

    def _failed(self, error: Exception) -> None:
        """
        A line was dropped: count it, in a rate-limited line.
        """
        self.dropped += 1
        reason = getattr(error, "strerror", None) or str(error) or repr(error)
        self._failures.event(path=self.path or "output", reason=reason, dropped=self.dropped)

    def datagram(self, addr: tuple[str, int], request: bytes, reply: bytes) -> None:
        """
        Record one UDP exchange.
        """
        label = self.nextConnection("udp")
        peer = hostPort(str(addr[0]), int(addr[1]))
        self.record(label, peer, "recv", request)
        self.record(label, peer, "send", reply)

    def wrapFactory(self, service: str, factory: IProtocolFactory) -> TracingFactory:
        """
        Wrap a stream server factory so that its connections are traced.
        """
        return TracingFactory(self, service, factory)

    def close(self) -> None:
        """
        Close the trace file (what a full disk still holds back is dropped).
        """
        try:
            self._output.close()
        except OSError as e:
            self._failed(e)
        self._failures.stop()


def _appendTo(path: str) -> IO[str]:
    return open(path, "a", buffering=1, encoding="utf-8")


class TraceReopener:
    """
    L{load} opens the trace's path again (in a thread); L{use} writes to the new file from
    now on and closes the old one.
    """

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def load(self) -> IO[str] | None:
        if self.tracer.path is None:
            return None
        return _appendTo(self.tracer.path)

    def use(self, new: IO[str] | None) -> str:
        if new is None:
            return "nothing to reopen"
        old, self.tracer._output = self.tracer._output, new
        try:
            if old.closed:  # the services stopped meanwhile
                new.close()
            else:
                old.close()
        except OSError as e:  # the old file's last lines could not be written
            self.tracer._failed(e)
        return f"reopened {self.tracer.path}"


class TracerService(Service):
    """
    Closes the trace file when the services stop.
    """

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def stopService(self) -> None:
        super().stopService()
        self.tracer.close()


class TracingProtocol(HalfCloseWrapper):
    """
    Records the bytes crossing one connection and passes everything through, half-close
    notifications included (the plain L{ProtocolWrapper} would swallow them).
    """

    factory: TracingFactory

    def makeConnection(self, transport: Any) -> None:
        self._label = self.factory.tracer.nextConnection(self.factory.service)
        self._peer = describeAddress(transport.getPeer())
        self.factory.tracer.record(self._label, self._peer, "open")
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.factory.tracer.record(self._label, self._peer, "recv", data)
        super().dataReceived(data)

    def write(self, data: bytes) -> None:
        self.factory.tracer.record(self._label, self._peer, "send", data)
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def readConnectionLost(self) -> None:
        self.factory.tracer.record(self._label, self._peer, "half-close")
        super().readConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.tracer.record(self._label, self._peer, "close")
        super().connectionLost(reason)


class TracingFactory(WrappingFactory):
    """
    Wraps a server factory's protocols in L{TracingProtocol}.
    """

    protocol = TracingProtocol
    noisy = False

    def __init__(self, tracer: Tracer, service: str, wrappedFactory: IProtocolFactory) -> None:
        super().__init__(wrappedFactory)
        self.tracer = tracer
        self.service = service

    def buildProtocol(self, addr: Any) -> TracingProtocol | None:  # type: ignore[override]
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:  # refused by the wrapped factory (e.g. over its connection cap)
            label = self.tracer.nextConnection(self.service)
            self.tracer.record(label, describeAddress(addr), "refused")
            return None
        return TracingProtocol(self, wrapped)  # type: ignore[arg-type]
