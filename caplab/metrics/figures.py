"""
What the status pages show, read at one moment: L{Figures}, built from the same metric
families C{/metrics} exports (so the two always agree), and where they come from
(L{FiguresSource}): this process's L{Metrics} (L{LocalFigures}), or under C{--workers} the
whole server's as last read from the metrics directory (L{caplab.metrics.shared}).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from prometheus_client.metrics_core import Metric

from caplab.metrics.history import INTERVAL
from caplab.metrics.registry import Metrics


def sums(families: Iterable[Metric]) -> dict[str, float]:
    """
    Each sample name's value, summed over its labels.
    """
    found: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            found[sample.name] = found.get(sample.name, 0.0) + sample.value
    return found


@dataclass(frozen=True)
class WorkerFigures:
    """
    One C{--workers} worker's own figures: its process id, number, start time, and sample
    totals (L{sums} of its families).
    """

    pid: int
    index: int | None
    started: float | None
    totals: Mapping[str, float]

    def total(self, name: str) -> float:
        return self.totals.get(name, 0.0)


@dataclass(frozen=True)
class Figures:
    """
    The server's figures at one moment.

    @ivar families: the whole server's metric families (as C{/metrics} has them).
    @ivar rate: (bucket start, requests per second) over the last minutes, oldest first.
    @ivar interval: the width of a rate bucket, in seconds.
    @ivar started: when the server started (under C{--workers}: the supervisor).
    @ivar now: when these figures were read.
    @ivar workers: under C{--workers}, each running worker's own figures.
    """

    families: Sequence[Metric]
    rate: Sequence[tuple[float, float]]
    started: float
    now: float
    interval: float = INTERVAL
    workers: Sequence[WorkerFigures] = field(default=())

    @cached_property
    def totals(self) -> dict[str, float]:
        return sums(self.families)

    def total(self, name: str) -> float:
        """
        The value of sample C{name} summed over its labels (0 if there is none).
        """
        return self.totals.get(name, 0.0)

    def has(self, name: str) -> bool:
        return name in self.totals

    @property
    def uptime(self) -> float:
        return max(self.now - self.started, 0.0)

    def byLabel(self, name: str, label: str) -> dict[str, float]:
        """
        The values of sample C{name} by its label C{label}, added up over any other label
        (e.g. the filters' events by C{what}).
        """
        found: dict[str, float] = {}
        for family in self.families:
            for sample in family.samples:
                if sample.name == name and label in sample.labels:
                    value = sample.labels[label]
                    found[value] = found.get(value, 0.0) + sample.value
        return found

    def requestsByStatus(self) -> list[tuple[str, str, int]]:
        """
        (method, status code, requests) for every pair seen, sorted.
        """
        found = []
        for family in self.families:
            if family.name == "caplab_proxy_requests":
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        labels = sample.labels
                        found.append((labels["method"], labels["code"], int(sample.value)))
        return sorted(found)

    def hitRatio(self) -> float | None:
        """
        Cache hits over hits and misses, or None before the first of either.
        """
        hits = self.total("caplab_cache_hits_total")
        looked = hits + self.total("caplab_cache_misses_total")
        return hits / looked if looked else None

    def meanLatency(self) -> float | None:
        count = self.total("caplab_proxy_upstream_latency_seconds_count")
        if not count:
            return None
        return self.total("caplab_proxy_upstream_latency_seconds_sum") / count


class FiguresSource(Protocol):
    """
    Gives the figures the pages show, from memory (never blocking).
    """

    def figures(self) -> Figures: ...


class LocalFigures:
    """
    The figures of a single-process server: its L{Metrics}, read when asked.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def figures(self) -> Figures:
        m = self.metrics
        history = m.history
        return Figures(
            families=list(m.registry.collect()),
            rate=history.series(),
            started=m.created,
            now=m.now(),
            interval=history.interval,
        )


def sourceOf(metrics: Metrics) -> FiguresSource:
    """
    Where the pages read C{metrics}' server's figures: the whole server's under
    C{--workers}, else C{metrics}' own.
    """
    if metrics.server is not None:
        server: FiguresSource = metrics.server
        return server
    return LocalFigures(metrics)
