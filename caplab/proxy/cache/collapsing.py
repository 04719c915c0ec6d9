"""
Request collapsing: one origin request per URI at a time; the others wait on it, bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from caplab.proxy.hooks import UpstreamRequest, UpstreamResponse


class Flight:
    """
    An origin request for a URI that other requests for it wait on.
    """

    def __init__(self) -> None:
        self.waiters: list[Waiter] = []
        self.finished = False

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.wake()


class Waiter:
    """
    A request waiting on a L{Flight}: when it ends (or after the timeout) the request is
    looked up again (C{retry}) and, if still a miss, sent to the origin.
    """

    def __init__(
        self,
        clock: IReactorTime,
        retry: Callable[[UpstreamRequest], Deferred[UpstreamResponse]],
        request: UpstreamRequest,
        flight: Flight,
        timeout: float,
    ) -> None:
        self.retry = retry
        self.request = request
        self.flight = flight
        self.result: Deferred[UpstreamResponse] = Deferred(self._cancel)
        self.inner: Deferred[UpstreamResponse] | None = None
        self.woken = False
        self.timer: IDelayedCall | None = clock.callLater(timeout, self.wake)

    def wake(self) -> None:
        if self.woken:
            return
        self.woken = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self in self.flight.waiters:
            self.flight.waiters.remove(self)
        self.inner = self.retry(self.request)
        self.inner.addBoth(self._deliver)

    def _deliver(self, result: Any) -> None:
        if self.result.called:
            return None
        if isinstance(result, Failure):
            self.result.errback(result)
        else:
            self.result.callback(result)
        return None

    def _cancel(self, _: Deferred[UpstreamResponse]) -> None:
        if not self.woken:
            self.woken = True
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            if self in self.flight.waiters:
                self.flight.waiters.remove(self)
        elif self.inner is not None:
            self.inner.cancel()
