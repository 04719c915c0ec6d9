"""
What the filters report: counters of what they removed or changed (for the status page and
metrics), and log lines about broken bodies and failing plugins, rate-limited so that a
flood of bad responses does not flood the log too.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

#: The counters, with what each counts (the status page shows these texts).
COUNTERS = {
    "tracking-parameters": "tracking query parameters removed from URLs",
    "referers-reduced": "cross-site Referer fields reduced to their origin",
    "gpc-sent": "requests sent with Sec-GPC: 1",
    "cookies-dropped": "third-party requests sent without their Cookie",
    "set-cookies-dropped": "Set-Cookie fields dropped from third-party responses",
    "header-rules": "header fields added, set or removed by header rules",
    "rewrites": "responses whose text a rewrite rule changed",
    "elements-blocked": "HTML elements removed because their host is blocked",
    "responses-transformed": "response bodies transformed",
    "untransformed-no-transform": "bodies passed untransformed: Cache-Control: no-transform",
    "untransformed-coding": "bodies passed untransformed: unknown Content-Encoding",
    "untransformed-partial": "bodies passed untransformed: 206 Partial Content",
    "broken-bodies": "transformed bodies cut off: corrupt encoding or a failing filter",
}


class FilterCounters:
    """
    Counts of what the filters did, by the names in L{COUNTERS} (plugins may add names).
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def add(self, name: str, count: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + count

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        """
        A copy of the counts, for a page or a scrape.
        """
        return dict(self.counts)


class RateLimitedLog:
    """
    Logs a kind of event at most once per C{interval} seconds, with the number of events
    of that kind so far.
    """

    log = Logger(namespace="caplab.proxy.filters")

    def __init__(self, seconds: Callable[[], float], interval: float = 10.0) -> None:
        """
        @param seconds: the clock (C{reactor.seconds}).
        """
        self.seconds = seconds
        self.interval = interval
        self._next: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def warn(self, kind: str, format: str, **fields: object) -> None:
        """
        Log C{format} with C{fields} (plus C{count}, the events of this C{kind} so far)
        unless a line of this kind was logged less than C{interval} seconds ago.
        """
        count = self._counts[kind] = self._counts.get(kind, 0) + 1
        now = self.seconds()
        if now < self._next.get(kind, float("-inf")):
            return
        self._next[kind] = now + self.interval
        self.log.warn(format + " ({count} so far)", count=count, **fields)
