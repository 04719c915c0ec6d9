"""
A log line that cannot flood the log: the first event of a burst is logged, the rest are
counted, and once an interval has passed a summary says how many there were.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger


class ThrottledWarning:
    """
    One warning per burst of events, then at most one summary line per C{interval}.

    The first event is logged with the fields given and C{total} (events so far).  Later
    events within C{interval} are only counted; when the interval ends, a summary line says
    how many (C{held}) and the interval starts again if there were any, so a steady flood
    gives one line per interval; after a quiet interval the next event is logged in full.
    """

    def __init__(
        self, log: Logger, clock: Any, format: str, summary: str, interval: float = 60.0
    ) -> None:
        """
        @param format: the line of a first event (PEP 3101, with the event's fields and
            C{total}).
        @param summary: the summary line (with C{held}, C{interval} and C{total}).
        """
        self.log = log
        self.clock = clock
        self.format = format
        self.summary = summary
        self.interval = interval
        self.total = 0
        self._held: int | None = None
        self._timer: Any = None

    def event(self, **fields: Any) -> None:
        self.total += 1
        if self._held is not None:
            self._held += 1
            return
        self.log.warn(self.format, total=self.total, **fields)
        self._held = 0
        self._timer = self.clock.callLater(self.interval, self._intervalEnded)

    def _intervalEnded(self) -> None:
        held, self._timer = self._held, None
        if not held:
            self._held = None
            return
        self.log.warn(self.summary, held=held, interval=self.interval, total=self.total)
        self._held = 0
        self._timer = self.clock.callLater(self.interval, self._intervalEnded)

    def stop(self) -> None:
        """
        Cancel the pending summary (the server is stopping).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._held = None
