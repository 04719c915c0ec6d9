"""
A regular-expression substitution applied to a stream, piece by piece, with the same result
as C{pattern.sub} over the whole text, as long as each match (with what it looks at around
it) fits in the window.

How: the text not yet passed on is kept, and the search resumes there when the next piece
comes.  A match that starts at least C{window} characters before the end of what is known
cannot change with more text (a match spans at most C{ahead} characters, lookaheads
included, and C{$}, C{\\b} look at most two characters further), so it is replaced and
everything before it passed on; the last C{window} characters wait for the next piece.  A
few characters already passed on are kept before the search point, for lookbehinds, C{\\b}
and C{^} with MULTILINE; the search starts after them, so C{^} without MULTILINE and C{\\A}
match only at the real start of the body.  Pieces much smaller than what is held wait
until they add up (L{caplab.proxy.filters.interfaces.GATHER}), so that a body that comes a
byte at a time is not searched again whole per byte.

Works on C{str} (decoded text) and on C{bytes} alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import AnyStr, Generic

from caplab.proxy.filters.interfaces import GATHER, GATHER_FLOOR

#: Characters examined beyond a match's end by C{$}, C{\\b}, C{\\B}.
SLACK = 2


class StreamSubstitution(Generic[AnyStr]):
    """
    One substitution over one body.

    @ivar window: the most characters held back between two pieces.
    @ivar count: the replacements made so far.
    """

    @property
    def changed(self) -> bool:
        """
        Whether anything was replaced so far.
        """
        return self.count > 0

    def __init__(
        self,
        pattern: re.Pattern[AnyStr],
        replacement: AnyStr | Callable[[re.Match[AnyStr]], AnyStr],
        ahead: int,
        behind: int,
        first: bool = False,
    ) -> None:
        """
        @param replacement: the replacement text, or a function of the match.
        @param ahead: the most characters a match can span, lookaheads included.
        @param behind: the most characters a lookbehind examines before a position.
        @param first: replace only the first match (sed without C{g}).
        """
        self._pattern: re.Pattern[AnyStr] = pattern
        self._replacement: AnyStr | Callable[[re.Match[AnyStr]], AnyStr] = replacement
        self._expand = callable(replacement)
        self.window = ahead + SLACK
        self._behind = behind + 1
        self._first = first
        self._done = False
        self._buffer: AnyStr | None = None
        self._pending: list[AnyStr] = []  # small pieces not searched yet (GATHER)
        self._pendingSize = 0
        self._position = 0
        self._emptyAt = -1
        self.count = 0

    def feed(self, text: AnyStr) -> AnyStr:
        if self._done:
            return text
        held = self._buffer
        if held is None:
            return self._run(text, False)
        pending: list[AnyStr] = self._pending
        size = self._pendingSize + len(text)
        if len(held) > GATHER_FLOOR and size * GATHER < len(held):
            # too little to search the held text again for: wait for more (GATHER)
            pending.append(text)
            self._pendingSize = size
            return text[:0]
        if pending:
            pending.append(text)
            text = text[:0].join(pending)
            pending.clear()
            self._pendingSize = 0
        return self._run(held + text, False)

    def finish(self) -> AnyStr:
        buffer, self._buffer = self._buffer, None
        if self._pending and buffer is not None:
            buffer += buffer[:0].join(self._pending)
            self._pending.clear()
            self._pendingSize = 0
        if buffer is None:
            return self._pattern.pattern[:0]
        if self._done:
            return buffer[self._position :]
        return self._run(buffer, True)

    def _run(self, buffer: AnyStr, final: bool) -> AnyStr:
        position = self._position
        limit = len(buffer) if final else len(buffer) - self.window
        lastEmpty = self._emptyAt
        out: list[AnyStr] = []
        if limit >= position:
            replacement = self._replacement
            expand = self._expand
            for match in self._pattern.finditer(buffer, position):
                start, end = match.span()
                if start > limit:
                    break
                if start == end == lastEmpty:
                    continue  # the empty match the last piece ended on: replaced already
                out.append(buffer[position:start])
                out.append(replacement(match) if expand else replacement)  # type: ignore[operator, arg-type]
                position = end
                lastEmpty = end if start == end else -1
                self.count += 1
                if self._first:
                    self._done = True
                    out.append(buffer[position:])
                    self._buffer = None
                    return buffer[:0].join(out)
        emit = max(position, limit)
        out.append(buffer[position:emit])
        keep = max(0, emit - self._behind)
        self._buffer = buffer[keep:]
        self._position = emit - keep
        self._emptyAt = lastEmpty - keep if lastEmpty == emit else -1
        return buffer[:0].join(out) if len(out) > 1 else out[0]


def overlapsItself(literal: str | bytes) -> bool:
    """
    Whether two occurrences of C{literal} can overlap (it has a proper prefix that is also
    a suffix, as C{aa} or C{abab}).
    """
    return any(literal[:size] == literal[-size:] for size in range(1, len(literal)))


class LiteralSubstitution(Generic[AnyStr]):
    """
    Every occurrence of a plain string replaced, on a stream: the same result as a
    L{StreamSubstitution} of the escaped string, at the speed of C{replace} (no Python work
    per match).  Only for strings that cannot overlap themselves (L{overlapsItself}), so
    the occurrences C{replace} finds are the ones a left-to-right search finds.

    @ivar window: the most characters held back (the string's length less one).
    @ivar changed: whether anything was replaced so far (not how often: counting would
        cost a second pass over the text).
    """

    def __init__(self, literal: AnyStr, replacement: AnyStr) -> None:
        assert literal and not overlapsItself(literal)
        self._literal: AnyStr = literal
        self._replacement: AnyStr = replacement
        self.window = len(literal) - 1
        self._carry: AnyStr = literal[:0]
        self.changed = False

    def feed(self, text: AnyStr) -> AnyStr:
        buffer = self._carry + text if self._carry else text
        literal = self._literal
        size = len(literal)
        # A cut where no occurrence straddles: before the last window, or at an occurrence
        # that starts in it.
        cut = len(buffer) - self.window
        if cut <= 0:
            self._carry = buffer
            return text[:0]
        straddling = buffer.find(literal, max(0, cut - size + 1), cut + size - 1)
        if 0 <= straddling < cut:
            cut = straddling
        self._carry = buffer[cut:]
        return self._replace(buffer[:cut])

    def finish(self) -> AnyStr:
        buffer, self._carry = self._carry, self._carry[:0]
        return self._replace(buffer)

    def _replace(self, text: AnyStr) -> AnyStr:
        replaced = text.replace(self._literal, self._replacement)
        if replaced is not text:  # CPython returns the text itself when nothing matched
            self.changed = True
        return replaced
