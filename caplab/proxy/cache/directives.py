"""
C{Cache-Control} (RFC 9111 section 5.2), parsed strictly and merged to the most restrictive.

The field is a comma-separated list of C{token [ "=" ( token / quoted-string ) ]} directives
(RFC 9110 section 5.6.1); commas inside quoted strings (C{no-cache="Set-Cookie, X-A"}) do not
separate.  Names are case-insensitive; unknown directives are ignored (section 5.2.3).

Values are checked: C{delta-seconds} is one or more digits (quoted or not, section 5.2), a
larger value than 2^31 is read as 2^31 (section 1.2.2), and a C{max-age} or C{s-maxage} that
is present but not a number is remembered as invalid, so that the response is treated as
stale (section 4.2.1) rather than as if it said nothing.

When a directive appears more than once, or directives conflict, the most restrictive reading
wins: the smallest C{max-age}, C{s-maxage}, C{stale-while-revalidate}, C{stale-if-error} and
C{max-stale}, the largest C{min-fresh}, an unqualified C{no-cache} or C{private} over the
qualified forms (whose field names are united; a qualified form whose argument is not a
token or quoted-string counts as unqualified), C{private} over C{public}; an invalid
C{max-age} among valid ones makes the response stale.

This replaces hishel's parser (C{hishel._core._headers}, not part of hishel's public API),
which keeps one value of a repeated directive, accepts no quoted delta-seconds and has no
notion of an invalid one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from caplab.proxy.cache.fields import MAX_DELTA, deltaSeconds

#: The longest C{Cache-Control} (all its lines together) whose parse is remembered: origins
#: repeat a few short values; a client or origin sending long unique ones would otherwise
#: keep up to 1,024 of them alive.
MEMO_LONGEST = 256

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_OWS = b" \t"


@dataclass(frozen=True, slots=True)
class CacheControl:
    """
    The directives of one message's C{Cache-Control}, merged (see the module docstring).

    @ivar noCache: unqualified C{no-cache}; C{noCacheFields}: the lower-case field names of
        qualified ones.  The same for C{private}/C{privateFields}.
    @ivar maxAgeInvalid: a C{max-age} was present with a value that is not delta-seconds
        (C{sMaxAgeInvalid} the same for C{s-maxage}).
    @ivar maxStale: a request's C{max-stale}: the seconds, L{MAX_DELTA} without a value.
    """

    noStore: bool = False
    noCache: bool = False
    noCacheFields: frozenset[bytes] = frozenset()
    private: bool = False
    privateFields: frozenset[bytes] = frozenset()
    public: bool = False
    maxAge: int | None = None
    maxAgeInvalid: bool = False
    sMaxAge: int | None = None
    sMaxAgeInvalid: bool = False
    mustRevalidate: bool = False
    proxyRevalidate: bool = False
    mustUnderstand: bool = False
    noTransform: bool = False
    immutable: bool = False
    staleWhileRevalidate: int | None = None
    staleIfError: int | None = None
    maxStale: int | None = None
    minFresh: int | None = None
    onlyIfCached: bool = False


NONE = CacheControl()


def splitList(value: bytes) -> list[bytes]:
    """
    The members of a comma-separated list field, trimmed, empty ones left out; commas inside
    quoted strings do not separate.
    """
    members: list[bytes] = []
    start = 0
    quoted = escaped = False
    for index, byte in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                quoted = False
        elif byte == 0x22:
            quoted = True
        elif byte == 0x2C:
            member = value[start:index].strip(_OWS)
            if member:
                members.append(member)
            start = index + 1
    member = value[start:].strip(_OWS)
    if member:
        members.append(member)
    return members


def _unquote(value: bytes) -> bytes | None:
    """
    The value of a token or quoted-string, or None if it is neither.
    """
    if value[:1] == b'"':
        if len(value) < 2 or value[-1:] != b'"':
            return None
        out = bytearray()
        escaped = False
        for byte in value[1:-1]:
            if escaped:
                out.append(byte)
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                return None
            else:
                out.append(byte)
        return None if escaped else bytes(out)
    if value and all(byte in _TOKEN for byte in value):
        return value
    return None


def _fieldNames(value: bytes) -> frozenset[bytes]:
    return frozenset(name.lower() for name in splitList(value) if name)


def parseCacheControl(values: list[bytes]) -> CacheControl:
    """
    The merged directives of every C{Cache-Control} line of a message (C{values}).

    Results are remembered for the most recent distinct short values (most origins send the
    same few over and over; see L{MEMO_LONGEST}); the parse is pure, so this only saves time.
    """
    if not values:
        return NONE
    key = tuple(values)
    if sum(len(value) for value in key) <= MEMO_LONGEST:
        return _remembered(key)
    return _parse(key)


def _parse(values: tuple[bytes, ...]) -> CacheControl:
    flags: set[bytes] = set()
    deltas: dict[bytes, list[int | None]] = {}
    noCacheFields: set[bytes] = set()
    privateFields: set[bytes] = set()
    maxStaleBare = False
    for line in values:
        for member in splitList(line):
            name, equals, raw = member.partition(b"=")
            name = name.rstrip(_OWS).lower()
            if not name or not all(byte in _TOKEN for byte in name):
                continue
            if not equals:
                if name == b"max-stale":
                    maxStaleBare = True
                flags.add(name)
                continue
            argument = _unquote(raw.lstrip(_OWS))
            if name in (b"no-cache", b"private"):
                if argument is None:
                    # a malformed list of field names: the unqualified directive (the most
                    # restrictive reading), not nothing at all
                    flags.add(name)
                    continue
                (noCacheFields if name == b"no-cache" else privateFields).update(
                    _fieldNames(argument)
                )
                continue
            deltas.setdefault(name, []).append(deltaSeconds(argument))

    def smallest(name: bytes) -> int | None:
        found = [v for v in deltas.get(name, []) if v is not None]
        return min(found) if found else None

    def invalid(name: bytes) -> bool:
        return any(v is None for v in deltas.get(name, []))

    maxStale = smallest(b"max-stale")
    if maxStale is None and maxStaleBare:
        maxStale = MAX_DELTA
    minFresh = [v for v in deltas.get(b"min-fresh", []) if v is not None]
    private = b"private" in flags
    return CacheControl(
        noStore=b"no-store" in flags,
        noCache=b"no-cache" in flags,
        noCacheFields=frozenset(noCacheFields),
        private=private,
        privateFields=frozenset(privateFields),
        public=b"public" in flags and not private,
        maxAge=None if invalid(b"max-age") else smallest(b"max-age"),
        maxAgeInvalid=invalid(b"max-age") or b"max-age" in flags,
        sMaxAge=None if invalid(b"s-maxage") else smallest(b"s-maxage"),
        sMaxAgeInvalid=invalid(b"s-maxage") or b"s-maxage" in flags,
        mustRevalidate=b"must-revalidate" in flags,
        proxyRevalidate=b"proxy-revalidate" in flags,
        mustUnderstand=b"must-understand" in flags,
        noTransform=b"no-transform" in flags,
        immutable=b"immutable" in flags,
        staleWhileRevalidate=smallest(b"stale-while-revalidate"),
        staleIfError=smallest(b"stale-if-error"),
        maxStale=maxStale,
        minFresh=max(minFresh) if minFresh else None,
        onlyIfCached=b"only-if-cached" in flags,
    )


_remembered = lru_cache(maxsize=1024)(_parse)
