"""
Tests of L{caplab.listening}: every listener listens before any is announced, a failure is
one clear line, Twisted's own port lines are quiet and its accept errors rate-limited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, cast

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import ILogObserver, LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from caplab import listening
from caplab.address import describeAddress
from caplab.listening import (
    EXIT_CANNOT_LISTEN,
    EXIT_USAGE,
    AcceptErrors,
    DatagramListener,
    Listening,
    StreamListener,
    exitWithFailureStatus,
    exitWithStatus,
    reportListenFailures,
    stopWithStatus,
)

_P = ParamSpec("_P")


class FakePort:
    """
    A listening port that knows its address and whether it was stopped.
    """

    def __init__(self, address: Any) -> None:
        self.address = address
        self.stopped = False

    def getHost(self) -> Any:
        return self.address

    def stopListening(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)


@implementer(IStreamServerEndpoint)
class Endpoint:
    """
    A stream server endpoint whose C{listen} gives C{result} (a port, or a failure).
    """

    def __init__(self, result: Any) -> None:
        self.result = result
        self.listened: list[Any] = []

    def listen(self, factory: Any) -> Deferred[Any]:
        self.listened.append(factory)
        if isinstance(self.result, Exception):
            return fail(self.result)
        return succeed(self.result)


class UDPReactor(MemoryReactor):
    """
    A L{MemoryReactor} with C{listenUDP} (which it lacks), recording each call.
    """

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.udp: list[tuple[int, Any, str, int]] = []
        self.error = error
        self.whenRunning: list[Any] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> FakePort:
        if self.error is not None:
            raise self.error
        self.udp.append((port, protocol, interface, maxPacketSize))
        return FakePort(IPv4Address("UDP", interface, port or 40000))

    def callWhenRunning(
        self, callable: Callable[_P, object], *args: _P.args, **kw: _P.kwargs
    ) -> None:
        self.whenRunning.append((callable, args))


def messages(events: Sequence[LogEvent], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]


class FakeListener:
    """
    An L{IListener} whose C{listen} gives C{result} (a port) or raises it (an exception).
    """

    note = ""

    def __init__(self, label: str, result: Any) -> None:
        self.label = label
        self.description = f"{label}:description"
        self.result = result
        self.listens = 0

    def listen(self) -> Any:
        self.listens += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def inUse(port: int) -> CannotListenError:
    return CannotListenError("127.0.0.1", port, OSError(98, "Address already in use"))


def test_announcedOnceAllListen() -> None:
    """
    Every listener listens, once although twistd calls both start methods; only then is
    each announced, in one line with its name and real address, and C{whenListening} runs.
    """
    tcp = FakePort(IPv6Address("TCP", "::1", 40123))
    udp = FakePort(IPv4Address("UDP", "127.0.0.1", 40124))
    listeners = [FakeListener("tcp", tcp), FakeListener("udp", udp)]
    ready: list[bool] = []
    reactor = UDPReactor()
    service = Listening(listeners, reactor, whenListening=[lambda: ready.append(True)])
    with capturedLogs() as events:
        service.privilegedStartService()
        service.startService()
    assert [listener.listens for listener in listeners] == [1, 1]
    assert ready == []  # not before the reactor runs
    [(whenRunning, args)] = reactor.whenRunning
    whenRunning(*args)
    assert messages(events) == [
        "caplab tcp listening on [::1]:40123",
        "caplab udp listening on 127.0.0.1:40124",
    ]
    assert ready == [True]
    assert service.ports == {"tcp": tcp, "udp": udp}
    service.stopService()
    assert tcp.stopped and udp.stopped


def test_oneFailsNoneAnnounced() -> None:
    """
    If one listener cannot listen, the others are closed again without being announced,
    one error line names the one that failed and why, C{onFailure} is called and the
    reactor is stopped once it runs; C{whenListening} is not called.
    """
    reactor, failures, ready = UDPReactor(), [], []
    tcp = FakePort(IPv4Address("TCP", "127.0.0.1", 40000))
    service = Listening(
        [FakeListener("tcp", tcp), FakeListener("proxy", inUse(8080))],
        reactor,
        lambda: failures.append(1),
        [lambda: ready.append(True)],
    )
    with capturedLogs() as events:
        service.startService()
    assert messages(events) == [
        "caplab cannot listen: proxy on proxy:description: Couldn't listen on "
        "127.0.0.1:8080: [Errno 98] Address already in use."
    ]
    assert events[0]["log_level"] == LogLevel.error
    assert tcp.stopped
    assert failures == [1] and ready == []
    assert [f for f, _ in reactor.whenRunning] == [listening._stopReactor]
    assert service.stopService() is not None


def test_severalFailInOneLine() -> None:
    """
    Several listeners that cannot listen are reported in the same one line.
    """
    service = Listening(
        [FakeListener("tcp", inUse(12000)), FakeListener("udp", KeyError())], UDPReactor()
    )
    with capturedLogs() as events:
        service.startService()
    assert messages(events) == [
        "caplab cannot listen: tcp on tcp:description: Couldn't listen on 127.0.0.1:12000: "
        "[Errno 98] Address already in use.; udp on udp:description: KeyError()"
    ]


def test_datagramListener() -> None:
    """
    A datagram listener listens on its port and interface for datagrams up to 64 KiB, or
    adopts the parent's socket in a worker.
    """
    reactor = UDPReactor()
    protocol = DatagramProtocol()
    listener = DatagramListener("udp", 0, "127.0.0.1", protocol, reactor)
    port = listener.listen()
    assert reactor.udp == [(0, protocol, "127.0.0.1", 65535)]
    assert describeAddress(port.getHost()) == "127.0.0.1:40000"
    assert listener.description == "udp:0:interface=127.0.0.1"
    adopted: list[Any] = []
    listener = DatagramListener("udp", 0, "127.0.0.1", protocol, reactor, adopted.append)
    listener.listen()
    assert adopted == [protocol]


def test_streamListener() -> None:
    """
    A stream listener listens on its endpoint with its factory.
    """
    port = FakePort(IPv4Address("TCP", "127.0.0.1", 1))
    endpoint, factory = Endpoint(port), Factory.forProtocol(Protocol)
    assert StreamListener("tcp", "tcp:0", endpoint, factory).listen().result is port
    assert endpoint.listened == [factory]


class QuietTests(TestCase):
    """
    On a real reactor: Twisted's own "<Factory> starting on <port>" line is logged at debug
    level and without a format (so neither twist nor twistd writes it), and each listener
    is announced once.
    """

    def test_twistedLineAtDebugLevel(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        factory = Factory.forProtocol(Protocol)
        factory.noisy = False
        service = Listening([StreamListener("tcp", "tcp:0", endpoint, factory)], reactor)
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        starting = [e for e in events if "starting on" in " ".join(e.get("message", ()))]
        assert len(starting) == 1 and starting[0]["log_level"] == LogLevel.debug
        assert formatEvent(starting[0]) == ""
        info = [formatEvent(e) for e in events if e["log_level"] == LogLevel.info]
        assert len(info) == 1 and info[0].startswith("caplab tcp listening on 127.0.0.1:")


def test_acceptErrorsRateLimited() -> None:
    """
    A port's EMFILE recovery events (three per closed connection) become one line per
    second with a running count, then a summary; its other events pass through.
    """
    clock = Clock()
    published: list[LogEvent] = []
    observer = AcceptErrors("proxy", clock, cast(ILogObserver, published.append))
    with capturedLogs() as events:
        for _ in range(500):
            observer({"log_format": "EMFILE encountered; releasing reserved file descriptor."})
            observer({"log_format": "EMFILE recovery: Closed socket from {address}"})
            observer({"log_format": "Re-reserving EMFILE recovery file descriptor."})
        observer({"log_format": "Could not accept new connection ({acceptError})",
                  "acceptError": "ENOBUFS"})  # fmt: skip
        observer({"log_format": "something else"})
        clock.pump([1.0] * 3)
    lines = [formatEvent(e) for e in published]
    assert len(lines) == 4, lines
    assert lines[0].startswith("caplab proxy cannot accept connections: out of file descriptors")
    assert lines[0].endswith("(1 closed at once so far)")
    assert lines[1] == "something else" or published[1]["log_format"] == "something else"
    assert lines[2].startswith("caplab proxy cannot accept connections: accept failed (ENOBUFS)")
    assert lines[2].endswith("(501 closed at once so far)")
    assert lines[3].startswith("caplab proxy closed 501 connections at once in 0s: ")
    assert events == []


def test_reasonWithoutMessage() -> None:
    """
    An exception without a message is still explained (by its repr).
    """
    from twisted.python.failure import Failure

    reactor = UDPReactor()
    with capturedLogs() as events:
        listener = FakeListener("tcp", None)
        listener.description = "unix:/x"
        reportListenFailures(reactor, [(listener, Failure(KeyError()))])
    assert messages(events) == ["caplab cannot listen: tcp on unix:/x: KeyError()"]


def test_stopReactorOnlyWhenRunning() -> None:
    """
    The deferred stop stops a running reactor and leaves a stopped one alone.
    """

    class R:
        running = True
        stops = 0

        def stop(self) -> None:
            self.stops += 1

    r = R()
    listening._stopReactor(r)
    r.running = False
    listening._stopReactor(r)
    assert r.stops == 1


def test_exitWithFailureStatusOnce(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    L{exitWithFailureStatus} registers one exit hook however often it is called, and that
    hook exits with status 69 (EX_UNAVAILABLE); the first status asked for wins.
    """
    registered: list[Any] = []
    monkeypatch.setattr(listening, "_exitStatus", [])
    monkeypatch.setattr(listening.atexit, "register", registered.append)
    exitWithFailureStatus()
    exitWithFailureStatus()
    exitWithStatus(EXIT_USAGE)
    assert registered == [listening._exitWithStatus]
    exits: list[int] = []
    monkeypatch.setattr(listening.os, "_exit", exits.append)
    listening._exitWithStatus()
    assert exits == [EXIT_CANNOT_LISTEN] == [69]


def test_stopWithStatus(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    L{stopWithStatus} stops the reactor once it runs and makes the process exit with the
    status given (64, EX_USAGE, for a configuration error).
    """
    registered: list[Any] = []
    monkeypatch.setattr(listening, "_exitStatus", [])
    monkeypatch.setattr(listening.atexit, "register", registered.append)

    class Running:
        running = True
        stops = 0

        def callWhenRunning(self, f: Callable[..., object], *args: object) -> None:
            f(*args)

        def stop(self) -> None:
            self.stops += 1

    reactor = Running()
    stopWithStatus(reactor, EXIT_USAGE)
    assert reactor.stops == 1
    exits: list[int] = []
    monkeypatch.setattr(listening.os, "_exit", exits.append)
    listening._exitWithStatus()
    assert exits == [EXIT_USAGE] == [64]


def test_describeAddress() -> None:
    """
    Addresses are written as C{host:port}, C{[v6]:port} or C{unix:path}.
    """
    from twisted.internet.address import UNIXAddress

    from caplab.address import describeAddress, hostPort

    assert describeAddress(IPv4Address("TCP", "127.0.0.1", 12000)) == "127.0.0.1:12000"
    assert describeAddress(IPv6Address("UDP", "::1", 12005)) == "[::1]:12005"
    assert describeAddress(UNIXAddress(b"/run/caplab.sock")) == "unix:/run/caplab.sock"
    assert describeAddress(UNIXAddress("/run/c.sock")) == "unix:/run/c.sock"
    assert describeAddress(None) == "None"
    assert hostPort("fe80::1%eth0", 80) == "[fe80::1%eth0]:80"
