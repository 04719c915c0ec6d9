"""
The proxy's factory in a C{--workers} worker (L{WorkerProxyFactory}).

The proxy itself is built by the composition root, L{caplab.wiring.buildProxy}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import LoopingCall

from caplab.metrics import sums
from caplab.proxy.accesslog import AccessLog
from caplab.proxy.channel import ProxySettings
from caplab.proxy.factory import ProxyFactory


class WorkerProxyFactory(ProxyFactory):
    """
    The proxy's factory in a C{--workers} worker: its status page shows the whole server's
    figures (every worker's, from the metrics directory), and says which worker answered;
    while it runs, it publishes this worker's request rate there every second (for the
    chart of C{/stats}).
    """

    def __init__(self, settings: ProxySettings, accessLog: AccessLog | None, worker: str) -> None:
        super().__init__(settings, accessLog)
        self.worker = worker
        self._publishing: LoopingCall | None = None

    def startFactory(self) -> None:
        super().startFactory()
        self._publishing = LoopingCall(self.settings.metrics.history.publish)
        self._publishing.clock = self.clock
        self._publishing.start(1.0, now=False)

    def stopFactory(self) -> None:
        if self._publishing is not None and self._publishing.running:
            self._publishing.stop()
        self._publishing = None
        self.settings.metrics.history.publish()
        super().stopFactory()

    def counters(self) -> dict[str, int]:
        totals = sums(self.settings.metrics.families())

        def total(name: str) -> int:
            return int(totals.get(name, 0))

        figures: dict[str, Any] = {
            "answered by": self.worker,
            "open connections": total("caplab_proxy_active_connections"),
            "connections since start": total("caplab_proxy_connections_total"),
            "connections refused (--max-connections)": total(
                "caplab_proxy_refused_connections_total"
            ),
            "requests since start": total("caplab_proxy_requests_total"),
            "open tunnels": total("caplab_proxy_active_tunnels"),
            "tunnels since start": total("caplab_proxy_tunnels_total"),
        }
        return figures
