"""
The RFC 9111 rules of a shared HTTP cache, apart from storage and I/O.

Everything here is a pure function of header lists (C{list[tuple[bytes, bytes]]}, names in any
case) and times in seconds since the epoch taken from an injected clock, so that the freshness
arithmetic is tested with L{twisted.internet.task.Clock}.

What the rules are made of
==========================

  - L{caplab.proxy.cache.directives}: C{Cache-Control}, parsed strictly, repeated and
    conflicting directives merged to the most restrictive;
  - L{caplab.proxy.cache.httpdate}: HTTP-dates, parsed strictly (an invalid C{Expires} is
    a time in the past);
  - L{caplab.proxy.cache.ranges}: byte ranges, C{Content-Range} and C{If-Range};
  - this module: storability (section 3, with 206 and C{must-understand}), the fields
    stored and how a newer response updates them (sections 3.1, 3.2), freshness and age
    (4.2), which stored response answers a request (4.1, 4.2.4, 5.2), validation (4.3),
    the client's own conditional requests (RFC 9110 section 13) and invalidation (4.4).

Earlier versions used hishel 2.x's sans-I/O core for storability and C{Cache-Control}
parsing.  Its parser is not part of hishel's public API (C{hishel._core._headers}), its
C{CacheMiss} never stores a 206 and ignores C{must-understand}, and it reads time from
C{time.time()}; what caplab needs of it is a page of RFC 9111, now here, tested directly.

The hit path works on the raw byte header lists: what a stored response needs on every hit
is computed once when it is stored (L{EntryRules}).

Left to the origin on purpose: requests for several ranges (a C{multipart/byteranges}
answer is not stored), a range that spans two stored parts, and the revalidation of stored
parts (a stale part is fetched again).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import urljoin

from caplab.proxy.cache import ranges
from caplab.proxy.cache.directives import CacheControl, parseCacheControl, splitList
from caplab.proxy.cache.fields import (
    Headers,
    deltaSeconds,
    firstHeader,
    headerValues,
    isWeak,
    joinedHeader,
    strongMatch,
)
from caplab.proxy.cache.httpdate import formatHTTPDate, parseHTTPDate
from caplab.proxy.headers import HOP_BY_HOP
from caplab.proxy.hooks import Target
from caplab.proxy.http1.fields import tokens
from caplab.proxy.target import TargetError, parseTarget

__all__ = ["firstHeader", "formatHTTPDate", "headerValues", "joinedHeader", "parseHTTPDate"]

#: Methods whose responses this cache stores (HEAD is answered from a stored GET).
STORED_METHODS = frozenset({b"GET"})

#: Methods that never invalidate (RFC 9110 section 9.2.1).
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})

#: Status codes heuristically cacheable (RFC 9110 section 15.1).
HEURISTIC_CODES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})

#: Status codes whose caching rules this cache implements (for C{must-understand}, RFC 9111
#: section 5.2.2.3, and for 206: it stores parts and combines them).
UNDERSTOOD_CODES = HEURISTIC_CODES | {302, 307}

#: Upper bound of a heuristic freshness lifetime (RFC 9111 section 4.2.2 leaves it to us).
HEURISTIC_CAP = 86400.0

#: Fraction of (Date - Last-Modified) used as heuristic lifetime (the RFC's example).
HEURISTIC_FRACTION = 0.1

#: How stale a response may be served when the origin cannot be reached at all and no
#: C{stale-if-error} says how long (RFC 9111 section 4.2.4; squid's default max_stale).
MAX_STALE_UNREACHABLE = 7 * 86400.0

#: Fields the cache makes itself for each answer, so never stored as they came nor replaced
#: by a newer response (RFC 9111 section 3.2): the age (kept apart, L{ageValue}), the framing
#: (C{Content-Length} comes from the stored body) and C{Content-Range} (made for each range
#: served).
RECOMPUTED = frozenset({b"age", b"content-length", b"content-range", b"transfer-encoding"})

#: Fields of a response about one client's exchange with the origin (its session, its
#: authentication).  Never stored, neither with a new response (even C{public} or with
#: C{s-maxage}) nor by an update (a 304, a HEAD response, a 206): they go to the client
#: whose request brought them, and to no one else.
PER_CLIENT_FIELDS = frozenset(
    {
        b"set-cookie",
        b"set-cookie2",
        b"authentication-info",
        b"proxy-authenticate",
        b"proxy-authentication-info",
    }
)

#: Connection-specific fields, never stored (RFC 9111 section 3.1): the hop-by-hop fields
#: the proxy never forwards (C{Proxy-Authentication-Info} among them).
NEVER_STORED = HOP_BY_HOP

#: The most field names a stored response may vary on.  Real responses name one to three
#: (C{Accept-Encoding}, C{Origin}, C{Cookie} ...), and every request for the URI computes
#: its secondary key over all of them (a scan of its fields per name, up to the 100 fields
#: a request may have), so a few dozen is already far more than any use; beyond it the
#: response is not stored, as with C{Vary: *}, and a hostile C{Vary} costs one pass.
MAX_VARY_NAMES = 32

#: Request fields that make a request conditional (L{preconditions}; what
#: L{caplab.proxy.cache.replies.scan} counts as L{caplab.proxy.cache.replies.CONDITIONS}).
CONDITIONAL_FIELDS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since"}
)

#: What a revalidation drops of the client's request (its preconditions and C{If-Range},
#: about the client's copy) before it adds the stored response's validators.
_NOT_REVALIDATED = CONDITIONAL_FIELDS | {b"if-range"}

#: Request fields whose values are lists of tokens with weights: for Vary matching, values
#: that differ only in order, case or whitespace select the same response (RFC 9111
#: section 4.1 allows normalising "in ways that are known to have identical semantics").
_WEIGHTED_LISTS = frozenset({b"accept-encoding", b"accept-language"})


def cacheControl(headers: Headers) -> CacheControl:
    """
    The C{Cache-Control} directives of C{headers} (L{parseCacheControl}).
    """
    return parseCacheControl(headerValues(headers, b"cache-control"))


def ageValue(headers: Headers) -> float:
    """
    The C{Age} header (RFC 9111 section 5.1): the first member of a list; ignored (0) unless
    a non-negative integer (a parameter, a fraction, a sign make it invalid); at most 2^31.
    """
    value = firstHeader(headers, b"age")
    if value is None:
        return 0.0
    seconds = deltaSeconds(value.split(b",")[0].strip(b" \t"))
    return 0.0 if seconds is None else float(seconds)


def _date(headers: Headers, name: bytes, now: float | None = None) -> float | None:
    """
    The one HTTP-date of field C{name}, strictly parsed; None if absent, invalid or given
    more than once.
    """
    values = headerValues(headers, name)
    if len(values) != 1:
        return None
    return parseHTTPDate(values[0], now)


def freshnessLifetime(
    code: int, headers: Headers, responseTime: float, shared: bool = True
) -> tuple[float, bool]:
    """
    The freshness lifetime of a response (RFC 9111 section 4.2.1) and whether it is heuristic.

    Order: C{s-maxage} (shared caches only), C{max-age}, C{Expires} minus C{Date} (an
    C{Expires} that is not exactly one valid HTTP-date, or is given twice, means already
    expired: section 5.3), then a heuristic of a tenth of C{Date} minus C{Last-Modified},
    capped at L{HEURISTIC_CAP}, only for a heuristically cacheable status or C{public}
    (section 4.2.2).  An invalid C{max-age} or C{s-maxage} makes it stale.  Lifetime 0 means
    stale at once.

    @param responseTime: when the response was received; stands in for a missing C{Date}.
    """
    cc = cacheControl(headers)
    if shared and cc.sMaxAgeInvalid:
        return 0.0, False
    if shared and cc.sMaxAge is not None:
        return float(cc.sMaxAge), False
    if cc.maxAgeInvalid:
        return 0.0, False
    if cc.maxAge is not None:
        return float(cc.maxAge), False
    date = _date(headers, b"date", responseTime)
    if date is None:
        date = responseTime
    expires = headerValues(headers, b"expires")
    if expires:
        when = _date(headers, b"expires", responseTime)
        if when is None:
            return 0.0, False
        return max(0.0, when - date), False
    if code in HEURISTIC_CODES or cc.public:
        lastModified = _date(headers, b"last-modified", responseTime)
        if lastModified is not None and lastModified < date:
            return min(HEURISTIC_CAP, (date - lastModified) * HEURISTIC_FRACTION), True
    return 0.0, False


def correctedInitialAge(
    headers: Headers, requestTime: float, responseTime: float, age: float | None = None
) -> float:
    """
    The age of a response when it was received (RFC 9111 section 4.2.3): the larger of the
    apparent age (C{responseTime} - C{Date}) and the origin's C{Age} plus the response delay.

    @param age: the origin's C{Age} (None: read it from C{headers}).
    """
    date = _date(headers, b"date", responseTime)
    apparentAge = 0.0 if date is None else max(0.0, responseTime - date)
    responseDelay = max(0.0, responseTime - requestTime)
    correctedAgeValue = (ageValue(headers) if age is None else age) + responseDelay
    return max(apparentAge, correctedAgeValue)


def normalizeFieldValue(values: list[bytes], name: bytes = b"") -> bytes:
    """
    A request field's value for Vary matching: lines combined, whitespace around list members
    removed (RFC 9111 section 4.1 allows exactly these transformations).  For
    C{Accept-Encoding} and C{Accept-Language} also case, order, duplicates and the default
    weight C{q=1}, which do not change what the client accepts.
    """
    members = b",".join(values).split(b",")
    if name in _WEIGHTED_LISTS:
        normal = set()
        for member in members:
            compact = b"".join(member.split()).lower()
            token, _, weight = compact.partition(b";q=")
            if weight and weight.rstrip(b"0").rstrip(b".") == b"1":
                compact = token
            if compact:
                normal.add(compact)
        return b",".join(sorted(normal))
    return b",".join(b" ".join(member.split()) for member in members)


def varyNames(headers: Headers) -> tuple[bytes, ...] | None:
    """
    The lower-case field names a response varies on (each once, in order), C{()} for none;
    None when no request can be matched to it: C{Vary: *}, or more than L{MAX_VARY_NAMES}
    names.
    """
    values = headerValues(headers, b"vary")
    if not values:
        return ()
    names = tuple(dict.fromkeys(tokens(values)))
    if b"*" in names or len(names) > MAX_VARY_NAMES:
        return None
    return names


def secondaryKey(names: tuple[bytes, ...], requestHeaders: Headers) -> tuple[bytes | None, ...]:
    """
    The request's normalized values of C{names} (None: absent), the secondary cache key.
    """
    key: list[bytes | None] = []
    for name in names:
        values = headerValues(requestHeaders, name)
        key.append(normalizeFieldValue(values, name) if values else None)
    return tuple(key)


def unstorableFields(headers: Headers, cc: CacheControl | None = None) -> frozenset[bytes]:
    """
    The lower-case names of the fields of C{headers} a shared cache must not store (RFC 9111
    section 3.1): hop-by-hop fields, those C{Connection} names, those named by a qualified
    C{no-cache="..."} or C{private="..."} (sections 5.2.2.4 and 5.2.2.7), and the per-client
    fields (L{PER_CLIENT_FIELDS}).  The one rule of what is stored, for a new response
    (L{storable}) and for an update (L{updatedHeaders}) alike.
    """
    names = set(NEVER_STORED)
    names.update(PER_CLIENT_FIELDS)
    names.update(tokens(headerValues(headers, b"connection")))
    if cc is None:
        cc = cacheControl(headers)
    names.update(cc.noCacheFields)
    names.update(cc.privateFields)
    return frozenset(names)


@dataclass(frozen=True)
class Storability:
    """
    Whether a response may be stored, why not, the header fields to store and the field
    names it varies on (L{varyNames}, worked out once per response).
    """

    ok: bool
    reason: str
    headers: Headers
    varyNames: tuple[bytes, ...] = ()


def storable(
    method: bytes,
    uri: str,
    requestHeaders: Headers,
    code: int,
    responseHeaders: Headers,
    now: float = 0.0,
) -> Storability:
    """
    Whether a shared cache may store this response to this request (RFC 9111 section 3).

    A cache stores a response only to a method it understands (GET here) with a final
    status; a 206 only when it is one part with a known complete length, a 304 never, nor
    (with C{must-understand}) a status whose rules it does not implement; never with
    C{no-store} (of the response, unless C{must-understand} and an understood status; of the
    request, section 5.2.1.5), unqualified C{private}, C{Vary: *} (or more than
    L{MAX_VARY_NAMES} names); with C{Authorization} only when C{public}, C{s-maxage} or
    C{must-revalidate} allow it (section 3.5); and only with C{public}, C{Expires},
    C{max-age}, C{s-maxage} or a heuristically cacheable status.

    On top of the RFC: a response stale at once with no validator is not stored (it could
    never be used), nor one with C{Set-Cookie} unless it is C{public} or has C{s-maxage}
    (or strips the cookie with C{private="set-cookie"}); even then the cookie itself is not
    stored (L{PER_CLIENT_FIELDS}): the client whose request brought it gets it, later hits
    do not.

    The returned headers drop the fields a shared cache must not store
    (L{unstorableFields}), keeping the origin's order and raw names.
    """
    if method not in STORED_METHODS:
        return Storability(False, "method", [])
    if code < 200:
        return Storability(False, "interim", [])
    if cacheControl(requestHeaders).noStore:
        return Storability(False, "request no-store", [])
    names = varyNames(responseHeaders)
    if names is None:
        return Storability(False, "vary", [])
    cc = cacheControl(responseHeaders)
    understood = code in UNDERSTOOD_CODES
    if code == 304 or ((code == 206 or cc.mustUnderstand) and not understood):
        return Storability(False, "status not understood", [])
    if code == 206 and ranges.contentRange(responseHeaders) is None:
        return Storability(False, "not one part", [])
    if cc.noStore and not (cc.mustUnderstand and understood):
        return Storability(False, "no-store", [])
    if cc.private:
        return Storability(False, "private", [])
    if firstHeader(requestHeaders, b"authorization") is not None and not (
        cc.public or cc.sMaxAge is not None or cc.mustRevalidate
    ):
        return Storability(False, "authorization", [])
    if not (
        cc.public
        or firstHeader(responseHeaders, b"expires") is not None
        or cc.maxAge is not None
        or cc.maxAgeInvalid
        or cc.sMaxAge is not None
        or code in HEURISTIC_CODES
    ):
        return Storability(False, "not cacheable", [])
    stripped = cc.privateFields | cc.noCacheFields
    if b"set-cookie" not in stripped and not cc.public and cc.sMaxAge is None:
        if firstHeader(responseHeaders, b"set-cookie") is not None:
            # Allowed by RFC 9111, but one client's session cookie must never reach another
            # because an origin forgot "private": like Varnish, store these only when the
            # origin says explicitly that shared caches may (or strips it: private="set-cookie").
            return Storability(False, "set-cookie", [])
    lifetime, _ = freshnessLifetime(code, responseHeaders, now)
    noValidator = (
        firstHeader(responseHeaders, b"etag") is None
        and firstHeader(responseHeaders, b"last-modified") is None
    )
    if noValidator and (
        cc.noCache
        or (lifetime <= 0 and cc.staleWhileRevalidate is None and cc.staleIfError is None)
    ):
        # stale at once (or always to be revalidated) and nothing to revalidate it with
        return Storability(False, "never reusable", [])
    excluded = unstorableFields(responseHeaders, cc)
    stored = [(n, v) for n, v in responseHeaders if n.lower() not in excluded]
    return Storability(True, "", stored, names)


def storedFields(headers: Headers, responseTime: float) -> Headers:
    """
    The fields of a response as they are stored and sent on hits: without the fields the
    cache makes itself (L{RECOMPUTED}), with a C{Date} (the time it was received) if the
    origin sent none (RFC 9110 section 6.6.1: a recipient adds the Date of a message that
    has none).
    """
    stored = [(n, v) for n, v in headers if n.lower() not in RECOMPUTED]
    return withDate(stored, responseTime)


def withDate(headers: Headers, now: float) -> Headers:
    """
    C{headers}, with a C{Date} of C{now} added if they have none (RFC 9110 section 6.6.1).
    """
    if firstHeader(headers, b"date") is not None:
        return headers
    return [*headers, (b"Date", formatHTTPDate(now))]


@dataclass(frozen=True)
class Update:
    """
    A stored response's fields updated by a newer response about it (RFC 9111 section 3.2),
    the fields of that newer response meant for its own client only, and why the updated
    response may no longer be stored (empty: it may).
    """

    headers: Headers
    perClient: Headers
    unstorable: str = ""


def updatedHeaders(
    stored: Headers, new: Headers, code: int = 200, vary: tuple[bytes, ...] | None = None
) -> Update:
    """
    The one way stored header fields are updated (a 304, a HEAD response, a 206): every
    field C{new} carries replaces all stored lines of that name (C{Content-Type} and
    C{Content-Encoding} included: caplab stores the bytes as they came), except
    L{RECOMPUTED} (C{Content-Length}; C{Age} and C{Content-Range}, which caplab keeps
    apart) and the fields a shared cache never stores (L{unstorableFields} of either
    message: what L{storable} strips when it stores); of those, the per-client fields
    (L{PER_CLIENT_FIELDS}) are returned apart, for the caller to give to the client that
    caused the update and to no one else.

    The updated response is checked as a new one would be: an update that brings
    unqualified C{private}, C{no-store} (unless C{must-understand} of an understood
    status) or other C{Vary} names than the stored response's (C{vary}, read from
    C{stored} if None) makes it one a shared cache must not keep (L{Update.unstorable}).

    @param code: the stored response's status.
    """
    excluded = unstorableFields(new) | unstorableFields(stored)
    replaced: set[bytes] = set()
    perClient: Headers = []
    for name, value in new:
        lower = name.lower()
        if lower in PER_CLIENT_FIELDS:
            perClient.append((name, value))
        elif lower not in RECOMPUTED and lower not in excluded:
            replaced.add(lower)
    headers = [(n, v) for n, v in stored if n.lower() not in replaced]
    headers.extend((n, v) for n, v in new if n.lower() in replaced)
    cc = cacheControl(headers)
    unstorable = ""
    if cc.private:
        unstorable = "private"
    elif cc.noStore and not (cc.mustUnderstand and code in UNDERSTOOD_CODES):
        unstorable = "no-store"
    else:
        names = varyNames(headers)
        before = varyNames(stored) if vary is None else vary
        if names is None or before is None or set(names) != set(before):
            unstorable = "vary"
    return Update(headers, perClient, unstorable)


@dataclass(frozen=True, slots=True)
class Freshness:
    """
    The freshness facts of a stored response, computed once when it is stored or refreshed.
    """

    lifetime: float
    correctedInitialAge: float
    responseTime: float
    heuristic: bool

    @classmethod
    def compute(
        cls,
        code: int,
        headers: Headers,
        requestTime: float,
        responseTime: float,
        age: float | None = None,
    ) -> Freshness:
        lifetime, heuristic = freshnessLifetime(code, headers, responseTime)
        return cls(
            lifetime,
            correctedInitialAge(headers, requestTime, responseTime, age),
            responseTime,
            heuristic,
        )

    def currentAge(self, now: float) -> float:
        """
        The response's age now: corrected initial age plus the time it has been stored.
        """
        return self.correctedInitialAge + max(0.0, now - self.responseTime)


@dataclass(frozen=True, slots=True)
class EntryRules:
    """
    Everything the hit path needs to know about a stored response, parsed once.

    @ivar date: its C{Date} (or when it was received), for C{If-Modified-Since} without a
        C{Last-Modified} and for the strength of C{Last-Modified}.
    """

    freshness: Freshness
    noCache: bool
    mustRevalidate: bool
    immutable: bool
    staleWhileRevalidate: int | None
    staleIfError: int | None
    etag: bytes | None
    lastModified: bytes | None
    date: float = 0.0

    @classmethod
    def compute(
        cls,
        code: int,
        headers: Headers,
        requestTime: float,
        responseTime: float,
        age: float | None = None,
    ) -> EntryRules:
        """
        @param age: the origin's C{Age} (None: read it from C{headers}).
        """
        cc = cacheControl(headers)
        date = _date(headers, b"date", responseTime)
        return cls(
            freshness=Freshness.compute(code, headers, requestTime, responseTime, age),
            # a qualified no-cache="field" only strips fields (done when storing); Pragma
            # has no meaning in a response (RFC 9111 section 5.4)
            noCache=cc.noCache,
            # s-maxage implies proxy-revalidate (RFC 9111 section 5.2.2.10)
            mustRevalidate=cc.mustRevalidate or cc.proxyRevalidate or cc.sMaxAge is not None,
            immutable=cc.immutable,
            staleWhileRevalidate=cc.staleWhileRevalidate,
            staleIfError=cc.staleIfError,
            etag=firstHeader(headers, b"etag"),
            lastModified=firstHeader(headers, b"last-modified"),
            date=responseTime if date is None else date,
        )

    @property
    def hasValidator(self) -> bool:
        return self.etag is not None or self.lastModified is not None


@dataclass(frozen=True)
class RequestRules:
    """
    The request directives that matter to a cache, parsed once per request.
    """

    noCache: bool = False
    noStore: bool = False
    maxAge: int | None = None
    maxStale: int | None = None
    minFresh: int | None = None
    onlyIfCached: bool = False
    staleIfError: int | None = None

    @classmethod
    def fromHeaders(cls, headers: Headers) -> RequestRules:
        """
        Parse C{Cache-Control} (and C{Pragma: no-cache} when there is no C{Cache-Control},
        RFC 9111 section 5.4) of a request; the common request without either costs a scan.
        """
        hasCacheControl = hasPragma = False
        for name, _ in headers:
            lower = name.lower()
            if lower == b"cache-control":
                hasCacheControl = True
            elif lower == b"pragma":
                hasPragma = True
        if not hasCacheControl:
            if hasPragma and any(
                member.strip().lower() == b"no-cache"
                for value in headerValues(headers, b"pragma")
                for member in value.split(b",")
            ):
                return cls(noCache=True)
            return NO_REQUEST_RULES
        cc = cacheControl(headers)
        return cls(
            noCache=cc.noCache or bool(cc.noCacheFields),
            noStore=cc.noStore,
            maxAge=cc.maxAge,
            maxStale=cc.maxStale,
            minFresh=cc.minFresh,
            onlyIfCached=cc.onlyIfCached,
            staleIfError=cc.staleIfError,
        )


NO_REQUEST_RULES = RequestRules()


class Decision(Enum):
    """
    What to do with a stored response for a request.
    """

    #: Serve it as it is (fresh, or stale as the client allows with max-stale).
    FRESH = "fresh"
    #: Serve it stale now and revalidate in the background (stale-while-revalidate).
    STALE_REVALIDATE = "stale-while-revalidate"
    #: Revalidate first (conditional request); serve it if the origin says 304.
    REVALIDATE = "revalidate"


@dataclass(frozen=True)
class Evaluation:
    decision: Decision
    age: float
    #: How long it stays fresh (negative: stale for that long).
    ttl: float


def evaluate(rules: EntryRules, request: RequestRules, now: float) -> Evaluation:
    """
    May this stored response answer this request without asking the origin?

    RFC 9111 section 4.2 and 5.2: the request's C{no-cache} (or C{Pragma: no-cache}) and the
    response's C{no-cache} force revalidation; C{max-age} and C{min-fresh} narrow freshness;
    a stale response is served only with C{max-stale} or C{stale-while-revalidate}, and never
    when C{must-revalidate}, C{proxy-revalidate} or C{s-maxage} forbid it.  A fresh
    C{immutable} response (RFC 8246) ignores the request's C{max-age}, which is what browsers
    send on reload; an explicit C{no-cache} still revalidates.
    """
    freshness = rules.freshness
    age = freshness.currentAge(now)
    ttl = freshness.lifetime - age
    if request.noCache or rules.noCache:
        return Evaluation(Decision.REVALIDATE, age, ttl)
    fresh = ttl > 0
    if fresh:
        if request.maxAge is not None and age > request.maxAge and not rules.immutable:
            return Evaluation(Decision.REVALIDATE, age, ttl)
        if request.maxAge == 0 and not rules.immutable:
            return Evaluation(Decision.REVALIDATE, age, ttl)
        if request.minFresh is not None and ttl < request.minFresh:
            return Evaluation(Decision.REVALIDATE, age, ttl)
        return Evaluation(Decision.FRESH, age, ttl)
    if rules.mustRevalidate:
        return Evaluation(Decision.REVALIDATE, age, ttl)
    staleness = -ttl
    if request.maxStale is not None and staleness <= request.maxStale:
        if request.maxAge is None or age <= request.maxAge:
            return Evaluation(Decision.FRESH, age, ttl)
    if (
        rules.staleWhileRevalidate is not None
        and staleness <= rules.staleWhileRevalidate
        and request.maxAge is None
        and request.minFresh is None
    ):
        return Evaluation(Decision.STALE_REVALIDATE, age, ttl)
    return Evaluation(Decision.REVALIDATE, age, ttl)


def mayServeStaleOnError(
    rules: EntryRules, request: RequestRules, now: float, unreachable: bool = False
) -> bool:
    """
    Whether a stale response may answer when the origin fails.

    Never when the response forbids serving it stale (C{no-cache}, C{must-revalidate},
    C{proxy-revalidate}, C{s-maxage}: RFC 9111 section 4.2.4).  Otherwise within
    C{stale-if-error} of the response or the request (RFC 5861 section 4), whatever the
    failure (a 5xx or none at all); and when the origin could not be reached at all
    (C{unreachable}: refused, reset, timed out, nothing usable), up to
    L{MAX_STALE_UNREACHABLE}, unless the client asked for a validated response
    (C{no-cache}).
    """
    if rules.mustRevalidate or rules.noCache:
        return False
    staleness = rules.freshness.currentAge(now) - rules.freshness.lifetime
    allowed = [v for v in (rules.staleIfError, request.staleIfError) if v is not None]
    if any(staleness <= value for value in allowed):
        return True
    return unreachable and not request.noCache and staleness <= MAX_STALE_UNREACHABLE


def conditionalHeaders(requestHeaders: Headers, rules: EntryRules) -> Headers:
    """
    The request headers for revalidating a stored response (RFC 9111 section 4.3.1): the
    client's own preconditions replaced by the stored validators (C{If-None-Match} with the
    C{ETag}, C{If-Modified-Since} with C{Last-Modified}).
    """
    headers = [(n, v) for n, v in requestHeaders if n.lower() not in _NOT_REVALIDATED]
    if rules.etag is not None:
        headers.append((b"If-None-Match", rules.etag))
    if rules.lastModified is not None:
        headers.append((b"If-Modified-Since", rules.lastModified))
    return headers


def _opaque(tag: bytes) -> bytes:
    """
    An entity-tag without its weakness indicator (for the weak comparison).
    """
    tag = tag.strip()
    return tag[2:] if tag[:2] == b"W/" else tag


def validatorsMatch(rules: EntryRules, notModified: Headers) -> bool:
    """
    Whether a 304 is about this stored response (RFC 9111 section 4.3.4): a strong C{ETag}
    in the 304 must equal the stored one; otherwise a C{Last-Modified} must; a 304 with
    neither refreshes the one response that was revalidated.
    """
    etag = firstHeader(notModified, b"etag")
    if etag is not None and not isWeak(etag):
        return strongMatch(etag, rules.etag)
    if etag is not None:
        return rules.etag is not None and _opaque(rules.etag) == _opaque(etag)
    lastModified = firstHeader(notModified, b"last-modified")
    if lastModified is not None:
        return rules.lastModified == lastModified
    return True


def sameRepresentation(rules: EntryRules, headers: Headers, bodyLength: int) -> bool:
    """
    Whether a newer response (a HEAD response, RFC 9111 section 4.3.5) describes the stored
    one: every validator it carries (C{ETag}, C{Last-Modified}) matches the stored one, and
    its C{Content-Length}, if any, is the stored body's length.
    """
    etag = firstHeader(headers, b"etag")
    if etag is not None and (rules.etag is None or rules.etag.strip() != etag.strip()):
        return False
    lastModified = firstHeader(headers, b"last-modified")
    if lastModified is not None and rules.lastModified != lastModified:
        return False
    length = firstHeader(headers, b"content-length")
    return length is None or length.strip() == b"%d" % bodyLength


def _entityTags(value: bytes) -> list[bytes]:
    """
    The entity-tags of an C{If-None-Match}/C{If-Match} list (C{*} kept as it is).
    """
    tags = []
    for member in splitList(value):
        if member == b"*" or (member.endswith(b'"') and member.lstrip(b"W/").startswith(b'"')):
            tags.append(member)
    return tags


class Precondition(Enum):
    """
    The outcome of a client's preconditions on a stored response (RFC 9110 section 13.2.2).
    """

    #: No precondition stops it: send the stored response (or its range).
    PASSED = "passed"
    #: C{If-None-Match} or C{If-Modified-Since}: 304 Not Modified.
    NOT_MODIFIED = "not-modified"
    #: C{If-Match} or C{If-Unmodified-Since} failed: 412 Precondition Failed.
    FAILED = "failed"


def preconditions(requestHeaders: Headers, rules: EntryRules) -> Precondition:
    """
    Evaluate a GET or HEAD's preconditions against a stored response, in the order of RFC
    9110 section 13.2.2: C{If-Match} (strong comparison, C{*} matches), else
    C{If-Unmodified-Since}; then C{If-None-Match} (weak comparison, C{*} matches any stored
    response), else C{If-Modified-Since} (compared with C{Last-Modified}, or the stored
    response's C{Date} without one: RFC 9111 section 4.3.2).  A date that is not a valid
    HTTP-date, or given twice, is ignored.
    """
    ifMatch = joinedHeader(requestHeaders, b"if-match")
    if ifMatch is not None:
        tags = _entityTags(ifMatch)
        etag = rules.etag
        if not (b"*" in tags or any(strongMatch(t, etag) for t in tags)):
            return Precondition.FAILED
    else:
        since = _date(requestHeaders, b"if-unmodified-since")
        modified = _modified(rules)
        if since is not None and modified is not None and modified > since:
            return Precondition.FAILED
    ifNoneMatch = joinedHeader(requestHeaders, b"if-none-match")
    if ifNoneMatch is not None:
        tags = _entityTags(ifNoneMatch)
        if b"*" in tags:
            return Precondition.NOT_MODIFIED
        if rules.etag is not None:
            mine = _opaque(rules.etag)
            if any(_opaque(tag) == mine for tag in tags):
                return Precondition.NOT_MODIFIED
        return Precondition.PASSED
    since = _date(requestHeaders, b"if-modified-since")
    modified = _modified(rules) if since is not None else None
    if since is not None and modified is not None and modified <= since:
        return Precondition.NOT_MODIFIED
    return Precondition.PASSED


def _modified(rules: EntryRules) -> float | None:
    """
    When the stored response was last modified: its C{Last-Modified}, else its C{Date}.
    """
    if rules.lastModified is not None:
        return parseHTTPDate(rules.lastModified)
    return rules.date


#: Headers of a 304 taken from the stored response (RFC 9110 section 15.4.5): those a 200
#: would carry that guide caches, and Last-Modified, useful without an ETag.
NOT_MODIFIED_FIELDS = frozenset(
    {
        b"cache-control",
        b"content-location",
        b"date",
        b"etag",
        b"expires",
        b"vary",
        b"last-modified",
        b"age",
    }
)


def notModifiedHeaders(stored: Headers) -> Headers:
    """
    The header fields of a 304 generated from a stored response.
    """
    return [(n, v) for n, v in stored if n.lower() in NOT_MODIFIED_FIELDS]


def invalidatedURIs(method: bytes, uri: str, code: int, responseHeaders: Headers) -> list[str]:
    """
    The URIs whose stored responses an unsafe request invalidates (RFC 9111 section 4.4):
    on a non-error status (2xx, 3xx), the target URI and the C{Location} and
    C{Content-Location} URIs when they have the same origin (scheme, host, port), each in
    the form of the cache's keys (L{normalizeURI}).
    """
    if method in SAFE_METHODS or not 200 <= code < 400:
        return []
    uris = [uri]
    target = _target(uri)
    if target is None:
        return uris
    for name in (b"location", b"content-location"):
        value = firstHeader(responseHeaders, name)
        if value is None:
            continue
        try:
            # latin-1 both ways: the field's bytes reach parseTarget as they came
            joined = urljoin(uri, value.decode("latin-1").strip(" \t"))
            other = _target(joined.encode("latin-1"))
        except ValueError:
            continue
        if other is None or (other.scheme, other.host, other.port) != (
            target.scheme,
            target.host,
            target.port,
        ):
            continue
        if other.uri not in uris:
            uris.append(other.uri)
    return uris


def _target(uri: str | bytes) -> Target | None:
    """
    The L{Target} of an absolute http(s) URI, as the proxy reads request targets; None if
    it is not one.
    """
    try:
        return parseTarget(uri.encode("utf-8", "surrogateescape") if isinstance(uri, str) else uri)
    except TargetError:
        return None


def normalizeURI(uri: str | bytes) -> str | None:
    """
    A URI in the form of the cache's keys (L{caplab.proxy.hooks.Target.uri}: scheme and
    host in lower case, international names in A-labels, no trailing dot, no default port,
    no fragment), read as the proxy reads request targets
    (L{caplab.proxy.target.parseTarget}), so a C{Location} or an operator's purge matches
    the key of the same resource; None if it is not an absolute http(s) URI.
    """
    target = _target(uri)
    return None if target is None else target.uri
