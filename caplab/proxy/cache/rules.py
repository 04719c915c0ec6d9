"""
The RFC 9111 rules of a shared HTTP cache, apart from storage and I/O.

Everything here is a pure function of header lists (C{list[tuple[bytes, bytes]]}, names in any
case) and times in seconds since the epoch taken from an injected clock, so that the freshness
arithmetic is tested with L{twisted.internet.task.Clock}.

What comes from hishel 2.x, and what does not
=============================================

hishel's sans-I/O core (C{hishel.IdleClient}, C{CacheMiss}, C{NeedRevalidation} ... with
C{CacheOptions(shared=True)}) was evaluated against RFC 9111 for a shared cache.  caplab uses:

  - C{hishel.CacheMiss(...).next(response)}, the storability decision of RFC 9111 section 3
    (method understood, final status, 206/304 not stored, C{no-store}, C{private} in a shared
    cache, C{Authorization} only with C{public}/C{s-maxage}/C{must-revalidate}, a required
    freshness component or a heuristically cacheable status), and the header fields it strips
    before storing (hop-by-hop, C{no-cache="f"} and C{private="f"} field names): see
    L{storable};
  - its C{Cache-Control} parser (quoted strings, field-name lists, bad numbers): see
    L{cacheControl}.

caplab completes or replaces the rest, because there hishel is not right for a shared cache in
a long-running proxy:

  - hishel reads C{time.time()} in freshness, age and heuristics, so nothing can be tested with
    an injected clock, and its age ignores the origin's C{Age} header and the request/response
    times (RFC 9111 section 4.2.3): a response that arrives with C{Age: 100} and
    C{max-age=60} is fresh for hishel.  caplab computes the corrected initial age once at store
    time (L{Freshness}) and the current age per hit.
  - hishel's heuristic is measured from "now" rather than from C{Date}, is used whatever the
    status code, and has no notion of an invalid C{max-age}; L{freshnessLifetime} follows 4.2.1
    and 4.2.2.
  - C{IdleClient} ignores the request directives C{max-age}, C{max-stale}, C{min-fresh},
    C{only-if-cached}, C{Pragma: no-cache} and the response directives C{proxy-revalidate},
    C{s-maxage}'s implied proxy-revalidate, C{stale-while-revalidate} and C{stale-if-error};
    it cannot answer a client's conditional request with 304.  L{evaluate} does all this.
  - the request's own C{no-store} is not checked by C{CacheMiss}; neither is C{Vary: *}.
  - invalidation there covers only the target URI: L{invalidatedURIs} adds C{Location} and
    C{Content-Location} of the same origin (RFC 9111 section 4.4).
  - the 304 update and the hit path work on hishel's C{str} header maps; converting every hit
    costs more than the whole hit should.  caplab precomputes per stored entry (L{Freshness},
    L{EntryRules}) and works on the raw byte header lists.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from email.utils import parsedate_tz
from enum import Enum
from urllib.parse import urljoin, urlsplit

import hishel
from hishel._core._headers import CacheControl, parse_cache_control

Headers = list[tuple[bytes, bytes]]

#: Methods whose responses this cache stores (HEAD is answered from a stored GET).
STORED_METHODS = frozenset({b"GET"})

#: Methods that never invalidate (RFC 9110 section 9.2.1).
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})

#: Status codes heuristically cacheable (RFC 9110 section 15.1).
HEURISTIC_CODES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})

#: Upper bound of a heuristic freshness lifetime (RFC 9111 section 4.2.2 leaves it to us).
HEURISTIC_CAP = 86400.0

#: Fraction of (Date - Last-Modified) used as heuristic lifetime (the RFC's example).
HEURISTIC_FRACTION = 0.1

#: Header fields a 304 never replaces in a stored response (they describe the stored body).
NOT_UPDATED_BY_304 = frozenset(
    {
        b"content-length",
        b"content-encoding",
        b"content-type",
        b"content-range",
        b"transfer-encoding",
    }
)

_INVALID_DELTA = re.compile(r"(?:^|[,\s])(s-maxage|max-age)\s*=", re.IGNORECASE)


def headerValues(headers: Headers, name: bytes) -> list[bytes]:
    """
    Every value of header C{name} (lower-case) in C{headers}, in order.
    """
    return [value for key, value in headers if key.lower() == name]


def joinedHeader(headers: Headers, name: bytes) -> bytes | None:
    """
    The values of C{name} joined with C{", "} (a list-based field), or None if absent.
    """
    values = headerValues(headers, name)
    if not values:
        return None
    return b", ".join(values)


def firstHeader(headers: Headers, name: bytes) -> bytes | None:
    """
    The first value of C{name} (a singleton field), or None if absent.
    """
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def cacheControl(headers: Headers) -> CacheControl:
    """
    The C{Cache-Control} directives of C{headers}, parsed by hishel's parser.
    """
    value = joinedHeader(headers, b"cache-control")
    return parse_cache_control(None if value is None else value.decode("latin-1"))


def parseHTTPDate(value: bytes | None) -> float | None:
    """
    An HTTP-date (IMF-fixdate, RFC 850 or asctime) as seconds since the epoch, or None.
    """
    if not value:
        return None
    try:
        parsed = parsedate_tz(value.decode("latin-1"))
        if parsed is None:
            return None
        return float(calendar.timegm(parsed[:6]) - (parsed[9] or 0))
    except (ValueError, OverflowError, TypeError):
        return None


def formatHTTPDate(when: float) -> bytes:
    """
    C{when} as an IMF-fixdate.
    """
    from email.utils import formatdate

    return formatdate(when, usegmt=True).encode("ascii")


def ageValue(headers: Headers) -> float:
    """
    The C{Age} header: first member, ignored unless a non-negative integer (RFC 9111 5.1).
    """
    value = firstHeader(headers, b"age")
    if value is None:
        return 0.0
    first = value.split(b",")[0].strip()
    if not first.isdigit():
        return 0.0
    return float(int(first))


def _hasInvalidDelta(headers: Headers, cc: CacheControl, shared: bool) -> bool:
    """
    Whether a C{max-age}/C{s-maxage} that applies is present but not a valid number (the
    response is then treated as stale, RFC 9111 section 4.2.1).
    """
    value = joinedHeader(headers, b"cache-control")
    if value is None:
        return False
    for match in _INVALID_DELTA.finditer(value.decode("latin-1")):
        name = match.group(1).lower()
        if name == "max-age" and cc.max_age is None:
            return True
        if name == "s-maxage" and shared and cc.s_maxage is None:
            return True
    return False


def freshnessLifetime(
    code: int, headers: Headers, responseTime: float, shared: bool = True
) -> tuple[float, bool]:
    """
    The freshness lifetime of a response (RFC 9111 section 4.2.1) and whether it is heuristic.

    Order: C{s-maxage} (shared caches only), C{max-age}, C{Expires} minus C{Date} (an invalid
    C{Expires} means already expired), then a heuristic of a tenth of C{Date} minus
    C{Last-Modified}, capped at L{HEURISTIC_CAP}, only for a heuristically cacheable status or
    C{public} (section 4.2.2).  Lifetime 0 means stale at once.

    @param responseTime: when the response was received; stands in for a missing C{Date}.
    """
    cc = cacheControl(headers)
    if _hasInvalidDelta(headers, cc, shared):
        return 0.0, False
    if shared and cc.s_maxage is not None:
        return float(cc.s_maxage), False
    if cc.max_age is not None:
        return float(cc.max_age), False
    date = parseHTTPDate(firstHeader(headers, b"date"))
    if date is None:
        date = responseTime
    expires = headerValues(headers, b"expires")
    if expires:
        when = parseHTTPDate(expires[0])
        if when is None:
            return 0.0, False
        return max(0.0, when - date), False
    if code in HEURISTIC_CODES or cc.public:
        lastModified = parseHTTPDate(firstHeader(headers, b"last-modified"))
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
    date = parseHTTPDate(firstHeader(headers, b"date"))
    apparentAge = 0.0 if date is None else max(0.0, responseTime - date)
    responseDelay = max(0.0, responseTime - requestTime)
    correctedAgeValue = (ageValue(headers) if age is None else age) + responseDelay
    return max(apparentAge, correctedAgeValue)


def normalizeFieldValue(values: list[bytes]) -> bytes:
    """
    A request field's value for Vary matching: lines combined, whitespace around list members
    removed (RFC 9111 section 4.1 allows exactly these transformations).
    """
    members = b",".join(values).split(b",")
    return b",".join(b" ".join(member.split()) for member in members)


def varyNames(headers: Headers) -> tuple[bytes, ...] | None:
    """
    The lower-case field names a response varies on, C{()} for none, None for C{Vary: *}.
    """
    names: list[bytes] = []
    for value in headerValues(headers, b"vary"):
        for member in value.split(b","):
            name = member.strip().lower()
            if name == b"*":
                return None
            if name and name not in names:
                names.append(name)
    return tuple(names)


def secondaryKey(names: tuple[bytes, ...], requestHeaders: Headers) -> tuple[bytes | None, ...]:
    """
    The request's normalized values of C{names} (None: absent), the secondary cache key.
    """
    key: list[bytes | None] = []
    for name in names:
        values = headerValues(requestHeaders, name)
        key.append(normalizeFieldValue(values) if values else None)
    return tuple(key)


def _toHishelHeaders(headers: Headers) -> hishel.Headers:
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return hishel.Headers(grouped)


@dataclass(frozen=True)
class Storability:
    """
    Whether a response may be stored, why not, and the header fields to store.
    """

    ok: bool
    reason: str
    headers: Headers


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

    hishel's C{CacheMiss} decides the rules it knows; on top: the request's own C{no-store}
    (section 5.2.1.5), C{Vary: *} (never reusable, so not stored), and only GET is stored.
    A response stale at once with no validator is not stored either (it could never be
    used), nor one with C{Set-Cookie} unless it is C{public} or has C{s-maxage}.

    The returned headers drop hop-by-hop fields and the C{no-cache}/C{private} field names,
    as hishel's cleaned response says, keeping caplab's order and raw names.
    """
    if method not in STORED_METHODS:
        return Storability(False, "method", [])
    if cacheControl(requestHeaders).no_store:
        return Storability(False, "request no-store", [])
    if varyNames(responseHeaders) is None:
        return Storability(False, "vary *", [])
    state = hishel.CacheMiss(
        request=hishel.Request(
            method=method.decode("ascii"), url=uri, headers=_toHishelHeaders(requestHeaders)
        ),
        options=hishel.CacheOptions(shared=True, supported_methods=["GET"]),
    ).next(hishel.Response(status_code=code, headers=_toHishelHeaders(responseHeaders)))
    final: object = state
    while isinstance(final, hishel.InvalidateEntries):
        final = final.next()
    if not isinstance(final, hishel.StoreAndUse):
        cc = cacheControl(responseHeaders)
        if cc.no_store:
            reason = "no-store"
        elif cc.private is True:
            reason = "private"
        elif firstHeader(requestHeaders, b"authorization") is not None:
            reason = "authorization"
        else:
            reason = "not cacheable"
        return Storability(False, reason, [])
    cc = cacheControl(responseHeaders)
    excluded = unstorableFields(responseHeaders)
    if b"set-cookie" not in excluded and not cc.public and cc.s_maxage is None:
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
        cc.no_cache is True
        or (lifetime <= 0 and cc.stale_while_revalidate is None and cc.stale_if_error is None)
    ):
        # stale at once (or always to be revalidated) and nothing to revalidate it with
        return Storability(False, "never reusable", [])
    return Storability(True, "", [(n, v) for n, v in responseHeaders if n.lower() not in excluded])


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
    """

    freshness: Freshness
    noCache: bool
    mustRevalidate: bool
    immutable: bool
    staleWhileRevalidate: int | None
    staleIfError: int | None
    etag: bytes | None
    lastModified: bytes | None
    vary: tuple[bytes, ...]

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
        return cls(
            freshness=Freshness.compute(code, headers, requestTime, responseTime, age),
            # a qualified no-cache="field" only strips fields (done when storing)
            noCache=cc.no_cache is True
            or (
                headerValues(headers, b"pragma") == [b"no-cache"]
                and joinedHeader(headers, b"cache-control") is None
            ),
            # s-maxage implies proxy-revalidate (RFC 9111 section 5.2.2.10)
            mustRevalidate=cc.must_revalidate or cc.proxy_revalidate or cc.s_maxage is not None,
            immutable=cc.immutable,
            staleWhileRevalidate=cc.stale_while_revalidate,
            staleIfError=cc.stale_if_error,
            etag=firstHeader(headers, b"etag"),
            lastModified=firstHeader(headers, b"last-modified"),
            vary=varyNames(headers) or (),
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
            noCache=bool(cc.no_cache),
            noStore=cc.no_store,
            maxAge=cc.max_age,
            maxStale=cc.max_stale,
            minFresh=cc.min_fresh,
            onlyIfCached=cc.only_if_cached,
            staleIfError=cc.stale_if_error,
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


def mayServeStaleOnError(rules: EntryRules, request: RequestRules, now: float) -> bool:
    """
    Whether a stale response may answer when the origin fails (5xx or unreachable), by
    C{stale-if-error} of the response or the request (RFC 5861 section 4), never against
    C{must-revalidate}.
    """
    if rules.mustRevalidate:
        return False
    staleness = rules.freshness.currentAge(now) - rules.freshness.lifetime
    allowed = [v for v in (rules.staleIfError, request.staleIfError) if v is not None]
    return any(staleness <= value for value in allowed)


def conditionalHeaders(requestHeaders: Headers, rules: EntryRules) -> Headers:
    """
    The request headers for revalidating a stored response (RFC 9111 section 4.3.1): the
    client's own preconditions replaced by the stored validators (C{If-None-Match} with the
    C{ETag}, C{If-Modified-Since} with C{Last-Modified}).
    """
    drop = {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since"}
    headers = [(n, v) for n, v in requestHeaders if n.lower() not in drop]
    if rules.etag is not None:
        headers.append((b"If-None-Match", rules.etag))
    if rules.lastModified is not None:
        headers.append((b"If-Modified-Since", rules.lastModified))
    return headers


def _opaque(tag: bytes) -> bytes:
    tag = tag.strip()
    return tag[2:] if tag[:2] in (b"W/", b"w/") else tag


def validatorsMatch(rules: EntryRules, notModified: Headers) -> bool:
    """
    Whether a 304 is about this stored response (RFC 9111 section 4.3.4): a strong C{ETag}
    in the 304 must equal the stored one; otherwise a C{Last-Modified} must; a 304 with
    neither refreshes the one response that was revalidated.
    """
    etag = firstHeader(notModified, b"etag")
    if etag is not None and not etag.strip().startswith((b"W/", b"w/")):
        return rules.etag is not None and rules.etag.strip() == etag.strip()
    if etag is not None:
        return rules.etag is not None and _opaque(rules.etag) == _opaque(etag)
    lastModified = firstHeader(notModified, b"last-modified")
    if lastModified is not None:
        return rules.lastModified == lastModified
    return True


#: Fields of a response about one client's exchange with the origin (its session, its
#: authentication).  An update of a stored response (from a 304, a HEAD response or a 206)
#: never stores them: they go to the client whose request brought them, and to no one else.
PER_CLIENT_FIELDS = frozenset(
    {
        b"set-cookie",
        b"set-cookie2",
        b"authentication-info",
        b"proxy-authenticate",
        b"proxy-authentication-info",
    }
)

#: Connection-specific fields, never stored (RFC 9111 section 3.1, RFC 9110 section 7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"proxy-authorization",
    }
)


def unstorableFields(headers: Headers) -> frozenset[bytes]:
    """
    The lower-case names of the fields of C{headers} a shared cache must not store (RFC 9111
    section 3.1): hop-by-hop fields, those C{Connection} names, and those named by a
    qualified C{no-cache="..."} or C{private="..."} (sections 5.2.2.4 and 5.2.2.7).
    """
    names = set(HOP_BY_HOP)
    for value in headerValues(headers, b"connection"):
        names.update(member.strip().lower() for member in value.split(b","))
    cc = cacheControl(headers)
    for qualified in (cc.no_cache, cc.private):
        if isinstance(qualified, list):
            names.update(name.strip().lower().encode("latin-1") for name in qualified)
    return frozenset(names)


@dataclass(frozen=True)
class Update:
    """
    A stored response's fields updated by a newer response about it (RFC 9111 section 3.2),
    and the fields of that newer response meant for its own client only.
    """

    headers: Headers
    perClient: Headers


def updatedHeaders(stored: Headers, new: Headers) -> Update:
    """
    The one way stored header fields are updated (a 304, a HEAD response, a 206): every
    field C{new} carries replaces all stored lines of that name, except C{Content-Length}
    and those describing the stored body (L{NOT_UPDATED_BY_304}), the fields a shared cache
    never stores (L{unstorableFields} of either message: what L{storable} strips when it
    stores) and the per-client fields (L{PER_CLIENT_FIELDS}), which the caller gives to the
    client that caused the update and to no one else.
    """
    excluded = unstorableFields(new) | unstorableFields(stored)
    replaced: set[bytes] = set()
    perClient: Headers = []
    for name, value in new:
        lower = name.lower()
        if lower in PER_CLIENT_FIELDS:
            perClient.append((name, value))
        elif lower not in NOT_UPDATED_BY_304 and lower not in excluded:
            replaced.add(lower)
    headers = [(n, v) for n, v in stored if n.lower() not in replaced]
    headers.extend((n, v) for n, v in new if n.lower() in replaced)
    return Update(headers, perClient)


def _etagList(value: bytes) -> list[bytes]:
    return [member.strip() for member in value.split(b",") if member.strip()]


def notModified(requestHeaders: Headers, rules: EntryRules) -> bool:
    """
    Whether a client's conditional GET/HEAD is answered 304 by this stored response
    (RFC 9110 section 13.1.2 and 13.1.3; If-None-Match wins over If-Modified-Since and uses
    weak comparison).
    """
    ifNoneMatch = joinedHeader(requestHeaders, b"if-none-match")
    if ifNoneMatch is not None:
        if rules.etag is None:
            return False
        tags = _etagList(ifNoneMatch)
        if b"*" in tags:
            return True
        mine = _opaque(rules.etag)
        return any(_opaque(tag) == mine for tag in tags)
    since = parseHTTPDate(firstHeader(requestHeaders, b"if-modified-since"))
    if since is None or rules.lastModified is None:
        return False
    modified = parseHTTPDate(rules.lastModified)
    return modified is not None and modified <= since


def isConditional(requestHeaders: Headers) -> bool:
    """
    Whether a request carries a precondition a cache can evaluate itself.
    """
    return any(n.lower() in (b"if-none-match", b"if-modified-since") for n, _ in requestHeaders)


#: Headers of a 304 taken from the stored response (RFC 9110 section 15.4.5).
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
    C{Content-Location} URIs when they have the same origin (scheme, host, port).
    """
    if method in SAFE_METHODS or not 200 <= code < 400:
        return []
    uris = [uri]
    origin = _origin(uri)
    for name in (b"location", b"content-location"):
        value = firstHeader(responseHeaders, name)
        if value is None:
            continue
        try:
            other = normalizeURI(urljoin(uri, value.decode("latin-1").strip()))
        except ValueError:
            continue
        if _origin(other) == origin and other not in uris:
            uris.append(other)
    return uris


def _origin(uri: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return ("", "", None)
    return (scheme, (parts.hostname or "").lower(), port)


def normalizeURI(uri: str) -> str:
    """
    A URI in the form L{caplab.proxy.hooks.Target.uri} makes (default port left out), so a
    C{Location} matches the cache key of the same resource.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = 443 if scheme == "https" else 80
    authority = host if port in (None, default) else f"{host}:{port}"
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{authority}{path}{query}"


_RANGE = re.compile(rb"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def byteRange(value: bytes, length: int) -> tuple[int, int] | None:
    """
    The one byte range a C{Range} field asks of a body of C{length} bytes, as
    C{(start, stop)} (stop exclusive), or None when the cache should leave the request to
    the origin: several ranges, another unit, a malformed or unsatisfiable range (RFC 9110
    section 14.1.2).
    """
    match = _RANGE.match(value)
    if match is None or length == 0:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        stop = min(int(last) + 1, length) if last else length
        if start >= length or (last and int(last) < start):
            return None
        return start, stop
    if not last or int(last) == 0:
        return None
    return max(0, length - int(last)), length
