"""
Keeping a flood of bad passwords from stalling everyone (L{caplab.proxy.auth}).

Password hashes are slow on purpose (bcrypt at cost 10 takes about 50 ms of a core), so a
client that sends wrong passwords over many connections can keep every hashing thread busy
and make other clients' logins wait.  Three parts stop that:

    - L{FailureTable}: failed checks per client address, as a score that decays (halves
      every C{halfLife} seconds), in a table of bounded size; an address with more than a few
      recent failures is a suspect, and its checks are spaced by an exponential delay;
    - L{CheckScheduler}: runs checks in a thread pool of their own, at most one at a time per
      client address, clean addresses before suspects, round robin among each, with bounded
      queues: a new login from an address with no failures waits for at most the checks
      already running;
    - L{FailureLog}: one log line per failure (client address first, then the user name,
      never the password), rate-limited per address and in all, with a count of what was left
      out at the end of each interval.

All of it runs in the reactor thread, on an injected clock; only the checks themselves run in
threads.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

#: Failures are logged under the namespace of authentication, for filters.
log = Logger(namespace="caplab.proxy.auth")


def throttleKey(address: str | None) -> str | None:
    """
    Whose share of checks a client address counts against: an IPv4 address itself (an
    IPv4-mapped IPv6 one as IPv4), an IPv6 address its /64 network, which one host commonly
    has whole (so that it cannot dodge its delay by changing address).
    """
    if address is None or ":" not in address:
        return address
    try:
        parsed = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.IPv6Network((parsed, 64), strict=False))


class FailureTable:
    """
    Recent failed checks per client address, decaying, with a bounded number of addresses
    (the least recently failing are forgotten first).

    @ivar free: failures an address may have before its checks are delayed.
    @ivar baseDelay: the delay of the first delayed check, in seconds; it doubles with each
        further failure, up to C{maxDelay}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        halfLife: float = 300.0,
        maxAddresses: int = 10_000,
        free: int = 5,
        baseDelay: float = 0.5,
        maxDelay: float = 30.0,
    ) -> None:
        self.clock = clock
        self.halfLife = halfLife
        self.maxAddresses = maxAddresses
        self.free = free
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        # The score never needs to exceed what gives the longest delay, plus a margin, so
        # that an address recovers within a few half-lives of the end of a flood.
        self._cap = free + 2 * max(1, math.ceil(math.log2(max(2.0, maxDelay / baseDelay))))
        #: address -> (score, when it was last updated)
        self._scores: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._scores)

    def score(self, address: str | None) -> float:
        """
        The decayed number of recent failures from C{address} (0 for None, an unknown
        address).
        """
        if address is None:
            return 0.0
        entry = self._scores.get(address)
        if entry is None:
            return 0.0
        value, when = entry
        value *= 0.5 ** ((self.clock.seconds() - when) / self.halfLife)
        if value < 0.01:
            del self._scores[address]
            return 0.0
        return value

    def record(self, address: str | None) -> None:
        """
        Count one failed check from C{address}.
        """
        if address is None:
            return
        value = min(self._cap, self.score(address) + 1.0)
        self._scores[address] = (value, self.clock.seconds())
        self._scores.move_to_end(address)
        while len(self._scores) > self.maxAddresses:
            self._scores.popitem(last=False)

    def delay(self, address: str | None) -> float:
        """
        How long to space the checks of C{address}: 0 while it has no more than C{free}
        recent failures, then C{baseDelay} doubling with each failure, up to C{maxDelay}.
        """
        excess = self.score(address) - self.free
        if excess <= 0:
            return 0.0
        return float(min(self.maxDelay, self.baseDelay * 2.0 ** (excess - 1)))


class Overloaded(Exception):
    """
    Too many checks are waiting (in all, or from this address): refused without a check.
    """


@dataclass
class _Job:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    deferred: Deferred[Any] = field(default_factory=Deferred)


class CheckScheduler:
    """
    Runs slow checks in a thread pool, fairly between client addresses.

    At most C{slots} checks run at once, at most one per address.  When a slot is free, the
    next check comes from the addresses with no delay (see L{FailureTable.delay}) in round
    robin, and only if none is waiting from a suspect address whose delay since its last
    check has passed.  Queues are bounded: beyond C{maxPerAddress} waiting checks from one
    address, or C{maxWaiting} in all, L{submit} refuses.
    """

    def __init__(
        self,
        clock: IReactorTime,
        runInThread: Callable[..., Deferred[Any]],
        failures: FailureTable,
        slots: int = 1,
        maxWaiting: int = 1024,
        maxPerAddress: int = 8,
    ) -> None:
        """
        @param runInThread: C{runInThread(f, *args)} runs C{f} in a thread and fires with
            its result.
        """
        self.clock = clock
        self.runInThread = runInThread
        self.failures = failures
        self.slots = slots
        self.maxWaiting = maxWaiting
        self.maxPerAddress = maxPerAddress
        #: waiting checks per address, in round-robin order
        self._queues: OrderedDict[str | None, deque[_Job]] = OrderedDict()
        self._waiting = 0
        self._running: set[str | None] = set()
        #: when each address's last check started (the most recent 10,000)
        self._lastStart: OrderedDict[str | None, float] = OrderedDict()
        self._timer: IDelayedCall | None = None

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(
        self, address: str | None, function: Callable[..., Any], *args: Any
    ) -> Deferred[Any]:
        """
        Run C{function(*args)} in a thread when it is C{address}'s turn.

        @return: a Deferred that fires with the result.
        @raise Overloaded: too many checks are waiting.
        """
        queue = self._queues.get(address)
        if self._waiting >= self.maxWaiting or (
            queue is not None and len(queue) >= self.maxPerAddress
        ):
            raise Overloaded()
        if queue is None:
            queue = self._queues[address] = deque()
        job = _Job(function, args)
        queue.append(job)
        self._waiting += 1
        self._dispatch()
        return job.deferred

    def _dispatch(self) -> None:
        now = self.clock.seconds()
        while len(self._running) < self.slots and self._queues:
            found, address = self._next(now)
            if not found:
                break
            job = self._take(address)
            self._lastStart[address] = now
            self._lastStart.move_to_end(address)
            if len(self._lastStart) > 10_000:
                self._lastStart.popitem(last=False)
            self._start(address, job)
        self._schedule(now)

    def _notBefore(self, address: str | None) -> float:
        """
        When the next check of C{address} may start: its delay after its last one.
        """
        return self._lastStart.get(address, -math.inf) + self.failures.delay(address)

    def _next(self, now: float) -> tuple[bool, str | None]:
        """
        (True, the address whose check runs next), or (False, None) if none may run now:
        the first address with no delay in round-robin order, else the first suspect whose
        delay has passed.
        """
        suspect: list[str | None] = []
        for address in self._queues:
            if address in self._running:
                continue
            if self.failures.delay(address) == 0:
                return True, address
            if not suspect and self._notBefore(address) <= now:
                suspect.append(address)
        if suspect:
            return True, suspect[0]
        return False, None

    def _take(self, address: str | None) -> _Job:
        queue = self._queues.pop(address)
        job = queue.popleft()
        self._waiting -= 1
        if queue:
            self._queues[address] = queue  # to the end: round robin
        return job

    def _start(self, address: str | None, job: _Job) -> None:
        self._running.add(address)

        def done(result: Any) -> Any:
            self._running.discard(address)
            if address in self._queues:
                self._queues.move_to_end(address)  # served: the others' turn first
            self._dispatch()
            return result

        d = self.runInThread(job.function, *job.args)
        d.addBoth(done).chainDeferred(job.deferred)

    def _schedule(self, now: float) -> None:
        """
        If suspects wait and a slot is free, wake up when the first of them may run.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if len(self._running) >= self.slots:
            return
        times = [
            self._notBefore(address) for address in self._queues if address not in self._running
        ]
        if times:
            self._timer = self.clock.callLater(max(0.0, min(times) - now), self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._dispatch()

    def stop(self) -> None:
        """
        Stop the timer (at shutdown); waiting checks are left unanswered.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class FailureLog:
    """
    Logs failed proxy authentications, one line each, rate-limited.

    In each C{interval}, each address gets at most C{perAddress} lines and all addresses
    together at most C{maxLines}; what is left out is counted, and at the end of the interval
    one line per such address (up to C{maxLines}) says how many more failures there were,
    then one line for the rest.  Every line starts C{proxy authentication failed from
    ADDRESS}, so a fail2ban filter matches them all; user names are quoted with their control
    characters escaped, and cut at 64 characters.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = 10.0,
        perAddress: int = 5,
        maxLines: int = 50,
        maxAddresses: int = 1000,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.perAddress = perAddress
        self.maxLines = maxLines
        self.maxAddresses = maxAddresses
        self._start: float | None = None
        self._lines = 0
        self._counts: Counter[str] = Counter()
        self._left: Counter[str] = Counter()
        self._users: dict[str, set[str]] = {}
        self._leftElsewhere = 0
        self._timer: IDelayedCall | None = None

    def failed(self, client: str | None, user: str, why: str = "") -> None:
        """
        Log (or count) one failed authentication of C{user} from C{client}.

        @param why: appended to the line (C{"refused unchecked: too many waiting"}).
        """
        now = self.clock.seconds()
        if self._start is None or now - self._start >= self.interval:
            self.flush()
            self._start = now
        address = client or "unknown"
        name = _quoted(user)
        if address not in self._counts and len(self._counts) >= self.maxAddresses:
            self._leftElsewhere += 1
            self._later()
            return
        self._counts[address] += 1
        if self._counts[address] <= self.perAddress and self._lines < self.maxLines:
            self._lines += 1
            log.warn(
                "proxy authentication failed from {client} for user {user}{why}",
                client=address,
                user=name,
                why=f" ({why})" if why else "",
            )
            return
        self._left[address] += 1
        users = self._users.setdefault(address, set())
        if len(users) < 3:
            users.add(name)
        self._later()

    def _later(self) -> None:
        if self._timer is None and self._start is not None:
            delay = max(0.0, self._start + self.interval - self.clock.seconds())
            self._timer = self.clock.callLater(delay, self._timed)

    def _timed(self) -> None:
        self._timer = None
        self.flush()
        self._start = self.clock.seconds()

    def flush(self) -> None:
        """
        Log what was left out in this interval, and start a new one.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        lines = 0
        rest = self._leftElsewhere
        for address, count in self._left.most_common():
            if lines >= self.maxLines:
                rest += count
                continue
            lines += 1
            users = sorted(self._users.get(address, ()))
            log.warn(
                "proxy authentication failed from {client} {count} more {times} in "
                "{interval:g} s ({userLabel} {users})",
                client=address,
                count=count,
                times="time" if count == 1 else "times",
                interval=self.interval,
                userLabel="user" if len(users) == 1 else "users",
                users=", ".join(users),
            )
        if rest:
            log.warn(
                "proxy authentication failed {count} more {times} from other addresses in "
                "{interval:g} s",
                count=rest,
                times="time" if rest == 1 else "times",
                interval=self.interval,
            )
        self._lines = 0
        self._counts.clear()
        self._left.clear()
        self._users.clear()
        self._leftElsewhere = 0

    def stop(self) -> None:
        """
        Log what is left out (at shutdown).
        """
        self.flush()


def _quoted(user: str) -> str:
    """
    C{user} quoted for a log line: control characters escaped, at most 64 characters.
    """
    if len(user) > 64:
        return repr(user[:64]) + "..."
    return repr(user)
