"""
Listening on every service's address, all or nothing: each listener is started, and only
once all of them listen is each announced, in one line with its real address (then the
C{whenListening} callbacks run, e.g. telling systemd C{READY=1}).  If any cannot listen, the
others are closed again without a word, one line says which cannot and why (never a
traceback), and the process exits with L{EXIT_CANNOT_LISTEN}.  The C{whenListening}
callbacks wait for the reactor to run, so that its signal handlers are installed by then.

Twisted's own line for each port (C{"ProxyFactory starting on 8080"}) is left out of the
log, so each listener is announced once; its accept errors (C{EMFILE} when the process
runs out of file descriptors) are rate-limited into one line per second with a count.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from zope.interface import implementer

from caplab.address import describeAddress
from caplab.internals import observePortLog
from caplab.ratelimit import LogThrottle

log = Logger(namespace="caplab.listening")

#: The exit status of a process in which a service could not listen (EX_UNAVAILABLE).
EXIT_CANNOT_LISTEN = 69

#: The exit status of a usage or configuration error (EX_USAGE), as C{twist} uses it.
EXIT_USAGE = 64


class IListener(Protocol):
    """
    One service's listening address.

    @ivar label: the service's name in the log (C{tcp}, C{proxy}).
    @ivar description: where it listens, as the user gave it (for error messages).
    @ivar note: added to the announcement (C{" (2 workers)"}), or C{""}.
    """

    label: str
    description: str
    note: str

    def listen(self) -> Any:
        """
        Start listening; return the port (C{getHost}, C{stopListening}) or a Deferred of it.
        """


class StreamListener:
    """
    A stream server endpoint (TCP, TLS, UNIX ...) and the factory that serves it.
    """

    note = ""

    def __init__(
        self,
        label: str,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
    ) -> None:
        self.label = label
        self.description = description
        self.endpoint = endpoint
        self.factory = factory

    def listen(self) -> Deferred[Any]:
        return self.endpoint.listen(self.factory)


class DatagramListener:
    """
    A UDP port (Twisted has no UDP server endpoint) and its protocol; in a C{--workers}
    worker, C{adopt} takes over the socket the parent bound instead.
    """

    note = ""

    def __init__(
        self,
        label: str,
        port: int,
        interface: str,
        protocol: Any,
        reactor: Any,
        adopt: Callable[[Any], Any] | None = None,
    ) -> None:
        self.label = label
        self.portNumber = port
        self.interface = interface
        self.protocol = protocol
        self.reactor = reactor
        self.adopt = adopt
        self.description = f"udp:{port}:interface={interface}"

    def listen(self) -> Any:
        if self.adopt is not None:
            return self.adopt(self.protocol)
        return self.reactor.listenUDP(
            self.portNumber, self.protocol, interface=self.interface, maxPacketSize=65535
        )


class Listening(Service):
    """
    Starts every listener, all or nothing, and stops them.

    @ivar ports: label -> listening port, once all listen.
    """

    name = "listening"

    def __init__(
        self,
        listeners: Sequence[IListener],
        reactor: Any,
        onFailure: Callable[[], None] | None = None,
        whenListening: Sequence[Callable[[], None]] = (),
    ) -> None:
        """
        @param onFailure: called when a listener cannot listen (by default nothing; the
            plugin passes L{exitWithFailureStatus}).
        @param whenListening: called once every listener listens and the reactor runs.
        """
        self.listeners = list(listeners)
        self.reactor = reactor
        self.onFailure = onFailure
        self.whenListening = list(whenListening)
        self.ports: dict[str, Any] = {}
        self._acceptErrors: list[AcceptErrors] = []
        self._started: Deferred[Any] | None = None
        self._stopped = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._start()

    def startService(self) -> None:
        super().startService()
        self._start()

    def _start(self) -> None:
        # twistd calls privilegedStartService and then startService: listen once.
        if self._started is not None:
            return
        self._stopped = False
        attempts = [self._listenQuietly(listener) for listener in self.listeners]
        self._started = DeferredList(attempts, consumeErrors=True)
        self._started.addCallback(self._allTried)

    def _listenQuietly(self, listener: IListener) -> Deferred[Any]:
        # Twisted's ports log "<Factory> starting on <port>" with the legacy log, which
        # takes its fields from the context: at debug level and without a format, twist
        # (which logs from info up) and twistd (which writes no empty line) leave it out,
        # and each listener is announced once, by _allTried.
        return legacyLog.callWithContext(
            {"log_level": LogLevel.debug, "log_format": ""}, maybeDeferred, listener.listen
        )

    def _allTried(self, results: list[tuple[bool, Any]]) -> None:
        failed = [
            (listener, result)
            for listener, (ok, result) in zip(self.listeners, results, strict=True)
            if not ok
        ]
        if failed or self._stopped:
            for ok, port in results:
                if ok:
                    maybeDeferred(port.stopListening).addErrback(lambda f: None)
            if failed:
                reportListenFailures(self.reactor, failed, self.onFailure)
            return
        for listener, (_, port) in zip(self.listeners, results, strict=True):
            self.ports[listener.label] = port
            acceptErrors = AcceptErrors(listener.label, self.reactor)
            if observePortLog(port, acceptErrors):
                self._acceptErrors.append(acceptErrors)
            log.info(
                "caplab {service} listening on {address}{note}",
                service=listener.label,
                address=describeAddress(port.getHost()),
                note=listener.note,
            )
        # Once the reactor runs: its signal handlers are in place by then, so a service
        # manager told "ready" may send SIGHUP at once.
        self.reactor.callWhenRunning(self._ready)

    def _ready(self) -> None:
        if self._stopped:
            return
        for callback in self.whenListening:
            callback()

    def stopService(self) -> Any:
        super().stopService()
        self._stopped = True
        started, self._started = self._started, None
        ports, self.ports = list(self.ports.values()), {}
        for acceptErrors in self._acceptErrors:
            acceptErrors.throttle.stop()
        self._acceptErrors = []
        if started is None:
            return None
        started.cancel()
        return DeferredList([maybeDeferred(port.stopListening) for port in ports])


@implementer(ILogObserver)
class AcceptErrors:
    """
    Receives a listening port's own log events (Twisted's L{tcp.Port}): its accept errors
    (the process is out of file descriptors, say) become one rate-limited line with a
    count; everything else goes on to the log as it is.

    Twisted closes a connection it cannot serve for want of a file descriptor at once
    ("EMFILE recovery"), and logs two or three lines for each: under a flood, thousands.
    """

    def __init__(self, label: str, clock: Any, publish: ILogObserver = globalLogPublisher) -> None:
        self.publish = publish
        self.throttle = LogThrottle(
            Logger(namespace="caplab.listening", observer=publish),
            clock,
            "caplab {service} cannot accept connections: {reason} ({total} closed at once so far)",
            summary="caplab {service} closed {burst} connections at once in {duration}s: "
            "{reason} ({total} so far)",
        )
        self.label = label

    def __call__(self, event: Any) -> None:
        text = event.get("log_format") or ""
        if text.startswith("EMFILE recovery: Closed socket"):
            self.throttle.event(service=self.label, reason=_EMFILE)
        elif text.startswith("Could not accept new connection"):
            error = event.get("acceptError", "?")
            reason = _EMFILE if error in ("EMFILE", "ENFILE") else f"accept failed ({error})"
            self.throttle.event(service=self.label, reason=reason)
        elif text.startswith(("EMFILE encountered", "Re-reserving EMFILE")):
            return  # the steps of the recovery above, counted there
        else:
            self.publish(event)


_EMFILE = (
    "out of file descriptors (EMFILE; raise the limit, e.g. LimitNOFILE= or ulimit -n, or "
    "lower --max-connections)"
)


def reportListenFailures(
    reactor: Any,
    failed: Sequence[tuple[IListener, Failure]],
    onFailure: Callable[[], None] | None = None,
) -> None:
    """
    Log in one line which services cannot listen and why, call C{onFailure} and stop the
    reactor once it runs.
    """
    reasons = "; ".join(
        f"{listener.label} on {listener.description}: {_reason(failure)}"
        for listener, failure in failed
    )
    # Error rather than critical: before twist starts logging, it also copies critical
    # events to standard error, which would print the line twice.
    log.error("caplab cannot listen: {reasons}", reasons=reasons)
    if onFailure is not None:
        onFailure()
    reactor.callWhenRunning(_stopReactor, reactor)


def _reason(failure: Failure) -> str:
    return failure.getErrorMessage() or repr(failure.value)


def exitWithFailureStatus() -> None:
    """
    Make the process exit with L{EXIT_CANNOT_LISTEN} once C{twist}/C{twistd} are done.
    """
    exitWithStatus(EXIT_CANNOT_LISTEN)


def exitWithStatus(status: int) -> None:
    """
    Make the process exit with C{status} once C{twist}/C{twistd} are done (the first status
    asked for wins).

    They give a service no say in the exit status, so once the reactor has stopped and they
    have cleaned up (pid file, logs), an C{atexit} hook turns the normal exit into a failure.
    """
    if not _exitStatus:
        _exitStatus.append(status)
        atexit.register(_exitWithStatus)


def stopWithStatus(reactor: Any, status: int) -> None:
    """
    Stop the reactor (once it runs), then exit with C{status}.
    """
    exitWithStatus(status)
    reactor.callWhenRunning(_stopReactor, reactor)


_exitStatus: list[int] = []


def _exitWithStatus() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exitStatus[0])


def _stopReactor(reactor: Any) -> None:
    if reactor.running:
        reactor.stop()
