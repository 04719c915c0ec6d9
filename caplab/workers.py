"""
C{--workers N}: several processes serving the same listening addresses.

The parent process binds every listening socket itself, then runs N worker processes
(C{python -m twisted caplab ...} with the same options) that inherit those sockets and adopt
them (C{adoptStreamPort}, C{adoptDatagramPort}), each with its own reactor.  The kernel hands
each new connection or datagram to whichever worker takes it first; because the sockets are
shared rather than bound once per worker (C{SO_REUSEPORT}), a worker that dies loses nothing
that is still queued on them.

The parent supervises:

  - a worker that exits unexpectedly is started again after a back-off (0.5 s, doubling up
    to 30 s; reset once a worker has run for a minute), and that is logged; one that exits
    with status 64 (its configuration cannot be used, so every worker would) stops the
    whole server, which exits with 64 too;
  - C{SIGTERM} (or Ctrl-C) stops the workers with C{SIGTERM}: each stops accepting, lets its
    open connections finish for up to C{--worker-grace} seconds, then exits; a worker still
    running after that is killed;
  - C{SIGHUP} and C{SIGUSR1} are passed on to every worker that is ready (they reload, or
    reopen their logs); a worker still starting has no handler for them yet (their default
    action would end it), so it gets them once it says it is ready (L{WORKER_READY});
  - the workers log JSON to the parent, which re-publishes each event with
    C{worker N pid P} as its system, in the parent's own log format;
  - the workers share their metrics through a private directory of the parent's
    (L{caplab.metrics.MetricsDirectory}), so that the parent's C{--admin-endpoint} and every
    worker's status pages show the whole server's figures.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure

from caplab.coerce import seconds
from caplab.listening import EXIT_USAGE
from caplab.metrics import MetricsDirectory
from caplab.sdnotify import NOTIFY_SOCKET

#: The environment variable through which the parent tells a worker which sockets it got.
WORKER_ENVIRONMENT = "CAPLAB_WORKER"

#: Back-off before a crashed worker is started again: first delay, and the ceiling.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
#: A worker that ran at least this long counts as healthy: its next restart is quick again.
HEALTHY_AFTER = 60.0

#: The field of a worker's log event that says the worker is ready: it listens, and its
#: handlers of C{SIGHUP} and C{SIGUSR1} are in place.
WORKER_READY = "caplabWorkerReady"

#: The signals a worker handles only once it is ready (L{WORKER_READY}).
_HELD_SIGNALS = frozenset({signal.SIGHUP, signal.SIGUSR1, "HUP", "USR1"})

_TCP_DESCRIPTION = re.compile(r"^(tcp6?):(\d+)(?::interface=((?:\\:|[^:])*))?$")


def workerCount(value: str) -> int:
    """
    A number of worker processes, or C{auto} for one per core.
    """
    if value == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        raise ValueError("not a number of workers (or 'auto')") from None
    if not 1 <= count <= 256:
        raise ValueError("not a number of workers from 1 to 256 (or 'auto')")
    return count


workerCount.metavar = "N"  # type: ignore[attr-defined]


class WorkerOptions:
    """
    The options of C{--workers}, mixed into L{caplab.tap.Options}.

    The workers get the same command line (L{caplab.config.ConfigurableOptions.argv}).
    """

    helpGroup = "workers"

    optParameters: list[list[Any]] = [
        [
            "workers",
            None,
            1,
            "Worker processes (1-256) serving the same ports, each with its own reactor; "
            "'auto' is one per core. Needs tcp:/tcp6: listening addresses.",
            workerCount,
        ],
        [
            "worker-grace",
            None,
            10.0,
            "Seconds a stopping worker lets its open connections finish before it exits.",
            seconds,
        ],
    ]

    def checkWorkerOptions(self) -> None:
        """
        C{--workers} shares plain TCP sockets: refuse endpoint types it cannot share.
        """
        config: Any = self
        if config["workers"] <= 1:
            return
        if config["worker-grace"] < 0:
            raise usage.UsageError("--worker-grace must be 0 or more seconds")
        for option in ("tcp-endpoint", "proxy-endpoint"):
            description = config.get(option)
            if description and not _TCP_DESCRIPTION.match(description):
                raise usage.UsageError(
                    f"--workers shares tcp: and tcp6: listening sockets only, not "
                    f"--{option} {description!r}"
                )


@dataclass
class SharedSocket:
    """
    A listening socket the parent bound for one service, and where the workers find it.
    """

    label: str
    kind: int  # socket.SOCK_STREAM or socket.SOCK_DGRAM
    socket: socket.socket
    childFD: int

    def describe(self) -> dict[str, int | str]:
        return {
            "label": self.label,
            "fd": self.childFD,
            "family": int(self.socket.family),
            "kind": int(self.kind),
        }


def parseTCPDescription(description: str) -> tuple[int, str]:
    """
    The (port, interface) of a C{tcp:} or C{tcp6:} server endpoint description.
    """
    match = _TCP_DESCRIPTION.match(description)
    if match is None:
        raise ValueError(f"not a tcp:/tcp6: description: {description!r}")
    kind, port, interface = match.groups()
    if interface is None:
        interface = "::" if kind == "tcp6" else "0.0.0.0"
    return int(port), interface.replace("\\:", ":")


def bindSocket(kind: int, interface: str, port: int, backlog: int = 1024) -> socket.socket:
    """
    Bind (and for TCP, listen on) a non-blocking socket the workers will share.
    """
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class WorkerProcess(ProcessProtocol):
    """
    One worker: relays its log events to the parent's log and reports its exit.
    """

    def __init__(self, supervisor: WorkerSupervisor, index: int, startedAt: float) -> None:
        self.supervisor = supervisor
        self.index = index
        self.startedAt = startedAt
        self.pid: int | None = None
        self._buffers = {1: b"", 2: b""}
        #: whether it said it is ready (L{WORKER_READY}).
        self.ready = False
        #: signals held for it until it is ready, in order, each once.
        self.held: list[str | int] = []

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]
        self.transport.closeStdin()  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._buffers.get(childFD, b"") + data).split(b"\n")
        self._buffers[childFD] = lines.pop()
        for line in lines:
            self.supervisor.relay(self, childFD, line)

    def processEnded(self, reason: Failure) -> None:
        self.supervisor.workerEnded(self, reason)


class WorkerSupervisor(Service):
    """
    Runs the workers on the shared sockets, restarts them, stops them gracefully.

    The sockets are bound by their listeners (L{SharedSocketListener}, in the parent's
    L{caplab.listening.Listening} service); once every one listens, L{startWorkers} starts
    the workers.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        count: int,
        argv: Sequence[str],
        sockets: Callable[[], list[SharedSocket]],
        grace: float,
        executable: str = sys.executable,
        environ: Mapping[str, str] = os.environ,
        publish: Callable[[dict[str, Any]], None] = globalLogPublisher,
        handleSignals: bool = False,
        metricsDirectory: MetricsDirectory | None = None,
        waitForSockets: bool = False,
        stopWith: Callable[[int], None] | None = None,
    ) -> None:
        """
        @param sockets: the shared sockets, once bound.
        @param stopWith: stops the server and makes it exit with the status given, when a
            worker exits with L{EXIT_USAGE} (a configuration error); None: such a worker is
            not started again, and nothing else happens.
        @param waitForSockets: start the workers when L{startWorkers} is called (once their
            listeners have bound every socket), not when the service starts.
        @param handleSignals: pass C{SIGHUP} and C{SIGUSR1} on to every worker.
        @param metricsDirectory: where the workers keep their metrics (created when the
            workers start, removed when they have stopped), or None.
        """
        self.handleSignals = handleSignals
        self.stopWith = stopWith
        self.waitForSockets = waitForSockets
        self.metricsDirectory = metricsDirectory
        self.reactor = reactor
        self.count = count
        self.argv = list(argv)
        self.makeSockets = sockets
        self.grace = grace
        self.executable = executable
        # A worker never talks to systemd: the parent says when the whole server is ready.
        self.environ = {k: v for k, v in environ.items() if k != NOTIFY_SOCKET}
        self.publish = publish
        self.sockets: list[SharedSocket] = []
        self.workers: dict[int, WorkerProcess] = {}
        self.failures: dict[int, int] = {}
        self.restarts: dict[int, Any] = {}
        self.stopping = False
        self._allEnded: defer.Deferred[None] | None = None
        self._previousHandlers: dict[int, Any] = {}

    def startService(self) -> None:
        super().startService()
        if self.handleSignals:
            for number in (signal.SIGHUP, signal.SIGUSR1):
                self._previousHandlers[number] = signal.signal(number, self._relaySignal)
        if not self.waitForSockets:
            self.startWorkers()

    def startWorkers(self) -> None:
        """
        Start every worker on the shared sockets (once all are bound).
        """
        if self.stopping or not self.running:
            return
        self.sockets = self.makeSockets()
        if self.metricsDirectory is not None:
            self.log.info(
                "caplab workers keep their metrics in {directory}",
                directory=self.metricsDirectory.create(),
            )
        for index in range(1, self.count + 1):
            self.startWorker(index)

    def _relaySignal(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.signalWorkers, signum)

    def workerArguments(self) -> list[str]:
        return [self.executable, "-m", "twisted", "--log-format=json", "caplab", *self.argv]

    def startWorker(self, index: int) -> None:
        """
        Start worker C{index} with the shared sockets on descriptors 3, 4, ...
        """
        self.restarts.pop(index, None)
        if self.stopping:
            return
        environ = dict(self.environ)
        environ[WORKER_ENVIRONMENT] = json.dumps(
            {"index": index, "sockets": [shared.describe() for shared in self.sockets]}
        )
        if self.metricsDirectory is not None:
            environ.update(self.metricsDirectory.environment())
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        for shared in self.sockets:
            childFDs[shared.childFD] = shared.socket.fileno()
        worker = WorkerProcess(self, index, self.reactor.seconds())
        self.reactor.spawnProcess(
            worker,
            self.executable,
            self.workerArguments(),
            env=environ,
            childFDs=childFDs,
        )
        self.workers[index] = worker
        self.log.info("caplab worker {index} started (pid {pid})", index=index, pid=worker.pid)

    def relay(self, worker: WorkerProcess, childFD: int, line: bytes) -> None:
        """
        Re-publish one line a worker logged, marked with the worker's number and pid.
        """
        system = f"worker {worker.index} pid {worker.pid}"
        text = line.lstrip(b"\x1e").decode("utf-8", "replace").strip()
        if not text:
            return
        event: dict[str, Any] | None = None
        if childFD == 1:
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
        if event is None:
            self.log.warn("{system}: {line}", system=system, line=text)
            return
        event["log_system"] = system
        self.publish(event)
        if event.get(WORKER_READY) and not worker.ready:
            self.workerReady(worker)

    def workerReady(self, worker: WorkerProcess) -> None:
        """
        Worker C{worker} handles its signals now: send it those held for it meanwhile.
        """
        worker.ready = True
        held, worker.held = worker.held, []
        for name in held:
            self._signal(worker, name)

    def workerEnded(self, worker: WorkerProcess, reason: Failure) -> None:
        if self.metricsDirectory is not None:
            self.metricsDirectory.processEnded(worker.pid)
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self.stopping:
            if not self.workers and self._allEnded is not None:
                done, self._allEnded = self._allEnded, None
                done.callback(None)
            return
        if getattr(reason.value, "exitCode", None) == EXIT_USAGE:
            # Its configuration cannot be used (a list with a bad line, say): every worker
            # started again would end the same way.
            self.log.error(
                "caplab worker {index} (pid {pid}) exited with status {status}: its "
                "configuration cannot be used (see its lines above); caplab stops",
                index=worker.index,
                pid=worker.pid,
                status=EXIT_USAGE,
            )
            if self.stopWith is not None:
                self.stopWith(EXIT_USAGE)
            return
        ranFor = self.reactor.seconds() - worker.startedAt
        if ranFor >= HEALTHY_AFTER:
            self.failures[worker.index] = 0
        failures = self.failures.get(worker.index, 0)
        delay = min(RESTART_DELAY * 2**failures, RESTART_DELAY_MAX)
        self.failures[worker.index] = failures + 1
        self.log.warn(
            "caplab worker {index} (pid {pid}) {ended}; starting it again in {delay}s",
            index=worker.index,
            pid=worker.pid,
            ended=howItEnded(reason),
            delay=delay,
        )
        self.restarts[worker.index] = self.reactor.callLater(delay, self.startWorker, worker.index)

    def signalWorkers(self, name: str | int) -> None:
        """
        Send signal C{name} (C{"TERM"}, C{"HUP"}, C{"KILL"}, or a number such as
        C{signal.SIGUSR1}) to every running worker; C{SIGHUP} and C{SIGUSR1} only to those
        that are ready, the others get it once they are (L{workerReady}).
        """
        for worker in list(self.workers.values()):
            if name in _HELD_SIGNALS and not worker.ready:
                if name not in worker.held:
                    worker.held.append(name)
                continue
            self._signal(worker, name)

    def _signal(self, worker: WorkerProcess, name: str | int) -> None:
        try:
            worker.transport.signalProcess(name)  # type: ignore[union-attr]
        except Exception as e:  # ProcessExitedAlready: it is ending anyway
            self.log.debug("worker {index}: {error}", index=worker.index, error=e)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self.stopping = True
        for pending in self.restarts.values():
            if pending.active():
                pending.cancel()
        self.restarts.clear()
        previous, self._previousHandlers = self._previousHandlers, {}
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        ended: defer.Deferred[None] = defer.Deferred()
        if self.workers:
            self._allEnded = ended
            self.signalWorkers("TERM")
            killer = self.reactor.callLater(self.grace + 5.0, self.signalWorkers, "KILL")
            ended.addBoth(lambda result: (killer.active() and killer.cancel(), result)[1])
        else:
            ended.callback(None)

        def removeDirectory(result: object) -> object:
            # The sockets are their listeners' to close.
            self.sockets = []
            if self.metricsDirectory is not None:
                return self.metricsDirectory.remove().addCallback(lambda _: result)
            return result

        return ended.addBoth(removeDirectory)


def howItEnded(reason: Failure) -> str:
    """
    How a worker process ended, for a person: C{"was killed by SIGKILL"}, C{"exited with
    status 3"}.
    """
    value = reason.value
    number = getattr(value, "signal", None)
    if number is not None:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"was killed by {name}"
    status = getattr(value, "exitCode", None)
    if status is not None:
        return f"exited with status {status}"
    return f"ended: {reason.getErrorMessage()}"


class SharedSocketListener:
    """
    One service's socket in the C{--workers} parent (an L{caplab.listening.IListener}):
    L{listen} binds it; the workers adopt it.
    """

    def __init__(
        self, label: str, kind: int, interface: str, port: int, childFD: int, workers: int
    ) -> None:
        self.label = label
        self.kind = kind
        self.interface = interface
        self.port = port
        self.childFD = childFD
        self.note = f" ({workers} workers)"
        scheme = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        self.description = f"{scheme}:{port}:interface={interface}"
        self.shared: SharedSocket | None = None

    def listen(self) -> SharedSocketListener:
        sock = bindSocket(self.kind, self.interface, self.port)
        self.shared = SharedSocket(self.label, self.kind, sock, self.childFD)
        return self

    def getHost(self) -> Any:
        from twisted.internet.address import IPv4Address, IPv6Address

        assert self.shared is not None
        host, port = self.shared.socket.getsockname()[:2]
        if self.shared.socket.family == socket.AF_INET6:
            return IPv6Address("UDP" if self.kind == socket.SOCK_DGRAM else "TCP", host, port)
        return IPv4Address("UDP" if self.kind == socket.SOCK_DGRAM else "TCP", host, port)

    def stopListening(self) -> None:
        if self.shared is not None:
            self.shared.socket.close()
            self.shared = None


def sharedSockets(config: Mapping[str, Any]) -> list[SharedSocketListener]:
    """
    The sockets the C{--workers} parent binds, one per service, on descriptors 3, 4, ...
    """
    found: list[SharedSocketListener] = []
    workers = config["workers"]
    for label, option in (("tcp", "tcp-endpoint"), ("proxy", "proxy-endpoint")):
        if not config[f"no-{label}"]:
            port, interface = parseTCPDescription(config[option])
            found.append(
                SharedSocketListener(
                    label, socket.SOCK_STREAM, interface, port, 3 + len(found), workers
                )
            )
    if not config["no-udp"]:
        found.append(
            SharedSocketListener(
                "udp",
                socket.SOCK_DGRAM,
                config["interface"],
                config["udp-port"],
                3 + len(found),
                workers,
            )
        )
    return found


# --- the worker side ---------------------------------------------------------------------


@dataclass(frozen=True)
class InheritedSocket:
    fd: int
    family: int
    kind: int


class InheritedSockets:
    """
    In a worker: the sockets the parent passed down, by service label.
    """

    def __init__(self, index: int, sockets: dict[str, InheritedSocket]) -> None:
        self.index = index
        self.sockets = sockets

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str] = os.environ) -> InheritedSockets | None:
        """
        The inherited sockets, or None when this process is not a worker.
        """
        raw = environ.get(WORKER_ENVIRONMENT)
        if not raw:
            return None
        description = json.loads(raw)
        return cls(
            description["index"],
            {
                each["label"]: InheritedSocket(each["fd"], each["family"], each["kind"])
                for each in description["sockets"]
            },
        )

    def streamEndpoint(self, reactor: Any, label: str) -> AdoptedStreamEndpoint:
        inherited = self.sockets[label]
        return AdoptedStreamEndpoint(reactor, inherited.fd, inherited.family)

    def adoptDatagram(self, reactor: Any, label: str, protocol: Any) -> Any:
        inherited = self.sockets[label]
        return reactor.adoptDatagramPort(
            inherited.fd, inherited.family, protocol, maxPacketSize=65535
        )


class AdoptedStreamEndpoint:
    """
    A server endpoint that listens on an inherited, already listening socket.
    """

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self.reactor = reactor
        self.fd = fd
        self.family = family

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        return defer.execute(self.reactor.adoptStreamPort, self.fd, self.family, factory)


class Drain(Service):
    """
    In a worker: on stop, wait (at most C{grace} seconds) for open connections to finish.

    The listeners stop accepting at the same time (they are siblings in the service tree),
    so no new connection arrives while this waits.  The open connections are read from each
    service's own count (L{watch}), looked at every L{interval} seconds while stopping:
    nothing stands between a connection and its protocol.
    """

    log = Logger()
    #: Seconds between looks at the open connections while stopping.
    interval = 0.1

    def __init__(self, reactor: Any, grace: float) -> None:
        self.reactor = reactor
        self.grace = grace
        self.counts: list[Callable[[], int]] = []
        self._waiting: defer.Deferred[None] | None = None
        self._looking: LoopingCall | None = None
        self._drained = False
        self._observers: list[defer.Deferred[None]] = []

    def watch(self, count: Callable[[], int]) -> None:
        """
        Count the connections C{count()} says are open.
        """
        self.counts.append(count)

    @property
    def open(self) -> int:
        return sum(count() for count in self.counts)

    def whenDrained(self) -> defer.Deferred[None]:
        """
        Fires once a stop has waited for the open connections (at once if one has): what
        must come after their last bytes (the access log's closing) waits for this.
        """
        if self._drained:
            return defer.succeed(None)
        observer: defer.Deferred[None] = defer.Deferred()
        self._observers.append(observer)
        return observer

    def startService(self) -> None:
        super().startService()
        self._drained = False

    def _done(self, result: object) -> object:
        self._drained = True
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.callback(None)
        return result

    def check(self) -> None:
        if self.open <= 0 and self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            self._stopLooking()
            waiting.callback(None)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self._waiting = defer.Deferred()
        open_ = self.open
        if open_:
            self.log.info(
                "caplab worker waiting up to {grace}s for {open} open connections",
                grace=self.grace,
                open=open_,
            )
        waiting = self._waiting
        timer = self.reactor.callLater(self.grace, self._giveUp)
        waiting.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        waiting.addBoth(self._done)
        self.check()
        if self._waiting is not None:
            self._looking = LoopingCall(self.check)
            self._looking.clock = self.reactor
            self._looking.start(self.interval, now=False)
        return waiting

    def _stopLooking(self) -> None:
        looking, self._looking = self._looking, None
        if looking is not None and looking.running:
            looking.stop()

    def _giveUp(self) -> None:
        if self._waiting is not None:
            self.log.warn(
                "caplab worker closing {open} connections still open after {grace}s",
                open=self.open,
                grace=self.grace,
            )
            waiting, self._waiting = self._waiting, None
            self._stopLooking()
            waiting.callback(None)
