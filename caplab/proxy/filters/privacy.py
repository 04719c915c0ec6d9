"""
Privacy rules (C{--privacy}, off by default), each part on its own switch:

    - C{params}: remove tracking query parameters from the URLs the proxy forwards
      (L{DEFAULT_TRACKING_PARAMETERS}, extendable); the cache stores the cleaned URL;
    - C{referer}: reduce a cross-site C{Referer} to its origin
      (C{http://news.example/2026/story?id=7} becomes C{http://news.example/});
    - C{gpc}: send C{Sec-GPC: 1} (Global Privacy Control: do not sell or share);
    - C{cookies}: drop C{Cookie} from requests whose C{Referer} names another site, and
      C{Set-Cookie} from their responses: third-party cookies over plain HTTP.  Like a
      browser's C{SameSite=Lax}, a top-level navigation with a safe method (a link
      followed from another site) keeps its cookies.

A "site" is a registrable domain (C{www.example.co.uk} and C{static.example.co.uk} are one
site, C{example.co.uk}) by the Public Suffix List; an IP address is a site of its own.
The rules only remove or reduce: nothing is added but C{Sec-GPC: 1}, and nothing that
could identify the client.  They are pure functions of the request; the filter counts
what it removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import unquote_to_bytes, urlsplit

from publicsuffixlist import PublicSuffixList

from caplab.proxy.filters.fields import (
    fieldValues,
    firstField,
    listElements,
    removeFields,
    setField,
)
from caplab.proxy.filters.hosts import FilterConfigError
from caplab.proxy.filters.interfaces import ITransform, ResponseHead
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.hooks import Headers, UpstreamRequest
from caplab.proxy.policy import normaliseHost

#: Query parameters that only track: exact names, and prefixes written C{name*}.
#: Matched without regard to case, after percent-decoding the name.
DEFAULT_TRACKING_PARAMETERS = (
    "utm_*",  # Google Analytics campaign tags (utm_source, utm_medium ...)
    "fbclid",  # Facebook
    "gclid",  # Google Ads
    "dclid",  # Google Display
    "gbraid",  # Google Ads (iOS)
    "wbraid",  # Google Ads (iOS)
    "_gl",  # Google cross-domain linker
    "msclkid",  # Microsoft Ads
    "mc_eid",  # Mailchimp
    "mc_cid",  # Mailchimp
    "yclid",  # Yandex
    "ysclid",  # Yandex
    "twclid",  # Twitter/X
    "ttclid",  # TikTok
    "igshid",  # Instagram
    "li_fat_id",  # LinkedIn
    "epik",  # Pinterest
    "_hsenc",  # HubSpot
    "_hsmi",  # HubSpot
    "__hssc",  # HubSpot
    "__hstc",  # HubSpot
    "__hsfp",  # HubSpot
    "hsctatracking",  # HubSpot
    "mkt_tok",  # Marketo
    "oly_anon_id",  # Omeda
    "oly_enc_id",  # Omeda
    "vero_id",  # Vero
    "vero_conv",  # Vero
    "rb_clickid",  # Rakuten
    "s_cid",  # Adobe
    "wickedid",  # Wicked Reports
    "_openstat",  # Openstat
    "ml_subscriber",  # MailerLite
    "ml_subscriber_hash",  # MailerLite
)

#: The parts of the privacy rules, by name.
PARTS = ("params", "referer", "gpc", "cookies")

_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


class TrackingParameters:
    """
    Which query parameter names are tracking ones.
    """

    def __init__(self, names: Iterable[str]) -> None:
        """
        @param names: exact names and C{prefix*} patterns.
        @raise FilterConfigError: an empty name, or a C{*} elsewhere than at the end.
        """
        exact = set()
        prefixes = []
        for name in names:
            lower = name.strip().lower()
            bare = lower[:-1] if lower.endswith("*") else lower
            if not bare or "*" in bare or "&" in bare or "=" in bare:
                raise FilterConfigError(
                    f"{name!r} is not a query parameter name (NAME, or PREFIX* for every name "
                    "that starts with PREFIX)"
                )
            if lower.endswith("*"):
                prefixes.append(bare)
            else:
                exact.add(bare)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)

    def isTracking(self, name: str) -> bool:
        return name in self.exact or name.startswith(self.prefixes)


def stripTrackingParameters(path: bytes, tracking: TrackingParameters) -> tuple[bytes, int]:
    """
    C{path} (origin-form, C{/a?b=c}) without its tracking query parameters, and how many
    were removed.  The other parameters keep their order and bytes; a query left empty is
    dropped with its C{?}.
    """
    mark = path.find(b"?")
    if mark < 0:
        return path, 0
    kept = []
    removed = 0
    for parameter in path[mark + 1 :].split(b"&"):
        name = parameter.split(b"=", 1)[0]
        if name and tracking.isTracking(_parameterName(name)):
            removed += 1
        else:
            kept.append(parameter)
    if not removed:
        return path, 0
    query = b"&".join(kept)
    return path[:mark] + (b"?" + query if query else b""), removed


def _parameterName(raw: bytes) -> str:
    if b"%" in raw or b"+" in raw:
        raw = unquote_to_bytes(raw.replace(b"+", b" "))
    return raw.decode("utf-8", "replace").lower()


@lru_cache(maxsize=1)
def publicSuffixList() -> PublicSuffixList:
    """
    The Public Suffix List shipped with the C{publicsuffixlist} package, loaded once (about
    50 ms, at the first configuration that needs it).
    """
    return PublicSuffixList()


def siteOf(host: str) -> str:
    """
    The site of C{host} (normalised, as in a L{Target}): its registrable domain, or the host
    itself for an IP address or a public suffix.
    """
    if ":" in host or host.replace(".", "").isdigit():
        return host
    return publicSuffixList().privatesuffix(host) or host


@dataclass(frozen=True)
class RefererOrigin:
    """
    The origin a C{Referer} names: scheme, host (normalised) and the authority as sent.
    """

    scheme: str
    host: str
    authority: str

    @property
    def serialised(self) -> bytes:
        return f"{self.scheme}://{self.authority}/".encode("ascii")


def refererOrigin(referer: bytes) -> RefererOrigin | None:
    """
    The origin of a C{Referer} value, None if it is not an C{http(s)} URL with a host.
    """
    try:
        parts = urlsplit(referer.decode("ascii").strip())
        host = parts.hostname
        if parts.scheme.lower() not in ("http", "https") or not host:
            return None
        host = normaliseHost(host)
        port = parts.port
    except (UnicodeDecodeError, ValueError):
        return None
    authority = f"[{host}]" if ":" in host else host
    if port is not None:
        authority += f":{port}"
    return RefererOrigin(parts.scheme.lower(), host, authority)


def isCrossSite(referer: bytes | None, targetHost: str) -> bool:
    """
    Whether C{referer} names a site other than C{targetHost}'s (False without a usable
    C{Referer}: nothing says the request is third-party).
    """
    if referer is None:
        return False
    origin = refererOrigin(referer)
    if origin is None:
        return False
    return origin.host != targetHost and siteOf(origin.host) != siteOf(targetHost)


def reducedReferer(referer: bytes, targetHost: str) -> bytes | None:
    """
    The C{Referer} to send instead of C{referer} for a request to C{targetHost}: its origin
    if it names another site (and is more than its origin), else None (leave it).
    """
    origin = refererOrigin(referer)
    if origin is None or not isCrossSite(referer, targetHost):
        return None
    reduced = origin.serialised
    return None if reduced == referer.strip() else reduced


def isNavigation(method: bytes, headers: Headers) -> bool:
    """
    Whether a request looks like a top-level navigation with a safe method (a followed
    link), which keeps its cookies as C{SameSite=Lax} ones would: C{Sec-Fetch-Mode:
    navigate} with C{Sec-Fetch-Dest: document} where a browser sent them, else an
    C{Accept} that asks for HTML first.
    """
    if method not in _SAFE_METHODS:
        return False
    mode = firstField(headers, b"sec-fetch-mode")
    if mode is not None:
        destination = firstField(headers, b"sec-fetch-dest")
        return mode.strip().lower() == b"navigate" and (
            destination is None or destination.strip().lower() == b"document"
        )
    accept = listElements(fieldValues(headers, b"accept"))
    return bool(accept) and accept[0].split(b";", 1)[0].strip().lower() in (
        b"text/html",
        b"application/xhtml+xml",
    )


def isThirdParty(method: bytes, headers: Headers, targetHost: str) -> bool:
    """
    Whether a request is a third-party one whose cookies go: cross-site, and not a safe
    top-level navigation.
    """
    return isCrossSite(firstField(headers, b"referer"), targetHost) and not isNavigation(
        method, headers
    )


@dataclass(frozen=True)
class PrivacySettings:
    """
    Which parts of the privacy rules are on, and the tracking parameters.
    """

    parts: frozenset[str] = frozenset(PARTS)
    tracking: TrackingParameters = TrackingParameters(DEFAULT_TRACKING_PARAMETERS)


class PrivacyFilter:
    """
    The privacy rules as a request filter (all parts) and a response filter
    (C{Set-Cookie}).  A built chain runs it after the header rules and plugins, so that
    what it removes stays removed (L{caplab.proxy.filters.config.buildChain}).
    """

    name = "privacy"
    #: Never transforms a body (the chain need not weaken a C{304}'s C{ETag} for it).
    headersOnly = True

    def __init__(self, settings: PrivacySettings, counters: FilterCounters) -> None:
        self.settings = settings
        self.counters = counters
        parts = settings.parts
        self._params = "params" in parts
        self._referer = "referer" in parts
        self._gpc = "gpc" in parts
        self._cookies = "cookies" in parts

    def describe(self) -> str:
        return ", ".join(p for p in PARTS if p in self.settings.parts)

    def filterRequest(self, request: UpstreamRequest, client: str) -> UpstreamRequest:
        counters = self.counters
        target = request.target
        headers = request.headers
        changed = False
        if self._params:
            path, removed = stripTrackingParameters(target.path, self.settings.tracking)
            if removed:
                target = replace(target, path=path)
                counters.add("tracking-parameters", removed)
                changed = True
        headers = list(headers)
        if self._cookies and isThirdParty(request.method, headers, target.host):
            if removeFields(headers, frozenset({b"cookie"})):
                counters.add("cookies-dropped")
                changed = True
        if self._referer:
            referer = firstField(headers, b"referer")
            reduced = reducedReferer(referer, target.host) if referer is not None else None
            if reduced is not None:
                setField(headers, b"Referer", reduced)
                counters.add("referers-reduced")
                changed = True
        if self._gpc and firstField(headers, b"sec-gpc") != b"1":
            setField(headers, b"Sec-GPC", b"1")
            changed = True
        if self._gpc:
            counters.add("gpc-sent")
        if not changed:
            return request
        return replace(request, target=target, headers=headers)

    def filterHead(self, request: UpstreamRequest, head: ResponseHead) -> None:
        if not self._cookies:
            return
        if not isThirdParty(request.method, request.headers, request.target.host):
            return
        dropped = removeFields(head.headers, frozenset({b"set-cookie", b"set-cookie2"}))
        if dropped:
            self.counters.add("set-cookies-dropped", dropped)

    def transformBody(self, request: UpstreamRequest, head: ResponseHead) -> ITransform | None:
        return None


def parsePrivacyParts(text: str, source: str = "--privacy-skip") -> frozenset[str]:
    """
    The parts named in C{text}, comma-separated (C{params,referer}).

    @raise FilterConfigError: a name is not a part.
    """
    names = frozenset(p.strip().lower() for p in text.split(",") if p.strip())
    unknown = sorted(names - set(PARTS))
    if unknown or not names:
        raise FilterConfigError(
            f"{source} {text!r}: name parts of the privacy rules: {', '.join(PARTS)}"
        )
    return names
