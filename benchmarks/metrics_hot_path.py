"""
What counting costs a proxy request: a connection opened, its request head's bytes counted
(as the proxy's channel counts them, in its C{dataReceived}), the request counted (method
and status, rate history), its bytes sent counted, the connection closed.  Prints
microseconds per request (best of several runs).

    python benchmarks/metrics_hot_path.py            # this checkout's caplab.metrics
    python benchmarks/metrics_hot_path.py --old F    # a single-file metrics module F (A/B)

It prints figures; it asserts nothing (run it on a quiet machine for figures to quote).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Any

from twisted.internet.protocol import Protocol, ServerFactory

HEAD = b"GET http://127.0.0.1:8000/x HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"


class _Sink(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


class _Counting(Protocol):
    """
    Counts the bytes it receives as L{caplab.proxy.channel.CaplabProxy} does.
    """

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def dataReceived(self, data: bytes) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.receivedTotal += len(data)


def _setUp(old: str | None) -> tuple[Any, Any]:
    factory = ServerFactory.forProtocol(_Sink)
    if old is None:
        from caplab.metrics.registry import Metrics

        metrics = Metrics()
        return metrics, _Counting(metrics)
    spec = importlib.util.spec_from_file_location("old_metrics", old)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metrics = module.Metrics(shared=None)
    return metrics, module.countReceivedBytes(factory, metrics).buildProtocol(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", help="a single-file caplab/metrics.py to compare with")
    parser.add_argument("--requests", type=int, default=200_000)
    arguments = parser.parse_args()
    metrics, protocol = _setUp(arguments.old)

    if hasattr(metrics, "bytesSent"):  # an older caplab: the bytes sent counted apart

        def done() -> None:
            metrics.requestDone(b"GET", 200)
            metrics.bytesSent(1234)
    else:

        def done() -> None:
            metrics.requestDone(b"GET", 200, 1234)

    def request() -> None:
        metrics.connectionOpened()
        protocol.dataReceived(HEAD)
        done()
        metrics.connectionClosed()

    for _ in range(1000):
        request()
    runs = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(arguments.requests):
            request()
        runs.append((time.perf_counter() - started) / arguments.requests * 1e6)
    which = arguments.old or "caplab.metrics"
    print(f"{which}: {min(runs):.3f} us per request (best of 7; median {sorted(runs)[3]:.3f})")


if __name__ == "__main__":
    main()
