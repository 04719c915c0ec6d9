"""
Tests for L{caplab.metrics.operations}: under C{--workers}, the supervisor's purge and flush
reach every worker's cache through the metrics directory.
"""

from __future__ import annotations

import os
import shutil

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from caplab.metrics.admin import AdminSite, adminResource
from caplab.metrics.directory import MetricsDirectory
from caplab.metrics.operations import (
    COMMAND_LIFETIME,
    Command,
    CommandRunner,
    NoCache,
    WorkersCacheAdmin,
    issueCommand,
    readCommands,
    readResults,
)
from caplab.metrics.publisher import WorkerPublisher
from caplab.metrics.registry import Metrics
from tests.test_metrics_admin import FakeCacheAdmin, Response
from tests.test_metrics_shared import InlineOffloader, temporaryDirectory

ID = "0123456789abcdef0123456789abcdef"


class CommandTests(SynchronousTestCase):
    """
    The command files.
    """

    def test_validated(self) -> None:
        """
        A command is checked field by field: its id, operation, URL (a purge's only) and
        time.
        """
        good = {"id": ID, "op": "purge", "url": "http://example.com/", "issued": 5.0}
        self.assertEqual(Command.fromJSON(good), Command(ID, "purge", "http://example.com/", 5.0))
        changes: list[dict[str, object]] = [
            {"id": "../../etc"},
            {"op": "delete"},
            {"url": None},
            {"op": "flush"},
            {"issued": "now"},
            {"issued": True},
        ]
        for change in changes:
            self.assertRaises(ValueError, Command.fromJSON, {**good, **change})

    def test_runOnce(self) -> None:
        """
        A worker runs each command once, ignores one older than a minute, and answers
        "no cache" when it has none.
        """
        path = temporaryDirectory(self)
        now = [1000.0]
        cache = FakeCacheAdmin(3)
        runner = CommandRunner(path, InlineOffloader(), 101, cache, lambda: now[0])
        fresh = Command(ID, "flush", None, 990.0)
        old = Command("f" * 32, "purge", "http://a/", 1000.0 - COMMAND_LIFETIME - 1)
        runner.run([fresh, old])
        runner.run([fresh, old])
        self.assertEqual(cache.calls, [("flush",)])
        self.assertEqual(readResults(path, ID), {101: 3})
        CommandRunner(path, InlineOffloader(), 102, now=lambda: now[0]).run([fresh])
        self.assertEqual(readResults(path, ID), {101: 3, 102: "no cache"})


class WorkersCacheAdminTests(SynchronousTestCase):
    """
    L{WorkersCacheAdmin}: the supervisor asks, the workers answer when they next publish.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1000)
        self.directory = MetricsDirectory(InlineOffloader(), now=self.reactor.seconds)
        self.path = self.directory.create()
        self.addCleanup(shutil.rmtree, self.path, True)
        self.caches = [FakeCacheAdmin(2), FakeCacheAdmin(3)]
        self.workers = [
            WorkerPublisher(
                Metrics(now=self.reactor.seconds),
                self.path,
                self.reactor,
                InlineOffloader(),
                index,
                100 + index,
                cache=cache,
            )
            for index, cache in enumerate(self.caches, 1)
        ]
        for worker in self.workers:
            worker.publish()
        self.admin = WorkersCacheAdmin(
            self.directory, self.reactor, timeout=5.0, poll=0.1, now=self.reactor.seconds
        )

    def test_everyWorker(self) -> None:
        """
        A purge reaches every worker's cache when it next publishes; the answer adds up
        theirs, and the files go.
        """
        d = self.admin.purge("http://example.com/a")
        self.assertEqual([c.operation for c in readCommands(self.path)], ["purge"])
        self.assertNoResult(d)
        for worker in self.workers:
            worker.publish()
        self.reactor.advance(0.1)
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual([c.calls for c in self.caches], [[("purge", "http://example.com/a")]] * 2)
        self.assertEqual(readCommands(self.path), [])
        self.assertFalse([n for n in os.listdir(self.path) if n.startswith("result-")])

    def test_silentWorker(self) -> None:
        """
        A worker that does not answer in time is logged; the others' total is the answer.
        """
        d = self.admin.flush()
        self.workers[0].publish()
        with capturedLogs() as events:
            for _ in range(60):
                self.reactor.advance(0.1)
        self.assertEqual(self.successResultOf(d), 2)
        [line] = [e for e in events if "incomplete" in e.get("log_format", "")]
        self.assertIn("pid 102: no answer within 5s", line["problems"])

    def test_noAnswerAtAll(self) -> None:
        """
        If no worker answers, the operation fails.
        """
        d = self.admin.flush()
        for _ in range(60):
            self.reactor.advance(0.1)
        self.failureResultOf(d, RuntimeError)

    def test_noCache(self) -> None:
        """
        Workers without a cache make it a L{NoCache}, which the admin site answers 404.
        """
        for worker in self.workers:
            worker.commands.cache = None
        d = self.admin.flush()
        for worker in self.workers:
            worker.publish()
        self.reactor.advance(0.1)
        self.failureResultOf(d, NoCache)

    def test_throughTheSite(self) -> None:
        """
        C{POST /cache/flush} on the supervisor's admin endpoint answers with every worker's
        total.
        """
        site = AdminSite(adminResource(self.directory, self.admin), reactor=self.reactor)
        self.addCleanup(site.stopFactory)
        channel = site.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 4000))
        channel.makeConnection(transport)
        channel.dataReceived(b"POST /cache/flush HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(transport.value(), b"")
        for worker in self.workers:
            worker.publish()
        self.reactor.advance(0.1)
        response = Response(transport.value())
        self.assertEqual((response.code, response.json()), (200, {"flushed": 5}))

    def test_stale(self) -> None:
        """
        Files left over from long ago are removed when a command is issued.
        """
        leftover = os.path.join(self.path, f"result-{ID}-101.json")
        with open(leftover, "w") as f:
            f.write("{}")
        os.utime(leftover, (0, 0))
        self.assertEqual(
            issueCommand(self.path, Command("a" * 32, "flush", None, 1000.0)), [101, 102]
        )
        self.assertFalse(os.path.exists(leftover))
