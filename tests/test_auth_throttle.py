"""
Tests for L{caplab.proxy.throttle}: failures per address, fair scheduling of hash checks and
the rate-limited failure log, on a L{Clock} with checks that finish when the test says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.throttle import (
    CheckScheduler,
    FailureLog,
    FailureTable,
    Overloaded,
    throttleKey,
)


class FailureTableTests(SynchronousTestCase):
    """
    L{FailureTable}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.table = FailureTable(self.clock, halfLife=60, maxAddresses=3, free=2, maxDelay=8)

    def test_delayGrowsExponentially(self) -> None:
        """
        No delay for the first C{free} failures, then C{baseDelay} doubling, up to
        C{maxDelay}.
        """
        delays = []
        for _ in range(10):
            self.table.record("192.0.2.1")
            delays.append(self.table.delay("192.0.2.1"))
        self.assertEqual(delays, [0, 0, 0.5, 1, 2, 4, 8, 8, 8, 8])
        self.assertEqual(self.table.delay("192.0.2.2"), 0)

    def test_decays(self) -> None:
        """
        The score halves every C{halfLife}; a capped score recovers within a few half-lives
        of the end of a flood.
        """
        for _ in range(3):
            self.table.record("a")
        self.clock.advance(60)
        self.assertAlmostEqual(self.table.score("a"), 1.5)
        for _ in range(10_000):
            self.table.record("a")
        self.assertGreater(self.table.delay("a"), 0)
        self.clock.advance(60 * 5)
        self.assertEqual(self.table.delay("a"), 0)
        self.clock.advance(60 * 20)
        self.assertEqual(self.table.score("a"), 0)
        self.assertEqual(len(self.table), 0)

    def test_bounded(self) -> None:
        """
        At most C{maxAddresses} addresses are remembered, the least recently failing
        forgotten first.
        """
        for address in ["a", "b", "c", "a", "d"]:
            self.table.record(address)
        self.assertEqual(len(self.table), 3)
        self.assertEqual(self.table.score("b"), 0)
        self.assertEqual(self.table.score("a"), 2)

    def test_unknownAddress(self) -> None:
        """
        An unknown client (None) is never throttled.
        """
        for _ in range(10):
            self.table.record(None)
        self.assertEqual(self.table.delay(None), 0)


class ThrottleKeyTests(SynchronousTestCase):
    """
    L{throttleKey}.
    """

    def test_keys(self) -> None:
        """
        IPv4 addresses are their own key; IPv6 ones share their /64; IPv4-mapped ones are
        IPv4.
        """
        self.assertEqual(throttleKey("192.0.2.7"), "192.0.2.7")
        self.assertEqual(throttleKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64")
        self.assertEqual(throttleKey("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64")
        self.assertNotEqual(throttleKey("2001:db8:1:3::1"), throttleKey("2001:db8:1:2::1"))
        self.assertEqual(throttleKey("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertIsNone(throttleKey(None))


class FakeThreads:
    """
    C{runInThread} whose calls finish when the test calls L{finish}.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((f, args, d))
        return d

    def started(self) -> list[Any]:
        return [args[0] for _, args, _ in self.calls]

    def finish(self, index: int = 0) -> None:
        f, args, d = self.calls.pop(index)
        try:
            result = f(*args)
        except Exception as e:
            d.errback(e)
        else:
            d.callback(result)


def check(label: str) -> str:
    return label


class SchedulerTests(SynchronousTestCase):
    """
    L{CheckScheduler}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.threads = FakeThreads()
        self.failures = FailureTable(self.clock, free=2, baseDelay=1, maxDelay=16)
        self.scheduler = CheckScheduler(
            self.clock, self.threads, self.failures, slots=2, maxWaiting=20, maxPerAddress=4
        )

    def submit(self, address: str | None, label: str) -> Deferred[Any]:
        return self.scheduler.submit(address, check, label)

    def test_slotsAndOnePerAddress(self) -> None:
        """
        At most C{slots} checks run, at most one per address; the next starts when one ends,
        with its result passed on.
        """
        a1, a2 = self.submit("a", "a1"), self.submit("a", "a2")
        self.submit("b", "b1")
        self.submit("c", "c1")
        self.assertEqual(self.threads.started(), ["a1", "b1"])
        self.assertEqual(self.scheduler.waiting, 2)
        self.threads.finish(0)
        self.assertEqual(self.successResultOf(a1), "a1")
        self.assertEqual(self.threads.started(), ["b1", "c1"])  # a was just served
        self.threads.finish(1)
        self.assertEqual(self.threads.started(), ["b1", "a2"])
        self.threads.finish(1)
        self.assertEqual(self.successResultOf(a2), "a2")

    def test_newAddressNotBehindFlood(self) -> None:
        """
        A check from an address with no failures runs as soon as a slot is free, however
        many checks of a failing address wait, and before them.
        """
        for _ in range(5):
            self.failures.record("flood")
        for i in range(4):
            self.submit("flood", f"f{i}")
        self.submit("flood2", "g0")
        self.assertEqual(self.threads.started(), ["f0", "g0"])
        self.submit("alice", "alice")
        self.threads.finish(1)  # g0 done: alice before any other flood check
        self.assertEqual(self.threads.started(), ["f0", "alice"])

    def test_suspectsDelayed(self) -> None:
        """
        An address with more than C{free} failures has its checks spaced by its delay (as
        it is when the next check is due, so a failure in between lengthens it).
        """
        for _ in range(3):
            self.failures.record("x")
        self.assertEqual(self.failures.delay("x"), 1)
        for i in range(3):
            self.submit("x", f"x{i}")
        self.assertEqual(self.threads.started(), ["x0"])
        self.threads.finish()
        self.assertEqual(self.threads.started(), [])
        self.clock.advance(0.5)
        self.assertEqual(self.threads.started(), [])
        self.clock.advance(0.5)
        self.assertEqual(self.threads.started(), ["x1"])
        self.failures.record("x")
        self.threads.finish()
        self.clock.advance(1.9)
        self.assertEqual(self.threads.started(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.threads.started(), ["x2"])

    def test_roundRobinAmongSuspects(self) -> None:
        """
        Suspect addresses whose delay has passed take turns.
        """
        for address in ("x", "y"):
            for _ in range(3):
                self.failures.record(address)
        self.scheduler.slots = 1
        for i in range(2):
            self.submit("x", f"x{i}")
            self.submit("y", f"y{i}")
        order = []
        for _ in range(4):
            self.clock.advance(1)
            order += self.threads.started()
            self.threads.finish()
        self.assertEqual(order, ["x0", "y0", "x1", "y1"])

    def test_bounded(self) -> None:
        """
        Beyond C{maxPerAddress} waiting checks from one address, or C{maxWaiting} in all,
        L{CheckScheduler.submit} refuses.
        """
        for i in range(5):  # one running, four waiting
            self.submit("a", str(i))
        self.assertRaises(Overloaded, self.submit, "a", "too many")
        self.scheduler.maxWaiting = self.scheduler.waiting
        self.assertRaises(Overloaded, self.submit, "b", "too many")

    def test_errorsPassedOn(self) -> None:
        """
        A check that raises fails its Deferred, and the next check still runs.
        """

        def boom(label: str) -> str:
            raise ValueError(label)

        self.scheduler.slots = 1
        d = self.scheduler.submit("a", boom, "x")
        self.submit("b", "b")
        self.threads.finish()
        self.failureResultOf(d, ValueError)
        self.assertEqual(self.threads.started(), ["b"])


def lines(events: Sequence[LogEvent]) -> list[str]:
    return [formatEvent(event) for event in events]


class FailureLogTests(SynchronousTestCase):
    """
    L{FailureLog}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.log = FailureLog(self.clock, interval=10, perAddress=2, maxLines=3, maxAddresses=4)

    def test_lineFormat(self) -> None:
        """
        A failure is one warning starting with the client address, then the user name
        quoted with control characters escaped (never raw), cut at 64 characters.
        """
        with capturedLogs() as events:
            self.log.failed("192.0.2.7", "alice")
            self.log.failed("2001:db8::1", "x\r\nproxy authentication failed from 10.0.0.1 ")
            self.log.failed("192.0.2.8", "u" * 100)
        self.assertEqual(
            lines(events),
            [
                "proxy authentication failed from 192.0.2.7 for user 'alice'",
                "proxy authentication failed from 2001:db8::1 for user "
                "'x\\r\\nproxy authentication failed from 10.0.0.1 '",
                "proxy authentication failed from 192.0.2.8 for user '" + "u" * 64 + "'...",
            ],
        )
        self.assertEqual(events[0]["log_level"].name, "warn")
        self.assertEqual(events[0]["client"], "192.0.2.7")

    def test_rateLimited(self) -> None:
        """
        Beyond C{perAddress} lines per address (and C{maxLines} in all) per interval,
        failures are counted, and one line per address says how many at the end of the
        interval; the next interval starts afresh.
        """
        with capturedLogs() as events:
            for _ in range(50):
                self.log.failed("192.0.2.7", "alice")
            self.log.failed("192.0.2.7", "bob")
            self.log.failed("192.0.2.9", "carol")
            self.log.failed("192.0.2.9", "carol")
            self.assertEqual(len(events), 3)
            self.clock.advance(10)
        self.assertEqual(
            lines(events)[3:],
            [
                "proxy authentication failed from 192.0.2.7 49 more times in 10 s "
                "(users 'alice', 'bob')",
                "proxy authentication failed from 192.0.2.9 1 more time in 10 s (user 'carol')",
            ],
        )
        with capturedLogs() as events:
            self.log.failed("192.0.2.7", "alice")
        self.assertEqual(len(events), 1)

    def test_oneMoreElsewhere(self) -> None:
        """
        One failure left out beyond C{maxAddresses} is "1 more time", not "1 more times".
        """
        log = FailureLog(self.clock, perAddress=1, maxAddresses=1)
        with capturedLogs() as events:
            log.failed("10.0.0.1", "x")
            log.failed("10.0.0.2", "y")
            self.clock.advance(10)
        self.assertEqual(
            lines(events),
            [
                "proxy authentication failed from 10.0.0.1 for user 'x'",
                "proxy authentication failed 1 more time from other addresses in 10 s",
            ],
        )

    def test_manyAddressesBounded(self) -> None:
        """
        Beyond C{maxAddresses} addresses in an interval, failures are counted in one line.
        """
        with capturedLogs() as events:
            for i in range(100):
                self.log.failed(f"10.0.0.{i}", "x")
            self.clock.advance(10)
        self.assertEqual(
            lines(events)[3:],
            [
                "proxy authentication failed from 10.0.0.3 1 more time in 10 s (user 'x')",
                "proxy authentication failed 96 more times from other addresses in 10 s",
            ],
        )
