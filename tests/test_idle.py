"""
Unit tests of L{caplab.idle.IdleSweeper} on a L{Clock}.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from caplab.idle import IdleSweeper


def sweeper(timeout: float = 10.0) -> tuple[IdleSweeper[str], Clock, list[tuple[float, str]]]:
    """
    A sweeper on a new clock, and the list of (time, member) it expires.
    """
    clock = Clock()
    expired: list[tuple[float, str]] = []
    return (
        IdleSweeper(clock, timeout, lambda m: expired.append((clock.seconds(), m))),
        clock,
        expired,
    )


def test_expiresAfterTimeout() -> None:
    """
    A member expires when it has been idle for C{timeout} seconds, not before, and once.
    """
    idle, clock, expired = sweeper(10)
    idle.add("a")
    clock.advance(9.9)
    assert expired == []
    clock.advance(0.1)
    assert expired == [(10.0, "a")]
    assert "a" not in idle
    clock.advance(100)
    assert expired == [(10.0, "a")]


def test_touchRestarts() -> None:
    """
    Touching a member restarts its timeout; members touched later expire later, whatever
    the order they were added in.
    """
    idle, clock, expired = sweeper(10)
    idle.add("a")
    idle.add("b")
    clock.advance(5)
    idle.touch("a")
    clock.advance(5)
    assert expired == [(10.0, "b")]
    clock.advance(4.5)
    assert expired == [(10.0, "b")]
    clock.advance(0.5)
    assert expired == [(10.0, "b"), (15.0, "a")]


def test_removeForgets() -> None:
    """
    A removed member never expires; removing a stranger is harmless.
    """
    idle, clock, expired = sweeper(10)
    idle.add("a")
    idle.add("b")
    idle.remove("a")
    idle.remove("never added")
    clock.advance(10)
    clock.advance(10)
    assert expired == [(10.0, "b")]
    assert len(idle) == 0


def test_oneDelayedCall() -> None:
    """
    However many members there are, one delayed call times them out; once the last has
    gone the sweep runs once more and nothing stays scheduled.
    """
    idle, clock, expired = sweeper(10)
    for i in range(100):
        idle.add(f"m{i}")
        clock.advance(0.05)
        assert len(clock.getDelayedCalls()) == 1
    for i in range(100):
        idle.remove(f"m{i}")
    clock.advance(10)
    assert expired == []
    assert clock.getDelayedCalls() == []


def test_addAgainWhileExpiring() -> None:
    """
    An expiring member may be added again (to this sweeper or another) from C{expire}: it
    is timed out again a full C{timeout} later, with still one delayed call per sweeper.
    """
    clock = Clock()
    expired: list[tuple[float, str]] = []

    def expire(member: str) -> None:
        expired.append((clock.seconds(), member))
        if member == "again":
            idle.add("later")

    idle = IdleSweeper(clock, 10, expire)
    idle.add("again")
    clock.advance(1)
    idle.add("other")
    clock.advance(9)
    assert expired == [(10.0, "again")]
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1)
    assert expired == [(10.0, "again"), (11.0, "other")]
    clock.advance(9)
    assert expired == [(10.0, "again"), (11.0, "other"), (20.0, "later")]


def test_expireErrorLogged() -> None:
    """
    An exception from C{expire} is logged and the other members are still timed out.
    """
    clock = Clock()
    expired: list[str] = []

    def expire(member: str) -> None:
        if member == "bad":
            raise RuntimeError("cannot close")
        expired.append(member)

    idle = IdleSweeper(clock, 10, expire)
    idle.add("bad")
    idle.add("good")
    clock.advance(1)
    idle.add("later")
    with capturedLogs() as events:
        clock.advance(9)
        clock.advance(1)
    assert expired == ["good", "later"]
    failures = [e for e in events if e.get("log_failure") is not None]
    assert len(failures) == 1 and failures[0]["log_level"] == LogLevel.critical


#: One step of L{test_sameAsTimerPerMember}: (what, member, seconds to advance first).
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "touch", "remove"]),
        st.integers(0, 5),
        st.sampled_from([0, 0.25, 1, 2.5, 4, 7]),
    ),
    max_size=60,
)


@given(steps=STEPS, timeout=st.sampled_from([0.5, 3, 5]))
def test_sameAsTimerPerMember(steps: list[tuple[str, int, float]], timeout: float) -> None:
    """
    Whatever members come, go and are active, each expires at the same moment as with a
    timer of its own (the way C{TimeoutMixin} did it, one delayed call per connection).
    """
    clock = Clock()
    swept: list[tuple[float, int]] = []
    idle: IdleSweeper[int] = IdleSweeper(
        clock, timeout, lambda m: swept.append((clock.seconds(), m))
    )
    timers: dict[int, object] = {}
    timed: list[tuple[float, int]] = []

    def expireTimer(member: int) -> None:
        del timers[member]
        timed.append((clock.seconds(), member))

    for what, member, advance in steps:
        clock.advance(advance)
        if what == "add" or (what == "touch" and member in timers):
            if member in timers:
                timers[member].cancel()  # type: ignore[attr-defined]
            timers[member] = clock.callLater(timeout, expireTimer, member)
            (idle.add if what == "add" else idle.touch)(member)
        elif what == "remove" and member in timers:
            timers.pop(member).cancel()  # type: ignore[attr-defined]
            idle.remove(member)
    for _ in range(10):
        clock.advance(timeout / 2)
    assert swept == timed
    assert len(idle) == 0
