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

Reading what a new connection's client has already sent (L{readWaiting}): a plain TCP
transport's C{doRead} (the reactor's call, L{IReadDescriptor}), called from
C{connectionMade}.  The lab's client sends its sentence as soon as it has connected, so the
sentence is nearly always there when the connection is accepted; reading it at once saves a
turn of the reactor (epoll, dispatch, logging context), a tenth of a short connection's work.
A read that finds nothing costs a C{recv} that fails with C{EAGAIN}.

Reading a streaming connection in larger pieces (L{readInLargerPieces}): the undocumented
C{bufferSize} of C{twisted.internet.abstract.FileDescriptor}, which is both how much a TCP
transport reads at a time and how much unsent output it holds before pausing its producer.
On loopback, whose TCP segments are 65,483 bytes, reading (and so writing) 64 KiB at a time
sends a full segment and a 53-byte one for every piece: reading 128 KiB halves the pieces
and their tails, and halves the CPU time a streamed mebibyte costs.

Replying to a datagram with its socket's own C{sendto} (L{datagramSender}, L{sendtoError}):
the undocumented C{socket} and the private C{_connectedAddr} of
C{twisted.internet.udp.Port}, and what C{Port.write} makes of C{sendto}'s errors.

C{Port.write} checks every address it is given (an IPv4 address costs three C{inet_pton}
calls and a raised and caught exception, about 10,000 instructions, more than the rest of
the reply); a reply goes to the address its request came from, which the socket itself
produced, so the checks can only pass.

Reading every datagram waiting on a UDP port in one go (L{readInBatches}): the undocumented
C{socket}, C{maxPacketSize} and C{addressFamily} of C{udp.Port}, and its C{doRead}, which
the reactor calls when the socket is readable.

Trusting the platform's CA certificates plus those of a file when the proxy fetches
C{https://} itself (L{PlatformPlusFile}): C{optionsForClientTLS} takes a trust root that
provides C{IOpenSSLTrustRoot}, which Twisted exports only from its private
C{twisted.internet._sslverify}; the public C{platformTrust()} and
C{trustRootFromCertificates()} cannot be combined.

Rate-limiting a listening port's accept errors (L{observePortLog}): the private class
attribute C{Port._logger} of C{twisted.internet.tcp.Port}.
"""

from __future__ import annotations

import errno
import socket as _socket
from collections.abc import Callable, Iterator
from typing import Any

from OpenSSL import SSL
from twisted.internet import tcp, udp
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.error import MessageLengthError
from twisted.logger import Logger
from zope.interface import implementer

_log = Logger()

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


def readWaiting(transport: Any) -> None:
    """
    Read what has already arrived on a plain TCP transport and hand it to its protocol's
    C{dataReceived} now, instead of at the reactor's next turn; any other kind of transport
    is left alone.

    Nothing waiting, the end of the stream or an error are left for the reactor, which
    finds them again at its next turn (a closed or failed socket stays readable) and handles
    them as usual.
    """
    if type(transport) is tcp.Server and not transport.TLS and transport.connected:
        transport.doRead()


#: Twisted's C{bufferSize} (read size and write-buffer bound) of a TCP transport.
DEFAULT_BUFFER = 64 * 1024

#: The read size and write-buffer bound L{readInLargerPieces} gives a streaming connection.
STREAM_BUFFER = 128 * 1024


def readInLargerPieces(transport: Any, size: int = STREAM_BUFFER) -> None:
    """
    Make a plain TCP transport read up to C{size} bytes at a time, and hold up to about
    C{size} bytes of unsent output before it pauses its producer (Twisted's default is 64
    KiB for both).  Any other kind of transport is left as it is.
    """
    if type(transport) in _PLAIN and not transport.TLS:
        transport.bufferSize = size


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


def datagramSender(port: Any) -> Callable[[bytes, Any], object] | None:
    """
    The C{sendto} of C{port}'s socket if C{port} is a listening, unconnected plain UDP port,
    else None (the caller then writes with C{port.write}).

    Only for replies, to the address a datagram came from.  Its errors are the socket's own
    L{OSError}s: L{sendtoError} says what C{port.write} would have made of them.
    """
    if type(port) is not udp.Port or port._connectedAddr is not None:
        return None
    socket = getattr(port, "socket", None)
    return None if socket is None else socket.sendto


def sendtoError(error: OSError) -> Exception | None:
    """
    The error C{udp.Port.write} raises for C{error} from an unconnected socket's
    C{sendto}: L{MessageLengthError} for C{EMSGSIZE}, None (ignored) for C{ECONNREFUSED},
    C{error} itself for anything else.
    """
    if error.errno == errno.EMSGSIZE:
        return MessageLengthError("message too long")
    if error.errno == errno.ECONNREFUSED:
        return None
    return error


#: recvfrom errors after which C{udp.Port.doRead} stops reading until the next event.
_READ_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED})

#: At most this many datagrams are read at one readiness event.  Twisted's own bound,
#: C{maxThroughput} (256 KiB), costs a C{len} per datagram, a twentieth of the work of
#: answering one; 128 datagrams of at most 64 KiB bound a turn of the reactor as well.
MAX_BATCH = 128


def readInBatches(
    port: Any,
    handler: Callable[[Iterator[tuple[bytes, Any]]], object],
    maxBatch: int = MAX_BATCH,
) -> bool:
    """
    Make C{port} call C{handler} once per readiness event of its socket, with an iterator
    over the C{(datagram, address)} pairs waiting, instead of calling
    C{protocol.datagramReceived} once per datagram.

    The iterator reads each datagram from the socket as the handler asks for it (so a
    handler that answers each before asking for the next keeps its peers busy), and stops
    when none is waiting or after C{maxBatch} datagrams; the rest wait for the next turn of
    the reactor.  Addresses are as C{udp.Port.doRead} gives them: C{(host, port)}, IPv6
    ones too.  An exception from C{handler} is logged and the port goes on reading, as
    Twisted does for C{datagramReceived}; an error reading the socket that Twisted would not
    ignore is raised once the handler returns (the reactor then logs it and closes the
    port, as it does for Twisted's own C{doRead}).

    @return: whether the port now reads in batches: only a listening, unconnected plain UDP
        port does (anything else is left alone).
    """
    if type(port) is not udp.Port or port._connectedAddr is not None:
        return False
    sock = getattr(port, "socket", None)
    if sock is None:
        return False
    recvfrom = sock.recvfrom
    size = port.maxPacketSize
    ipv6 = port.addressFamily == _socket.AF_INET6
    failed: list[OSError] = []

    def waiting() -> Iterator[tuple[bytes, Any]]:
        for _ in range(maxBatch):
            try:
                received = recvfrom(size)
            except OSError as e:
                if e.errno not in _READ_AGAIN:
                    failed.append(e)
                return
            # recvfrom's own (datagram, address) pair: no new tuple per datagram.
            yield (received[0], received[1][:2]) if ipv6 else received

    def doRead() -> None:
        try:
            handler(waiting())
        except BaseException:
            _log.failure("Unhandled error answering datagrams")
        if failed:
            raise failed.pop()

    port.doRead = doRead  # type: ignore[method-assign]  # the reactor calls it
    return True


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
