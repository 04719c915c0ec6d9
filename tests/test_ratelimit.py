"""
Tests for L{caplab.ratelimit}: one line per interval with a running count, and a summary when
a burst is over.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, formatEvent

from caplab.ratelimit import LogThrottle, LogThrottles


def throttle(clock: Clock, events: list[LogEvent], **kwargs: Any) -> LogThrottle:
    return LogThrottle(
        Logger(namespace="test", observer=cast(ILogObserver, events.append)),
        clock,
        "refused {peer}: {count} in {interval}s, {total} so far",
        summary="refused {burst} in {duration}s, {total} so far",
        **kwargs,
    )


def lines(events: list[LogEvent]) -> list[str]:
    return [formatEvent(event) for event in events]


def test_firstEventLoggedAtOnce() -> None:
    """
    A lone event is logged at once, and no summary follows it.
    """
    clock = Clock()
    events: list[LogEvent] = []
    limited = throttle(clock, events)
    limited.event(peer="a")
    assert lines(events) == ["refused a: 1 in 1s, 1 so far"]
    clock.advance(1)
    clock.advance(1)
    assert len(events) == 1
    assert clock.getDelayedCalls() == []


def test_burstOfFiveHundred() -> None:
    """
    500 events within one interval make two lines: the first at once, and at the end of the
    interval the count of the rest; the next quiet interval adds the burst's summary.
    """
    clock = Clock()
    events: list[LogEvent] = []
    limited = throttle(clock, events)
    for index in range(500):
        limited.event(peer=f"p{index}")
        clock.advance(0.001)
    assert lines(events) == ["refused p0: 1 in 1s, 1 so far"]
    clock.advance(1)
    assert lines(events)[1] == "refused p499: 499 in 1s, 500 so far"
    clock.advance(1)
    assert lines(events)[2] == "refused 500 in 0.5s, 500 so far"
    assert len(events) == 3
    assert events[0]["log_level"] == LogLevel.warn
    assert (events[1]["count"], events[2]["burst"]) == (499, 500)
    assert clock.getDelayedCalls() == []


def test_longBurst() -> None:
    """
    A burst over several intervals logs one line per interval, each with its own count and
    the running total, then the summary; a later burst starts again with a line at once.
    """
    clock = Clock()
    events: list[LogEvent] = []
    limited = throttle(clock, events, interval=2.0)
    for _ in range(60):  # 6 s, 10 a second
        limited.event(peer="x")
        clock.advance(0.1)
    clock.pump([1.0] * 12)
    counts = [e.get("count") for e in events if "count" in e]
    assert counts == [1, 19, 20, 20]
    assert [e["burst"] for e in events if "duration" in e] == [60]
    limited.event(peer="y")
    assert lines(events)[-1] == "refused y: 1 in 2s, 61 so far"


def test_stopFlushes() -> None:
    """
    Stopping logs what is still counted, ends the burst and leaves no timer behind.
    """
    clock = Clock()
    events: list[LogEvent] = []
    limited = throttle(clock, events)
    for _ in range(3):
        limited.event(peer="z")
    limited.stop()
    assert lines(events) == [
        "refused z: 1 in 1s, 1 so far",
        "refused z: 2 in 1s, 3 so far",
        "refused 3 in 0s, 3 so far",
    ]
    assert clock.getDelayedCalls() == []
    limited.stop()
    assert len(events) == 3


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), max_size=200))
def test_boundedAndCounted(gaps: list[float]) -> None:
    """
    However events are spread, the lines never come faster than one per interval (plus one
    summary per burst), and the counts of the event lines add up to every event.
    """
    clock = Clock()
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        events.append(dict(event, at=clock.seconds()))

    limited = LogThrottle(
        Logger(observer=cast(ILogObserver, observe)), clock, "{count}", summary="{burst}"
    )
    for gap in gaps:
        clock.advance(gap)
        limited.event()
    clock.pump([1.0] * 12)
    counted = sum(int(e["count"]) for e in events if "count" in e)
    assert counted == len(gaps)
    stamps: list[float] = [e["at"] for e in events if "count" in e]
    assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in itertools.pairwise(stamps))
    assert clock.getDelayedCalls() == []


def test_repeatFormat() -> None:
    """
    With a C{repeat} format, the first line of a burst is the event's and the lines that
    follow count the events held back (with the fields of the latest, the running count of
    the burst and the interval); the summary ends the burst and the next one starts afresh.
    """
    clock = Clock()
    events: list[LogEvent] = []
    limited = LogThrottle(
        Logger(namespace="test", observer=cast(ILogObserver, events.append)),
        clock,
        "test: {what} failed",
        summary="test: failures: the burst is over, {burst} in all",
        interval=10.0,
        repeat="test: {what} failed ({count} times in the last {interval} s, "
        "{burst} in this burst)",
    )
    for index in range(100):
        limited.event(what=index)
        clock.advance(0.25)
    clock.advance(10)  # the last events' line
    clock.advance(10)  # a quiet interval: the burst is over
    limited.event(what="again")
    assert lines(events) == [
        "test: 0 failed",
        "test: 39 failed (39 times in the last 10 s, 40 in this burst)",
        "test: 79 failed (40 times in the last 10 s, 80 in this burst)",
        "test: 99 failed (20 times in the last 10 s, 100 in this burst)",
        "test: failures: the burst is over, 100 in all",
        "test: again failed",
    ]


def test_repeatFlushedAtStop() -> None:
    """
    What L{LogThrottle.stop} logs of a burst under way is in the C{repeat} format.
    """
    clock = Clock()
    events: list[LogEvent] = []
    limited = LogThrottle(
        Logger(namespace="test", observer=cast(ILogObserver, events.append)),
        clock,
        "refused {client} ({total} so far)",
        interval=60.0,
        repeat="refused {count} more in the last {interval}s ({total} so far)",
    )
    for client in "abc":
        limited.event(client=client)
    limited.stop()
    assert lines(events) == ["refused a (1 so far)", "refused 2 more in the last 60s (3 so far)"]
    assert clock.getDelayedCalls() == []


def test_kindsApart() -> None:
    """
    L{LogThrottles} throttles each kind of event on its own, with the formats of the kind's
    first call, and stops them all at once.
    """
    clock = Clock()
    events: list[LogEvent] = []
    throttles = LogThrottles(
        Logger(namespace="test", observer=cast(ILogObserver, events.append)), clock, 10.0
    )
    for _ in range(50):
        throttles.throttle("a", "a failed ({total} so far)", "a failed {burst} times").event()
        throttles.throttle("b", "b failed ({total} so far)").event()
    throttles.throttle("a", "another format").event()
    assert lines(events) == ["a failed (1 so far)", "b failed (1 so far)"]
    clock.advance(10)
    assert lines(events)[2:] == ["a failed (51 so far)", "b failed (50 so far)"]
    throttles.throttle("b", "b").event()
    throttles.stop()
    assert lines(events)[4:] == ["a failed 51 times", "b failed (51 so far)"]
    assert clock.getDelayedCalls() == []
