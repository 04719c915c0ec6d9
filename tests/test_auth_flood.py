"""
Tests for L{caplab.proxy.auth.HtpasswdAuthenticator} under a flood of wrong passwords (issue 9
item 7, issue 11): checks in a pool of their own, fair between client addresses, throttled
per address, logged with the address; on a Clock with a thread pool run step by step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from caplab.proxy import auth
from caplab.proxy.auth import HtpasswdAuthenticator, basicCredentials
from caplab.proxy.throttle import FailureTable
from tests.test_auth import HTPASSWD, FakeReactor
from tests.test_policy import TempFiles

GOOD = basicCredentials("alice", "s3cret")
FLOOD = "192.0.2.66"


class StepPool:
    """
    A thread pool that runs one queued call when told, in the calling thread, recording the
    user name each hash check was for.
    """

    def __init__(self) -> None:
        self.queued: list[tuple[Callable[..., None], Callable[..., Any], tuple[Any, ...]]] = []
        self.ran: list[bytes] = []

    def callInThreadWithCallback(
        self, onResult: Callable[..., None], f: Callable[..., Any], *args: Any, **kw: Any
    ) -> None:
        self.queued.append((onResult, f, args))

    def runOne(self) -> bytes:
        onResult, f, args = self.queued.pop(0)
        self.ran.append(args[1])
        onResult(True, f(*args))
        return args[1]


class FloodTests(TempFiles, SynchronousTestCase):
    """
    Checks are fair between addresses and throttled per address.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.pool = StepPool()
        self.authenticator = HtpasswdAuthenticator(
            self.writeFile("users", HTPASSWD),
            reactor=self.reactor,
            threadPool=self.pool,  # type: ignore[arg-type]
            threads=1,
            failures=FailureTable(self.reactor, free=5, baseDelay=1, maxDelay=8),
        )

    def wrong(self, n: int) -> bytes:
        return basicCredentials("alice", f"wrong-{n}")

    def test_newLoginNotBehindFlood(self) -> None:
        """
        With 8 wrong passwords from one address waiting, a good login from another address
        is the next check to run, and succeeds.
        """
        flood = [self.authenticator.authenticate(self.wrong(n), FLOOD) for n in range(9)]
        good = self.authenticator.authenticate(GOOD, "198.51.100.7")
        self.assertEqual(len(self.pool.queued), 1)  # one check at a time (threads=1)
        self.assertEqual(self.pool.runOne(), b"wrong-0")
        self.assertEqual(self.pool.runOne(), b"s3cret")
        self.assertEqual(self.successResultOf(good), "alice")
        self.assertIsNone(self.successResultOf(flood[0]))
        for d in flood[1:]:
            self.assertNoResult(d)

    def test_throttledAfterFailures(self) -> None:
        """
        After C{free} failures from an address, its checks are spaced by a delay that
        doubles with each further failure; others' are not.
        """
        for n in range(5):
            d = self.authenticator.authenticate(self.wrong(n), FLOOD)
            self.pool.runOne()
            self.assertIsNone(self.successResultOf(d))
        d = self.authenticator.authenticate(self.wrong(5), FLOOD)
        self.pool.runOne()  # the sixth runs at once (it is the one that tips the score)
        late = self.authenticator.authenticate(self.wrong(6), FLOOD)
        self.assertEqual(self.pool.queued, [])
        self.reactor.advance(0.9)
        self.assertEqual(self.pool.queued, [])
        other = self.authenticator.authenticate(GOOD, "198.51.100.7")
        self.pool.runOne()
        self.assertEqual(self.successResultOf(other), "alice")
        self.reactor.advance(0.1)
        self.pool.runOne()
        self.assertIsNone(self.successResultOf(late))
        self.assertIsNone(self.successResultOf(d))

    def test_ipv6NetworkShares(self) -> None:
        """
        Addresses of one IPv6 /64 share one share of checks and one failure count (a host
        cannot dodge its delay by changing address); the log names each address.
        """
        for n in range(6):
            d = self.authenticator.authenticate(self.wrong(n), f"2001:db8::{n + 1}")
            self.pool.runOne()
            self.assertIsNone(self.successResultOf(d))
        late = self.authenticator.authenticate(self.wrong(9), "2001:db8::ff")
        self.assertEqual(self.pool.queued, [])
        self.reactor.advance(1)
        self.pool.runOne()
        self.assertIsNone(self.successResultOf(late))
        other = self.authenticator.authenticate(GOOD, "2001:db8:0:1::1")
        self.pool.runOne()
        self.assertEqual(self.successResultOf(other), "alice")

    def test_tooManyWaitingRefused(self) -> None:
        """
        Beyond 8 waiting checks from one address, a request is refused without a check,
        answered after the address's delay (a second at least, so that refusals cannot be
        a busy loop), and the log says so.
        """
        waiting = [self.authenticator.authenticate(self.wrong(n), FLOOD) for n in range(9)]
        with capturedLogs() as events:
            refused = self.authenticator.authenticate(self.wrong(99), FLOOD)
        self.assertNoResult(refused)
        self.reactor.advance(auth.REFUSAL_DELAY)
        self.assertIsNone(self.successResultOf(refused))
        self.assertEqual(len(self.pool.queued), 1)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                f"proxy authentication failed from {FLOOD} for user 'alice' (refused "
                "unchecked: too many waiting)"
            ],
        )
        self.assertEqual(len(waiting), 9)
        for _ in range(8):
            self.authenticator.failures.record(FLOOD)
        delayed = self.authenticator.authenticate(self.wrong(100), FLOOD)
        delay = self.authenticator.failures.delay(FLOOD)
        self.assertGreater(delay, auth.REFUSAL_DELAY)
        self.reactor.advance(delay - 0.01)
        self.assertNoResult(delayed)
        self.reactor.advance(0.01)
        self.assertIsNone(self.successResultOf(delayed))

    def test_sameHeaderCheckedOnce(self) -> None:
        """
        Requests with the same header at once (a browser's parallel connections) share one
        check.
        """
        first = self.authenticator.authenticate(GOOD, "198.51.100.7")
        second = self.authenticator.authenticate(GOOD, "198.51.100.8")
        self.assertEqual(len(self.pool.queued), 1)
        self.pool.runOne()
        self.assertEqual(self.successResultOf(first), "alice")
        self.assertEqual(self.successResultOf(second), "alice")
        self.assertEqual(self.pool.queued, [])

    def test_sharedCheckNotAcrossReload(self) -> None:
        """
        A check under way before a reload is not shared with requests after it.
        """
        before = self.authenticator.authenticate(GOOD, "198.51.100.7")
        self.authenticator.reload()
        after = self.authenticator.authenticate(GOOD, "198.51.100.7")
        self.pool.runOne()
        self.assertEqual(self.successResultOf(before), "alice")
        self.assertNoResult(after)
        self.pool.runOne()
        self.assertEqual(self.successResultOf(after), "alice")

    def test_failureLoggedWithAddress(self) -> None:
        """
        A failure is logged with the client's address and the user, not the password.
        """
        with capturedLogs() as events:
            d = self.authenticator.authenticate(basicCredentials("bob", "hunter2"), FLOOD)
            self.pool.runOne()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(
            [formatEvent(e) for e in events],
            [f"proxy authentication failed from {FLOOD} for user 'bob'"],
        )
        self.assertNotIn("hunter2", repr(events))

    def test_successNotThrottled(self) -> None:
        """
        A remembered good check is answered at once, even from a throttled address.
        """
        d = self.authenticator.authenticate(GOOD, FLOOD)
        self.pool.runOne()
        self.successResultOf(d)
        for _ in range(8):
            self.authenticator.failures.record(FLOOD)
        self.assertEqual(
            self.successResultOf(self.authenticator.authenticate(GOOD, FLOOD)), "alice"
        )


class WeakHashWarningTests(TempFiles, SynchronousTestCase):
    """
    Apache MD5 hashes are accepted with one warning that bcrypt is better.
    """

    def test_warnedOnce(self) -> None:
        """
        Loading a file with C{$apr1$} users warns once, naming them and C{htpasswd -B}; a
        reload that leaves those users as they were does not warn again, one that changes
        them does.
        """
        from tests.test_auth import APR1, BCRYPT

        path = self.writeFile("users", f"alice:{BCRYPT}\nerin:{APR1}\n")
        with capturedLogs() as events:
            first = HtpasswdAuthenticator(path, reactor=FakeReactor())
            self.assertEqual(
                first.reload(), "2 users (1 with Apache MD5 hashes: bcrypt is stronger)"
            )
        self.assertEqual(len(events), 1)
        text = formatEvent(events[0])
        self.assertIn("1 user has Apache MD5 ($apr1$) hashes ('erin')", text)
        self.assertIn(f"htpasswd -B {path} USER", text)
        self.assertEqual(events[0]["log_level"].name, "warn")
        self.writeFile("users", f"alice:{APR1}\nerin:{APR1}\n")
        with capturedLogs() as events:
            first.reload()
        self.assertEqual(len(events), 1)
        self.assertIn(
            "2 users have Apache MD5 ($apr1$) hashes ('alice', 'erin')", formatEvent(events[0])
        )

    def test_warnedPerAuthenticator(self) -> None:
        """
        What was warned about is each authenticator's own: a second one for the same file
        (another test, a new one after the auth file was taken out and put back by a reload)
        warns too, rather than staying silent because an earlier one warned.
        """
        from tests.test_auth import APR1

        path = self.writeFile("users", f"erin:{APR1}\n")
        with capturedLogs() as events:
            HtpasswdAuthenticator(path, reactor=FakeReactor())
            HtpasswdAuthenticator(path, reactor=FakeReactor())
        self.assertEqual(len(events), 2)


class OwnPoolTests(TempFiles, TestCase):
    """
    Without a pool given, checks run in a pool of the authenticator's own, never the
    reactor's.
    """

    timeout = 20

    def test_ownPool(self) -> Deferred[None]:
        from twisted.internet import reactor

        names: list[str] = []
        original = auth._check

        def recording(*args: Any) -> bool:
            names.append(threading.current_thread().name)
            return original(*args)

        def noSharedPool() -> None:
            raise AssertionError("the reactor's thread pool was used")

        self.patch(auth, "_check", recording)
        self.patch(reactor, "getThreadPool", noSharedPool)
        authenticator = HtpasswdAuthenticator(self.writeFile("users", HTPASSWD), reactor=reactor)
        self.addCleanup(authenticator._stop)
        d: Deferred[str | None] = authenticator.authenticate(GOOD, "127.0.0.1")

        def checked(user: str | None) -> None:
            self.assertEqual(user, "alice")
            self.assertEqual(len(names), 1)
            self.assertIn("caplab-auth", names[0])

        return d.addCallback(checked)
