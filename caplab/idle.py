"""
Idle timeouts for many connections with one timer.

A timer per connection (Twisted's C{TimeoutMixin}) creates a delayed call when a connection
opens, moves it on every read and cancels it when the connection closes, and the reactor
keeps every one of them in its heap: for the lab's short connections that is a tenth of all
the work.  An L{IdleSweeper} keeps its members in order of their last activity instead and
schedules one delayed call, for the member whose time runs out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

Member = TypeVar("Member", bound=Hashable)


class IdleSweeper(Generic[Member]):
    """
    Hands each member that has been idle for C{timeout} seconds to C{expire}, once.

    A member is idle from when it is L{add}ed or last L{touch}ed; L{remove} forgets it.  It
    expires exactly when a timer of its own would have (as near as the clock's floating
    point allows): the sweeper's one delayed call is always set for the member that was
    active longest ago, which is the first in an insertion-ordered dict (a touched member
    moves to the end).  Adding, touching and removing cost a dict operation each.

    @ivar clock: schedules the sweeps.
    @ivar timeout: seconds of inactivity after which a member expires.
    """

    log = Logger()

    def __init__(
        self, clock: IReactorTime, timeout: float, expire: Callable[[Member], object]
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self._expire = expire
        # Each member and when it was last active, least recently active first.
        self._members: OrderedDict[Member, float] = OrderedDict()
        self._call: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def add(self, member: Member) -> None:
        """
        Start timing C{member} (again, if it is a member already).
        """
        now = self.clock.seconds()
        members = self._members
        members[member] = now
        members.move_to_end(member)
        if self._call is None:
            self._call = self.clock.callLater(self.timeout, self._sweep, now + self.timeout)

    def touch(self, member: Member) -> None:
        """
        C{member} was active: its timeout starts again.  (It must be a member.)
        """
        members = self._members
        members[member] = self.clock.seconds()
        members.move_to_end(member)

    def remove(self, member: Member) -> None:
        """
        Forget C{member}, if it is a member.

        The delayed call stays, even for no member: it runs once more and finds nothing to
        do, which costs less than cancelling and scheduling one for every connection.
        """
        self._members.pop(member, None)

    def _sweep(self, due: float) -> None:
        """
        Expire every member whose time is up, and schedule the next sweep.

        @param due: when this sweep was scheduled for (the first member's deadline then).
        """
        self._call = None
        members = self._members
        timeout = self.timeout
        now = self.clock.seconds()
        limit = max(due, now)
        while members:
            member, last = next(iter(members.items()))
            deadline = last + timeout
            if deadline > limit:
                break
            del members[member]
            try:
                self._expire(member)
            except Exception:
                self.log.failure("caplab could not time out an idle connection")
        else:
            return
        if self._call is not None:  # an expired member was added again meanwhile
            self._call.cancel()
        self._call = self.clock.callLater(deadline - now, self._sweep, deadline)
