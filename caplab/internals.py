"""
Every use caplab makes of Twisted's private or undocumented names, in one place.

Each is pinned by a test in C{tests/test_internals.py}, so a Twisted release that changes one
fails a named test instead of silently slowing or breaking caplab.  Nothing else in caplab
reads or writes Twisted's private state.

Writing to a plain TCP transport at once when nothing is queued on it (L{sendNow},
L{nothingQueued}): the undocumented C{dataBuffer}, C{offset} and C{socket} and the private
C{_tempDataBuffer} of C{twisted.internet.tcp.Connection}.

A Twisted transport buffers every write until the reactor's next turn, registering the socket
for writability and unregistering it again (two C{epoll_ctl} calls and a loop turn per
write).  A proxy writes a small head or body on almost every event, so it sends directly
when the transport has nothing queued, and falls back to C{transport.write} for whatever the
socket does not take, for TLS, and for any other kind of transport (a C{--trace} wrapper,
a test's C{StringTransport}).
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import tcp
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.logger import Logger
from zope.interface import implementer

_PLAIN = (tcp.Server, tcp.Client)


def nothingQueued(transport: Any) -> bool:
    """
    Whether C{transport} is a connected plain TCP transport (not TLS, not a wrapper) with no
    output waiting to be sent.
    """
    return (
        type(transport) in _PLAIN
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
    )


def sendNow(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}: sent now if possible, else buffered as usual.
    """
    if nothingQueued(transport):
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the buffered write below notices the error
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


@implementer(IOpenSSLTrustRoot)
class PlatformPlusFile:
    """
    Trust the platform's CA certificates and, in addition, those in a PEM file (a test's
    throw-away CA, a company CA).
    """

    def __init__(self, caFile: str | None) -> None:
        self.caFile = caFile

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        if self.caFile:
            context.load_verify_locations(self.caFile)


# --- A listening port's own log events ------------------------------------------------------
#
# twisted.internet.tcp.Port logs its accept errors (EMFILE, ENFILE, ENOBUFS ...) through the
# private class attribute Port._logger: two or three lines for each connection it has to close
# for want of a file descriptor.  An instance attribute of the same name gives one port a
# logger of its own (Twisted's tests do the same), whose observer can count those events and
# rate-limit them (caplab.listening.AcceptErrors).


def observePortLog(port: Any, observer: Any) -> bool:
    """
    Send the log events of listening C{port} (a L{tcp.Port}) to C{observer} instead of the
    global log; return False (and change nothing) for any other kind of port.
    """
    if not isinstance(port, tcp.Port) or not isinstance(getattr(port, "_logger", None), Logger):
        return False
    port._logger = Logger(namespace=port._logger.namespace, observer=observer)
    return True
