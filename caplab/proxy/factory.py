"""
The proxy's server factory: builds L{CaplabProxy} channels, enforces C{--max-connections},
keeps the open channels (a stopping worker waits for them), sweeps the connections' deadlines,
writes the access log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

from caplab.address import describeAddress
from caplab.proxy.accesslog import AccessLog
from caplab.proxy.channel import CaplabProxy, ProxySettings
from caplab.ratelimit import LogThrottle

if TYPE_CHECKING:
    from caplab.proxy.exchange import Exchange

log = Logger(namespace="caplab.proxy")


class ProxyFactory(ServerFactory):
    """
    Makes proxy channels sharing one L{ProxySettings}.
    """

    protocol = CaplabProxy
    noisy = False

    def __init__(self, settings: ProxySettings, accessLog: AccessLog | None = None) -> None:
        self.settings = settings
        self.accessLog = accessLog
        self.clock = settings.clock
        self.channels: set[CaplabProxy] = set()
        self._sweep: Any = None
        self.refusals = LogThrottle(
            log,
            self.clock,
            "caplab proxy refusing connections from {peer} and others: {count} in the last "
            "{interval}s, over --max-connections {limit} ({total} refused so far)",
            summary="caplab proxy refused {burst} connections in {duration}s "
            "(--max-connections {limit}; {total} refused so far)",
        )

    def startFactory(self) -> None:
        if self.accessLog is not None:
            self.accessLog.open()

    def stopFactory(self) -> None:
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        self.refusals.stop()
        if self.accessLog is not None:
            # Closed once the open connections are done (caplab.tap.AccessLogService): a
            # stopping worker still serves them, and their lines come after this.
            self.accessLog.flush()

    def buildProtocol(self, addr: IAddress | None) -> CaplabProxy | None:
        if len(self.channels) >= self.settings.maxConnections:
            metrics = self.settings.metrics
            if metrics is not None:
                metrics.connectionRefused()
            self.refusals.event(peer=describeAddress(addr), limit=self.settings.maxConnections)
            return None
        channel = CaplabProxy(self.settings)
        channel.factory = self
        return channel

    def channelOpened(self, channel: CaplabProxy) -> None:
        self.channels.add(channel)
        metrics = self.settings.metrics
        if metrics is not None:
            metrics.connectionOpened()
        if self._sweep is None:
            self._sweep = self.clock.callLater(self._sweepPeriod(), self._sweepDeadlines)

    def channelClosed(self, channel: CaplabProxy) -> None:
        if channel in self.channels:
            self.channels.discard(channel)
            metrics = self.settings.metrics
            if metrics is not None:
                metrics.connectionClosed()

    def _sweepPeriod(self) -> float:
        return max(min((self.settings.headerTimeout or 4) / 4, 1.0), 0.05)

    def _sweepDeadlines(self) -> None:
        self._sweep = None
        now = self.clock.seconds()
        for channel in list(self.channels):
            channel.checkDeadlines(now)
        if self.channels:
            self._sweep = self.clock.callLater(self._sweepPeriod(), self._sweepDeadlines)

    # Access log

    def log(self, exchange: Exchange) -> None:
        """
        One access log line for a finished request or a closed tunnel.
        """
        answer = exchange.answer
        metrics = self.settings.metrics
        if metrics is not None:
            metrics.requestDone(exchange.method, answer.code, answer.sentLength)
        accessLog = self.accessLog
        if accessLog is None:
            return
        accessLog.record(
            exchange.clientHost,
            exchange.user,
            exchange.method,
            exchange.uri,
            exchange.version,
            answer.code,
            answer.sentLength,
            exchange.referer,
            exchange.userAgent,
            answer.cacheStatus,
        )

    def logRefusal(self, channel: CaplabProxy, code: int, size: int) -> None:
        """
        The line for a request refused before it could be parsed (414, 431, 400, 408).
        """
        if self.accessLog is not None:
            self.accessLog.record(
                channel.clientHost, None, b"-", b"-", b"-", code, size, None, None
            )
