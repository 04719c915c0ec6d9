"""
What the filters report: counters of what they removed or changed (for the status page and
metrics), and log lines about broken bodies and failing plugins, rate-limited so that a
flood of bad responses does not flood the log too.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from caplab.ratelimit import LogThrottles

#: Seconds between two log lines about one kind of failure.
LOG_INTERVAL = 10.0

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
    "untransformed-coding": "bodies passed untransformed: unknown or too many content codings",
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


def filterLog(clock: IReactorTime) -> LogThrottles:
    """
    Where the filters' failures are logged: one throttle per kind (broken bodies, each
    failing filter), at most one line per L{LOG_INTERVAL} seconds of each.
    """
    return LogThrottles(Logger(namespace="caplab.proxy.filters"), clock, LOG_INTERVAL)
