"""
The client side of the proxy: a L{twisted.web.proxy.Proxy} channel (HTTP/1.1 parsing by
L{HTTPChannel}) with limits that answer 414/431/400, a header-block deadline against slow
clients, bodies streamed instead of buffered, and CONNECT tunnels; its requests are
L{caplab.proxy.request.CaplabProxyRequest}.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.proxy import Proxy

from caplab.proxy.hooks import IAuthenticator, IFetcher, IHostPolicy
from caplab.proxy.pages import errorPage, reason
from caplab.proxy.request import CaplabProxyRequest

log = Logger(namespace="caplab.proxy")

#: The networks clients may come from unless C{--allow} says otherwise.
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass
class ProxySettings:
    """
    What the proxy channel needs to know: limits, rules and collaborators.

    @ivar fetcher: the L{IFetcher} chain plain requests go to.
    @ivar tunnels: opens CONNECT tunnels (L{caplab.proxy.tunnel.TunnelOpener}), None: 501.
    @ivar pseudonym: this proxy's name in C{Via}, unique per process (loop detection).
    """

    fetcher: IFetcher
    clock: Any
    tunnels: Any = None
    hostPolicy: IHostPolicy | None = None
    authenticator: IAuthenticator | None = None
    metrics: Any = None
    allow: Sequence[Any] = LOOPBACK
    connectPorts: frozenset[int] = frozenset({443})
    forwardedFor: bool = False
    pseudonym: bytes = b"caplab"
    headerTimeout: float = 30.0
    tunnelIdleTimeout: float = 600.0
    idleTimeout: float = 60.0
    maxConnections: int = 1000
    maxRequestLine: int = 8192
    maxHeaderBlock: int = 65536
    maxHeaders: int = 100
    statusResources: dict[bytes, Any] = field(default_factory=dict)

    def allowed(self, host: str) -> bool:
        """
        Whether a client at address C{host} may use the proxy.
        """
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return True  # not an IP client (a UNIX socket): the endpoint decides
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)


class CaplabProxy(Proxy):
    """
    The proxy's HTTP/1.1 channel: L{Proxy} with limits that answer 414/431, a header-block
    deadline against slow clients, streamed request bodies and CONNECT tunnels.
    """

    requestFactory = CaplabProxyRequest  # type: ignore[assignment]
    factory: Any
    transport: Any
    clientAllowed = True
    clientHost = "-"
    peerAddress: Any = None
    localAddress: Any = None
    _tunnel: Any = None
    _headStarted: float | None = None
    _inBody = False
    _closing = False

    def __init__(self, settings: ProxySettings) -> None:
        super().__init__()
        self.settings = settings
        self.MAX_LENGTH = settings.maxHeaderBlock
        self.totalHeadersSize = settings.maxHeaderBlock
        self.maxHeaders = settings.maxHeaders
        self.timeOut = settings.idleTimeout or None  # type: ignore[assignment]
        self.callLater = settings.clock.callLater  # type: ignore[method-assign]

    def connectionMade(self) -> None:
        super().connectionMade()
        self.peerAddress = peer = self.transport.getPeer()
        self.localAddress = self.transport.getHost()
        self.clientHost = getattr(peer, "host", "-")
        self.clientAllowed = self.settings.allowed(self.clientHost)
        self.factory.channelOpened(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.factory.channelClosed(self)
        if self._tunnel is not None:
            self._tunnel.clientLost()
        super().connectionLost(reason)

    def getPeer(self) -> Any:
        """
        The client's address (looked up once per connection, not once per request).
        """
        return self.peerAddress

    def getHost(self) -> Any:
        return self.localAddress

    def allContentReceived(self) -> None:
        if not self.requests or self.requests[-1].finished:
            # Answered before its body was in (an error): the connection is closing.
            self._closing = True
            return
        # HTTPChannel switches the idle timeout off while a request is in flight and on
        # again afterwards, a timer cancelled and created per request; instead the timer
        # stays and L{timeoutConnection} ignores it while a request is in flight.
        self._inBody = False
        timeOut, self.timeOut = self.timeOut, None
        try:
            super().allContentReceived()
        finally:
            self.timeOut = timeOut

    def timeoutConnection(self) -> None:
        if self.requests and (self._handlingRequest or self._inBody):
            self.setTimeout(self.timeOut)  # busy, not idle: look again later
            return
        super().timeoutConnection()

    def dataReceived(self, data: bytes) -> None:
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.fromClient(data)
            return
        if self._closing:
            return
        if self._headStarted is None and not (self._handlingRequest or self._inBody):
            self._headStarted = self.settings.clock.seconds()
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        firstLine = self._HTTPChannel__first_line  # type: ignore[attr-defined]
        if firstLine:
            if len(line) > self.settings.maxRequestLine:
                self.refuse(414, "URI Too Long", "the request line is too long")
                return
        elif line and self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(431, "Request Header Fields Too Large", "the header block is too large")
            return
        elif line and self._receivedHeaderCount + 1 >= self.maxHeaders:
            self.refuse(431, "Request Header Fields Too Large", "too many header fields")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._HTTPChannel__first_line:  # type: ignore[attr-defined]
            self.refuse(414, "URI Too Long", "the request line is too long")
        else:
            self.refuse(431, "Request Header Fields Too Large", "a header field is too long")

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuse(400, "Bad Request", "the request is not valid HTTP/1.1")

    def refuse(self, code: int, title: str, detail: str) -> None:
        """
        Answer C{code} outside any request (the request could not be parsed) and close.
        """
        if self._closing:
            return
        self._closing = True
        self.factory.requests += 1
        body = errorPage(code, title, detail)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (code, reason(code), len(body), body)
        )
        self.factory.logRefusal(self, code, len(body))
        self.loseConnection()

    def allHeadersReceived(self) -> None:
        self._headStarted = None
        super().allHeadersReceived()
        if self.length != 0 and self.requests:
            self._inBody = True
            self.requests[-1].startEarly(self._command, self._path, self._version)

    def rawDataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        super().rawDataReceived(data)

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if not self.persistent:
            self._closing = True

    def checkDeadlines(self, now: float) -> None:
        """
        Close the connection if a request's header block has taken too long (slow-loris), or
        if its CONNECT tunnel has relayed nothing for C{tunnelIdleTimeout} seconds.
        """
        tunnel = self._tunnel
        if tunnel is not None:
            limit = self.settings.tunnelIdleTimeout
            if limit and now - tunnel.lastActivity > limit:
                log.info(
                    "{client}: tunnel to {target} idle for {timeout} s; closing",
                    client=self.clientHost,
                    target=tunnel.target.authority,
                    timeout=limit,
                )
                tunnel.close()
            return
        started = self._headStarted
        if started is not None and now - started > self.settings.headerTimeout:
            self._headStarted = None
            log.info(
                "{client}: header block not complete within {timeout} s; closing",
                client=self.clientHost,
                timeout=self.settings.headerTimeout,
            )
            self.refuse(408, "Request Timeout", "the request header block took too long")
            if self._abortingCall is None and self.abortTimeout is not None:
                self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)

    def startTunnel(self, tunnel: Any) -> None:
        """
        Hand this connection to a CONNECT tunnel: every further byte goes to C{tunnel}.
        """
        self._tunnel = tunnel
        buffered = b"".join(self._dataBuffer)
        self._dataBuffer = []
        self.setTimeout(None)
        self._savedTimeOut = None
        if buffered:
            tunnel.fromClient(buffered)
        if not self._waitingForTransport:
            self._networkProducer.resumeProducing()
