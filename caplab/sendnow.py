"""
Write to a plain TCP transport at once when nothing is queued on it.

A Twisted transport buffers every write until the reactor's next turn, registering the socket
for writability and unregistering it again (two C{epoll_ctl} calls and a loop turn per
write).  A proxy writes a small head or body on almost every event, so it sends directly
when the transport has nothing queued, and falls back to C{transport.write} for whatever the
socket does not take, for TLS, and for any other kind of transport (a C{--trace} wrapper,
a test's C{StringTransport}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

_PLAIN = (tcp.Server, tcp.Client)


def sendNow(transport: Any, data: bytes) -> None:
    """
    Write C{data} to C{transport}: sent now if possible, else buffered as usual.
    """
    if (
        type(transport) in _PLAIN
        and not transport.TLS
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
    ):
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
