"""
Tests for the C{--workers} metrics directory: L{caplab.metrics.shared} (its files, adding
them up), L{caplab.metrics.publisher} (a worker's side), L{caplab.metrics.directory} (the
supervisor's side) and L{caplab.metrics.offload} (the thread they read and write in).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from caplab.metrics.directory import MetricsDirectory
from caplab.metrics.figures import Figures, sums
from caplab.metrics.offload import Offloader
from caplab.metrics.publisher import WorkerPublisher
from caplab.metrics.registry import Metrics
from caplab.metrics.shared import (
    ENDED_FILE,
    MAX_FILE_SIZE,
    METRICS_ENVIRONMENT,
    WorkerSnapshot,
    decodeFamilies,
    encodeFamilies,
    foldEnded,
    mergeFamilies,
    readDirectory,
    workerFile,
)
from caplab.proxy.filters.reporting import COUNTERS, FilterCounters
from caplab.workers import WorkerSupervisor
from tests.test_workers import FakeProcessReactor, ended


class InlineOffloader:
    """
    Runs each job at once, in the calling thread (for tests).
    """

    def run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return maybeDeferred(f, *args)


class QueuedOffloader:
    """
    Keeps each job until L{runAll} (to see what happens before the thread gets to it).
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def run(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((d, f, args))
        return d

    def runAll(self) -> None:
        jobs, self.jobs = self.jobs, []
        for d, f, args in jobs:
            maybeDeferred(f, *args).chainDeferred(d)


def counter(name: str, value: float, created: float = 1.0) -> Metric:
    return CounterMetricFamily(name, "help", value=value, created=created)


def gauge(name: str, value: float) -> Metric:
    return GaugeMetricFamily(name, "help", value=value)


def temporaryDirectory(case: SynchronousTestCase) -> str:
    path = tempfile.mkdtemp(prefix="caplab-test-metrics-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


class FormatTests(SynchronousTestCase):
    """
    The files' format and how figures add up.
    """

    def test_roundTrip(self) -> None:
        """
        Encoded families decode to the same names, types and samples.
        """
        families = [counter("c", 3, 7.0), gauge("g", 2.5)]
        decoded = decodeFamilies(json.loads(json.dumps(encodeFamilies(families))))
        self.assertEqual(
            [(f.name, f.type, [(s.name, s.labels, s.value) for s in f.samples]) for f in decoded],
            [
                ("c", "counter", [("c_total", {}, 3.0), ("c_created", {}, 7.0)]),
                ("g", "gauge", [("g", {}, 2.5)]),
            ],
        )

    def test_malformed(self) -> None:
        """
        Anything but an encoding of families is refused, field by field.
        """
        for bad in [
            {},
            [1],
            [{"name": "x", "type": "counter", "help": "h", "unit": ""}],
            [{"name": 1, "type": "counter", "help": "h", "unit": "", "samples": []}],
            [{"name": "x", "type": "gauge", "help": "h", "unit": "", "samples": [["x", {}]]}],
            [{"name": "x", "type": "gauge", "help": "h", "unit": "", "samples": [["x", {}, "1"]]}],
            [{"name": "x", "type": "gauge", "help": "h", "unit": "", "samples": [["x", {}, True]]}],
            [
                {
                    "name": "x",
                    "type": "gauge",
                    "help": "h",
                    "unit": "",
                    "samples": [["x", {"a": 1}, 1]],
                }
            ],
        ]:
            self.assertRaises(ValueError, decodeFamilies, bad)
        self.assertRaises(ValueError, WorkerSnapshot.fromJSON, {"pid": True, "families": []})
        self.assertRaises(
            ValueError, WorkerSnapshot.fromJSON, {"pid": 1, "families": [], "started": "x"}
        )

    def test_merge(self) -> None:
        """
        Counters add up over running and ended workers (their C{_created} is the earliest);
        gauges over running workers only; labelled samples stay apart.
        """
        one = [counter("c", 3, 5.0), gauge("g", 2)]
        two = [counter("c", 4, 2.0), gauge("g", 1)]
        endedOnes = [counter("c", 10, 1.0), gauge("g", 100)]
        three = GaugeMetricFamily("p", "help", labels=["pid"])
        three.add_metric(["1"], 5)
        four = GaugeMetricFamily("p", "help", labels=["pid"])
        four.add_metric(["2"], 6)
        merged = mergeFamilies([one + [three], two + [four]], endedOnes)
        found = {(s.name, tuple(s.labels.items())): s.value for f in merged for s in f.samples}
        self.assertEqual(
            found,
            {
                ("c_total", ()): 17,
                ("c_created", ()): 1.0,
                ("g", ()): 3,
                ("p", (("pid", "1"),)): 5,
                ("p", (("pid", "2"),)): 6,
            },
        )


class DirectoryFileTests(SynchronousTestCase):
    """
    Reading a directory and folding an ended worker into it.
    """

    def setUp(self) -> None:
        self.path = temporaryDirectory(self)

    def write(self, pid: int, families: list[Metric], rate: dict[int, int] | None = None) -> None:
        snapshot = WorkerSnapshot(pid, pid - 100, 50.0, 60.0, families, rate or {})
        with open(workerFile(self.path, pid), "w") as f:
            json.dump(snapshot.toJSON(), f)

    def test_read(self) -> None:
        """
        Every worker's file is read (by worker number); damaged and oversized files are
        skipped and named.
        """
        self.write(102, [counter("c", 2)], {7: 3})
        self.write(101, [counter("c", 1)], {7: 1, 8: 2})
        with open(workerFile(self.path, 103), "w") as f:
            f.write('{"pid": 103, "families": [{"name": 5}]}')
        with open(workerFile(self.path, 104), "w") as f:
            f.write(" " * (MAX_FILE_SIZE + 1))
        state = readDirectory(self.path)
        self.assertEqual([w.pid for w in state.workers], [101, 102])
        self.assertEqual(sorted(state.unreadable), ["worker-103.json", "worker-104.json"])
        self.assertEqual(sums(state.families())["c_total"], 3)
        self.assertEqual(state.rate(), {7: 4, 8: 2})
        self.assertEqual(state.rate(oldest=8), {8: 2})

    def test_fold(self) -> None:
        """
        An ended worker's counters and rate are kept in C{ended.json}, its gauges and
        process figures are not, and its file goes; folding a second adds to the first.
        """
        process = GaugeMetricFamily("caplab_process_open_fds", "help", labels=["pid"])
        process.add_metric(["101"], 9)
        self.write(101, [counter("c", 5), gauge("g", 3), process], {7: 2})
        self.write(102, [counter("c", 1), gauge("g", 1)], {7: 1})
        self.assertTrue(foldEnded(self.path, 101))
        self.assertFalse(os.path.exists(workerFile(self.path, 101)))
        self.assertFalse(foldEnded(self.path, 101))
        state = readDirectory(self.path)
        totals = sums(state.families())
        self.assertEqual(totals["c_total"], 6)
        self.assertEqual(totals["g"], 1)
        self.assertNotIn("caplab_process_open_fds", totals)
        self.assertEqual(state.rate(), {7: 3})
        self.write(103, [counter("c", 4)], {9: 1})
        foldEnded(self.path, 103, oldest=8)
        state = readDirectory(self.path)
        self.assertEqual(sums(state.ended)["c_total"], 9)
        self.assertEqual(state.endedRate, {9: 1})

    def test_foldDamaged(self) -> None:
        """
        A damaged file of an ended worker is removed (nothing in it can be kept).
        """
        with open(workerFile(self.path, 101), "w") as f:
            f.write("{")
        self.assertTrue(foldEnded(self.path, 101))
        self.assertEqual(os.listdir(self.path), [])


class PublisherTests(SynchronousTestCase):
    """
    A worker's side: L{WorkerPublisher}.
    """

    def setUp(self) -> None:
        self.path = temporaryDirectory(self)
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1000)

    def worker(self, pid: int, offloader: Any = None) -> tuple[Metrics, WorkerPublisher]:
        metrics = Metrics(now=self.reactor.seconds)
        publisher = WorkerPublisher(
            metrics, self.path, self.reactor, offloader or InlineOffloader(), pid - 100, pid
        )
        return metrics, publisher

    def test_wholeServer(self) -> None:
        """
        Each worker publishes at once and every second; the figures (and so the pages and
        C{metrics.families()}) are every worker's, with a row per worker.
        """
        one, oneP = self.worker(101)
        two, twoP = self.worker(102)
        one.requestDone(b"GET", 200)
        one.connectionOpened()
        two.requestDone(b"GET", 200)
        two.requestDone(b"GET", 404)
        oneP.startService()
        twoP.startService()
        self.addCleanup(oneP.stopService)
        self.addCleanup(twoP.stopService)
        self.assertEqual(sorted(os.listdir(self.path)), ["worker-101.json", "worker-102.json"])
        self.reactor.advance(1)
        figures = oneP.figures()
        self.assertEqual(figures.total("caplab_proxy_requests_total"), 3)
        self.assertEqual(figures.total("caplab_proxy_active_connections"), 1)
        self.assertEqual([(w.pid, w.index) for w in figures.workers], [(101, 1), (102, 2)])
        self.assertEqual(figures.workers[1].total("caplab_proxy_requests_total"), 2)
        self.assertEqual(sum(rate for _, rate in figures.rate) * 10, 3)
        self.assertIs(one.server, oneP)
        self.assertEqual(sums(one.families())["caplab_proxy_requests_total"], 3)
        if os.path.isdir("/proc/self"):
            memory = ("caplab_process_resident_memory_bytes", (("pid", "101"),))
            found = {
                (s.name, tuple(s.labels.items())): s.value
                for f in figures.families
                for s in f.samples
            }
            self.assertGreater(found[memory], 0)

    def test_offTheReactorThread(self) -> None:
        """
        Publishing only hands the figures to the metrics thread: nothing is written until
        that runs; the pages meanwhile serve what was read before, from memory.
        """
        queued = QueuedOffloader()
        metrics, publisher = self.worker(101, queued)
        metrics.requestDone(b"GET", 200)
        publisher.publish()
        self.assertEqual(os.listdir(self.path), [])
        self.assertEqual(publisher.figures().total("caplab_proxy_requests_total"), 1)
        queued.runAll()
        self.assertEqual(os.listdir(self.path), ["worker-101.json"])
        metrics.requestDone(b"GET", 200)
        shutil.rmtree(self.path)
        self.assertEqual(publisher.figures().total("caplab_proxy_requests_total"), 1)

    def test_problemsLoggedOnce(self) -> None:
        """
        When the directory cannot be written, one line says so, not one a second.
        """
        _, publisher = self.worker(101)
        shutil.rmtree(self.path)
        with capturedLogs() as events:
            publisher.startService()
            self.reactor.advance(1)
            self.reactor.advance(1)
            publisher.stopService()
        warnings = [e for e in events if "cannot share" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_finalWrite(self) -> None:
        """
        At shutdown, once everything else has stopped, the last figures are written.
        """
        metrics, publisher = self.worker(101)
        publisher.startService()
        publisher.stopService()
        metrics.requestDone(b"GET", 200)
        [(trigger, args, kwargs)] = self.reactor.triggers["after"]["shutdown"]
        trigger(*args, **kwargs)
        state = readDirectory(self.path)
        self.assertEqual(sums(state.families())["caplab_proxy_requests_total"], 1)


class MetricsDirectoryTests(SynchronousTestCase):
    """
    The supervisor's side: L{MetricsDirectory}.
    """

    def setUp(self) -> None:
        self.directory = MetricsDirectory(InlineOffloader(), now=lambda: 5000.0)
        self.path = self.directory.create()
        self.addCleanup(shutil.rmtree, self.path, True)

    def publish(self, pid: int, work: Callable[[Metrics], object]) -> None:
        reactor = MemoryReactorClock()
        metrics = Metrics(now=lambda: 5000.0)
        work(metrics)
        WorkerPublisher(metrics, self.path, reactor, InlineOffloader(), pid - 100, pid).publish()

    def test_private(self) -> None:
        """
        The directory is private, notes when the server started, and is named in the
        workers' environment.
        """
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o700)
        self.assertEqual(self.directory.environment(), {METRICS_ENVIRONMENT: self.path})
        self.assertEqual(readDirectory(self.path).started, 5000.0)
        self.successResultOf(self.directory.remove())
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(self.directory.environment(), {})

    def test_scrape(self) -> None:
        """
        C{/metrics} of the supervisor adds up the workers, and has each process's own
        figures under its pid; an ended worker's counts stay, its gauges go.
        """

        def work(metrics: Metrics) -> None:
            metrics.connectionOpened()
            metrics.requestDone(b"GET", 200)

        self.publish(101, work)
        self.publish(102, work)
        families = self.successResultOf(self.directory.scrape())
        totals = sums(families)
        self.assertEqual(totals["caplab_proxy_requests_total"], 2)
        self.assertEqual(totals["caplab_proxy_active_connections"], 2)
        if os.path.isdir("/proc/self"):
            pids = {
                s.labels["pid"]
                for f in families
                if f.name == "caplab_process_resident_memory_bytes"
                for s in f.samples
            }
            self.assertEqual(pids, {"101", "102", str(os.getpid())})
        self.successResultOf(self.directory.processEnded(101))
        families = self.successResultOf(self.directory.scrape())
        totals = sums(families)
        self.assertEqual(totals["caplab_proxy_requests_total"], 2)
        self.assertEqual(totals["caplab_proxy_active_connections"], 1)

    def test_filterEvents(self) -> None:
        """
        The content filters' events travel like the other counters: the supervisor's
        C{/metrics} and every worker's pages add them up by kind, and an ended worker's
        stay counted.
        """

        def filtered(cookies: int) -> Callable[[Metrics], object]:
            counters = FilterCounters()
            counters.add("cookies-dropped", cookies)
            return lambda metrics: metrics.watchFilters(counters)

        self.publish(101, filtered(2))
        self.publish(102, filtered(5))

        def events(families: list[Metric]) -> dict[str, float]:
            return Figures(families, [], 0.0, 0.0).byLabel("caplab_filter_events_total", "what")

        found = events(self.successResultOf(self.directory.scrape()))
        self.assertEqual(found, {**dict.fromkeys(COUNTERS, 0.0), "cookies-dropped": 7.0})
        assert self.directory.path is not None
        self.assertEqual(events(readDirectory(self.directory.path).families()), found)
        self.successResultOf(self.directory.processEnded(101))
        self.publish(103, filtered(1))
        found = events(self.successResultOf(self.directory.scrape()))
        self.assertEqual(found["cookies-dropped"], 8)
        self.assertEqual(found["rewrites"], 0)

    def test_orderedAfterFolding(self) -> None:
        """
        Folding and removal go through the metrics thread in order: the directory is
        removed only after an ended worker's figures were folded.
        """
        queued = QueuedOffloader()
        directory = MetricsDirectory(queued)
        path = directory.create()
        self.addCleanup(shutil.rmtree, path, True)
        directory.processEnded(101)
        removed = directory.remove()
        self.assertTrue(os.path.isdir(path))
        self.assertEqual([f.__name__ for _, f, _ in queued.jobs], ["foldEnded", "rmtree"])
        queued.runAll()
        self.successResultOf(removed)
        self.assertFalse(os.path.exists(path))


class SupervisorDirectoryTests(SynchronousTestCase):
    """
    The C{--workers} supervisor gives its workers the metrics directory and cleans up.
    """

    def test_lifecycle(self) -> None:
        """
        The directory is created before the first worker starts and named in each worker's
        environment; a worker's end folds its figures; it is removed once all have
        stopped.
        """
        reactor = FakeProcessReactor()
        directory = MetricsDirectory(InlineOffloader())
        supervisor = WorkerSupervisor(
            reactor,
            2,
            [],
            lambda: [],
            grace=1.0,
            environ={},
            publish=lambda event: None,
            metricsDirectory=directory,
        )
        supervisor.startService()
        path = directory.path
        assert path is not None
        self.assertEqual(
            [each["env"][METRICS_ENVIRONMENT] for each in reactor.spawned], [path, path]
        )
        first = reactor.spawned[0]
        pid = first["transport"].pid
        with open(workerFile(path, pid), "w") as f:
            json.dump(WorkerSnapshot(pid, 1, 1.0, 2.0, [counter("c", 4)], {}).toJSON(), f)
        first["protocol"].processEnded(ended())
        self.assertFalse(os.path.exists(workerFile(path, pid)))
        self.assertTrue(os.path.exists(os.path.join(path, ENDED_FILE)))
        stopped = supervisor.stopService()
        for each in reactor.spawned[1:]:
            each["protocol"].processEnded(ended(0))
        self.successResultOf(stopped)
        self.assertFalse(os.path.exists(path))
        self.assertIsNone(directory.path)


class OffloaderTests(TestCase):
    """
    L{Offloader} runs jobs in a thread of its own, one at a time, and stops with the
    reactor.
    """

    timeout = 10

    async def test_ownThread(self) -> None:
        from twisted.internet import reactor

        offloader = Offloader(reactor)
        self.addCleanup(offloader.stop)
        first = await offloader.run(lambda: threading.current_thread())
        second = await offloader.run(lambda: threading.current_thread())
        self.assertIsNot(first, threading.main_thread())
        self.assertIs(first, second)
        self.assertIn("caplab-metrics", first.name)
        offloader.stop()
        self.assertFalse(first.is_alive())
        with self.assertRaises(RuntimeError):
            await offloader.run(lambda: None)
