"""
The C{--workers} metrics directory: how the workers' figures become the whole server's.

The supervisor creates a private directory (L{caplab.metrics.directory.MetricsDirectory})
and names it to every worker in C{CAPLAB_METRICS_DIR}.  Once a second each worker
(L{caplab.metrics.publisher.WorkerPublisher}) writes what its collector reads, its process
figures and its recent request rate to C{worker-PID.json} (atomically: a new file renamed
over the old), then reads every worker's file back for its status pages.  The supervisor
reads them for C{/metrics}.  When a worker has ended, the supervisor folds its counters into
C{ended.json} (so nothing counted is lost when a worker is restarted) and removes its file;
gauges (open connections, cache bytes, process memory) are only ever the running workers'.

This module is the directory's contents: the file format, reading and writing them (blocking:
run off the reactor thread), and adding the figures up (pure).
"""

from __future__ import annotations

import glob
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric

from caplab.metrics.process import PREFIX as PROCESS_PREFIX

#: The environment variable naming the metrics directory to a worker.
METRICS_ENVIRONMENT = "CAPLAB_METRICS_DIR"

#: A file of the directory larger than this is not read (a worker's is a few kilobytes).
MAX_FILE_SIZE = 4 * 1024 * 1024

#: Metric types whose samples only grow: added up over every worker, ended ones included.
CUMULATIVE = frozenset({"counter", "histogram", "summary"})

SERVER_FILE = "server.json"
ENDED_FILE = "ended.json"
_WORKER_GLOB = "worker-*.json"


def workerFile(directory: str, pid: int) -> str:
    return os.path.join(directory, f"worker-{pid}.json")


# Encoding.


def encodeFamilies(families: Iterable[Metric]) -> list[dict[str, Any]]:
    """
    Metric families as JSON-ready values (names, types, help and samples; no exemplars).
    """
    return [
        {
            "name": family.name,
            "type": family.type,
            "help": family.documentation,
            "unit": family.unit,
            "samples": [[s.name, dict(s.labels), s.value] for s in family.samples],
        }
        for family in families
    ]


def decodeFamilies(data: object) -> list[Metric]:
    """
    The metric families L{encodeFamilies} encoded.

    @raise ValueError: C{data} is not such an encoding (every field is checked by type).
    """
    if not isinstance(data, list):
        raise ValueError("families: not a list")
    families = []
    for item in data:
        if not isinstance(item, dict):
            raise ValueError("family: not an object")
        name, typ, help, unit = (item.get(k) for k in ("name", "type", "help", "unit"))
        if not (
            isinstance(name, str)
            and isinstance(typ, str)
            and isinstance(help, str)
            and isinstance(unit, str)
        ):
            raise ValueError("family: name, type, help or unit is not text")
        family = Metric(name, help, typ, unit)
        samples = item.get("samples")
        if not isinstance(samples, list):
            raise ValueError(f"{name}: samples not a list")
        for sample in samples:
            if not (isinstance(sample, list) and len(sample) == 3):
                raise ValueError(f"{name}: a sample is not [name, labels, value]")
            sampleName, labels, value = sample
            if not isinstance(sampleName, str) or not isinstance(labels, dict):
                raise ValueError(f"{name}: a sample's name or labels are malformed")
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
                raise ValueError(f"{name}: a label is not text")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name}: a sample's value is not a number")
            family.add_sample(sampleName, labels, float(value))
        families.append(family)
    return families


def decodeRate(data: object) -> dict[int, int]:
    """
    Requests by rate bucket, from JSON (bucket numbers as text).

    @raise ValueError: malformed.
    """
    if not isinstance(data, dict):
        raise ValueError("rate: not an object")
    rate = {}
    for slot, count in data.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("rate: a count is not a whole number")
        rate[int(slot)] = count
    return rate


def _number(data: Mapping[str, object], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key}: not a number")
    return float(value)


# Adding up.


def mergeFamilies(live: Sequence[Sequence[Metric]], ended: Sequence[Metric] = ()) -> list[Metric]:
    """
    The whole server's families from each running worker's (C{live}) and what ended workers
    counted (C{ended}): samples with the same name and labels are added up, except
    C{_created} times (the earliest is kept); C{ended}'s gauges are ignored.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}

    def add(family: Metric) -> None:
        if family.name not in families:
            families[family.name] = Metric(
                family.name, family.documentation, family.type, family.unit
            )
            values[family.name] = {}
        found = values[family.name]
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key not in found:
                found[key] = sample.value
            elif sample.name.endswith("_created"):
                found[key] = min(found[key], sample.value)
            else:
                found[key] += sample.value

    for worker in live:
        for family in worker:
            add(family)
    for family in ended:
        if family.type in CUMULATIVE:
            add(family)
    for name, family in families.items():
        for (sampleName, labels), value in values[name].items():
            family.add_sample(sampleName, dict(labels), value)
    return list(families.values())


def lasting(families: Iterable[Metric]) -> list[Metric]:
    """
    What of a worker's figures outlives it: its counters and histograms, not its gauges
    nor its process figures (labelled with its pid, which is gone).
    """
    return [f for f in families if f.type in CUMULATIVE and not f.name.startswith(PROCESS_PREFIX)]


def mergeRates(rates: Iterable[Mapping[int, int]], oldest: int | None = None) -> dict[int, int]:
    """
    Requests by rate bucket added up; buckets before C{oldest} dropped.
    """
    total: dict[int, int] = {}
    for rate in rates:
        for slot, count in rate.items():
            if oldest is None or slot >= oldest:
                total[slot] = total.get(slot, 0) + count
    return total


# The files.


@dataclass(frozen=True)
class WorkerSnapshot:
    """
    What one worker last wrote: who it is, when it started and wrote, its families (process
    figures labelled with its C{pid}) and its recent request rate.
    """

    pid: int
    index: int | None
    started: float | None
    written: float | None
    families: list[Metric]
    rate: dict[int, int]

    def toJSON(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "index": self.index,
            "started": self.started,
            "written": self.written,
            "families": encodeFamilies(self.families),
            "rate": {str(slot): count for slot, count in self.rate.items()},
        }

    @classmethod
    def fromJSON(cls, data: object) -> WorkerSnapshot:
        """
        @raise ValueError: not a worker's snapshot.
        """
        if not isinstance(data, dict):
            raise ValueError("not an object")
        pid, index = data.get("pid"), data.get("index")
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise ValueError("pid: not a whole number")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise ValueError("index: not a whole number")
        return cls(
            pid,
            index,
            _number(data, "started"),
            _number(data, "written"),
            decodeFamilies(data.get("families")),
            decodeRate(data.get("rate", {})),
        )


@dataclass(frozen=True)
class DirectoryState:
    """
    Everything in a metrics directory, as read at one moment.

    @ivar started: when the supervisor started (None if it did not say).
    @ivar workers: the running workers' snapshots, by worker number then pid.
    @ivar ended: the counters and histograms of the workers that have ended.
    @ivar endedRate: their recent request rate.
    @ivar unreadable: files skipped because they were damaged or too large.
    """

    started: float | None = None
    workers: list[WorkerSnapshot] = field(default_factory=list)
    ended: list[Metric] = field(default_factory=list)
    endedRate: dict[int, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def families(self) -> list[Metric]:
        """
        The whole server's families.
        """
        return mergeFamilies([w.families for w in self.workers], self.ended)

    def rate(self, oldest: int | None = None) -> dict[int, int]:
        """
        The whole server's requests by rate bucket.
        """
        return mergeRates([*(w.rate for w in self.workers), self.endedRate], oldest)


def writeJSON(path: str, data: object) -> None:
    """
    Replace the file C{path} with C{data} as JSON, atomically (readers see the old file or
    the new one, never part of one).  Blocking.
    """
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, separators=(",", ":"))
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise


def readJSON(path: str) -> object:
    """
    The JSON value in C{path}.  Blocking.

    @raise OSError: it cannot be read.
    @raise ValueError: it is not JSON, or larger than L{MAX_FILE_SIZE}.
    """
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise ValueError(f"larger than {MAX_FILE_SIZE} bytes")
    return json.loads(data)


def readDirectory(directory: str) -> DirectoryState:
    """
    Read every file of a metrics directory (blocking: not in the reactor thread).  A file
    that is damaged is skipped and named in C{unreadable}; one that vanished while being
    read (a worker that just ended) is skipped silently.
    """
    unreadable: list[str] = []
    started = None
    try:
        server = readJSON(os.path.join(directory, SERVER_FILE))
        if isinstance(server, dict):
            started = _number(server, "started")
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        unreadable.append(SERVER_FILE)
    ended: list[Metric] = []
    endedRate: dict[int, int] = {}
    try:
        ended, endedRate = readEnded(directory)
    except (OSError, ValueError):
        unreadable.append(ENDED_FILE)
    workers = []
    for path in glob.glob(os.path.join(directory, _WORKER_GLOB)):
        try:
            workers.append(WorkerSnapshot.fromJSON(readJSON(path)))
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            unreadable.append(os.path.basename(path))
    workers.sort(key=lambda w: (w.index if w.index is not None else 1 << 30, w.pid))
    return DirectoryState(started, workers, ended, endedRate, unreadable)


def readEnded(directory: str) -> tuple[list[Metric], dict[int, int]]:
    """
    What the ended workers counted, and their request rate (nothing if none has ended).
    Blocking.

    @raise OSError, ValueError: C{ended.json} cannot be read or is damaged.
    """
    try:
        data = readJSON(os.path.join(directory, ENDED_FILE))
    except FileNotFoundError:
        return [], {}
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return decodeFamilies(data.get("families")), decodeRate(data.get("rate", {}))


def foldEnded(directory: str, pid: int, oldest: int | None = None) -> bool:
    """
    Worker C{pid} has ended: add what of its figures lasts (L{lasting}) and its request
    rate to C{ended.json}, then remove its file.  Blocking.

    @param oldest: rate buckets before this one are dropped.
    @return: whether it had a file.
    """
    path = workerFile(directory, pid)
    try:
        snapshot = WorkerSnapshot.fromJSON(readJSON(path))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        os.remove(path)  # damaged: nothing can be saved
        return True
    try:
        ended, endedRate = readEnded(directory)
    except ValueError:
        ended, endedRate = [], {}  # damaged: start it again rather than lose this worker's
    families = mergeFamilies([lasting(ended), lasting(snapshot.families)])
    rate = mergeRates([endedRate, snapshot.rate], oldest)
    writeJSON(
        os.path.join(directory, ENDED_FILE),
        {
            "families": encodeFamilies(families),
            "rate": {str(slot): count for slot, count in rate.items()},
        },
    )
    os.remove(path)
    return True
