"""
Unit tests for the Redis-shared cache store, with an in-memory fake of the Redis scripts.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache import redisstore
from caplab.proxy.cache.entries import MAX_RECORD, EntryHead
from caplab.proxy.cache.redisstore import (
    IRedis,
    PrimingFetcher,
    RedisStore,
    decodeEntry,
    encodeEntry,
    parseRedisURL,
    timeToLive,
)
from caplab.proxy.cache.storage import MAX_PARTS
from caplab.proxy.hooks import Target, UpstreamRequest


class FakeRedis:
    """
    Runs the store's Lua scripts against dictionaries, recording TTLs; can be switched off.
    """

    def __init__(self) -> None:
        self.strings: dict[bytes, bytes] = {}
        self.sets: dict[bytes, set[bytes]] = {}
        self.ttls: dict[bytes, int] = {}
        self.down = False
        self.hang = False
        self.calls = 0
        self.primeBounds: tuple[int, int, int] | None = None

    def eval(self, source: str, keys: list[bytes], args: list[Any]) -> Deferred[Any]:
        self.calls += 1
        if self.hang:
            return Deferred()
        if self.down:
            return fail(ConnectionRefusedError("Connection refused"))
        if source == redisstore._PUT:
            value, ttl, member = args
            self.strings[keys[1]] = value
            self.ttls[keys[1]] = ttl
            self.sets.setdefault(keys[0], set()).add(member)
            self.ttls[keys[0]] = max(self.ttls.get(keys[0], -1), ttl)
            return succeed(1)
        if source == redisstore._GET:
            prefix, most, longest, budget = args
            self.primeBounds = (most, longest, budget)
            out: list[bytes] = []
            total = 0
            for m in sorted(self.sets.get(keys[0], ()))[:most]:
                value = self.strings.get(prefix + m)
                if value is None:
                    self.sets[keys[0]].discard(m)
                elif len(value) <= longest and total + len(value) <= budget:
                    total += len(value)
                    out.append(value)
            return succeed(out)
        if source == redisstore._PURGE:
            members = self.sets.pop(keys[0], set())
            for m in members:
                self.strings.pop(args[0] + m, None)
            return succeed(sorted(members))
        if source == redisstore._REMOVE:
            self.strings.pop(args[0] + args[1], None)
            self.sets.get(keys[0], set()).discard(args[1])
            return succeed(1)
        raise AssertionError("unknown script")


URI = "http://origin.caplab.test/page"


def head(
    uri: str = URI,
    maxAge: int = 60,
    now: float = 1000.0,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> EntryHead:
    return EntryHead(
        uri=uri,
        varyNames=(),
        variant=(),
        code=200,
        phrase=b"OK",
        headers=[(b"Cache-Control", b"max-age=%d" % maxAge), *(extra or [])],
        requestTime=now,
        responseTime=now,
    )


def store(redis: FakeRedis, clock: Clock) -> RedisStore:
    # cast: the plain fake has no scan, as a connection without SCAN (flush checks for it)
    return RedisStore(
        cast(IRedis, redis), clock, maxSize=1 << 20, maxObjectSize=1 << 16, timeout=0.5
    )


def put(target: RedisStore, entryHead: EntryHead, body: bytes) -> None:
    writer = target.writer(entryHead)
    assert writer is not None
    assert writer.write(body)
    writer.commit()


class EncodingTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        A stored variant comes back from its Redis value with the same head and body (any
        byte a field may hold: obs-text and other controls; CR, LF and NUL are refused).
        """
        original = head(extra=[(b"X-Bin", b"\xff\x01\x7f")])
        decoded, body = decodeEntry(encodeEntry(original, b"\x00body\xff"))
        self.assertEqual(decoded, original)
        self.assertEqual(body, b"\x00body\xff")

    def test_damagedValueIsRefused(self) -> None:
        """
        A truncated or foreign value is a ValueError, never an entry.
        """
        value = encodeEntry(head(), b"0123456789")
        self.assertRaises(ValueError, decodeEntry, value[:-1])
        self.assertRaises(ValueError, decodeEntry, b"not ours")
        for bad in (b"a\x00b", b"a\r\nSet-Cookie: x=1"):
            forged = encodeEntry(head(extra=[(b"X-Bad", bad)]), b"")
            self.assertRaises(ValueError, decodeEntry, forged)

    def test_timeToLive(self) -> None:
        """
        Fresh time left, plus stale allowances, plus revalidation time with a validator.
        """
        self.assertEqual(timeToLive(head(maxAge=60, now=1000).rules(), now=1010), 50)
        swr = head(maxAge=60, now=1000, extra=[(b"Cache-Control", b"stale-while-revalidate=30")])
        self.assertEqual(timeToLive(swr.rules(), now=1000), 90)
        tagged = head(maxAge=60, now=1000, extra=[(b"ETag", b'"v1"')])
        self.assertEqual(timeToLive(tagged.rules(), now=1000), 60 + redisstore.REVALIDATION_KEEP)
        self.assertEqual(timeToLive(head(maxAge=0, now=1000).rules(), now=2000), 1.0)

    def test_parseRedisURL(self) -> None:
        """
        C{redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]} and C{rediss://}; anything else is
        refused, and the error never shows the password.
        """
        plain = parseRedisURL("redis://127.0.0.1:6380/2")
        self.assertEqual((plain.host, plain.port, plain.database), ("127.0.0.1", 6380, 2))
        self.assertEqual((plain.username, plain.password, plain.tls), (None, None, False))
        default = parseRedisURL("redis://cache.example")
        self.assertEqual((default.host, default.port, default.database), ("cache.example", 6379, 0))
        password = parseRedisURL("redis://:s3cr%40t@cache.example/1")
        self.assertEqual((password.username, password.password), (None, "s3cr@t"))
        acl = parseRedisURL("redis://alice:pw@cache.example")
        self.assertEqual((acl.username, acl.password), ("alice", "pw"))
        secure = parseRedisURL(f"rediss://cache.example:6390/0?ssl_ca_certs={__file__}")
        self.assertEqual((secure.tls, secure.caFile, secure.port), (True, __file__, 6390))
        for bad in (
            "http://x",
            "redis://",
            "redis://h/x",
            "redis://h:99999",
            "redis://:topsecret@h/x",
            "redis://:topsecret@h/0?ssl_ca_certs=/etc/hostname",
            "rediss://:topsecret@h/0?ssl_ca_certs=/no/such/file",
            "rediss://:topsecret@h/0?verify=no",
        ):
            with self.assertRaises(ValueError) as raised:
                parseRedisURL(bad)
            self.assertNotIn("topsecret", str(raised.exception))

    def test_describeNeverShowsThePassword(self) -> None:
        self.assertEqual(parseRedisURL("redis://alice:topsecret@h:1/2").describe(), "alice@h:1/2")
        self.assertEqual(parseRedisURL("rediss://:topsecret@h/0").describe(), "h:6379/0 (TLS)")
        self.assertNotIn("topsecret", repr(parseRedisURL("redis://:topsecret@h")))


class SharedStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.redis = FakeRedis()
        self.first = store(self.redis, self.clock)
        self.second = store(self.redis, self.clock)

    def test_entryStoredThroughOneIsFoundThroughAnother(self) -> None:
        """
        A committed entry is written to Redis with its TTL, and a second store sharing that
        Redis finds it after priming.
        """
        put(self.first, head(), b"hello")
        [valueKey] = [k for k in self.redis.strings]
        self.assertEqual(self.redis.ttls[valueKey], 60_000)
        self.assertEqual(self.second.lookup(URI), [])
        self.successResultOf(self.second.prime(URI))
        [entry] = self.second.lookup(URI)
        self.assertEqual(b"".join(entry.chunks), b"hello")
        self.assertEqual(entry.head, head())

    def test_primeSkipsRedisWhenHeldLocally(self) -> None:
        """
        A URI the near cache holds costs no Redis round trip.
        """
        put(self.first, head(), b"hello")
        calls = self.redis.calls
        self.successResultOf(self.first.prime(URI))
        self.assertEqual(self.redis.calls, calls)

    def test_invalidateReachesRedis(self) -> None:
        """
        Invalidation through one store removes the entry for every store.
        """
        put(self.first, head(), b"hello")
        self.first.invalidate(URI)
        self.assertEqual(self.redis.strings, {})
        self.successResultOf(self.second.prime(URI))
        self.assertEqual(self.second.lookup(URI), [])

    def test_removeReachesRedis(self) -> None:
        """
        Removing one entry deletes its variant in Redis.
        """
        put(self.first, head(), b"hello")
        [entry] = self.first.lookup(URI)
        self.first.remove(entry)
        self.assertEqual(self.redis.strings, {})

    def test_refreshRepublishes(self) -> None:
        """
        A 304-refreshed head is written to Redis with a new time to live.
        """
        put(self.first, head(), b"hello")
        [entry] = self.first.lookup(URI)
        self.clock.advance(100)
        self.first.refresh(entry, head(now=1100, maxAge=300))
        self.successResultOf(self.second.prime(URI))
        [shared] = self.second.lookup(URI)
        self.assertEqual(shared.head.responseTime, 1100)
        self.assertEqual(list(self.redis.ttls.values())[-1], 300_000)

    def test_outageIsLoggedOnceAndServedWithoutRedis(self) -> None:
        """
        With Redis down, priming succeeds empty, the outage is logged once, Redis is left
        alone for a while, and its return is logged.
        """
        self.redis.down = True
        with capturedLogs() as events:
            self.successResultOf(self.second.prime(URI))
            self.successResultOf(self.second.prime(URI + "2"))
            self.clock.advance(redisstore.CIRCUIT_OPEN)
            self.successResultOf(self.second.prime(URI + "3"))
        self.assertEqual(self.redis.calls, 2, "no call while the circuit is open")
        warnings = [e for e in events if "unreachable" in e["log_format"]]
        self.assertEqual(len(warnings), 1)
        self.redis.down = False
        self.clock.advance(redisstore.CIRCUIT_OPEN)
        with capturedLogs() as events:
            self.successResultOf(self.second.prime(URI))
        self.assertEqual(len([e for e in events if "reachable again" in e["log_format"]]), 1)

    def test_hangingRedisTimesOut(self) -> None:
        """
        A Redis that does not answer delays a request by the timeout at most.
        """
        self.redis.hang = True
        primed = self.second.prime(URI)
        self.assertNoResult(primed)
        self.clock.advance(0.5)
        self.successResultOf(primed)

    def test_oversizedObjectIsNotShared(self) -> None:
        """
        An object over the per-object limit is stored neither locally nor in Redis.
        """
        writer = self.first.writer(head())
        assert writer is not None
        self.assertFalse(writer.write(b"x" * ((1 << 16) + 1)))
        self.successResultOf(writer.commit())
        self.assertEqual(self.redis.strings, {})

    def test_primingFetcherPrimesOnlySafeReads(self) -> None:
        """
        GET and HEAD are primed before the inner fetcher runs; POST goes straight through.
        """
        put(self.first, head(), b"hello")
        seen: list[tuple[bytes, int]] = []

        class Inner:
            def fetch(inner, request: UpstreamRequest, body: object) -> Deferred[Any]:
                seen.append((request.method, len(self.second.lookup(URI))))
                return succeed("response")

        fetcher = PrimingFetcher(Inner(), self.second, lambda request: request.target.uri)
        target = Target("http", "origin.caplab.test", 80, b"/page")
        calls = self.redis.calls
        self.successResultOf(fetcher.fetch(UpstreamRequest(b"POST", target, []), None))
        self.assertEqual(self.redis.calls, calls)
        self.assertEqual(
            self.successResultOf(fetcher.fetch(UpstreamRequest(b"GET", target, []), None)),
            "response",
        )
        self.assertEqual(seen, [(b"POST", 0), (b"GET", 1)])


class NearCacheEvictionTests(SynchronousTestCase):
    """
    What the near cache drops on its own (least recently used, beyond a URI's variants,
    replaced) it only forgets: the shared entries stay in Redis for the other processes.
    Only the public remove, invalidate, purge and flush reach Redis.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.redis = FakeRedis()
        self.other = store(self.redis, self.clock)

    def test_leastRecentlyUsedForgottenLocally(self) -> None:
        small = RedisStore(
            cast(IRedis, self.redis), self.clock, maxSize=8000, maxObjectSize=4000, timeout=0.5
        )
        uris = [f"{URI}/{i}" for i in range(3)]
        for uri in uris:
            put(small, head(uri=uri), b"x" * 3000)
        self.assertLess(len(small), 3, "the near cache evicted")
        self.assertEqual(len(self.redis.strings), 3)
        for uri in uris:
            self.successResultOf(self.other.prime(uri))
            self.assertEqual(len(self.other.lookup(uri)), 1, uri)

    def test_variantCapForgottenLocally(self) -> None:
        capped = RedisStore(
            cast(IRedis, self.redis),
            self.clock,
            maxSize=1 << 20,
            maxObjectSize=1 << 16,
            timeout=0.5,
            maxVariants=2,
        )
        for language in (b"en", b"fr", b"de"):
            variant = head()
            variant.varyNames = (b"accept-language",)
            variant.variant = (language,)
            put(capped, variant, language)
        self.assertEqual(len(capped.lookup(URI)), 2)
        self.assertEqual(capped.variantEvictions, 1)
        self.assertEqual(len(self.redis.strings), 3)

    def test_replacementLeavesTheNewCopy(self) -> None:
        """
        A newer copy under the same key replaces the near one without a delete in Redis
        (which would race with the write of the new one).
        """
        put(self.other, head(), b"one")
        calls = self.redis.calls
        put(self.other, head(now=1001), b"two")
        self.assertEqual(self.redis.calls, calls + 1, "one write, no delete")
        second = store(self.redis, self.clock)
        self.successResultOf(second.prime(URI))
        [entry] = second.lookup(URI)
        self.assertEqual(b"".join(entry.chunks), b"two")

    def test_primeIsBounded(self) -> None:
        """
        Priming asks Redis for at most as many variants as a URI keeps, none over the
        largest object (with its head), no more than the near cache holds in all (the
        script itself runs in a real Redis in L{tests.test_e2e_redis}).
        """
        self.successResultOf(self.other.prime(URI))
        most, longest, budget = self.redis.primeBounds or (0, 0, 0)
        self.assertEqual(most, self.other.maxVariants + MAX_PARTS)
        self.assertEqual(longest, self.other.maxObjectSize + 4 + MAX_RECORD)
        self.assertEqual(budget, self.other.maxSize)

    def test_damagedEntriesLoggedRateLimited(self) -> None:
        """
        Damaged values are logged one line a minute, with a count, not one line each.
        """
        prefix = self.other._entryPrefix(URI)
        for i in range(20):
            self.redis.sets.setdefault(self.other._indexKey(URI), set()).add(b"d%d" % i)
            self.redis.strings[prefix + b"d%d" % i] = b"damaged"
        with capturedLogs() as events:
            self.successResultOf(self.other.prime(URI))
        lines = [formatEvent(e) for e in events if "damaged Redis entry" in e["log_format"]]
        self.assertEqual(len(lines), 1, lines)


class ReadableLogTests(SynchronousTestCase):
    """
    One clear line per Redis event (issue 11).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def test_timeoutSaysSo(self) -> None:
        redis = FakeRedis()
        redis.hang = True
        shared = store(redis, self.clock)
        with capturedLogs() as events:
            shared.prime(URI)
            self.clock.advance(0.5)
        [line] = [formatEvent(e) for e in events]
        self.assertIn("is unreachable (no answer within 0.5 s)", line)

    def test_describeTLS(self) -> None:
        """
        An OpenSSL error is told in words.
        """
        from OpenSSL import SSL

        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(redisstore._describeTLS(error), "TLS: certificate verify failed")

    def test_refusedCredentialsOneLine(self) -> None:
        """
        A refused password is one error line naming the cause, and no "unreachable" line
        follows when calls then fail.
        """

        class Refusing(FakeRedis):
            onFailure: Any = None

        redis = Refusing()
        shared = store(redis, self.clock)
        with capturedLogs() as events:
            redis.onFailure("login", "could not auth: WRONGPASS invalid username-password pair")
            redis.down = True
            shared.prime(URI)
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("refused to log in (could not auth: WRONGPASS", lines[0])


class AdminTests(SynchronousTestCase):
    """
    Purge and flush reach Redis too.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.redis = ScanningRedis()
        self.first = store(self.redis, self.clock)
        self.second = store(self.redis, self.clock)

    def test_purge(self) -> None:
        """
        Every variant of the URI goes from the near cache and from Redis; one held in both
        counts once; a variant only in Redis counts too.
        """
        put(self.first, head(), b"hello")
        put(self.second, head(URI + "?other"), b"other")
        self.successResultOf(self.second.prime(URI))
        purged = self.successResultOf(self.second.purge(URI))
        self.assertEqual(purged, 1)
        self.assertEqual(self.second.lookup(URI), [])
        self.assertEqual(self.successResultOf(self.first.purge(URI)), 1, "the near copy")
        self.successResultOf(self.first.prime(URI))
        self.assertEqual(self.first.lookup(URI), [])
        self.assertEqual(len(self.second.lookup(URI + "?other")), 1)

    def test_flush(self) -> None:
        put(self.first, head(), b"hello")
        put(self.first, head(URI + "?2"), b"two")
        self.redis.strings[b"someone-else"] = b"kept"
        flushed = self.successResultOf(self.second.flush())
        self.assertEqual(flushed, 2)
        self.assertEqual(list(self.redis.strings), [b"someone-else"])
        self.assertEqual(self.successResultOf(self.first.flush()), 2)
        self.assertEqual(len(self.first), 0)


class ScanningRedis(FakeRedis):
    """
    A fake that also runs C{SCAN} and the purge and delete scripts.
    """

    def eval(self, source: str, keys: list[bytes], args: list[Any]) -> Deferred[Any]:
        if source == redisstore._DELETE:
            for key in keys:
                self.strings.pop(key, None)
                self.sets.pop(key, None)
            return succeed(len(keys))
        return super().eval(source, keys, args)

    snapshot: list[bytes] = []

    def scan(self, cursor: int, pattern: bytes, count: int) -> Deferred[Any]:
        """
        One key per call (so the caller must follow the cursor), from a snapshot taken when
        the scan starts (as SCAN returns every key present throughout).
        """
        if cursor == 0:
            prefix = pattern.rstrip(b"*")
            self.snapshot = sorted(k for k in [*self.strings, *self.sets] if k.startswith(prefix))
        page = self.snapshot[cursor : cursor + 1]
        following = cursor + 1 if cursor + 1 < len(self.snapshot) else 0
        return succeed([following, page])
