"""
The domain rules of Adblock Plus / EasyList / AdGuard filter lists, so that published lists
can be used as block lists as they are.

A proxy sees host names, not pages, so of such a list only the rules that name a whole
domain can be kept:

    - C{||ads.example.com^} blocks the domain and its subdomains (C{^}, C{^|} or nothing may
      follow the name); C{||*.example.com^} its subdomains only;
    - options after C{$} (C{$third-party}, C{$script}, C{$domain=...}) are ignored: the rule
      blocks the domain everywhere, for every kind of request, which is what a proxy can do;
      rules whose options do not block at all (C{$badfilter}, C{$redirect=}, C{$removeparam=},
      C{$csp=} ...) are skipped;
    - an exception C{@@||cdn.example.com^} with no options exempts the domain and its
      subdomains from the rules of that kind of list (block or allow), in every file; one with
      options is skipped, as ignoring its options would widen it;
    - cosmetic rules (C{##}, C{#@#}, C{#?#}, C{#$#} ... and HTML filters C{$$}), path rules
      (C{||example.com/ads/}) and URL patterns (C{/banner/*}, C{-ad-}) are skipped.

Skipped rules are counted by kind, for the summary logged at start-up and reload.

Pure functions: text in, decisions out.
"""

from __future__ import annotations

import re

#: Why a line of a filter list is skipped (the summary counts each).
COSMETIC = "cosmetic"
PATH = "path or pattern"
EXCEPTION = "exception with options"
MODIFIER = "non-blocking"

#: Options that make a rule change requests or cancel other rules instead of blocking.
NON_BLOCKING_OPTIONS = frozenset(
    {
        "badfilter",
        "csp",
        "redirect",
        "redirect-rule",
        "removeparam",
        "queryprune",
        "removeheader",
        "replace",
        "cookie",
        "header",
        "permissions",
        "urltransform",
        "hls",
        "jsonprune",
        "xmlprune",
        "stealth",
        "rewrite",
        "empty",
        "mp4",
        "popup",
        "dnsrewrite",
        "dnstype",
        "client",
        "ctag",
        "denyallow",
    }
)

#: A cosmetic or scriptlet rule: an optional domain list, then C{##}, C{#@#}, C{#?#}, C{#$#},
#: C{#%#}, C{#@$?#} ..., then the selector (C{## heading} is a comment, not a rule); or an HTML
#: filter (C{$$}, C{$@$}).
_COSMETIC = re.compile(r"[^\s#$]*(?:#@?[$?%]{0,2}#[^\s#]|\$@?\$)")

#: C{||name} then the rest: a C{*.} prefix, the name up to the first separator or wildcard.
_DOMAIN_RULE = re.compile(r"\|\|(\*\.)?([^\^/|*:?]+)(.*)")

#: What may follow the name of a C{||name} rule for it to cover the whole domain.
_WHOLE_DOMAIN = frozenset({"", "^", "^|", "|"})


def isCosmetic(line: str) -> bool:
    """
    Whether C{line} (stripped) is a cosmetic, scriptlet or HTML-filtering rule.
    """
    return ("#" in line or "$" in line) and _COSMETIC.match(line) is not None


def isHeaderOrComment(line: str) -> bool:
    """
    Whether C{line} (stripped) is a filter list's C{[Adblock Plus 2.0]} header or a C{!}
    comment: lines that mark a file as a filter list.
    """
    return line[:1] == "!" or (line[:1] == "[" and line[-1:] == "]" and "adblock" in line.lower())


def parseNetworkRule(line: str) -> tuple[str, str, bool] | str:
    """
    The domain rule in filter-list line C{line} (stripped, neither comment nor cosmetic), or
    why it is skipped.

    @return: (kind, name, exception): kind is C{"domain"} (the name and its subdomains) or
        C{"wildcard"} (the subdomains only); C{name} is as written (not normalised), or the
        reason to skip it (L{PATH}, L{EXCEPTION}, L{MODIFIER}).
    """
    exception = line.startswith("@@")
    if exception:
        line = line[2:]
    rule, dollar, options = line.partition("$")
    if dollar:
        if exception:
            return EXCEPTION
        names = {part.strip().lstrip("~").split("=", 1)[0].lower() for part in options.split(",")}
        if not names.isdisjoint(NON_BLOCKING_OPTIONS):
            return MODIFIER
    match = _DOMAIN_RULE.fullmatch(rule)
    if match is None:
        return PATH
    wildcard, name, rest = match.groups()
    if rest not in _WHOLE_DOMAIN:
        return PATH
    return ("wildcard" if wildcard else "domain", name, exception)


def startsFilterRule(line: str) -> bool:
    """
    Whether C{line} (stripped) can only be a filter-list network rule (C{||x^}, C{@@...},
    C{|http://...}, C{/regex/}, or one with C{^} or C{$} options).
    """
    first = line[:1]
    return first in "|@" or ("^" in line or "$" in line) and " " not in line
