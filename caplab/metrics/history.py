"""
The request rate over the last minutes, for the status pages' chart: requests counted in
buckets of a few seconds, in memory.  Pure: no I/O (under C{--workers} the buckets are shared
by L{caplab.metrics.shared}).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

#: Width of one bucket, in seconds, and how many are kept (ten minutes).
INTERVAL = 10.0
BUCKETS = 60


class RateHistory:
    """
    Requests per bucket over the last L{buckets} buckets of L{interval} seconds.

    @ivar interval: the width of one bucket, in seconds.
    @ivar buckets: how many buckets are kept.
    """

    def __init__(
        self,
        now: Callable[[], float] = time.time,
        interval: float = INTERVAL,
        buckets: int = BUCKETS,
    ) -> None:
        self.now = now
        self.interval = interval
        self.buckets = buckets
        self._counts: dict[int, int] = {}
        # The bucket being filled, kept apart so that recording in it is one comparison.
        self._slot: int | None = None
        self._current = 0

    def record(self, count: int = 1) -> None:
        slot = int(self.now() // self.interval)
        if slot == self._slot:
            self._current += count
            return
        self._settle()
        self._slot = slot
        self._current = self._counts.pop(slot, 0) + count
        if len(self._counts) > self.buckets * 2:
            oldest = slot - self.buckets
            for key in [key for key in self._counts if key <= oldest]:
                del self._counts[key]

    def _settle(self) -> None:
        if self._slot is not None and self._current:
            self._counts[self._slot] = self._current

    def recent(self) -> dict[int, int]:
        """
        The non-empty buckets of the window, by bucket number (start time / L{interval}).
        """
        self._settle()
        oldest = int(self.now() // self.interval) - self.buckets
        return {slot: count for slot, count in self._counts.items() if slot > oldest}

    def series(self) -> list[tuple[float, float]]:
        """
        (bucket start time, requests per second) for each of the last L{buckets} buckets,
        oldest first, the current (incomplete) bucket last.
        """
        return seriesOf(self.recent(), self.now(), self.interval, self.buckets)


def seriesOf(
    counts: Mapping[int, int], now: float, interval: float = INTERVAL, buckets: int = BUCKETS
) -> list[tuple[float, float]]:
    """
    (bucket start time, requests per second) of the last C{buckets} buckets of C{counts}
    (requests by bucket number) up to the one C{now} is in, oldest first.
    """
    current = int(now // interval)
    return [
        (slot * interval, counts.get(slot, 0) / interval)
        for slot in range(current - buckets + 1, current + 1)
    ]
