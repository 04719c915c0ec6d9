"""
Telling systemd how the service is doing (C{Type=notify}): C{READY=1} once every listener is
up, C{RELOADING=1} and C{READY=1} around a reload, C{STOPPING=1} when stopping, and a
C{STATUS=} line for C{systemctl status}.

This is the whole protocol of C{sd_notify(3)}: one datagram of C{KEY=VALUE} lines to the
C{AF_UNIX} socket named by C{$NOTIFY_SOCKET} (a path, or C{@name} for the abstract
namespace).  Outside systemd (no C{NOTIFY_SOCKET}) every call does nothing.  A send never
blocks the reactor: the socket is non-blocking, and a message systemd cannot take at once
is dropped and logged.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.logger import Logger

log = Logger(namespace="caplab.sdnotify")

#: The environment variable through which systemd names its notification socket.
NOTIFY_SOCKET = "NOTIFY_SOCKET"


class Notifier:
    """
    Sends C{sd_notify} messages to the socket C{NOTIFY_SOCKET} names, if any.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get(NOTIFY_SOCKET, "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        elif address:
            log.warn(
                "caplab cannot notify systemd through {address!r}: only AF_UNIX sockets "
                "are supported",
                address=address,
            )

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """
        Send one message, e.g. C{send(READY=1, STATUS="serving")}.

        @return: whether it was sent.
        """
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.connect(self.address)
                sock.send(message)
        except OSError as e:
            log.warn(
                "caplab could not notify systemd ({fields}): {reason}",
                fields=", ".join(fields),
                reason=e.strerror or str(e),
            )
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status, MAINPID=os.getpid())

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match the reload it asked for.
        return self.send(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)
