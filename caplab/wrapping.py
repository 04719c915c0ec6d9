"""
A protocol wrapper that passes half-close notifications through.

L{twisted.protocols.policies.ProtocolWrapper} does not provide L{IHalfCloseableProtocol}, so a
wrapped protocol that depends on half-close (the uppercase TCP service finishes writing after
the client shuts down its side) would see a full close instead.  Wrappers in caplab (tracing,
connection tracking) subclass L{HalfCloseWrapper}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class HalfCloseWrapper(ProtocolWrapper):
    """
    A L{ProtocolWrapper} that forwards C{readConnectionLost}/C{writeConnectionLost}.

    A wrapped protocol that does not support half-close gets what the transport would have
    done for it: the connection is closed when the peer stops sending.
    """

    def readConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if halfCloseable is not None:
            halfCloseable.readConnectionLost()
        else:
            self.loseConnection()

    def writeConnectionLost(self) -> None:
        halfCloseable = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if halfCloseable is not None:
            halfCloseable.writeConnectionLost()
