"""
How far a regular expression can reach: the most characters one match of a Python C{re}
pattern can span (with what its lookaheads examine beyond it), and how far back its
lookbehinds look.

The text rewriter holds back only that many characters between two pieces of a body: a
literal such as C{hello} needs 5, not a 64 KiB window, so a rewrite costs little and delays
nothing.  The estimate is conservative (never smaller than the truth); a pattern it cannot
bound (C{a+}, a backreference, verbose syntax) gets None, and the rewriter then uses its
whole window.
"""

from __future__ import annotations

import re

_REPEAT = re.compile(r"\{(\d*)(,?)(\d*)\}")
_FLAGS = re.compile(r"[aiLmsux]*(?:-[imsx]+)?")


class _Unbounded(Exception):
    """
    The pattern's width cannot be bounded by this estimate.
    """


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _max(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else max(a, b)


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.position = 0
        self.behind = 0

    def peek(self, offset: int = 0) -> str:
        index = self.position + offset
        return self.pattern[index] if index < len(self.pattern) else ""

    def expect(self, text: str) -> None:
        if not self.pattern.startswith(text, self.position):
            raise _Unbounded(f"expected {text!r} at {self.position}")
        self.position += len(text)

    def skipPast(self, text: str) -> None:
        index = self.pattern.find(text, self.position)
        if index < 0:
            raise _Unbounded(f"no {text!r} after {self.position}")
        self.position = index + len(text)

    def alternation(self) -> int | None:
        best: int | None = 0
        while True:
            best = _max(best, self.sequence())
            if self.peek() == "|":
                self.position += 1
                continue
            return best

    def sequence(self) -> int | None:
        total: int | None = 0
        while self.peek() not in ("", "|", ")"):
            total = _add(total, self.quantified(self.atom()))
        return total

    def atom(self) -> int | None:
        c = self.peek()
        if c == "\\":
            return self.escape()
        if c == "[":
            return self.characterClass()
        if c == "(":
            return self.group()
        self.position += 1
        if c in ("^", "$"):
            return 0
        if c in ("*", "+", "?"):
            raise _Unbounded("a quantifier with nothing to repeat")
        return 1

    def escape(self) -> int | None:
        self.position += 1
        c = self.peek()
        self.position += 1
        if c in ("A", "b", "B", "Z"):
            return 0
        if c.isdigit():
            octal = "01234567"
            if c == "0":
                for _ in range(2):
                    if self.peek() and self.peek() in octal:
                        self.position += 1
                return 1
            if c in octal and self.peek() and self.peek() in octal:
                if self.peek(1) and self.peek(1) in octal:
                    self.position += 2
                    return 1  # a three-digit octal escape
            raise _Unbounded("a backreference")
        if c == "x":
            self.position += 2
        elif c == "u":
            self.position += 4
        elif c == "U":
            self.position += 8
        elif c == "N":
            self.skipPast("}")
        elif c == "":
            raise _Unbounded("a trailing backslash")
        return 1

    def characterClass(self) -> int:
        self.position += 1
        if self.peek() == "^":
            self.position += 1
        if self.peek() == "]":
            self.position += 1
        while self.peek() != "]":
            if self.peek() == "":
                raise _Unbounded("an unterminated class")
            self.position += 2 if self.peek() == "\\" else 1
        self.position += 1
        return 1

    def group(self) -> int | None:
        self.position += 1
        if self.peek() != "?":
            return self.closeGroup()
        self.position += 1
        c = self.peek()
        if c in (":", ">", "=", "!"):
            # a plain, atomic, or lookahead group: a lookahead examines its width beyond
            # the point where it stands, so it counts as if it were matched
            self.position += 1
            return self.closeGroup()
        if c == "<" and self.peek(1) in ("=", "!"):
            self.position += 2
            width = self.closeGroup()
            if width is None:
                raise _Unbounded("an unbounded lookbehind")
            self.behind = max(self.behind, width)
            return 0
        if c == "P" and self.peek(1) == "<":
            self.skipPast(">")
            return self.closeGroup()
        if c == "P" and self.peek(1) == "=":
            raise _Unbounded("a named backreference")
        if c == "#":
            self.skipPast(")")
            return 0
        if c == "(":
            self.skipPast(")")  # (?(id)yes|no): the wider branch counts
            return self.closeGroup()
        flags = _FLAGS.match(self.pattern, self.position)
        assert flags is not None  # the pattern matches the empty string
        if "x" in flags.group().split("-")[0]:
            raise _Unbounded("verbose syntax")
        self.position = flags.end()
        if self.peek() == ")":
            self.position += 1
            return 0
        self.expect(":")
        return self.closeGroup()

    def closeGroup(self) -> int | None:
        width = self.alternation()
        self.expect(")")
        return width

    def quantified(self, width: int | None) -> int | None:
        c = self.peek()
        if c in ("*", "+"):
            self.position += 1
            self.skipLazyOrPossessive()
            return 0 if width == 0 else None
        if c == "?":
            self.position += 1
            self.skipLazyOrPossessive()
            return width
        if c == "{":
            repeat = _REPEAT.match(self.pattern, self.position)
            if repeat is None or repeat.group() == "{}":
                return width  # a literal brace
            low, comma, high = repeat.groups()
            self.position = repeat.end()
            self.skipLazyOrPossessive()
            if comma and not high:
                return 0 if width == 0 else None
            most = int(high) if comma else int(low)
            return None if width is None else width * most
        return width

    def skipLazyOrPossessive(self) -> None:
        if self.peek() in ("?", "+"):
            self.position += 1


def patternReach(pattern: str | bytes, flags: int = 0) -> tuple[int | None, int | None]:
    """
    (ahead, behind) for a valid C{re} pattern: the most characters a match can span,
    lookaheads included, and the most characters its lookbehinds examine before a
    position; None where this estimate cannot bound it.
    """
    if isinstance(pattern, bytes):
        pattern = pattern.decode("latin-1")
    if flags & re.VERBOSE:
        return None, None
    parser = _Parser(pattern)
    try:
        ahead = parser.alternation()
        if parser.position != len(pattern):
            raise _Unbounded("an unbalanced parenthesis")
    except _Unbounded:
        return None, None
    return ahead, parser.behind
