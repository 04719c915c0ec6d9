"""
Rate-limited logging: one line per interval with a running count, and a summary line when a
burst is over, so that a flood of events (refused connections, failed replies, a full disk)
cannot flood the log as well.

Usage, e.g. in a factory that refuses connections over its cap::

    self.refusals = LogThrottle(
        Logger(namespace="caplab.tcp"),
        clock,
        "caplab tcp refusing connections from {peer} and others: {count} in the last "
        "{interval}s, over --max-connections {limit} ({total} refused so far)",
        summary="caplab tcp refused {burst} connections in {duration}s "
        "(--max-connections {limit}; {total} refused so far)",
    )
    ...
    self.refusals.event(peer="127.0.0.1:41234", limit=1000)   # once per refusal
    ...
    self.refusals.stop()                                       # when the factory stops

The first event of a burst is logged at once (with C{count} 1).  Later events within the
interval are only counted; at the end of each interval in which some arrived, one line says
how many (C{count}) with the fields of the latest (in the C{repeat} format if one is given,
e.g. C{"... refused {count} more"}).  The first interval with none ends the burst: if the
burst had more than the one event its first line reported, the C{summary} line says how many
there were in all (C{burst}) and over how long (C{duration}).

L{LogThrottles} keeps one L{LogThrottle} per kind of event, so that a flood of one kind (a
plugin failing on every response) does not hide another.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel


class LogThrottle:
    """
    Logs a repeated event at most once per C{interval} seconds, with counts.

    @ivar total: events since this throttle was made.
    @ivar burst: events in the burst under way (0 when none is).
    """

    def __init__(
        self,
        logger: Logger,
        clock: IReactorTime,
        message: str,
        summary: str | None = None,
        interval: float = 1.0,
        level: LogLevel = LogLevel.warn,
        repeat: str | None = None,
    ) -> None:
        """
        @param logger: where the lines go.
        @param clock: times the intervals.
        @param message: the PEP 3101 format of an event line; besides the fields given to
            L{event} it may use C{count} (events since the previous line, this one included),
            C{burst} (events in this burst so far), C{total} and C{interval}.
        @param summary: the format of the line that ends a burst of more than one event
            (None: no such line); it may use C{burst}, C{duration} (seconds, one decimal),
            C{total} and the fields of the burst's last event.
        @param interval: seconds between two lines.
        @param level: the level of every line.
        @param repeat: the format of the event lines after the first of a burst, which count
            the events held back (the same fields as C{message}); None: C{message}.
        """
        self.logger = logger
        self.clock = clock
        self.message = message
        self.repeat = message if repeat is None else repeat
        self.summary = summary
        self.interval = interval
        self.level = level
        self.total = 0
        self.burst = 0
        self._pending = 0
        self._fields: dict[str, Any] = {}
        self._burstStarted = 0.0
        self._lastEvent = 0.0
        self._timer: IDelayedCall | None = None

    def event(self, **fields: Any) -> None:
        """
        Count one event; log it now if no line was logged within the interval.
        """
        self.total += 1
        self.burst += 1
        self._lastEvent = self.clock.seconds()
        self._fields = fields
        if self._timer is None:
            self._burstStarted = self._lastEvent
            self._pending = 1
            self._emit(self.message)
            self._timer = self.clock.callLater(self.interval, self._tick)
        else:
            self._pending += 1

    def _emit(self, format: str) -> None:
        self.logger.emit(
            self.level,
            format,
            **self._fields,
            count=self._pending,
            burst=self.burst,
            total=self.total,
            interval=_number(self.interval),
        )
        self._pending = 0

    def _tick(self) -> None:
        self._timer = None
        if self._pending:
            self._emit(self.repeat)
            self._timer = self.clock.callLater(self.interval, self._tick)
            return
        self._endBurst()

    def _endBurst(self) -> None:
        if self.burst > 1 and self.summary is not None:
            self.logger.emit(
                self.level,
                self.summary,
                **self._fields,
                burst=self.burst,
                duration=_number(round(self._lastEvent - self._burstStarted, 1)),
                total=self.total,
            )
        self.burst = 0

    def stop(self) -> None:
        """
        Log what is still counted (the last line, the summary) and cancel the timer.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
            if self._pending:
                self._emit(self.repeat)
            self._endBurst()


class LogThrottles:
    """
    One L{LogThrottle} per kind of event, made at the first event of that kind, all with the
    same logger, clock, interval and level: a flood of one kind does not hide the others.
    The throttles are kept, so the kinds should be few (a plugin's name, not a client's).
    """

    def __init__(
        self,
        logger: Logger,
        clock: IReactorTime,
        interval: float = 1.0,
        level: LogLevel = LogLevel.warn,
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.interval = interval
        self.level = level
        self.throttles: dict[str, LogThrottle] = {}

    def throttle(
        self, kind: str, message: str, summary: str | None = None, repeat: str | None = None
    ) -> LogThrottle:
        """
        The throttle of C{kind}; made with these formats (see L{LogThrottle}) if there is
        none yet, else the one made by the first call, whatever the formats given now.
        """
        throttle = self.throttles.get(kind)
        if throttle is None:
            throttle = self.throttles[kind] = LogThrottle(
                self.logger, self.clock, message, summary, self.interval, self.level, repeat
            )
        return throttle

    def stop(self) -> None:
        """
        Stop every throttle (see L{LogThrottle.stop}).
        """
        for throttle in self.throttles.values():
            throttle.stop()


def _number(value: float) -> int | float:
    """
    C{1} rather than C{1.0} in a log line.
    """
    return int(value) if float(value).is_integer() else value
