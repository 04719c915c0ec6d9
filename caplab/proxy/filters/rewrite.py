"""
Text rewriting: sed-style substitutions on text bodies, as they stream.

A rule is one line, C{HOSTPATTERN s/REGEX/REPLACEMENT/FLAGS}:

    - C{HOSTPATTERN}: the hosts whose responses it rewrites (L{HostSelector}: C{example.com},
      C{*.example.com}, C{*}; several separated by commas);
    - C{REGEX}: a Python regular expression (the C{re} module's syntax);
    - C{REPLACEMENT}: text, where C{&} or C{\\0} is the whole match, C{\\1} to C{\\9} and
      C{\\g<name>} are groups, C{\\&}, C{\\\\}, C{\\n}, C{\\t} are C{&}, a backslash, a
      newline and a tab;
    - C{FLAGS}: C{g} every match (without it, only the first match of the body), C{i}
      ignore case, C{m} C{^}/C{$} at every line, C{s} C{.} matches newlines too.

Any character but a letter, a digit, a backslash or a space may replace C{/} as the
delimiter (C{s|a/b|c|g}); C{\\/} (the delimiter after a backslash) stands for the delimiter
itself.  Rules apply to C{text/*}, JavaScript, JSON, XML and their C{+json}/C{+xml} kinds,
in the body's character encoding (L{caplab.proxy.filters.text}).

A match is found however the body is cut into pieces as long as it spans at most the
window (64 KiB by default); a rule whose expression bounds its matches (C{hello},
C{colou?r}, C{[0-9]{4}}) holds back only that many characters, so it delays nothing.  A
rule whose pattern is a plain ASCII string works on the bytes directly when the encoding
allows it (UTF-8, the ISO-8859 and Windows code pages), without decoding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import AnyStr, Generic

from caplab.proxy.filters.hosts import FilterConfigError, HostSelector
from caplab.proxy.filters.interfaces import DEFAULT_WINDOW, ITransform, ResponseHead
from caplab.proxy.filters.regexwidth import patternReach
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.filters.substitute import (
    SLACK,
    LiteralSubstitution,
    StreamSubstitution,
    overlapsItself,
)
from caplab.proxy.filters.text import (
    ASCII_SAFE,
    DecodedTransform,
    SniffedTransform,
    codecName,
    isText,
)
from caplab.proxy.hooks import UpstreamRequest

_FLAGS = {"g": 0, "i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}
_METACHARACTERS = frozenset(".^$*+?{}[]\\|()")
_GROUP_NAME = re.compile(r"\\g<([^>]*)>")

#: A replacement's part: literal text, or a group (number or name).
Part = str | int | tuple[str]


@dataclass(frozen=True)
class RewriteRule:
    """
    One parsed rule (see the module docstring).

    @ivar text: the rule as given, for messages.
    @ivar pattern: the regular expression's source.
    @ivar parts: the replacement: literal strings, group numbers, and 1-tuples of group
        names.
    @ivar everywhere: the C{g} flag.
    @ivar flags: the C{re} flags.
    """

    text: str
    hosts: HostSelector
    pattern: str
    parts: tuple[Part, ...]
    everywhere: bool
    flags: int
    compiled: re.Pattern[str] = field(compare=False, repr=False)

    @property
    def literal(self) -> str | None:
        """
        The string the pattern matches, if it is a plain string (no metacharacter, no
        C{i} flag), else None.
        """
        if self.flags & re.IGNORECASE or any(c in _METACHARACTERS for c in self.pattern):
            return None
        return self.pattern

    def bytesRule(
        self,
    ) -> tuple[re.Pattern[bytes], bytes | Callable[[re.Match[bytes]], bytes]] | None:
        """
        The rule on bytes, for ASCII-safe encodings: possible when the pattern is a plain
        ASCII string and the replacement ASCII.
        """
        literal = self.literal
        if literal is None or not literal.isascii():
            return None
        if not all(isinstance(p, int) or (isinstance(p, str) and p.isascii()) for p in self.parts):
            return None
        pattern = re.compile(re.escape(literal.encode("ascii")))
        return pattern, _replacement(
            tuple(p.encode("ascii") if isinstance(p, str) else p for p in self.parts), b""
        )


def _replacement(
    parts: tuple[str | bytes | int | tuple[str], ...], empty: AnyStr
) -> AnyStr | Callable[[re.Match[AnyStr]], AnyStr]:
    """
    The replacement text, if C{parts} has no group, else a function of the match.
    """
    if all(isinstance(p, (str, bytes)) for p in parts):
        return empty.join(parts)  # type: ignore[arg-type]
    plan = [
        (True, p[0] if isinstance(p, tuple) else p) if isinstance(p, (int, tuple)) else (False, p)
        for p in parts
    ]

    def expand(match: re.Match[AnyStr]) -> AnyStr:
        return empty.join([(match.group(v) or empty) if g else v for g, v in plan])  # type: ignore[misc, arg-type]

    return expand


def _split(expression: str, delimiter: str, start: int, what: str, source: str) -> tuple[str, int]:
    """
    The text from C{start} to the next unescaped C{delimiter}, with C{\\delimiter} made
    the delimiter itself (escaped again if it is a regular-expression metacharacter and
    C{what} is the expression); and the index after the delimiter.
    """
    out = []
    index = start
    while index < len(expression):
        c = expression[index]
        if c == "\\" and index + 1 < len(expression):
            following = expression[index + 1]
            if following == delimiter:
                if what == "expression" and delimiter in _METACHARACTERS:
                    out.append("\\" + delimiter)
                else:
                    out.append(delimiter)
            else:
                out.append(c + following)
            index += 2
            continue
        if c == delimiter:
            return "".join(out), index + 1
        out.append(c)
        index += 1
    raise FilterConfigError(
        f"{source}: {expression!r} is not a complete s{delimiter}REGEX{delimiter}"
        f"REPLACEMENT{delimiter}FLAGS substitution (the {what} is not closed by "
        f"{delimiter!r})"
    )


def _parseReplacement(text: str, source: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    literal: list[str] = []

    def group(reference: int | tuple[str]) -> None:
        if literal:
            parts.append("".join(literal))
            literal.clear()
        parts.append(reference)

    index = 0
    while index < len(text):
        c = text[index]
        if c == "&":
            group(0)
            index += 1
            continue
        if c != "\\":
            literal.append(c)
            index += 1
            continue
        following = text[index + 1 : index + 2]
        index += 2
        if following.isdigit() and following.isascii():
            group(int(following))
        elif following == "g":
            match = _GROUP_NAME.match(text, index - 2)
            if match is None:
                raise FilterConfigError(f"{source}: write a named group as \\g<name>")
            name = match.group(1)
            group(int(name) if name.isdigit() else (name,))
            index = match.end()
        elif following in ("&", "\\"):
            literal.append(following)
        elif following == "n":
            literal.append("\n")
        elif following == "t":
            literal.append("\t")
        elif following == "":
            raise FilterConfigError(f"{source}: the replacement ends with a lone backslash")
        else:
            literal.append(following)  # the delimiter, or a character that needs none
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def parseRewrite(text: str, source: str = "--rewrite") -> RewriteRule:
    """
    Parse a rule, C{HOSTPATTERN s/REGEX/REPLACEMENT/FLAGS}.

    @param source: where the rule comes from (an option, a file and line), for messages.
    @raise FilterConfigError: the rule is not one; the message says why.
    """
    where = f"{source} {text!r}"
    fields = text.strip().split(None, 1)
    if len(fields) != 2:
        raise FilterConfigError(
            f"{where}: expected 'HOSTPATTERN s/REGEX/REPLACEMENT/FLAGS' (a host pattern, "
            "a space, a substitution)"
        )
    hostText, expression = fields
    hosts = HostSelector.parse(hostText, where)
    expression = expression.strip()
    if len(expression) < 2 or expression[0] != "s":
        raise FilterConfigError(f"{where}: the substitution must start with s/ (s/REGEX/...)")
    delimiter = expression[1]
    if delimiter.isalnum() or delimiter in ("\\", " ", "\n", "\t"):
        raise FilterConfigError(f"{where}: {delimiter!r} cannot delimit a substitution")
    pattern, index = _split(expression, delimiter, 2, "expression", where)
    replacement, index = _split(expression, delimiter, index, "replacement", where)
    flagText = expression[index:]
    if not pattern:
        raise FilterConfigError(f"{where}: the regular expression is empty")
    flags = 0
    for flag in flagText:
        if flag not in _FLAGS:
            raise FilterConfigError(
                f"{where}: unknown flag {flag!r} (g: every match, i: ignore case, "
                "m: multi-line, s: dot matches newline)"
            )
        flags |= _FLAGS[flag]
    try:
        compiled = re.compile(pattern, flags)
    except re.error as e:
        raise FilterConfigError(f"{where}: bad regular expression {pattern!r}: {e}") from None
    parts = _parseReplacement(replacement, where)
    for part in parts:
        if isinstance(part, int) and part > compiled.groups:
            raise FilterConfigError(
                f"{where}: the replacement names group {part}, but the expression has "
                f"{compiled.groups}"
            )
        if isinstance(part, tuple) and part[0] not in compiled.groupindex:
            raise FilterConfigError(
                f"{where}: the replacement names group {part[0]!r}, which the expression "
                "does not define"
            )
    return RewriteRule(text, hosts, pattern, parts, "g" in flagText, flags, compiled)


class _Counted(Generic[AnyStr]):
    """
    A substitution that counts the response as rewritten once it replaced something.
    """

    def __init__(
        self,
        substitution: StreamSubstitution[AnyStr] | LiteralSubstitution[AnyStr],
        counters: FilterCounters,
    ) -> None:
        self._substitution: StreamSubstitution[AnyStr] | LiteralSubstitution[AnyStr] = substitution
        self._counters = counters
        self._counted = False
        self.window = substitution.window

    def feed(self, text: AnyStr) -> AnyStr:
        out = self._substitution.feed(text)
        if not self._counted and self._substitution.changed:
            self._count()
        return out

    def finish(self) -> AnyStr:
        out = self._substitution.finish()
        if not self._counted and self._substitution.changed:
            self._count()
        return out

    def _count(self) -> None:
        self._counted = True
        self._counters.add("rewrites")


class RewriteFilter:
    """
    An L{IResponseFilter} applying one L{RewriteRule} to the text bodies of its hosts.
    """

    name = "rewrite"

    def __init__(
        self, rule: RewriteRule, counters: FilterCounters, window: int = DEFAULT_WINDOW
    ) -> None:
        self.rule = rule
        self.hosts = rule.hosts
        self.counters = counters
        ahead, behind = patternReach(rule.pattern, rule.flags)
        self._ahead = min(window, ahead) if ahead is not None else window
        self._behind = min(window, behind) if behind is not None else window
        self._text = _replacement(rule.parts, "")
        self._bytes = rule.bytesRule()

    def filterHead(self, request: UpstreamRequest, head: ResponseHead) -> None:
        pass

    def transformBody(self, request: UpstreamRequest, head: ResponseHead) -> ITransform | None:
        if not isText(head.mediaType):
            return None
        if head.charset is None:
            # the most a transform _build makes holds back: a DecodedTransform's
            return SniffedTransform(self._build, head.mediaType, 4 * (self._ahead + SLACK) + 4)
        encoding = codecName(head.charset)
        if encoding is None:
            return None  # an encoding it cannot read: the body passes unchanged
        return self._build(encoding)

    def _build(self, encoding: str) -> ITransform:
        rule = self.rule
        if self._bytes is not None and encoding in ASCII_SAFE:
            pattern, replacement = self._bytes
            return _Counted(self._substitution(pattern, replacement), self.counters)
        text = self._substitution(rule.compiled, self._text)
        return DecodedTransform(_Counted(text, self.counters), encoding)

    def _substitution(
        self,
        pattern: re.Pattern[AnyStr],
        replacement: AnyStr | Callable[[re.Match[AnyStr]], AnyStr],
    ) -> StreamSubstitution[AnyStr] | LiteralSubstitution[AnyStr]:
        rule = self.rule
        literal = rule.literal
        if (
            literal is not None
            and rule.everywhere
            and not callable(replacement)
            and not overlapsItself(literal)
        ):
            # a plain string everywhere: replace() does it without Python work per match
            plain = literal if isinstance(replacement, str) else literal.encode("ascii")
            return LiteralSubstitution(plain, replacement)
        return StreamSubstitution(
            pattern, replacement, self._ahead, self._behind, not rule.everywhere
        )
