"""
The syntax of block and allow list files: lines in, rules out.

One rule a line:

    - C{example.com}: that domain and every subdomain of it;
    - C{*.example.com}: the subdomains only, not C{example.com} itself;
    - C{0.0.0.0 ads.example.com tracker.example.net}: a hosts-file line, as published block
      lists use; each name is a rule like C{example.com} (C{localhost} and friends, which such
      lists carry for the machine's own sake, are skipped);
    - C{192.0.2.7} or C{2001:db8::1}, in any spelling a resolver accepts: that address;
      C{10.0.0.0/8} or C{fc00::/7}: every address of that network;
    - the domain rules of Adblock filter lists (C{||ads.example.com^}, see
      L{caplab.proxy.adblock}), so that EasyList-style lists work as published;
    - C{#} starts a comment, blank lines are ignored.

A line that is not a rule is an error naming the file and line, except in a filter list
(once a file shows it is one: a C{[Adblock ...]} header, a C{!} comment, a C{||} or C{@@}
rule, a cosmetic rule with a domain before its C{##}; never a line starting with C{#}, which
is a comment), where it is a URL pattern, skipped and counted.  Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import Any

from caplab.proxy import adblock
from caplab.proxy.adblock import (
    isCosmetic,
    isHeaderOrComment,
    parseNetworkRule,
    startsFilterRule,
)
from caplab.proxy.addresses import canonicalAddress, parseAddress, parseNetwork
from caplab.proxy.hostnames import normaliseName

#: What L{readRules} yields: (kind, value, line number).  The kinds and their values:
DOMAIN = "domain"  #: a name (normalised): it and its subdomains
WILDCARD = "wildcard"  #: a name: its subdomains only
EXEMPT = "exempt"  #: a name: exempt it and its subdomains from the list's rules
NETWORK = "network"  #: an L{ipaddress} network (an address is one of full length)
EXEMPT_NETWORK = "exempt network"  #: a network: exempt it from the list's rules
SKIP = "skip"  #: why the line is skipped (see L{caplab.proxy.adblock})

Rule = tuple[str, Any, int]

#: Host names that hosts-file block lists carry for the machine itself, never as blocks.
HOSTS_FILE_SKIP = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "local",
        "broadcasthost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
        "ip6-allhosts",
        "0.0.0.0",
    }
)

#: A name as resolvers look it up: labels that neither start nor end with C{-}, two or more.
_STRICT_NAME = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
)


class PolicyFileError(Exception):
    """
    A block or allow list cannot be used: unreadable, or a line that is not a rule.

    The message names the file and line, e.g. C{blocked.txt:12: 'http://x/' is not a host
    name}.
    """


def readRules(lines: Iterable[str], source: str) -> Iterator[Rule]:
    """
    The rules in C{lines}, which come from C{source} (a file name, for messages), and the
    lines skipped, in order.

    @raise PolicyFileError: a line is not a rule (not in a filter list).
    """
    filterList = False
    knownAddresses: set[str] = set()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        first = line[0]
        if first == "#":
            # A comment, whatever follows (## Section, ##----): never evidence of a filter
            # list; in one, a generic cosmetic rule (##.ad), counted as such.
            if filterList and isCosmetic(line):
                yield (SKIP, adblock.COSMETIC, number)
            continue
        if isCosmetic(line):  # with a domain before its ## (or $$)
            filterList = True
            yield (SKIP, adblock.COSMETIC, number)
            continue
        if first in "![" and isHeaderOrComment(line):
            filterList = True
            continue
        try:
            if startsFilterRule(line):
                if line.startswith(("||", "@@")):
                    filterList = True
                rules = _filterRule(line, number)
            else:
                if "#" in line:
                    line = line.split("#", 1)[0]
                fields = line.split()
                if not fields:
                    continue
                if len(fields) == 1:
                    rules = [_rule(fields[0], number, filterList)]
                else:
                    if fields[0] not in knownAddresses:
                        if canonicalAddress(fields[0]) is None:
                            raise ValueError(
                                f"{line.strip()!r} is neither a rule nor a hosts-file line "
                                "(ADDRESS NAME ...)"
                            )
                        knownAddresses.add(fields[0])
                    rules = _hostsLine(fields[1:], number)
        except ValueError as e:
            if not filterList:
                raise PolicyFileError(f"{source}:{number}: {e}") from None
            rules = [(SKIP, adblock.PATH, number)]
        yield from rules


def _hostsLine(names: list[str], number: int) -> list[Rule]:
    """
    The rules of the names of a hosts-file line (C{localhost} and friends skipped).
    """
    rules: list[Rule] = []
    for name in names:
        if name.lower() in HOSTS_FILE_SKIP:
            continue
        address = parseAddress(name)
        if address is None:
            name = normaliseName(name)
            address = parseAddress(name)  # 0.. is 0: an address once normalised
        if address is not None:
            rules.append((NETWORK, ipaddress.ip_network(address), number))
        else:
            rules.append((DOMAIN, name, number))
    return rules


def _rule(text: str, number: int, strict: bool = False) -> Rule:
    """
    The rule C{text} of caplab's syntax.

    @param strict: accept only host names a resolver would look up (no label starting or
        ending with C{-}, no leading or trailing dot, at least two labels): in a filter list
        a bare word is a URL pattern (C{ad.}, C{-banner-}), not a domain.
    @raise ValueError: not a rule.
    """
    if text.startswith("*."):
        return (WILDCARD, normaliseName(text[2:]), number)
    address = parseAddress(text)
    if address is not None:
        return (NETWORK, ipaddress.ip_network(address), number)
    network = parseNetwork(text)
    if network is not None:
        return (NETWORK, network, number)
    if "*" in text or "/" in text or ":" in text:
        raise ValueError(
            f"{text!r} is not a rule: write a domain (example.com), *.example.com, "
            "an IP address or a network (10.0.0.0/8)"
        )
    name = normaliseName(text)
    if strict and (text[-1:] == "." or not _STRICT_NAME.fullmatch(name)):
        raise ValueError(f"{text!r} is a URL pattern, not a domain")
    address = parseAddress(name)  # 0.. is 0: an address once normalised, as for requests
    if address is not None:
        return (NETWORK, ipaddress.ip_network(address), number)
    return (DOMAIN, name, number)


def _filterRule(line: str, number: int) -> list[Rule]:
    """
    The domain rule of filter-list line C{line}, or why it is skipped.

    @raise ValueError: the rule's name is not a host name.
    """
    parsed = parseNetworkRule(line)
    if isinstance(parsed, str):
        return [(SKIP, parsed, number)]
    kind, text, exception = parsed
    address = parseAddress(text)
    if address is None:
        name = normaliseName(text)
        address = parseAddress(name)  # 0.. is 0: an address once normalised
    if address is not None:
        if kind == "wildcard":
            return [(SKIP, adblock.PATH, number)]
        network = ipaddress.ip_network(address)
        return [(EXEMPT_NETWORK if exception else NETWORK, network, number)]
    if kind == "wildcard":
        if exception:
            return [(SKIP, adblock.EXCEPTION, number)]
        return [(WILDCARD, name, number)]
    return [(EXEMPT if exception else DOMAIN, name, number)]
