"""
Services that listen and say where: one log line with the real address once listening, and a
clear message (not a traceback) when they cannot.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from caplab.address import describeAddress


class StreamListener(Service):
    """
    Listen on a stream server endpoint (TCP, TLS, UNIX ...) for one named service.

    @ivar port: the listening port once listening, else None.
    """

    log = Logger()

    def __init__(
        self,
        label: str,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        reactor: Any,
        onFailure: Callable[[], None] | None = None,
    ) -> None:
        self.onFailure = onFailure
        self.name = label
        self.label = label
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self._waiting: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waiting = self.endpoint.listen(self.factory)
        self._waiting.addCallbacks(self._listening, self._failed)

    def startService(self) -> None:
        super().startService()
        if self._waiting is None:
            self.privilegedStartService()

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        where = describeAddress(port.getHost())
        self.log.info("caplab {service} listening on {address}", service=self.label, address=where)
        return port

    def _failed(self, failure: Failure) -> None:
        reportListenFailure(self.reactor, self.label, self.description, failure, self.onFailure)

    def stopService(self) -> Any:
        super().stopService()
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return None
        waiting.cancel()
        return waiting.addCallback(lambda port: port.stopListening() if port else None)


class DatagramListener(Service):
    """
    Listen on a UDP port for one named service (Twisted has no UDP server endpoint).
    """

    log = Logger()

    def __init__(
        self,
        label: str,
        port: int,
        interface: str,
        protocol: Any,
        reactor: Any,
        onFailure: Callable[[], None] | None = None,
        adopt: Callable[[Any], Any] | None = None,
    ) -> None:
        self.onFailure = onFailure
        self.adopt = adopt
        self.name = label
        self.label = label
        self.portNumber = port
        self.interface = interface
        self.protocol = protocol
        self.reactor = reactor
        self.port: Any = None
        self._tried = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self._tried:  # twistd calls this and then startService: listen (or fail) once
            return
        self._tried = True
        try:
            if self.adopt is not None:  # a --workers worker: the parent bound the socket
                self.port = self.adopt(self.protocol)
            else:
                self.port = self.reactor.listenUDP(
                    self.portNumber, self.protocol, interface=self.interface, maxPacketSize=65535
                )
        except Exception:
            reportListenFailure(
                self.reactor,
                self.label,
                f"udp:{self.portNumber}:interface={self.interface}",
                Failure(),
                self.onFailure,
            )
            return
        where = describeAddress(self.port.getHost())
        self.log.info("caplab {service} listening on {address}", service=self.label, address=where)

    def startService(self) -> None:
        super().startService()
        self.privilegedStartService()

    def stopService(self) -> Any:
        super().stopService()
        self._tried = False
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


#: The exit status of a process in which a service could not listen (EX_UNAVAILABLE).
EXIT_CANNOT_LISTEN = 69


def reportListenFailure(
    reactor: Any,
    label: str,
    description: str,
    failure: Failure,
    onFailure: Callable[[], None] | None = None,
) -> None:
    """
    Log why a service cannot listen, in one line, call C{onFailure} and stop the reactor.
    """
    reason = failure.getErrorMessage() or repr(failure.value)
    Logger(namespace="caplab.listening").critical(
        "caplab {service} cannot listen on {description}: {reason}",
        service=label,
        description=description,
        reason=reason,
    )
    if onFailure is not None:
        onFailure()
    reactor.callWhenRunning(_stopReactor, reactor)


def exitWithFailureStatus() -> None:
    """
    Make the process exit with L{EXIT_CANNOT_LISTEN} once C{twist}/C{twistd} are done.

    They give a service no say in the exit status, so once the reactor has stopped and they
    have cleaned up (pid file, logs), an C{atexit} hook turns the normal exit into a failure.
    """
    if not _exitHook:
        _exitHook.append(True)
        atexit.register(_exitCannotListen)


_exitHook: list[bool] = []


def _exitCannotListen() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CANNOT_LISTEN)


def _stopReactor(reactor: Any) -> None:
    if reactor.running:
        reactor.stop()
