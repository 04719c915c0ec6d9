"""
Rate-limited log lines: one line per interval for a repeated event, with a running count,
and a summary when the burst ends, so a failing disk or a flood of bad entries cannot flood
the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger, LogLevel


class RateLimitedLog:
    """
    Logs one kind of event: the first at once, later ones at most once per C{interval}
    seconds (the latest event's fields, with how many came since the last line and in the
    whole burst), and when an interval passes without one, a summary of the burst.

    Each line's fields include C{count} (events since the last line, this one included) and
    C{total} (events in the burst); the format given to L{emit} may use them.

    @param callLater: schedules the end of an interval (the reactor's, or a test's
        L{twisted.internet.task.Clock}'s).
    @param what: what the burst summary calls these events (C{"cache: disk write failures"}).
    """

    def __init__(
        self,
        log: Logger,
        callLater: Callable[..., IDelayedCall],
        what: str,
        interval: float = 60.0,
        level: LogLevel = LogLevel.warn,
    ) -> None:
        self.log = log
        self.what = what
        self.callLater = callLater
        self.interval = interval
        self.level = level
        self.total = 0
        self._suppressed = 0
        self._last: tuple[str, dict[str, Any]] | None = None
        self._timer: IDelayedCall | None = None

    def emit(self, format: str, **fields: Any) -> None:
        """
        One event: logged now, or counted for the next line.
        """
        self.total += 1
        if self._timer is None:
            self.log.emit(self.level, format, count=1, total=self.total, **fields)
            self._timer = self.callLater(self.interval, self._tick)
            return
        self._suppressed += 1
        self._last = (format, fields)

    def _tick(self) -> None:
        self._timer = None
        if self._suppressed and self._last is not None:
            format, fields = self._last
            self.log.emit(
                self.level,
                format + " ({count} times in the last {interval:g} s, {total} in this burst)",
                count=self._suppressed,
                total=self.total,
                interval=self.interval,
                **fields,
            )
            self._suppressed = 0
            self._last = None
            self._timer = self.callLater(self.interval, self._tick)
            return
        if self.total > 1:
            self.log.emit(
                self.level,
                "{what}: the burst is over, {total} in all",
                what=self.what,
                total=self.total,
            )
        self.total = 0

    def stop(self) -> None:
        """
        Cancel the pending interval (at shutdown).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
