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
    is written to, or deleted from, Redis as well.  What the near cache drops on its own
    (least recently used, beyond the variants a URI may keep, replaced by a newer copy) it
    only forgets: the shared entry stays for the other processes.

So a response fetched through one caplab is a hit through another, and none of the RFC 9111
logic had to change.

Entries live in Redis as one string per variant (C{PREFIX e:<uri hash>:<variant hash>}:
the stored head as JSON, then the body) and a set per URI naming its variants; both expire
with Redis TTLs derived from the response's freshness plus its C{stale-while-revalidate} /
C{stale-if-error} allowances (and some time for revalidation when it has a validator).
Objects over C{--cache-max-object} are never stored, here as in every store, and priming
takes no more of a URI from Redis than the near cache could hold (whoever else writes to
that Redis): a bounded number of variants, none over the largest object, C{--cache-size}
in all.

Redis going away never takes the proxy down: each Redis call is bounded by a timeout, a
failure opens a circuit for a second or so during which Redis is not asked at all (requests
are served from the near cache or the origin), the outage is logged once, its end once, and
txredisapi reconnects by itself.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from caplab.proxy.cache.bodies import CorruptEntry
from caplab.proxy.cache.entries import MAX_RECORD, EntryHead, StoredEntry
from caplab.proxy.cache.rules import EntryRules
from caplab.proxy.cache.storage import MAX_PARTS, MAX_VARIANTS, IEntryWriter, MemoryStore
from caplab.proxy.hooks import IRequestBody, UpstreamRequest, UpstreamResponse
from caplab.ratelimit import LogThrottle

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

#: The entries of a URI, bounded whatever another client of the Redis put there: at most
#: ARGV[2] members, none longer than ARGV[3] bytes, ARGV[4] bytes in all (members whose
#: value is gone are dropped from the set; a value that is not a string is skipped).
_GET = """
local out, total = {}, 0
local most, longest, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for _, member in ipairs(redis.call('SRANDMEMBER', KEYS[1], most)) do
  local key = ARGV[1] .. member
  local size = redis.pcall('STRLEN', key)
  if size == 0 then
    redis.call('SREM', KEYS[1], member)
  elseif type(size) == 'number' and size <= longest and total + size <= budget then
    total = total + size
    table.insert(out, redis.call('GET', key))
  end
end
return out
"""

#: Delete every variant of a URI and its set; the members deleted.
_PURGE = """
local members = redis.call('SMEMBERS', KEYS[1])
for _, member in ipairs(members) do redis.call('DEL', ARGV[1] .. member) end
redis.call('DEL', KEYS[1])
return members
"""

_DELETE = """
for _, key in ipairs(KEYS) do redis.call('UNLINK', key) end
return #KEYS
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

    def scan(self, cursor: int, pattern: bytes, count: int) -> Deferred[Any]: ...


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


def timeToLive(rules: EntryRules, now: float) -> float:
    """
    Seconds Redis keeps an entry with these rules: while fresh, then its stale allowances,
    then (with a validator) a while longer so that it can be revalidated rather than fetched
    again.
    """
    fresh = rules.freshness.lifetime - rules.freshness.currentAge(now)
    stale = max(rules.staleWhileRevalidate or 0, rules.staleIfError or 0)
    keep = REVALIDATION_KEEP if rules.hasValidator else 0.0
    return max(1.0, fresh + stale + keep)


@dataclass(frozen=True)
class RedisURL:
    """
    Where the shared cache is and how to log in, from C{--cache-redis}.

    @ivar username: a Redis 6 ACL user (None: the default user).
    @ivar password: the password (C{AUTH}), or None.
    @ivar tls: C{rediss://}: TLS, the server's certificate verified against C{caFile} (or
        the system's trust store) and its name.
    """

    host: str
    port: int
    database: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    caFile: str | None = None

    def describe(self) -> str:
        """
        Where, for log lines: never the password.
        """
        where = f"{self.host}:{self.port}/{self.database}"
        if self.username:
            where = f"{self.username}@{where}"
        return where + (" (TLS)" if self.tls else "")


_URL_FORM = "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or rediss://... (TLS)"


def _redacted(url: str) -> str:
    """
    C{url} without its password, for error messages.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def parseRedisURL(url: str) -> RedisURL:
    """
    The parts of C{redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]} or C{rediss://...} (TLS,
    with C{?ssl_ca_certs=FILE} to trust a private CA, as redis-py names it); user and password
    may be percent-encoded.  ValueError otherwise (its message never holds the password).
    """
    parts = urlsplit(url)
    shown = _redacted(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{shown!r} is not a {_URL_FORM} URL (redis://HOST[:PORT][/DB])")
    database = parts.path.strip("/") or "0"
    if not database.isdigit():
        raise ValueError(f"{shown!r}: the database must be a number")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"{shown!r}: bad port") from None
    caFile = None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "ssl_ca_certs" or parts.scheme != "rediss":
            raise ValueError(
                f"{shown!r}: unknown parameter {name!r} (only rediss:// takes ssl_ca_certs)"
            )
        if not os.path.isfile(value):
            raise ValueError(f"{shown!r}: ssl_ca_certs {value!r} is not a readable file")
        caFile = value
    return RedisURL(
        host=parts.hostname,
        port=port,
        database=int(database),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=parts.scheme == "rediss",
        caFile=caFile,
    )


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
        maxVariants: int = MAX_VARIANTS,
    ) -> None:
        super().__init__(maxSize, maxObjectSize, reactor.callLater, maxVariants)
        self.redis = redis
        self.reactor = reactor
        self.timeout = timeout
        self.where = where
        self._openUntil = 0.0
        self._down = False
        # one damaged or foreign value is met by every process that primes its URI
        self._damaged = LogThrottle(
            self.log,
            reactor,
            "caplab cache: dropping a damaged Redis entry for {uri}: {e}",
            summary="caplab cache: damaged Redis entries: the burst is over, {burst} in all",
            interval=60.0,
            repeat="caplab cache: dropping a damaged Redis entry for {uri}: {e} "
            "({count} times in the last {interval} s, {burst} in this burst)",
        )
        if hasattr(redis, "onFailure"):
            redis.onFailure = self._unusable

    def _unusable(self, kind: str, why: str) -> None:
        """
        Redis cannot be used (refused credentials, TLS failed): one line, and no more
        "unreachable" ones.
        """
        self._down = True
        if kind == "tls":
            self.log.error(
                "caplab cache: TLS with Redis at {where} failed ({why}); check the certificate "
                "and ssl_ca_certs in --cache-redis; serving without the shared cache",
                where=self.where,
                why=why,
            )
            return
        self.log.error(
            "caplab cache: Redis at {where} refused to log in ({why}); check the user, "
            "password and database in --cache-redis; serving without the shared cache",
            where=self.where,
            why=why,
        )

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
                error=self._describe(failure),
            )
        return None

    def _describe(self, failure: Any) -> str:
        """
        A failed call as a few words (not a timeout's repr or an errno tuple).
        """
        if failure.check(defer.TimeoutError, defer.CancelledError):
            return f"no answer within {self.timeout:g} s"
        error = failure.value
        if isinstance(error, OSError) and error.strerror:
            return str(error.strerror)
        return failure.getErrorMessage() or failure.type.__name__

    # --- read through -----------------------------------------------------------------------

    def prime(self, uri: str) -> Deferred[None]:
        """
        Make the near cache hold what Redis holds for C{uri} (unless it holds some already).
        """
        if self.holds(uri):
            return succeed(None)
        bounds = [self.maxVariants + MAX_PARTS, self.maxObjectSize + 4 + MAX_RECORD, self.maxSize]
        d = self._call(_GET, [self._indexKey(uri)], [self._entryPrefix(uri), *bounds])
        if d is None:
            return succeed(None)
        return d.addCallback(self._primed, uri)

    def _primed(self, values: list[bytes] | None, uri: str) -> None:
        for value in values or []:
            try:
                head, body = decodeEntry(value)
            except ValueError as e:
                self._damaged.event(uri=uri, e=e)
                continue
            if head.uri != uri:
                continue
            # the near cache's own writer: what Redis holds is not written back to it
            writer = super().writer(head)
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
        assert entry.rules is not None
        ttl = timeToLive(entry.rules, self.reactor.seconds())
        member = _hash(head.key)
        value = encodeEntry(head, b"".join(entry.chunks))
        if len(value) > self.maxObjectSize + 4 + MAX_RECORD:
            return  # no process would take it from Redis
        self._call(
            _PUT,
            [self._indexKey(head.uri), self._entryPrefix(head.uri) + member],
            [value, int(ttl * 1000), member],
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
        self._call(_PURGE, [self._indexKey(uri)], [self._entryPrefix(uri)])
        return removed

    def purge(self, uri: str) -> Deferred[int]:
        """
        Remove every variant of C{uri} here and in Redis; fires with how many distinct
        stored responses went (one held in both places counts once).
        """
        local = {_hash(entry.head.key) for entry in [*self.lookup(uri), *self.parts(uri)]}
        super().invalidate(uri)
        d = self._call(_PURGE, [self._indexKey(uri)], [self._entryPrefix(uri)])
        if d is None:
            return succeed(len(local))
        return d.addCallback(lambda members: len(local.union(members or ())))

    def flush(self) -> Deferred[int]:
        """
        Remove everything here and every entry of this cache in Redis (the keys under
        L{PREFIX}, found with C{SCAN}, deleted in batches); fires with how many distinct
        stored responses went.
        """
        local = {
            self._entryPrefix(entry.head.uri) + _hash(entry.head.key) for entry in self.entries()
        }
        super().flush()
        redis = self.redis
        if self.reactor.seconds() < self._openUntil or not hasattr(redis, "scan"):
            return succeed(len(local))
        removed: set[bytes] = set()
        result: Deferred[int] = Deferred()

        def step(cursor: int) -> None:
            d = redis.scan(cursor, PREFIX + b"*", 500)
            d.addTimeout(self.timeout * 4, self.reactor)
            d.addCallback(scanned).addErrback(failed)

        def scanned(reply: Any) -> None:
            cursor, keys = int(reply[0]), list(reply[1])
            removed.update(k for k in keys if k.startswith(PREFIX + b"e:"))
            if keys:
                self._call(_DELETE, keys, [])
            if cursor == 0:
                result.callback(len(local | removed))
            else:
                step(cursor)

        def failed(failure: Any) -> None:
            self._failed(failure)
            result.callback(len(local | removed))

        step(0)
        return result

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

    def purge(self, uri: str) -> Deferred[int]:
        """
        The cache's L{caplab.proxy.hooks.ICacheAdmin}: see L{RedisStore.purge}.
        """
        result: Deferred[int] = self.inner.purge(uri)
        return result

    def flush(self) -> Deferred[int]:
        """
        The cache's L{caplab.proxy.hooks.ICacheAdmin}: see L{RedisStore.flush}.
        """
        result: Deferred[int] = self.inner.flush()
        return result

    def fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        if request.method not in (b"GET", b"HEAD"):
            return self.inner.fetch(request, body)
        primed = self.store.prime(self.cacheKey(request))
        return primed.addCallback(lambda _: self.inner.fetch(request, body))


def _factoryClass() -> Any:
    """
    txredisapi's connection pool factory, with retry delays a person can read in the log
    (ClientService logs each: "in 2.7 seconds", not "in 2.725240993582395 seconds") and at
    most half a minute apart.  Made on first use: importing txredisapi imports the reactor.
    """
    import txredisapi

    class Factory(txredisapi.RedisFactory):
        maxDelay = 30

        def retryDelay(self, attempt: int) -> float:
            return float(round(super().retryDelay(attempt), 1))

    return Factory


#: Seconds before a new connection is tried after one was lost while logging in.
LOGIN_RETRY = 5.0

#: What a Redis error reply to AUTH or SELECT starts with when it refuses for good.
_REFUSALS = ("WRONGPASS", "NOAUTH", "NOPERM", "ERR")


class RedisClient:
    """
    A self-reconnecting connection to Redis (txredisapi's pool of one) that says why it
    cannot be used, as one line per cause (through L{onFailure}, logged by L{RedisStore}):

      - Redis refused the user or password, or the database (its error reply: txredisapi
        stops trying, and so does this client);
      - TLS failed (the certificate is not trusted or not the host's, or the server does
        not speak TLS): the TLS layer's reason, in words;
      - the connection was lost while logging in: a new one is tried after L{LOGIN_RETRY}
        seconds.

    @ivar failure: why it cannot be used, once that is final (None: it can, or may).
    @ivar onFailure: called with C{(kind, why)} when that happens; C{kind} is C{"login"}
        or C{"tls"}.
    """

    def __init__(self, address: RedisURL, reactor: Any) -> None:
        self.address = address
        self.reactor = reactor
        self.failure: str | None = None
        self.onFailure: Callable[[str, str], None] | None = None
        self._tlsError: str | None = None
        self._connect()

    def _connect(self) -> None:
        address = self.address
        endpoint: Any = HostnameEndpoint(self.reactor, address.host, address.port, timeout=10)
        if address.tls:
            endpoint = wrapClientTLS(_tlsOptions(address), endpoint)
        factory = _factoryClass()(
            f"{address.host}:{address.port}",
            address.database,
            1,
            isLazy=False,
            charset=None,
            password=address.password,
            username=address.username,
        )
        factory.noisy = False
        factory.deferred.addErrback(self._loginFailed)
        label = f"Redis at {address.describe()}"
        factory.startConnecting(_ObservingEndpoint(endpoint, self._lost, label))
        self._factory = factory
        self._handler = factory.handler

    def _lost(self, reason: Failure) -> None:
        """
        A connection ended: remember a TLS failure's reason (txredisapi only sees "Lost
        connection").
        """
        if reason.check(SSL.Error) and reason.value is not None:
            self._tlsError = _describeTLS(reason.value)

    def _loginFailed(self, failure: Failure) -> None:
        why = failure.getErrorMessage().removeprefix("Redis error: ").strip()
        reply = why.split(": ", 1)[-1]
        if self._tlsError is not None:
            self._giveUp("tls", self._tlsError)
        elif reply.startswith(_REFUSALS):
            self._giveUp("login", why)
        else:
            self.reactor.callLater(LOGIN_RETRY, self._connect)

    def _giveUp(self, kind: str, why: str) -> None:
        self.failure = why
        if self.onFailure is not None:
            self.onFailure(kind, why)

    def eval(self, source: str, keys: list[bytes], args: list[Any]) -> Deferred[Any]:
        if self.failure is not None:
            return fail(ConnectionRefusedError(self.failure))
        result: Deferred[Any] = self._handler.eval(source, keys, args)
        return result

    def scan(self, cursor: int, pattern: bytes, count: int) -> Deferred[Any]:
        if self.failure is not None:
            return fail(ConnectionRefusedError(self.failure))
        result: Deferred[Any] = self._handler.scan(cursor, pattern, count)
        return result

    def disconnect(self) -> Deferred[Any]:
        result: Deferred[Any] = self._factory.disconnect()
        return result


class _Observer(ProtocolWrapper):
    def connectionLost(self, reason: Failure = connectionDone) -> None:
        assert isinstance(self.factory, _ObservingFactory)
        self.factory.onLost(reason)
        super().connectionLost(reason)


class _ObservingFactory(WrappingFactory):
    protocol = _Observer
    noisy = False

    def __init__(self, wrapped: Any, onLost: Callable[[Failure], None]) -> None:
        super().__init__(wrapped)
        self.onLost = onLost


@implementer(IStreamClientEndpoint)
class _ObservingEndpoint:
    """
    An endpoint that tells C{onLost} why each of its connections ended, and gives its
    caller the protocol it built (not the wrapper).
    """

    def __init__(self, endpoint: Any, onLost: Callable[[Failure], None], label: str) -> None:
        self.endpoint = endpoint
        self.onLost = onLost
        self.label = label

    def __repr__(self) -> str:
        # what ClientService's "Scheduling retry N to connect ..." line shows
        return self.label

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = self.endpoint.connect(_ObservingFactory(factory, self.onLost))
        return d.addCallback(lambda wrapper: wrapper.wrappedProtocol)


def _describeTLS(error: BaseException) -> str:
    """
    An OpenSSL error in words: C{certificate verify failed}, not its tuple of tuples.
    """
    reasons = []
    for item in getattr(error, "args", ())[:1]:
        for entry in item if isinstance(item, list) else [item]:
            text = entry[-1] if isinstance(entry, tuple) and entry else entry
            if text and str(text) not in reasons:
                reasons.append(str(text))
    return "TLS: " + ("; ".join(reasons) if reasons else type(error).__name__)


def _tlsOptions(address: RedisURL) -> Any:
    """
    TLS for C{rediss://}: the server's certificate must be valid for its host name (or
    address) and signed by the given CA file's certificates, or by one the system trusts.
    """
    trustRoot: Any = None
    if address.caFile is not None:
        with open(address.caFile, "rb") as f:
            pem = f.read()
        certificates = [
            Certificate.loadPEM(b"-----BEGIN CERTIFICATE-----" + block)
            for block in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]
        ]
        if not certificates:
            raise ValueError(f"{address.caFile!r} holds no PEM certificate")
        trustRoot = trustRootFromCertificates(certificates)
    return optionsForClientTLS(address.host, trustRoot=trustRoot)


def connectRedis(url: str, reactor: Any) -> tuple[RedisClient, str]:
    """
    A self-reconnecting Redis client for C{url} (see L{parseRedisURL}), and a description
    of where it connects that never holds the password.
    """
    address = parseRedisURL(url)
    return RedisClient(address, reactor), address.describe()
