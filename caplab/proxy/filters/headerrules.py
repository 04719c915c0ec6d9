"""
Header rules: add, set or remove request or response header fields per host pattern.

A rule is one line, C{HOSTPATTERN ACTION NAME[: VALUE]}:

    - C{* remove Server}: remove every C{Server} field;
    - C{example.com set User-Agent: caplab-lab/1.0}: replace every C{User-Agent} field
      with this one (or add it);
    - C{*.example.org add X-Lab: lab 3}: add a field, keeping those already there.

Names are matched without regard to case; values may not hold control characters.  Rules
never touch the fields that frame a message or that the proxy manages (C{Content-Length},
C{Transfer-Encoding}, C{Content-Encoding}, C{Host}, the hop-by-hop fields): a rule naming
one is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from caplab.proxy.filters.fields import isFieldValue, isToken, removeFields, setField
from caplab.proxy.filters.hosts import FilterConfigError, HostSelector
from caplab.proxy.filters.interfaces import ITransform, ResponseHead
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.headers import HOP_BY_HOP
from caplab.proxy.hooks import UpstreamRequest

ACTIONS = ("add", "set", "remove")

#: Fields a header rule may not name: the framing, C{Host}, and the hop-by-hop fields the
#: proxy removes and writes itself (the proxy credentials among them).
PROTECTED = HOP_BY_HOP | {b"content-length", b"content-encoding", b"host"}


@dataclass(frozen=True)
class HeaderRule:
    text: str
    hosts: HostSelector
    action: str
    name: bytes
    value: bytes | None

    def apply(self, headers: list[tuple[bytes, bytes]]) -> int:
        """
        Apply the rule to C{headers} in place; the number of fields added, set or removed.
        """
        if self.action == "remove":
            return removeFields(headers, frozenset({self.name.lower()}))
        assert self.value is not None
        if self.action == "add":
            headers.append((self.name, self.value))
        else:
            setField(headers, self.name, self.value)
        return 1


def parseHeaderRule(text: str, source: str = "--request-header") -> HeaderRule:
    """
    Parse a rule, C{HOSTPATTERN add|set|remove NAME[: VALUE]}.

    @raise FilterConfigError: the rule is not one; the message says why.
    """
    where = f"{source} {text!r}"
    fields = text.strip().split(None, 2)
    if len(fields) != 3 or fields[1].lower() not in ACTIONS:
        raise FilterConfigError(
            f"{where}: expected 'HOSTPATTERN add|set|remove NAME[: VALUE]', e.g. "
            "'* remove Server' or 'example.com set User-Agent: lab'"
        )
    hostText, action, rest = fields
    hosts = HostSelector.parse(hostText, where)
    action = action.lower()
    nameText, colon, valueText = rest.partition(":")
    nameText = nameText.strip()
    try:
        name = nameText.encode("ascii")
        value = valueText.strip().encode("latin-1")
    except UnicodeEncodeError:
        raise FilterConfigError(
            f"{where}: a field name must be ASCII and a value Latin-1 text"
        ) from None
    if not isToken(name):
        raise FilterConfigError(f"{where}: {nameText!r} is not a field name")
    if name.lower() in PROTECTED:
        raise FilterConfigError(
            f"{where}: {nameText} frames the message or is the proxy's own; rules may not change it"
        )
    if action == "remove":
        if colon:
            raise FilterConfigError(f"{where}: remove takes a name only, no value")
        return HeaderRule(text, hosts, action, name, None)
    if not colon:
        raise FilterConfigError(f"{where}: {action} needs 'NAME: VALUE'")
    if not isFieldValue(value):
        raise FilterConfigError(f"{where}: the value holds a control character")
    return HeaderRule(text, hosts, action, name, value)


class RequestHeaderFilter:
    """
    An L{IRequestFilter} applying one L{HeaderRule} to requests.
    """

    name = "request-header"

    def __init__(self, rule: HeaderRule, counters: FilterCounters) -> None:
        self.rule = rule
        self.counters = counters

    def filterRequest(self, request: UpstreamRequest, client: str) -> UpstreamRequest:
        headers = list(request.headers)
        changed = self.rule.apply(headers)
        if not changed:
            return request
        self.counters.add("header-rules", changed)
        return replace(request, headers=headers)


class ResponseHeaderFilter:
    """
    An L{IResponseFilter} applying one L{HeaderRule} to response heads.
    """

    name = "response-header"
    headersOnly = True

    def __init__(self, rule: HeaderRule, counters: FilterCounters) -> None:
        self.rule = rule
        self.counters = counters

    def filterHead(self, request: UpstreamRequest, head: ResponseHead) -> None:
        changed = self.rule.apply(head.headers)
        if changed:
            self.counters.add("header-rules", changed)

    def transformBody(self, request: UpstreamRequest, head: ResponseHead) -> ITransform | None:
        return None
