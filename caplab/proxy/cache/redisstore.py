"""
A cache store shared through Redis (C{--cache-redis redis://HOST:PORT/DB}), so that several
caplab processes, on one machine or several, share their cache.

How it fits the cache
=====================

The cache's rules look entries up synchronously (L{IStore.lookup} answers from an index in
memory), which a store across the network cannot do.  L{RedisStore} therefore is a
L{MemoryStore} (a near cache, bounded by C{--cache-size}) that is

  - I{read through}: L{PrimingFetcher}, in front of the caching fetcher, asks Redis for the
    entries of a URI the near cache does not hold and adds them before the cache rules run;
  - I{written through}: an entry the cache stores, refreshes (304), removes or invalidates
    is written to, or deleted from, Redis as well.

So a response fetched through one caplab is a hit through another, and none of the RFC 9111
logic had to change.

Entries live in Redis as one string per variant (C{PREFIX e:<uri hash>:<variant hash>}:
the stored head as JSON, then the body) and a set per URI naming its variants; both expire
with Redis TTLs derived from the response's freshness plus its C{stale-while-revalidate} /
C{stale-if-error} allowances (and some time for revalidation when it has a validator).
Objects over C{--cache-max-object} are never stored, here as in every store.

Redis going away never takes the proxy down: each Redis call is bounded by a timeout, a
failure opens a circuit for a second or so during which Redis is not asked at all (requests
are served from the near cache or the origin), the outage is logged once, its end once, and
txredisapi reconnects by itself.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from caplab.proxy.cache.bodies import CorruptEntry
from caplab.proxy.cache.entries import EntryHead, StoredEntry
from caplab.proxy.cache.storage import IEntryWriter, MemoryStore
from caplab.proxy.hooks import IRequestBody, UpstreamRequest, UpstreamResponse

#: Keys of this cache in Redis start with this (versioned: a format change takes a new one).
PREFIX = b"caplab:cache:1:"

#: How long an entry with a validator is kept after it went stale, for revalidation.
REVALIDATION_KEEP = 600.0

#: Seconds Redis is left alone after a failed call.
CIRCUIT_OPEN = 1.0

_HEAD_LENGTH = struct.Struct(">I")

_PUT = """
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[1], ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

_GET = """
local out = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', ARGV[1] .. member)
  if value then table.insert(out, value) else redis.call('SREM', KEYS[1], member) end
end
return out
"""

_INVALIDATE = """
local members = redis.call('SMEMBERS', KEYS[1])
for _, member in ipairs(members) do redis.call('DEL', ARGV[1] .. member) end
redis.call('DEL', KEYS[1])
return #members
"""

_REMOVE = """
redis.call('DEL', ARGV[1] .. ARGV[2])
redis.call('SREM', KEYS[1], ARGV[2])
return 1
"""


class IRedis(Protocol):
    """
    The part of a txredisapi connection this store uses.
    """

    def eval(self, source: str, keys: list[bytes], args: list[Any]) -> Deferred[Any]: ...


def _hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32].encode()


def encodeEntry(head: EntryHead, body: bytes) -> bytes:
    """
    One stored variant as a Redis value: head length, head as JSON, body.
    """
    record = head.toJSON(len(body))
    return _HEAD_LENGTH.pack(len(record)) + record + body


def decodeEntry(value: bytes) -> tuple[EntryHead, bytes]:
    """
    The head and body of a Redis value; ValueError if it is not one of ours, or damaged.
    """
    try:
        (length,) = _HEAD_LENGTH.unpack_from(value)
        head, bodyLength = EntryHead.fromJSON(value[4 : 4 + length])
    except (struct.error, CorruptEntry) as e:
        raise ValueError(f"not a cache entry: {e}") from e
    body = value[4 + length :]
    if len(body) != bodyLength:
        raise ValueError(f"body is {len(body)} bytes, the head says {bodyLength}")
    return head, body


def timeToLive(head: EntryHead, now: float) -> float:
    """
    Seconds Redis keeps an entry: while fresh, then its stale allowances, then (with a
    validator) a while longer so that it can be revalidated rather than fetched again.
    """
    rules = head.rules()
    fresh = rules.freshness.lifetime - rules.freshness.currentAge(now)
    stale = max(rules.staleWhileRevalidate or 0, rules.staleIfError or 0)
    keep = REVALIDATION_KEEP if rules.hasValidator else 0.0
    return max(1.0, fresh + stale + keep)


def parseRedisURL(url: str) -> tuple[str, int, int]:
    """
    Host, port and database of C{redis://HOST[:PORT][/DB]}; ValueError otherwise.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"{url!r} is not a redis://HOST[:PORT][/DB] URL")
    database = parts.path.strip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"{url!r}: the database must be a number")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    return parts.hostname, port, int(database)


class RedisStore(MemoryStore):
    """
    A near cache in memory, read and written through to Redis.
    """

    log = Logger()

    def __init__(
        self,
        redis: IRedis,
        reactor: Any,
        maxSize: int = 64 << 20,
        maxObjectSize: int = 8 << 20,
        timeout: float = 0.5,
        where: str = "redis",
    ) -> None:
        super().__init__(maxSize, maxObjectSize, reactor.callLater)
        self.redis = redis
        self.reactor = reactor
        self.timeout = timeout
        self.where = where
        self._openUntil = 0.0
        self._down = False

    # --- Redis calls, bounded, with a circuit breaker --------------------------------------

    def _call(self, source: str, keys: list[bytes], args: list[Any]) -> Deferred[Any] | None:
        """
        Run a script in Redis, or None while the circuit is open; failures are logged once
        per outage and fire the Deferred with None.
        """
        if self.reactor.seconds() < self._openUntil:
            return None
        d = self.redis.eval(source, keys, args)
        d.addTimeout(self.timeout, self.reactor)
        d.addCallbacks(self._succeeded, self._failed)
        return d

    def _succeeded(self, result: Any) -> Any:
        if self._down:
            self._down = False
            self.log.info("caplab cache: Redis at {where} is reachable again", where=self.where)
        return result

    def _failed(self, failure: Any) -> None:
        self._openUntil = self.reactor.seconds() + CIRCUIT_OPEN
        if not self._down:
            self._down = True
            self.log.warn(
                "caplab cache: Redis at {where} is unreachable ({error}); serving without the "
                "shared cache until it is back",
                where=self.where,
                error=failure.getErrorMessage() or failure.type.__name__,
            )
        return None

    # --- read through -----------------------------------------------------------------------

    def prime(self, uri: str) -> Deferred[None]:
        """
        Make the near cache hold what Redis holds for C{uri} (unless it holds some already).
        """
        if self.holds(uri):
            return succeed(None)
        d = self._call(_GET, [self._indexKey(uri)], [self._entryPrefix(uri)])
        if d is None:
            return succeed(None)
        return d.addCallback(self._primed, uri)

    def _primed(self, values: list[bytes] | None, uri: str) -> None:
        for value in values or []:
            try:
                head, body = decodeEntry(value)
            except ValueError as e:
                self.log.warn(
                    "caplab cache: dropping a damaged Redis entry for {uri}: {e}", uri=uri, e=e
                )
                continue
            if head.uri != uri:
                continue
            writer = MemoryStore.writer(self, head)
            if writer is not None and writer.write(body):
                writer.commit()

    # --- written through --------------------------------------------------------------------

    def writer(self, head: EntryHead) -> IEntryWriter | None:
        local = super().writer(head)
        return None if local is None else _WriteThrough(self, local)

    def publish(self, entry: StoredEntry) -> None:
        """
        Write C{entry} (head and body) to Redis with its time to live.
        """
        head = entry.head
        ttl = timeToLive(head, self.reactor.seconds())
        member = _hash(head.key)
        self._call(
            _PUT,
            [self._indexKey(head.uri), self._entryPrefix(head.uri) + member],
            [encodeEntry(head, b"".join(entry.chunks)), int(ttl * 1000), member],
        )

    def refresh(self, entry: StoredEntry, head: EntryHead) -> StoredEntry:
        refreshed = super().refresh(entry, head)
        if refreshed.live:
            self.publish(refreshed)
        return refreshed

    def remove(self, entry: StoredEntry) -> None:
        super().remove(entry)
        self._call(
            _REMOVE,
            [self._indexKey(entry.head.uri)],
            [self._entryPrefix(entry.head.uri), _hash(entry.head.key)],
        )

    def invalidate(self, uri: str) -> int:
        removed = super().invalidate(uri)
        self._call(_INVALIDATE, [self._indexKey(uri)], [self._entryPrefix(uri)])
        return removed

    @staticmethod
    def _indexKey(uri: str) -> bytes:
        return PREFIX + b"u:" + _hash(uri)

    @staticmethod
    def _entryPrefix(uri: str) -> bytes:
        return PREFIX + b"e:" + _hash(uri) + b":"


class _WriteThrough:
    """
    An entry writer that, once the local entry is committed, publishes it to Redis.
    """

    def __init__(self, store: RedisStore, local: IEntryWriter) -> None:
        self._store = store
        self._local = local

    def write(self, data: bytes) -> bool:
        return self._local.write(data)

    def commit(self) -> Deferred[StoredEntry | None]:
        def published(entry: StoredEntry | None) -> StoredEntry | None:
            if entry is not None:
                self._store.publish(entry)
            return entry

        return self._local.commit().addCallback(published)

    def abort(self) -> None:
        self._local.abort()


class PrimingFetcher:
    """
    In front of the caching fetcher: for GET and HEAD, first bring the URI's entries from
    Redis into the near cache.  Everything else goes straight through.

    @ivar cacheKey: how the cache turns a request into the URI it stores under.
    """

    def __init__(
        self, inner: Any, store: RedisStore, cacheKey: Callable[[UpstreamRequest], str]
    ) -> None:
        self.inner = inner
        self.store = store
        self.cacheKey = cacheKey

    def fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        if request.method not in (b"GET", b"HEAD"):
            return self.inner.fetch(request, body)
        primed = self.store.prime(self.cacheKey(request))
        return primed.addCallback(lambda _: self.inner.fetch(request, body))


def connectRedis(url: str, reactor: Any) -> tuple[IRedis, str]:
    """
    A lazily connecting, self-reconnecting txredisapi client for C{url}, and a description.
    """
    import txredisapi

    host, port, database = parseRedisURL(url)
    client = txredisapi.lazyConnection(host, port, dbid=database, reconnect=True, charset=None)
    return client, f"{host}:{port}/{database}"
