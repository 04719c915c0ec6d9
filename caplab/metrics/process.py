"""
A process's own figures (resident and virtual memory, CPU seconds, open and maximum file
descriptors, start time) from prometheus-client's C{ProcessCollector}, named
C{caplab_process_*}.

They are read from C{/proc}: call L{processFamilies} off the reactor thread (L{caplab.metrics.
offload}).  Under C{--workers} each process's are kept apart, labelled with its C{pid}
(L{labelled}), rather than added up: one worker's memory or CPU is what an operator looks
for, and Prometheus' C{sum()} gives the whole server's.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric

#: The prefix of every process figure's name.
PREFIX = "caplab_process_"

_collector: ProcessCollector | None = None


def processFamilies() -> list[Metric]:
    """
    This process's figures now (nothing where C{/proc} is missing).  Blocks briefly on
    C{/proc}: not for the reactor thread.
    """
    global _collector
    if _collector is None:
        _collector = ProcessCollector(namespace="caplab", registry=None)
    return list(_collector.collect())


def labelled(families: Iterable[Metric], name: str, value: str) -> list[Metric]:
    """
    Copies of C{families} with label C{name}=C{value} added to every sample.
    """
    found = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            copy.add_sample(sample.name, {**sample.labels, name: value}, sample.value)
        found.append(copy)
    return found
