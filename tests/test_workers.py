"""
Unit tests for L{caplab.workers}: the supervisor with a fake process spawner and a
L{Clock}, the drain, and the option checks.
"""

from __future__ import annotations

import json
import signal
import socket
from typing import Any

from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from caplab.tap import Options
from caplab.workers import (
    WORKER_ENVIRONMENT,
    WORKER_READY,
    Drain,
    InheritedSockets,
    SharedSocket,
    WorkerSupervisor,
    howItEnded,
    parseTCPDescription,
    sharedSockets,
    workerCount,
)


class FakeProcessTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.stdinClosed = False

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeProcessReactor(Clock):
    """
    A clock that records C{spawnProcess} calls instead of starting processes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []
        self.threadCalls: list[Any] = []

    def spawnProcess(
        self, protocol: Any, executable: str, args: list[str], env: Any, childFDs: Any
    ) -> Any:
        transport = FakeProcessTransport(1000 + len(self.spawned))
        self.spawned.append(
            {
                "protocol": protocol,
                "args": args,
                "env": env,
                "childFDs": childFDs,
                "transport": transport,
            }
        )
        protocol.makeConnection(transport)
        return transport

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


def ended(code: int = 1) -> Failure:
    return Failure(ProcessTerminated(exitCode=code))


class SupervisorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        self.published: list[dict[str, Any]] = []
        self.stoppedWith: list[int] = []
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(self.tcp.close)
        self.tcp.bind(("127.0.0.1", 0))
        self.supervisor = WorkerSupervisor(
            self.reactor,
            2,
            ["--no-proxy"],
            lambda: [SharedSocket("tcp", socket.SOCK_STREAM, self.tcp, 3)],
            grace=10.0,
            executable="/usr/bin/python3",
            environ={"PATH": "/bin"},
            publish=self.published.append,
            stopWith=self.stoppedWith.append,
        )
        self.supervisor.startService()

    def test_startsWorkersWithTheSharedSockets(self) -> None:
        """
        Each worker is C{python -m twisted caplab} with the same options, the shared socket
        on descriptor 3, and its description in the environment.
        """
        self.assertEqual(len(self.reactor.spawned), 2)
        first = self.reactor.spawned[0]
        self.assertEqual(
            first["args"],
            ["/usr/bin/python3", "-m", "twisted", "--log-format=json", "caplab", "--no-proxy"],
        )
        self.assertEqual(first["childFDs"][3], self.tcp.fileno())
        inherited = InheritedSockets.fromEnvironment(first["env"])
        assert inherited is not None
        self.assertEqual(inherited.index, 1)
        self.assertEqual(inherited.sockets["tcp"].fd, 3)
        self.assertEqual(inherited.sockets["tcp"].family, socket.AF_INET)
        self.assertEqual(first["env"]["PATH"], "/bin")
        self.assertTrue(first["transport"].stdinClosed)

    def test_crashedWorkerRestartsWithBackOff(self) -> None:
        """
        A worker that exits is started again after 0.5 s, then after 1 s if it dies again.
        """
        first = self.reactor.spawned[0]["protocol"]
        first.processEnded(ended())
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0.49)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0.01)
        self.assertEqual(len(self.reactor.spawned), 3)
        again = self.reactor.spawned[2]["protocol"]
        self.assertEqual(again.index, 1)
        again.processEnded(ended())
        self.reactor.advance(0.99)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.advance(0.01)
        self.assertEqual(len(self.reactor.spawned), 4)

    def test_configurationErrorStopsTheServer(self) -> None:
        """
        A worker that exits with status 64 (its configuration cannot be used, so every
        worker's cannot) is not started again: the server stops, to exit with 64.
        """
        first = self.reactor.spawned[0]["protocol"]
        with capturedLogs() as events:
            first.processEnded(ended(64))
        self.assertEqual(self.stoppedWith, [64])
        [error] = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertIn("its configuration cannot be used", formatEvent(error))
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)
        # Any other status is a crash: started again.
        self.reactor.spawned[1]["protocol"].processEnded(ended(1))
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.stoppedWith, [64])

    def test_healthyRunResetsBackOff(self) -> None:
        """
        A worker that ran for a minute before dying is restarted after the short delay.
        """
        first = self.reactor.spawned[0]["protocol"]
        first.processEnded(ended())
        self.reactor.advance(0.5)
        second = self.reactor.spawned[2]["protocol"]
        self.reactor.advance(61)
        second.processEnded(ended())
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 4)

    def test_stopTerminatesThenWaits(self) -> None:
        """
        Stopping sends SIGTERM to every worker and finishes when all have exited.
        """
        stopped = self.supervisor.stopService()
        transports = [each["transport"] for each in self.reactor.spawned]
        self.assertEqual([t.signals for t in transports], [["TERM"], ["TERM"]])
        self.assertNoResult(stopped)
        self.reactor.spawned[0]["protocol"].processEnded(ended(0))
        self.assertNoResult(stopped)
        self.reactor.spawned[1]["protocol"].processEnded(ended(0))
        self.successResultOf(stopped)
        self.assertNotEqual(self.tcp.fileno(), -1, "the shared socket is its listener's")

    def test_stopKillsStragglers(self) -> None:
        """
        A worker still running after the grace period (plus 5 s) is killed, and not restarted.
        """
        stopped = self.supervisor.stopService()
        self.reactor.advance(15)
        transports = [each["transport"] for each in self.reactor.spawned]
        self.assertEqual(transports[0].signals, ["TERM", "KILL"])
        for each in self.reactor.spawned:
            each["protocol"].processEnded(ended(-9))
        self.successResultOf(stopped)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)

    def sayReady(self, index: int) -> None:
        """
        Worker C{index} (0-based among those spawned) logs that it is ready.
        """
        event = {
            "log_format": "{summary}",
            "summary": "caplab configuration: ...",
            WORKER_READY: True,
        }
        protocol = self.reactor.spawned[index]["protocol"]
        protocol.childDataReceived(1, b"\x1e" + json.dumps(event).encode() + b"\n")

    def signals(self) -> list[list[str | int]]:
        return [each["transport"].signals for each in self.reactor.spawned]

    def test_hangupReachesEveryWorker(self) -> None:
        """
        C{SIGHUP} to the parent is passed on to each worker that is ready.
        """
        self.sayReady(0)
        self.sayReady(1)
        self.supervisor.signalWorkers("HUP")
        self.assertEqual(self.signals(), [["HUP"], ["HUP"]])

    def test_heldUntilReady(self) -> None:
        """
        A worker still starting (its handlers not yet in place: C{SIGHUP}'s default action
        would end it) gets C{SIGHUP} and C{SIGUSR1} once it says it is ready, each once, in
        order; C{SIGTERM} at once.
        """
        self.sayReady(1)
        self.supervisor.signalWorkers(signal.SIGHUP)
        self.supervisor.signalWorkers(signal.SIGUSR1)
        self.supervisor.signalWorkers(signal.SIGHUP)
        self.assertEqual(self.signals(), [[], [signal.SIGHUP, signal.SIGUSR1, signal.SIGHUP]])
        self.sayReady(0)
        self.assertEqual(self.signals()[0], [signal.SIGHUP, signal.SIGUSR1])
        self.sayReady(0)
        self.assertEqual(self.signals()[0], [signal.SIGHUP, signal.SIGUSR1])

    def test_restartedWorkerStartsNotReady(self) -> None:
        """
        A worker started again is not ready until it says so; C{SIGTERM} reaches a worker
        that is not ready.
        """
        self.sayReady(0)
        self.reactor.spawned[0]["protocol"].processEnded(ended())
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.supervisor.signalWorkers("HUP")
        self.supervisor.signalWorkers("TERM")
        self.assertEqual(self.signals(), [[], ["TERM"], ["TERM"]])
        self.sayReady(2)
        self.assertEqual(self.signals()[2], ["TERM", "HUP"])

    def test_workerLogEventsAreRepublished(self) -> None:
        """
        A worker's JSON log event is published in the parent, with the worker as its system.
        """
        worker = self.reactor.spawned[1]["protocol"]
        event = {
            "log_format": "caplab tcp listening on {address}",
            "address": "127.0.0.1:1",
            "log_namespace": "x",
        }
        worker.childDataReceived(1, b"\x1e" + json.dumps(event).encode()[:10])
        self.assertEqual(self.published, [])
        worker.childDataReceived(1, json.dumps(event).encode()[10:] + b"\n")
        self.assertEqual(len(self.published), 1)
        self.assertEqual(self.published[0]["address"], "127.0.0.1:1")
        self.assertEqual(self.published[0]["log_system"], "worker 2 pid 1001")

    def test_workerStderrIsLogged(self) -> None:
        """
        Plain text a worker writes to stderr is logged, not lost.
        """
        from twisted.logger import capturedLogs

        worker = self.reactor.spawned[0]["protocol"]
        with capturedLogs() as events:
            worker.childDataReceived(2, b"Traceback: boom\n")
        self.assertEqual([e["line"] for e in events], ["Traceback: boom"])


class DrainTests(SynchronousTestCase):
    def test_waitsForOpenConnections(self) -> None:
        """
        A stopping worker waits until its open connections are closed.
        """
        clock = Clock()
        drain = Drain(clock, grace=10)
        tcp, proxy = [1], [1]
        drain.watch(lambda: tcp[0])
        drain.watch(lambda: proxy[0])
        drain.startService()
        stopped = drain.stopService()
        self.assertNoResult(stopped)
        tcp[0] = 0
        clock.advance(drain.interval)
        self.assertNoResult(stopped)
        proxy[0] = 0
        clock.advance(drain.interval)
        self.successResultOf(stopped)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_givesUpAfterGrace(self) -> None:
        """
        After the grace period the worker stops even with connections open.
        """
        clock = Clock()
        drain = Drain(clock, grace=10)
        drain.watch(lambda: 1)
        drain.startService()
        stopped = drain.stopService()
        clock.pump([drain.interval] * 98)  # 9.8 s
        self.assertNoResult(stopped)
        clock.advance(0.25)
        self.successResultOf(stopped)
        self.assertEqual(clock.getDelayedCalls(), [])


class OptionTests(SynchronousTestCase):
    def test_workerCount(self) -> None:
        """
        C{--workers} takes 1 to 256 or C{auto}.
        """
        self.assertEqual(workerCount("3"), 3)
        self.assertGreaterEqual(workerCount("auto"), 1)
        for bad in ("0", "-1", "257", "many"):
            self.assertRaises(ValueError, workerCount, bad)

    def test_parseTCPDescription(self) -> None:
        """
        Port and interface come out of tcp: and tcp6: descriptions, IPv6 colons unescaped.
        """
        self.assertEqual(parseTCPDescription("tcp:8080:interface=127.0.0.1"), (8080, "127.0.0.1"))
        self.assertEqual(parseTCPDescription(r"tcp6:0:interface=\:\:1"), (0, "::1"))
        self.assertEqual(parseTCPDescription("tcp:80"), (80, "0.0.0.0"))
        self.assertRaises(ValueError, parseTCPDescription, "unix:/tmp/x")

    def test_workersRefuseUnshareableEndpoints(self) -> None:
        """
        C{--workers} with a TLS or UNIX endpoint is a usage error, not a surprise at run time.
        """
        options = Options()
        self.assertRaises(
            usage.UsageError,
            options.parseOptions,
            ["--workers", "2", "--tcp-endpoint", "unix:/tmp/caplab-test.sock", "--no-proxy"],
        )

    def test_argumentsAreRemembered(self) -> None:
        """
        The options keep their arguments, so that workers get the same ones.
        """
        options = Options()
        options.parseOptions(["--workers", "2", "--no-proxy", "--tcp-port", "0"])
        self.assertEqual(options.argv, ["--workers", "2", "--no-proxy", "--tcp-port", "0"])
        self.assertEqual(options["workers"], 2)

    def test_notAWorkerWithoutEnvironment(self) -> None:
        """
        Only a process started by the supervisor sees inherited sockets.
        """
        self.assertIsNone(InheritedSockets.fromEnvironment({}))
        self.assertIsNotNone(
            InheritedSockets.fromEnvironment(
                {WORKER_ENVIRONMENT: json.dumps({"index": 1, "sockets": []})}
            )
        )


def test_howItEnded() -> None:
    """
    A worker's end is told in words: the signal's name, or the exit status.
    """
    import signal as signals

    from twisted.logger import capturedLogs, formatEvent

    killed = Failure(ProcessTerminated(signal=signals.SIGKILL))
    assert howItEnded(killed) == "was killed by SIGKILL"
    assert howItEnded(ended(3)) == "exited with status 3"
    reactor = FakeProcessReactor()
    supervisor = WorkerSupervisor(
        reactor, 1, [], lambda: [], grace=1.0, environ={}, publish=lambda event: None
    )
    supervisor.startService()
    with capturedLogs() as events:
        reactor.spawned[0]["protocol"].processEnded(killed)
    assert [formatEvent(e) for e in events] == [
        "caplab worker 1 (pid 1000) was killed by SIGKILL; starting it again in 0.5s"
    ]


def test_noNotifySocketForWorkers() -> None:
    """
    Workers never see C{NOTIFY_SOCKET}: only the parent tells systemd it is ready.
    """
    reactor = FakeProcessReactor()
    supervisor = WorkerSupervisor(
        reactor,
        1,
        [],
        lambda: [],
        grace=1.0,
        environ={"NOTIFY_SOCKET": "/run/systemd/notify", "PATH": "/bin"},
        publish=lambda event: None,
    )
    supervisor.startService()
    assert "NOTIFY_SOCKET" not in reactor.spawned[0]["env"]
    assert reactor.spawned[0]["env"]["PATH"] == "/bin"


def test_waitForSockets() -> None:
    """
    With C{waitForSockets} the workers start only when L{WorkerSupervisor.startWorkers} is
    called (every socket bound), and the sockets are read then.
    """
    reactor = FakeProcessReactor()
    bound: list[SharedSocket] = []
    supervisor = WorkerSupervisor(
        reactor, 2, [], lambda: bound, grace=1.0, environ={}, waitForSockets=True
    )
    supervisor.startService()
    assert reactor.spawned == []
    with socket.socket() as sock:
        bound.append(SharedSocket("tcp", socket.SOCK_STREAM, sock, 3))
        supervisor.startWorkers()
        assert [each["childFDs"][3] for each in reactor.spawned] == [sock.fileno()] * 2


def test_sharedSocketListeners() -> None:
    """
    The parent's listeners bind one socket per service, on descriptors 3, 4, 5, and say
    where they listen; closing them closes the sockets.
    """
    options = Options()
    options.parseOptions(["--workers", "2", "--tcp-port", "0", "--proxy-port", "0"])
    listeners = sharedSockets(options)
    assert [(each.label, each.childFD, each.note) for each in listeners] == [
        ("tcp", 3, " (2 workers)"),
        ("proxy", 4, " (2 workers)"),
        ("udp", 5, " (2 workers)"),
    ]
    for each in listeners:
        port = each.listen()
        assert port.getHost().host == "127.0.0.1" and port.getHost().port > 0
        assert each.shared is not None
        sock = each.shared.socket
        port.stopListening()
        assert sock.fileno() == -1
