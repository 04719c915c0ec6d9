"""
Tests of L{caplab.listening}: services say where they listen, and fail in one clear line.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, capturedLogs, formatEvent

from caplab import listening
from caplab.listening import (
    EXIT_CANNOT_LISTEN,
    DatagramListener,
    StreamListener,
    exitWithFailureStatus,
    reportListenFailure,
)


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

    def callWhenRunning(self, f: Any, *args: Any, **kwargs: Any) -> None:
        self.whenRunning.append((f, args))


def messages(events: list[Any], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e["log_level"] == level]


def test_streamListeningLine() -> None:
    """
    Once listening, a stream service logs one line with its name and real address.
    """
    port = FakePort(IPv6Address("TCP", "::1", 40123))
    endpoint, factory = Endpoint(port), Factory.forProtocol(Protocol)
    service = StreamListener("tcp", "tcp6:0", endpoint, factory, UDPReactor())
    with capturedLogs() as events:
        service.privilegedStartService()
        service.startService()
    assert endpoint.listened == [factory]  # once, although both start methods ran
    assert messages(events) == ["caplab tcp listening on [::1]:40123"]
    assert service.port is port
    service.stopService()
    assert port.stopped


def test_streamListenFailure() -> None:
    """
    A stream service that cannot listen logs one critical line naming the service, the
    description and the reason, calls C{onFailure} and stops the reactor when it runs.
    """
    reactor, failures = UDPReactor(), []
    error = CannotListenError("127.0.0.1", 12000, OSError(98, "Address already in use"))
    service = StreamListener(
        "tcp", "tcp:12000", Endpoint(error), Factory(), reactor, lambda: failures.append(1)
    )
    with capturedLogs() as events:
        service.startService()
    assert messages(events, LogLevel.critical) == [
        "caplab tcp cannot listen on tcp:12000: Couldn't listen on 127.0.0.1:12000: "
        "[Errno 98] Address already in use."
    ]
    assert len(events) == 1
    assert failures == [1]
    assert [f for f, _ in reactor.whenRunning] == [listening._stopReactor]
    assert service.stopService() is not None  # nothing to stop, and no error either


def test_datagramListening() -> None:
    """
    A datagram service listens on its port and interface for datagrams up to 64 KiB, logs
    its address, listens only once under C{twistd} (both start methods), and stops.
    """
    reactor = UDPReactor()
    protocol = DatagramProtocol()
    service = DatagramListener("udp", 0, "127.0.0.1", protocol, reactor)
    with capturedLogs() as events:
        service.privilegedStartService()
        service.startService()
    assert reactor.udp == [(0, protocol, "127.0.0.1", 65535)]
    assert messages(events) == ["caplab udp listening on 127.0.0.1:40000"]
    port = service.port
    service.stopService()
    assert port.stopped and service.port is None


def test_datagramListenFailureReportedOnce() -> None:
    """
    A datagram service that cannot listen reports it once, in one critical line, even when
    C{twistd} calls both C{privilegedStartService} and C{startService}.
    """
    error = CannotListenError("127.0.0.1", 12005, OSError(98, "Address already in use"))
    reactor, failures = UDPReactor(error), []
    service = DatagramListener(
        "udp", 12005, "127.0.0.1", DatagramProtocol(), reactor, lambda: failures.append(1)
    )
    with capturedLogs() as events:
        service.privilegedStartService()
        service.startService()
    assert messages(events) == [
        "caplab udp cannot listen on udp:12005:interface=127.0.0.1: Couldn't listen on "
        "127.0.0.1:12005: [Errno 98] Address already in use."
    ]
    assert failures == [1]
    assert len(reactor.whenRunning) == 1


def test_reasonWithoutMessage() -> None:
    """
    An exception without a message is still explained (by its repr).
    """
    from twisted.python.failure import Failure

    reactor = UDPReactor()
    with capturedLogs() as events:
        reportListenFailure(reactor, "tcp", "unix:/x", Failure(KeyError()))
    assert messages(events) == ["caplab tcp cannot listen on unix:/x: KeyError()"]


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
    hook exits with status 69 (EX_UNAVAILABLE).
    """
    registered: list[Any] = []
    monkeypatch.setattr(listening, "_exitHook", [])
    monkeypatch.setattr(listening.atexit, "register", registered.append)
    exitWithFailureStatus()
    exitWithFailureStatus()
    assert registered == [listening._exitCannotListen]
    exits: list[int] = []
    monkeypatch.setattr(listening.os, "_exit", exits.append)
    listening._exitCannotListen()
    assert exits == [EXIT_CANNOT_LISTEN] == [69]


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
