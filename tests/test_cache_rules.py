"""
Tests for L{caplab.proxy.cache.rules}: RFC 9111 shared-cache rules, pure functions.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache import rules
from caplab.proxy.cache.rules import (
    Decision,
    EntryRules,
    RequestRules,
    evaluate,
    formatHTTPDate,
)

NOW = 1_700_000_000.0
URI = "http://example.com/a"


def entry(headers: list[tuple[bytes, bytes]], code: int = 200, at: float = NOW) -> EntryRules:
    return EntryRules.compute(code, headers, at, at)


def request(*headers: tuple[bytes, bytes]) -> RequestRules:
    return RequestRules.fromHeaders(list(headers))


def notModified(requestHeaders: list[tuple[bytes, bytes]], rules_: EntryRules) -> bool:
    """
    Whether the client's preconditions answer 304.
    """
    return rules.preconditions(requestHeaders, rules_) is rules.Precondition.NOT_MODIFIED


class FreshnessLifetimeTests(SynchronousTestCase):
    """
    L{rules.freshnessLifetime} follows RFC 9111 section 4.2.1 for a shared cache.
    """

    def lifetime(self, headers: list[tuple[bytes, bytes]], code: int = 200) -> float:
        return rules.freshnessLifetime(code, headers, NOW)[0]

    def test_sMaxAgeWins(self) -> None:
        """
        C{s-maxage} overrides C{max-age} and C{Expires} in a shared cache.
        """
        self.assertEqual(
            self.lifetime(
                [
                    (b"Cache-Control", b"max-age=10, s-maxage=100"),
                    (b"Expires", formatHTTPDate(NOW + 5)),
                ]
            ),
            100,
        )

    def test_maxAgeOverExpires(self) -> None:
        """
        C{max-age} overrides C{Expires}.
        """
        self.assertEqual(
            self.lifetime(
                [(b"Cache-Control", b"max-age=10"), (b"Expires", formatHTTPDate(NOW + 500))]
            ),
            10,
        )

    def test_expiresMinusDate(self) -> None:
        """
        Without C{max-age}, the lifetime is C{Expires} minus C{Date}.
        """
        self.assertEqual(
            self.lifetime(
                [(b"Date", formatHTTPDate(NOW - 100)), (b"Expires", formatHTTPDate(NOW + 200))]
            ),
            300,
        )

    def test_invalidExpires(self) -> None:
        """
        An invalid C{Expires} (such as C{0}) means already expired.
        """
        self.assertEqual(
            self.lifetime([(b"Expires", b"0"), (b"Last-Modified", formatHTTPDate(NOW - 1000))]), 0
        )

    def test_invalidMaxAge(self) -> None:
        """
        A C{max-age} that is not a number makes the response stale.
        """
        self.assertEqual(
            self.lifetime(
                [
                    (b"Cache-Control", b"max-age=soon"),
                    (b"Last-Modified", formatHTTPDate(NOW - 1000)),
                ]
            ),
            0,
        )

    def test_heuristic(self) -> None:
        """
        With no explicit expiry, a tenth of C{Date} minus C{Last-Modified} is used for a
        heuristically cacheable status, capped.
        """
        self.assertEqual(
            rules.freshnessLifetime(
                200,
                [(b"Date", formatHTTPDate(NOW)), (b"Last-Modified", formatHTTPDate(NOW - 1000))],
                NOW,
            ),
            (100.0, True),
        )
        self.assertEqual(
            self.lifetime([(b"Last-Modified", formatHTTPDate(NOW - 10**8))]), rules.HEURISTIC_CAP
        )

    def test_noHeuristicForOtherStatus(self) -> None:
        """
        A status that is not heuristically cacheable (302) gets no heuristic lifetime, unless
        the response is C{public}.
        """
        lastModified = (b"Last-Modified", formatHTTPDate(NOW - 1000))
        self.assertEqual(self.lifetime([lastModified], code=302), 0)
        self.assertEqual(
            self.lifetime([lastModified, (b"Cache-Control", b"public")], code=302), 100
        )


class AgeTests(SynchronousTestCase):
    """
    L{rules.correctedInitialAge} and L{rules.Freshness.currentAge}: RFC 9111 section 4.2.3.
    """

    def test_originAgePlusDelay(self) -> None:
        """
        The origin's C{Age} plus the response delay counts when larger than the apparent age.
        """
        headers = [(b"Date", formatHTTPDate(NOW)), (b"Age", b"100")]
        self.assertEqual(rules.correctedInitialAge(headers, NOW - 2, NOW), 102)

    def test_apparentAge(self) -> None:
        """
        When C{Date} is further back than C{Age} says, the apparent age counts.
        """
        headers = [(b"Date", formatHTTPDate(NOW - 50)), (b"Age", b"10")]
        self.assertEqual(rules.correctedInitialAge(headers, NOW, NOW), 50)

    def test_invalidAgeIgnored(self) -> None:
        """
        An C{Age} that is not a non-negative integer is ignored; a list uses its first member.
        """
        self.assertEqual(rules.correctedInitialAge([(b"Age", b"-5")], NOW, NOW), 0)
        self.assertEqual(rules.correctedInitialAge([(b"Age", b"7, 9")], NOW, NOW), 7)

    def test_originAgeMakesStale(self) -> None:
        """
        A response that arrives with C{Age: 100} and C{max-age=60} is already stale.
        """
        rule = entry([(b"Cache-Control", b"max-age=60"), (b"Age", b"100")])
        self.assertEqual(evaluate(rule, request(), NOW).decision, Decision.REVALIDATE)

    def test_residentTime(self) -> None:
        """
        The current age grows with the time the response has been stored.
        """
        rule = entry([(b"Cache-Control", b"max-age=60"), (b"Age", b"10")])
        self.assertEqual(rule.freshness.currentAge(NOW + 30), 40)
        self.assertEqual(evaluate(rule, request(), NOW + 49).decision, Decision.FRESH)
        self.assertEqual(evaluate(rule, request(), NOW + 51).decision, Decision.REVALIDATE)


class StorabilityTests(SynchronousTestCase):
    """
    L{rules.storable}: RFC 9111 section 3 for a shared cache.
    """

    def check(
        self,
        responseHeaders: list[tuple[bytes, bytes]],
        requestHeaders: list[tuple[bytes, bytes]] | None = None,
        code: int = 200,
        method: bytes = b"GET",
    ) -> rules.Storability:
        return rules.storable(method, URI, requestHeaders or [], code, responseHeaders)

    def test_plain(self) -> None:
        """
        A 200 with C{max-age} is stored.
        """
        self.assertTrue(self.check([(b"Cache-Control", b"max-age=60")]).ok)

    def test_noStore(self) -> None:
        """
        C{no-store} in the response or in the request prevents storing.
        """
        self.assertFalse(self.check([(b"Cache-Control", b"no-store, max-age=60")]).ok)
        self.assertFalse(
            self.check([(b"Cache-Control", b"max-age=60")], [(b"Cache-Control", b"no-store")]).ok
        )

    def test_private(self) -> None:
        """
        A shared cache does not store C{private}; C{private="f"} only strips field C{f}.
        """
        self.assertFalse(self.check([(b"Cache-Control", b"private, max-age=60")]).ok)
        result = self.check(
            [(b"Cache-Control", b'max-age=60, private="Set-Cookie"'), (b"Set-Cookie", b"a=b")]
        )
        self.assertTrue(result.ok)
        self.assertNotIn(b"Set-Cookie", [n for n, _ in result.headers])

    def test_authorization(self) -> None:
        """
        A response to a request with C{Authorization} is stored only with C{public},
        C{s-maxage} or C{must-revalidate}.
        """
        auth = [(b"Authorization", b"Basic eDp5")]
        self.assertFalse(self.check([(b"Cache-Control", b"max-age=60")], auth).ok)
        for directive in (b"public, max-age=60", b"s-maxage=60", b"must-revalidate, max-age=60"):
            self.assertTrue(self.check([(b"Cache-Control", directive)], auth).ok, directive)

    def test_methodAndStatus(self) -> None:
        """
        Only GET is stored; 206 and 304 are not; a 302 without explicit freshness is not.
        """
        cc = [(b"Cache-Control", b"max-age=60")]
        self.assertFalse(self.check(cc, method=b"POST").ok)
        self.assertFalse(self.check(cc, method=b"HEAD").ok)
        self.assertFalse(self.check(cc, code=206).ok)
        self.assertFalse(self.check(cc, code=304).ok)
        self.assertFalse(self.check([], code=302).ok)
        self.assertTrue(self.check(cc, code=302).ok)

    def test_varyStar(self) -> None:
        """
        A response with C{Vary: *} is not stored: it could never be reused.
        """
        self.assertFalse(self.check([(b"Cache-Control", b"max-age=60"), (b"Vary", b"*")]).ok)

    def test_neverReusable(self) -> None:
        """
        A response stale at once with no validator is not stored; with a validator it is.
        """
        self.assertFalse(self.check([]).ok)
        self.assertFalse(self.check([(b"Cache-Control", b"max-age=0")]).ok)
        self.assertTrue(self.check([(b"Cache-Control", b"max-age=0"), (b"ETag", b'"a"')]).ok)
        self.assertFalse(self.check([(b"Cache-Control", b"no-cache, max-age=60")]).ok)
        self.assertTrue(
            self.check([(b"Cache-Control", b"no-cache, max-age=60"), (b"ETag", b'"a"')]).ok
        )

    def test_setCookie(self) -> None:
        """
        A response that sets a cookie is stored only when explicitly shared.
        """
        cookie = (b"Set-Cookie", b"session=alice")
        self.assertFalse(self.check([(b"Cache-Control", b"max-age=60"), cookie]).ok)
        self.assertTrue(self.check([(b"Cache-Control", b"public, max-age=60"), cookie]).ok)
        self.assertTrue(self.check([(b"Cache-Control", b"s-maxage=60"), cookie]).ok)

    def test_perClientFieldsNeverStored(self) -> None:
        """
        Even when a response with C{Set-Cookie} may be stored (C{public}, C{s-maxage}), the
        per-client fields are not among the stored ones.
        """
        perClient = [
            (b"Set-Cookie", b"session=alice"),
            (b"Set-Cookie2", b"old=style"),
            (b"Authentication-Info", b'nextnonce="x"'),
        ]
        for directive in (b"public, max-age=60", b"s-maxage=60"):
            result = self.check([(b"Cache-Control", directive), *perClient, (b"X-A", b"1")])
            self.assertTrue(result.ok)
            self.assertEqual(result.headers, [(b"Cache-Control", directive), (b"X-A", b"1")])

    def test_hopByHopStripped(self) -> None:
        """
        Hop-by-hop fields are not stored; the others keep their order and raw names.
        """
        result = self.check(
            [(b"Cache-Control", b"max-age=60"), (b"Keep-Alive", b"5"), (b"X-A", b"1")]
        )
        self.assertEqual(result.headers, [(b"Cache-Control", b"max-age=60"), (b"X-A", b"1")])


class EvaluateTests(SynchronousTestCase):
    """
    L{rules.evaluate}: request and response directives decide whether a stored response
    may be used without asking the origin.
    """

    def test_requestNoCache(self) -> None:
        """
        The request's C{no-cache}, or C{Pragma: no-cache} without C{Cache-Control}, forces
        revalidation of a fresh response.
        """
        rule = entry([(b"Cache-Control", b"max-age=60")])
        self.assertEqual(evaluate(rule, request(), NOW).decision, Decision.FRESH)
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"no-cache")), NOW).decision,
            Decision.REVALIDATE,
        )
        self.assertEqual(
            evaluate(rule, request((b"Pragma", b"no-cache")), NOW).decision, Decision.REVALIDATE
        )
        self.assertEqual(
            evaluate(
                rule, request((b"Pragma", b"no-cache"), (b"Cache-Control", b"max-stale")), NOW
            ).decision,
            Decision.FRESH,
        )

    def test_responseNoCache(self) -> None:
        """
        A stored response with C{no-cache} is always revalidated.
        """
        rule = entry([(b"Cache-Control", b"no-cache, max-age=60")])
        self.assertEqual(evaluate(rule, request(), NOW).decision, Decision.REVALIDATE)

    def test_requestMaxAge(self) -> None:
        """
        The request's C{max-age} refuses responses older than it; C{max-age=0} always
        revalidates.
        """
        rule = entry([(b"Cache-Control", b"max-age=600")])
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"max-age=10")), NOW + 5).decision,
            Decision.FRESH,
        )
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"max-age=10")), NOW + 11).decision,
            Decision.REVALIDATE,
        )
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"max-age=0")), NOW).decision,
            Decision.REVALIDATE,
        )

    def test_minFresh(self) -> None:
        """
        C{min-fresh} wants the response to stay fresh that much longer.
        """
        rule = entry([(b"Cache-Control", b"max-age=60")])
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"min-fresh=30")), NOW + 20).decision,
            Decision.FRESH,
        )
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"min-fresh=30")), NOW + 40).decision,
            Decision.REVALIDATE,
        )

    def test_maxStale(self) -> None:
        """
        C{max-stale} allows a stale response within its bound (or any, without a value),
        but not against C{must-revalidate}, C{proxy-revalidate} or C{s-maxage}.
        """
        rule = entry([(b"Cache-Control", b"max-age=60")])
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"max-stale=30")), NOW + 80).decision,
            Decision.FRESH,
        )
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"max-stale=30")), NOW + 100).decision,
            Decision.REVALIDATE,
        )
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"max-stale")), NOW + 10**6).decision,
            Decision.FRESH,
        )
        for directive in (
            b"max-age=60, must-revalidate",
            b"max-age=60, proxy-revalidate",
            b"s-maxage=60",
        ):
            strict = entry([(b"Cache-Control", directive)])
            self.assertEqual(
                evaluate(strict, request((b"Cache-Control", b"max-stale")), NOW + 80).decision,
                Decision.REVALIDATE,
                directive,
            )

    def test_staleWhileRevalidate(self) -> None:
        """
        C{stale-while-revalidate} serves stale within its window and revalidates behind it.
        """
        rule = entry([(b"Cache-Control", b"max-age=60, stale-while-revalidate=30")])
        self.assertEqual(evaluate(rule, request(), NOW + 70).decision, Decision.STALE_REVALIDATE)
        self.assertEqual(evaluate(rule, request(), NOW + 100).decision, Decision.REVALIDATE)

    def test_immutable(self) -> None:
        """
        A fresh C{immutable} response ignores the request's C{max-age=0} (a reload) but not
        C{no-cache}.
        """
        rule = entry([(b"Cache-Control", b"max-age=600, immutable")])
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"max-age=0")), NOW + 5).decision,
            Decision.FRESH,
        )
        self.assertEqual(
            evaluate(rule, request((b"Cache-Control", b"no-cache")), NOW).decision,
            Decision.REVALIDATE,
        )

    def test_staleIfError(self) -> None:
        """
        C{stale-if-error} of the response or the request allows stale on origin errors,
        within its bound, never with C{must-revalidate}.
        """
        rule = entry([(b"Cache-Control", b"max-age=60, stale-if-error=100")])
        self.assertTrue(rules.mayServeStaleOnError(rule, request(), NOW + 150))
        self.assertFalse(rules.mayServeStaleOnError(rule, request(), NOW + 170))
        plain = entry([(b"Cache-Control", b"max-age=60")])
        self.assertFalse(rules.mayServeStaleOnError(plain, request(), NOW + 70))
        self.assertTrue(
            rules.mayServeStaleOnError(
                plain, request((b"Cache-Control", b"stale-if-error=20")), NOW + 70
            )
        )
        strict = entry([(b"Cache-Control", b"max-age=60, must-revalidate, stale-if-error=100")])
        self.assertFalse(rules.mayServeStaleOnError(strict, request(), NOW + 70))


class VaryTests(SynchronousTestCase):
    """
    Secondary keys: L{rules.varyNames}, L{rules.secondaryKey}.
    """

    def test_names(self) -> None:
        """
        Names are lower-cased and combined over lines; C{*} gives None.
        """
        self.assertEqual(
            rules.varyNames([(b"Vary", b"Accept-Encoding, Accept"), (b"vary", b"accept")]),
            (b"accept-encoding", b"accept"),
        )
        self.assertIsNone(rules.varyNames([(b"Vary", b"Accept, *")]))
        self.assertEqual(rules.varyNames([]), ())

    def test_hostileVary(self) -> None:
        """
        A C{Vary} of thousands of names (repeated ones counted once) is read in one pass
        and gives None beyond L{rules.MAX_VARY_NAMES} names: such a response is not stored.
        """
        import time

        allowed = b", ".join(b"X-%d" % i for i in range(rules.MAX_VARY_NAMES))
        names = rules.varyNames([(b"Vary", allowed + b", x-0, X-1")])
        assert names is not None
        self.assertEqual(len(names), rules.MAX_VARY_NAMES)
        self.assertIsNone(rules.varyNames([(b"Vary", allowed + b", X-more")]))
        hostile = [(b"Vary", b",".join(b"h%d" % i for i in range(20000)))]
        started = time.perf_counter()
        self.assertIsNone(rules.varyNames(hostile))
        decision = rules.storable(
            b"GET", "http://a/", [], 200, [*hostile, (b"Cache-Control", b"max-age=60")]
        )
        # quadratic de-duplication took seconds here; one pass takes milliseconds
        self.assertLess(time.perf_counter() - started, 0.5)
        self.assertEqual((decision.ok, decision.reason), (False, "vary"))

    def test_normalized(self) -> None:
        """
        Whitespace and line splitting do not change the key; values do; absence differs
        from an empty value.
        """
        names = (b"accept",)
        one = rules.secondaryKey(names, [(b"Accept", b"text/html,  text/plain")])
        two = rules.secondaryKey(names, [(b"accept", b"text/html"), (b"Accept", b"text/plain")])
        self.assertEqual(one, two)
        self.assertNotEqual(one, rules.secondaryKey(names, [(b"Accept", b"text/plain")]))
        self.assertNotEqual(
            rules.secondaryKey(names, []), rules.secondaryKey(names, [(b"Accept", b"")])
        )


class ValidationTests(SynchronousTestCase):
    """
    Revalidation and conditional requests.
    """

    def test_conditionalHeaders(self) -> None:
        """
        The stored validators replace the client's own preconditions.
        """
        rule = entry([(b"ETag", b'"v1"'), (b"Last-Modified", formatHTTPDate(NOW - 10))])
        headers = rules.conditionalHeaders(
            [(b"Accept", b"*/*"), (b"If-None-Match", b'"mine"')], rule
        )
        self.assertEqual(
            headers,
            [
                (b"Accept", b"*/*"),
                (b"If-None-Match", b'"v1"'),
                (b"If-Modified-Since", formatHTTPDate(NOW - 10)),
            ],
        )

    def test_freshen(self) -> None:
        """
        A 304's fields replace every stored line of that name, but not Content-Length.
        """
        stored = [
            (b"Cache-Control", b"max-age=1"),
            (b"X-A", b"1"),
            (b"X-A", b"2"),
            (b"Content-Length", b"5"),
        ]
        fresh = rules.updatedHeaders(
            stored, [(b"Cache-Control", b"max-age=60"), (b"X-A", b"3"), (b"Content-Length", b"0")]
        )
        self.assertEqual(
            fresh.headers,
            [(b"Content-Length", b"5"), (b"Cache-Control", b"max-age=60"), (b"X-A", b"3")],
        )
        self.assertEqual(fresh.perClient, [])

    def test_updateKeepsPerClientFieldsOut(self) -> None:
        """
        Per-client fields of an update (C{Set-Cookie}, C{Set-Cookie2},
        C{Authentication-Info}, C{Proxy-Authenticate}, C{Proxy-Authentication-Info}) never
        reach the stored fields: they are returned apart, for the one client.
        """
        stored = [(b"Cache-Control", b"max-age=1"), (b"ETag", b'"v1"')]
        perClient = [
            (b"Set-Cookie", b"session=secret"),
            (b"set-cookie2", b"old=style"),
            (b"Authentication-Info", b'nextnonce="x"'),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Proxy-Authentication-Info", b'nextnonce="y"'),
        ]
        update = rules.updatedHeaders(stored, [(b"Cache-Control", b"max-age=60"), *perClient])
        self.assertEqual(update.headers, [(b"ETag", b'"v1"'), (b"Cache-Control", b"max-age=60")])
        self.assertEqual(update.perClient, perClient)

    def test_updateCheckedAsNew(self) -> None:
        """
        An update that brings unqualified C{private}, C{no-store} (without
        C{must-understand}) or other C{Vary} names makes the response unstorable; a
        qualified C{private="x"}, the same C{Vary} in another order, or C{no-store} with
        C{must-understand} on an understood status does not.
        """
        stored = [(b"Cache-Control", b"max-age=1"), (b"Vary", b"Accept, Cookie")]

        def why(*new: tuple[bytes, bytes], code: int = 200) -> str:
            return rules.updatedHeaders(stored, list(new), code).unstorable

        self.assertEqual(why((b"Cache-Control", b"private")), "private")
        self.assertEqual(why((b"Cache-Control", b"no-store")), "no-store")
        self.assertEqual(why((b"Vary", b"Accept")), "vary")
        self.assertEqual(why((b"Vary", b"*")), "vary")
        self.assertEqual(why((b"Cache-Control", b'private="x-a", max-age=5')), "")
        self.assertEqual(why((b"Vary", b"cookie, accept")), "")
        self.assertEqual(why((b"Cache-Control", b"no-store, must-understand")), "")
        self.assertEqual(
            why((b"Cache-Control", b"no-store, must-understand"), code=299), "no-store"
        )
        self.assertEqual(why((b"X-A", b"1")), "")
        self.assertEqual(
            rules.updatedHeaders(stored, [(b"X-A", b"1")], vary=(b"accept",)).unstorable, "vary"
        )

    def test_updateAppliesStorageRules(self) -> None:
        """
        An update never stores what L{rules.storable} strips: hop-by-hop fields, the fields
        C{Connection} names, and those named by C{no-cache="..."} or C{private="..."} of the
        update or of the stored response.
        """
        stored = [(b"Cache-Control", b'max-age=1, no-cache="X-Old"'), (b"X-Old", b"kept")]
        update = rules.updatedHeaders(
            stored,
            [
                (b"Connection", b"X-Hop"),
                (b"X-Hop", b"1"),
                (b"Keep-Alive", b"timeout=5"),
                (b"X-Old", b"new"),
                (b"X-Secret", b"mine"),
                (b"X-Private", b"mine"),
                (b"Cache-Control", b'max-age=60, no-cache="X-Secret", private="x-private"'),
            ],
        )
        self.assertEqual(
            update.headers,
            [
                (b"X-Old", b"kept"),
                (b"Cache-Control", b'max-age=60, no-cache="X-Secret", private="x-private"'),
            ],
        )

    def test_storableStripsConnectionFields(self) -> None:
        """
        A stored response leaves out the fields its C{Connection} names.
        """
        decision = rules.storable(
            b"GET",
            URI,
            [],
            200,
            [(b"Cache-Control", b"max-age=60"), (b"Connection", b"X-Hop"), (b"X-Hop", b"1")],
        )
        self.assertEqual(decision.headers, [(b"Cache-Control", b"max-age=60")])

    def test_validatorsMatch(self) -> None:
        """
        A 304 with another strong ETag or Last-Modified is not about the stored response.
        """
        rule = entry([(b"ETag", b'"v1"'), (b"Last-Modified", b"Mon, 01 Jan 2024 00:00:00 GMT")])
        self.assertTrue(rules.validatorsMatch(rule, [(b"ETag", b'"v1"')]))
        self.assertFalse(rules.validatorsMatch(rule, [(b"ETag", b'"v2"')]))
        self.assertTrue(rules.validatorsMatch(rule, [(b"ETag", b'W/"v1"')]))
        self.assertFalse(
            rules.validatorsMatch(rule, [(b"Last-Modified", b"Tue, 02 Jan 2024 00:00:00 GMT")])
        )
        self.assertTrue(rules.validatorsMatch(rule, []))

    def test_clientConditional(self) -> None:
        """
        A client's C{If-None-Match} (weak comparison, C{*}) or C{If-Modified-Since} is
        answered 304 when the stored response matches; If-None-Match wins.
        """
        lastModified = formatHTTPDate(NOW - 100)
        rule = entry([(b"ETag", b'W/"v1"'), (b"Last-Modified", lastModified)])
        self.assertTrue(notModified([(b"If-None-Match", b'"x", "v1"')], rule))
        self.assertTrue(notModified([(b"If-None-Match", b"*")], rule))
        self.assertFalse(notModified([(b"If-None-Match", b'"v2"')], rule))
        self.assertTrue(notModified([(b"If-Modified-Since", lastModified)], rule))
        self.assertFalse(notModified([(b"If-Modified-Since", formatHTTPDate(NOW - 200))], rule))
        self.assertFalse(
            notModified([(b"If-None-Match", b'"v2"'), (b"If-Modified-Since", lastModified)], rule)
        )


class InvalidationTests(SynchronousTestCase):
    """
    L{rules.invalidatedURIs}: RFC 9111 section 4.4.
    """

    def test_unsafeSuccess(self) -> None:
        """
        A successful POST invalidates its target and same-origin Location and
        Content-Location, resolved and normalized; another origin's are left alone.
        """
        uris = rules.invalidatedURIs(
            b"POST",
            "http://example.com/a",
            201,
            [
                (b"Location", b"/b?x=1"),
                (b"Content-Location", b"http://other.example/c"),
            ],
        )
        self.assertEqual(uris, ["http://example.com/a", "http://example.com/b?x=1"])
        self.assertEqual(
            rules.invalidatedURIs(
                b"PUT", URI, 204, [(b"Content-Location", b"HTTP://Example.com:80/c")]
            ),
            [URI, "http://example.com/c"],
        )

    def test_keysAsTargetsAre(self) -> None:
        """
        C{Location} and C{Content-Location} are read as the proxy reads request targets
        (L{caplab.proxy.target.parseTarget}): an international name in A-labels, no
        trailing dot, a numeric address in its canonical form, no fragment.
        """
        idn = "http://xn--bcher-kva.example/a"
        self.assertEqual(
            rules.invalidatedURIs(
                b"POST", idn, 201, [(b"Location", "http://Bücher.example./b#top".encode())]
            ),
            [idn, "http://xn--bcher-kva.example/b"],
        )
        self.assertEqual(
            rules.invalidatedURIs(
                b"POST",
                "http://127.0.0.1/a",
                201,
                [(b"Location", b"http://0x7f000001/b"), (b"Content-Location", b"http://x:99999/")],
            ),
            ["http://127.0.0.1/a", "http://127.0.0.1/b"],
        )
        self.assertEqual(rules.normalizeURI("HTTP://Example.COM.:80/c?d"), "http://example.com/c?d")
        self.assertEqual(
            rules.normalizeURI("http://Bücher.example/"), "http://xn--bcher-kva.example/"
        )
        self.assertIsNone(rules.normalizeURI("ftp://example.com/"))
        self.assertIsNone(rules.normalizeURI("not a uri"))

    def test_safeOrError(self) -> None:
        """
        Safe methods and error responses invalidate nothing.
        """
        self.assertEqual(rules.invalidatedURIs(b"GET", URI, 200, []), [])
        self.assertEqual(rules.invalidatedURIs(b"DELETE", URI, 500, []), [])
        self.assertEqual(rules.invalidatedURIs(b"DELETE", URI, 404, []), [])
        self.assertEqual(rules.invalidatedURIs(b"PATCH", URI, 302, []), [URI])


DIRECTIVES = st.lists(
    st.sampled_from(
        [
            "public",
            "private",
            "no-store",
            "no-cache",
            "must-revalidate",
            "proxy-revalidate",
            "max-age=60",
            "max-age=0",
            "s-maxage=30",
            "immutable",
            "stale-while-revalidate=10",
        ]
    ),
    max_size=5,
)


class StorabilityPropertyTests(SynchronousTestCase):
    """
    Whatever the mix of directives, what must never be shared is never stored.
    """

    @settings(max_examples=300, deadline=None)
    @given(directives=DIRECTIVES, authorization=st.booleans(), requestNoStore=st.booleans())
    def test_neverShared(
        self, directives: list[str], authorization: bool, requestNoStore: bool
    ) -> None:
        responseHeaders = [(b"ETag", b'"x"')]
        if directives:
            responseHeaders.append((b"Cache-Control", ", ".join(directives).encode()))
        requestHeaders = []
        if authorization:
            requestHeaders.append((b"Authorization", b"Basic eDp5"))
        if requestNoStore:
            requestHeaders.append((b"Cache-Control", b"no-store"))
        ok = rules.storable(b"GET", URI, requestHeaders, 200, responseHeaders, NOW).ok
        if "no-store" in directives or "private" in directives or requestNoStore:
            self.assertFalse(ok)
        if authorization and not {"public", "s-maxage=30", "must-revalidate"} & set(directives):
            self.assertFalse(ok)

    @settings(max_examples=300, deadline=None)
    @given(directives=DIRECTIVES, later=st.floats(0, 200), earlier=st.floats(0, 1))
    def test_freshnessMonotonic(self, directives: list[str], later: float, earlier: float) -> None:
        """
        A response that may be served without the origin at some time may be at every
        earlier time; one with no-cache never is.
        """
        headers = [(b"Date", formatHTTPDate(NOW))]
        if directives:
            headers.append((b"Cache-Control", ", ".join(directives).encode()))
        rule = entry(headers)
        decision = evaluate(rule, request(), NOW + later).decision
        if decision is Decision.FRESH:
            self.assertIs(evaluate(rule, request(), NOW + later * earlier).decision, Decision.FRESH)
        if "no-cache" in directives:
            self.assertIs(decision, Decision.REVALIDATE)


class StrictExpiresTests(SynchronousTestCase):
    """
    An C{Expires} that is not exactly one valid HTTP-date means already expired (RFC 9111
    section 5.3), however close to a date it looks (issue 12 item 1).
    """

    def test_invalidFormsAreInThePast(self) -> None:
        future = formatHTTPDate(NOW + 3600)
        self.assertEqual(rules.freshnessLifetime(200, [(b"Expires", future)], NOW)[0], 3600)
        for value in (
            b"Tue, 14 Nov 2023 23:13:20 UTC",
            b"Tue, 14 Nov 2023 23:13:20 +1000",
            b"Tue, 14 Nov 23 23:13:20 GMT",
            b"Tue 14 Nov 2023 23:13:20 GMT",
            b"Tue,  14 Nov 2023 23:13:20 GMT",
            b"Tue, 14-Nov-2023 23:13:20 GMT",
            b"Tue, 14 Nov 2023 23.13.20 GMT",
            b"Tue, 14 Nov 2023 3:13:20 GMT",
        ):
            headers = [(b"Expires", value), (b"ETag", b'"v"')]
            self.assertEqual(rules.freshnessLifetime(200, headers, NOW), (0.0, False), value)
            decision = rules.storable(b"GET", URI, [], 200, headers, NOW)
            self.assertTrue(decision.ok, value)  # stored (it has a validator), but stale

    def test_expiresTwice(self) -> None:
        """
        C{Expires} given twice, even with the same valid date, is stale at once.
        """
        future = formatHTTPDate(NOW + 3600)
        headers = [(b"Expires", future), (b"Expires", future)]
        self.assertEqual(rules.freshnessLifetime(200, headers, NOW)[0], 0)

    def test_invalidDateIgnored(self) -> None:
        """
        A C{Date} that is not a valid HTTP-date is as if absent (the time of receipt).
        """
        headers = [(b"Date", b"yesterday"), (b"Expires", formatHTTPDate(NOW + 60))]
        self.assertEqual(rules.freshnessLifetime(200, headers, NOW)[0], 60)


class StorabilityEdgeTests(SynchronousTestCase):
    """
    Interim responses, partial content and C{must-understand} (issue 12 items 2, 4, 7).
    """

    def decide(self, code: int, *headers: tuple[bytes, bytes]) -> rules.Storability:
        return rules.storable(b"GET", URI, [], code, [(b"Cache-Control", b"max-age=60"), *headers])

    def test_interimNeverStored(self) -> None:
        for code in (100, 102, 103, 199):
            self.assertEqual(self.decide(code).reason, "interim")

    def test_onePartStored(self) -> None:
        """
        A 206 holding one part with a known complete length is stored; others are not.
        """
        self.assertTrue(self.decide(206, (b"Content-Range", b"bytes 0-99/1000")).ok)
        self.assertFalse(self.decide(206, (b"Content-Range", b"bytes 0-99/*")).ok)
        self.assertFalse(
            self.decide(206, (b"Content-Type", b"multipart/byteranges; boundary=x")).ok
        )
        self.assertEqual(self.decide(304).reason, "status not understood")

    def test_mustUnderstand(self) -> None:
        """
        C{must-understand} stores a response with an understood status despite
        C{no-store}, and never one with a status the cache does not implement.
        """
        understood = rules.storable(
            b"GET", URI, [], 200, [(b"Cache-Control", b"max-age=60, no-store, must-understand")]
        )
        self.assertTrue(understood.ok)
        for code in (299, 418, 500):
            decision = rules.storable(
                b"GET", URI, [], code, [(b"Cache-Control", b"max-age=60, must-understand")]
            )
            self.assertEqual(decision.reason, "status not understood", code)
        plain = rules.storable(b"GET", URI, [], 200, [(b"Cache-Control", b"max-age=60, no-store")])
        self.assertEqual(plain.reason, "no-store")


class ParsingEdgeTests(SynchronousTestCase):
    """
    C{Age}, repeated directives, C{Pragma} in a response (issue 12 item 7).
    """

    def test_ageWithParameterOrFraction(self) -> None:
        """
        An C{Age} that is not a non-negative integer is ignored; a list's first member counts;
        a huge one is 2^31.
        """
        for value, expected in (
            (b"10;foo=bar", 0.0),
            (b"1.5", 0.0),
            (b"-5", 0.0),
            (b"ten", 0.0),
            (b"10, 20", 10.0),
            (b" 7 ", 7.0),
            (b"99999999999999999999", float(2**31)),
            (b"9" * 5000, float(2**31)),
            (b"0" * 5000 + b"3", 3.0),
        ):
            self.assertEqual(rules.ageValue([(b"Age", value)]), expected, value)
        rule = entry([(b"Cache-Control", b"max-age=60"), (b"Age", b"30;x")])
        self.assertEqual(rule.freshness.correctedInitialAge, 0)

    def test_duplicateDirectivesMostRestrictive(self) -> None:
        lifetime = rules.freshnessLifetime
        self.assertEqual(lifetime(200, [(b"Cache-Control", b"max-age=60, max-age=10")], NOW)[0], 10)
        self.assertEqual(
            lifetime(
                200, [(b"Cache-Control", b"max-age=60"), (b"Cache-Control", b"max-age=5")], NOW
            )[0],
            5,
        )
        self.assertEqual(lifetime(200, [(b"Cache-Control", b"max-age=60, max-age=x")], NOW)[0], 0)
        self.assertFalse(
            rules.storable(
                b"GET", URI, [], 200, [(b"Cache-Control", b"public, private, max-age=9")]
            ).ok
        )
        rule = entry([(b"Cache-Control", b"max-age=60, no-cache"), (b"ETag", b'"v"')])
        self.assertIs(evaluate(rule, request(), NOW).decision, Decision.REVALIDATE)

    def test_responsePragmaIgnored(self) -> None:
        """
        C{Pragma: no-cache} in a response has no meaning (RFC 9111 section 5.4): on its own
        it does not stop heuristic freshness.
        """
        rule = entry(
            [
                (b"Pragma", b"no-cache"),
                (b"Date", formatHTTPDate(NOW)),
                (b"Last-Modified", formatHTTPDate(NOW - 1000)),
            ]
        )
        self.assertFalse(rule.noCache)
        self.assertIs(evaluate(rule, request(), NOW + 50).decision, Decision.FRESH)


class HeuristicStatusTests(SynchronousTestCase):
    """
    Heuristic freshness for exactly the heuristically cacheable statuses (issue 12 item 9).
    """

    def test_everyHeuristicStatus(self) -> None:
        headers = [(b"Date", formatHTTPDate(NOW)), (b"Last-Modified", formatHTTPDate(NOW - 1000))]
        for code in range(200, 600):
            lifetime, heuristic = rules.freshnessLifetime(code, headers, NOW)
            if code in (200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501):
                self.assertEqual((lifetime, heuristic), (100.0, True), code)
                self.assertTrue(
                    rules.storable(
                        b"GET",
                        URI,
                        [],
                        code,
                        [*headers, (b"Content-Range", b"bytes 0-1/10")] if code == 206 else headers,
                        NOW,
                    ).ok,
                    code,
                )
            else:
                self.assertEqual((lifetime, heuristic), (0.0, False), code)
                self.assertFalse(rules.storable(b"GET", URI, [], code, headers, NOW).ok, code)

    def test_fractionCapped(self) -> None:
        headers = [(b"Date", formatHTTPDate(NOW)), (b"Last-Modified", formatHTTPDate(NOW - 10**9))]
        self.assertEqual(rules.freshnessLifetime(404, headers, NOW), (rules.HEURISTIC_CAP, True))
        future = [(b"Date", formatHTTPDate(NOW)), (b"Last-Modified", formatHTTPDate(NOW + 10))]
        self.assertEqual(rules.freshnessLifetime(200, future, NOW), (0.0, False))


class VaryNormalisationTests(SynchronousTestCase):
    """
    C{Accept-Language} and C{Accept-Encoding} values that differ only in order, case or
    whitespace select the same variant (issue 12 item 8).
    """

    def key(self, name: bytes, *values: bytes) -> tuple[bytes | None, ...]:
        return rules.secondaryKey((name.lower(),), [(name, v) for v in values])

    def test_sameVariant(self) -> None:
        same = [
            (b"en-US,fr;q=0.5",),
            (b"fr;q=0.5, en-US",),
            (b"FR; q=0.5 ,EN-us",),
            (b"en-US", b"fr;q=0.5"),
            (b"en-US;q=1, fr;q=0.5",),
            (b"en-US;q=1.000,fr;q=0.5,en-US",),
        ]
        keys = {self.key(b"Accept-Language", *values) for values in same}
        self.assertEqual(len(keys), 1, keys)
        self.assertEqual(
            self.key(b"Accept-Encoding", b"gzip, br"), self.key(b"Accept-Encoding", b"BR,gzip")
        )

    def test_otherVariant(self) -> None:
        self.assertNotEqual(
            self.key(b"Accept-Language", b"en;q=0.5"), self.key(b"Accept-Language", b"en")
        )
        self.assertNotEqual(
            self.key(b"Accept-Encoding", b"gzip"), self.key(b"Accept-Encoding", b"br")
        )
        self.assertNotEqual(self.key(b"Accept-Language", b"en"), (None,))
        # other fields keep order and case
        self.assertNotEqual(self.key(b"X-Thing", b"a, b"), self.key(b"X-Thing", b"b, a"))


class ConditionalRequestTests(SynchronousTestCase):
    """
    A client's own preconditions against a stored response (issue 12 item 6).
    """

    def test_ifNoneMatch(self) -> None:
        rule = entry([(b"ETag", b'"v1"')])
        notModified = rules.Precondition.NOT_MODIFIED
        passed = rules.Precondition.PASSED
        check = rules.preconditions
        self.assertIs(check([(b"If-None-Match", b'"a", "v1"')], rule), notModified)
        self.assertIs(
            check([(b"If-None-Match", b'"a"'), (b"If-None-Match", b'W/"v1"')], rule), notModified
        )
        self.assertIs(check([(b"If-None-Match", b'W/"v1"')], rule), notModified)
        self.assertIs(check([(b"If-None-Match", b'"v2"')], rule), passed)
        self.assertIs(check([(b"If-None-Match", b"garbage")], rule), passed)

    def test_starWithoutETag(self) -> None:
        """
        C{If-None-Match: *} matches any stored response, with or without an C{ETag}.
        """
        rule = entry([(b"Cache-Control", b"max-age=60")])
        self.assertIs(
            rules.preconditions([(b"If-None-Match", b"*")], rule), rules.Precondition.NOT_MODIFIED
        )

    def test_ifModifiedSince(self) -> None:
        """
        C{If-Modified-Since} counts only without C{If-None-Match}; without C{Last-Modified}
        the stored C{Date} stands in; an invalid or repeated date is ignored.
        """
        check = rules.preconditions
        lastModified = formatHTTPDate(NOW - 100)
        rule = entry([(b"ETag", b'"v1"'), (b"Last-Modified", lastModified)])
        self.assertIs(
            check([(b"If-Modified-Since", lastModified)], rule), rules.Precondition.NOT_MODIFIED
        )
        self.assertIs(
            check([(b"If-None-Match", b'"v2"'), (b"If-Modified-Since", lastModified)], rule),
            rules.Precondition.PASSED,
        )
        self.assertIs(
            check([(b"If-Modified-Since", formatHTTPDate(NOW - 200))], rule),
            rules.Precondition.PASSED,
        )
        self.assertIs(
            check([(b"If-Modified-Since", b"Tue, 14 Nov 2023 22:11:40 UTC")], rule),
            rules.Precondition.PASSED,
        )
        self.assertIs(
            check(
                [(b"If-Modified-Since", lastModified), (b"If-Modified-Since", lastModified)], rule
            ),
            rules.Precondition.PASSED,
        )
        dated = entry([(b"Date", formatHTTPDate(NOW - 50)), (b"Cache-Control", b"max-age=60")])
        self.assertIs(
            check([(b"If-Modified-Since", formatHTTPDate(NOW - 10))], dated),
            rules.Precondition.NOT_MODIFIED,
        )
        self.assertIs(
            check([(b"If-Modified-Since", formatHTTPDate(NOW - 60))], dated),
            rules.Precondition.PASSED,
        )

    def test_ifMatchAndUnmodifiedSince(self) -> None:
        """
        C{If-Match} (strong comparison) and C{If-Unmodified-Since} fail with 412.
        """
        check = rules.preconditions
        rule = entry([(b"ETag", b'"v1"'), (b"Last-Modified", formatHTTPDate(NOW - 100))])
        self.assertIs(check([(b"If-Match", b'"v1"')], rule), rules.Precondition.PASSED)
        self.assertIs(check([(b"If-Match", b"*")], rule), rules.Precondition.PASSED)
        self.assertIs(check([(b"If-Match", b'"v2"')], rule), rules.Precondition.FAILED)
        self.assertIs(check([(b"If-Match", b'W/"v1"')], rule), rules.Precondition.FAILED)
        self.assertIs(
            check([(b"If-Unmodified-Since", formatHTTPDate(NOW - 200))], rule),
            rules.Precondition.FAILED,
        )
        self.assertIs(
            check([(b"If-Unmodified-Since", formatHTTPDate(NOW))], rule), rules.Precondition.PASSED
        )

    def test_notModifiedFields(self) -> None:
        """
        A 304 made from a stored response carries the fields a 304 must (RFC 9110 section
        15.4.5) and no body metadata.
        """
        stored = [
            (b"Date", b"d"),
            (b"ETag", b'"v"'),
            (b"Cache-Control", b"max-age=60"),
            (b"Expires", b"e"),
            (b"Vary", b"Accept"),
            (b"Content-Location", b"/x"),
            (b"Content-Type", b"text/html"),
            (b"Content-Length", b"5"),
        ]
        names = [n for n, _ in rules.notModifiedHeaders(stored)]
        self.assertEqual(
            names, [b"Date", b"ETag", b"Cache-Control", b"Expires", b"Vary", b"Content-Location"]
        )


class StaleWhenUnreachableTests(SynchronousTestCase):
    """
    Serving stale when the origin cannot be reached (RFC 9111 section 4.2.4, issue 12
    item 3).
    """

    def test_unreachable(self) -> None:
        rule = entry([(b"Cache-Control", b"max-age=10"), (b"ETag", b'"v"')])
        later = NOW + 100
        self.assertFalse(rules.mayServeStaleOnError(rule, request(), later))
        self.assertTrue(rules.mayServeStaleOnError(rule, request(), later, unreachable=True))
        self.assertFalse(
            rules.mayServeStaleOnError(
                rule, request(), NOW + rules.MAX_STALE_UNREACHABLE + 20, unreachable=True
            )
        )
        noCache = request((b"Cache-Control", b"no-cache"))
        self.assertFalse(rules.mayServeStaleOnError(rule, noCache, later, unreachable=True))

    def test_forbidden(self) -> None:
        """
        C{must-revalidate}, C{proxy-revalidate}, C{no-cache} and C{s-maxage} forbid it,
        even within C{stale-if-error}.
        """
        for directives in (
            b"max-age=10, must-revalidate",
            b"max-age=10, proxy-revalidate",
            b"max-age=10, no-cache",
            b"s-maxage=10",
        ):
            rule = entry(
                [(b"Cache-Control", directives + b", stale-if-error=600"), (b"ETag", b'"v"')]
            )
            for unreachable in (False, True):
                self.assertFalse(
                    rules.mayServeStaleOnError(rule, request(), NOW + 100, unreachable), directives
                )


class UpdateTests(SynchronousTestCase):
    """
    What a 304 or a HEAD response updates in a stored response (issue 12 item 5).
    """

    def test_bodyMetadataUpdated(self) -> None:
        """
        Every field the 304 carries replaces the stored one, C{Content-Type} and
        C{Content-Encoding} included; not C{Content-Length}, C{Content-Range} or C{Age}.
        """
        stored = [(b"Content-Type", b"text/plain"), (b"Content-Encoding", b"gzip"), (b"X-A", b"1")]
        update = rules.updatedHeaders(
            stored,
            [
                (b"Content-Type", b"text/plain; charset=utf-8"),
                (b"Content-Encoding", b"br"),
                (b"Content-Length", b"0"),
                (b"Content-Range", b"bytes 0-1/2"),
                (b"Age", b"5"),
            ],
        )
        self.assertEqual(
            update.headers,
            [
                (b"X-A", b"1"),
                (b"Content-Type", b"text/plain; charset=utf-8"),
                (b"Content-Encoding", b"br"),
            ],
        )

    def test_sameRepresentation(self) -> None:
        """
        A HEAD response describes the stored response when its validators and length match.
        """
        rule = entry([(b"ETag", b'"v1"'), (b"Last-Modified", b"lm")])
        same = rules.sameRepresentation
        self.assertTrue(same(rule, [(b"ETag", b'"v1"'), (b"Content-Length", b"5")], 5))
        self.assertTrue(same(rule, [], 5))
        self.assertFalse(same(rule, [(b"ETag", b'"v2"')], 5))
        self.assertFalse(same(rule, [(b"Last-Modified", b"other")], 5))
        self.assertFalse(same(rule, [(b"ETag", b'"v1"'), (b"Content-Length", b"6")], 5))
