"""
Tests for L{caplab.proxy.cache.directives}: C{Cache-Control} parsed strictly and merged to
the most restrictive (RFC 9111 section 5.2).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.cache.directives import MAX_DELTA, CacheControl, parseCacheControl, splitList


def cc(*lines: bytes) -> CacheControl:
    return parseCacheControl(list(lines))


class ParseTests(SynchronousTestCase):
    def test_flagsAndValues(self) -> None:
        """
        Flags, numbers, quoted values; names are case-insensitive; unknown ones ignored.
        """
        parsed = cc(b'Public, MAX-AGE=60, s-maxage="120", x-ext="a,b", must-understand')
        self.assertTrue(parsed.public)
        self.assertEqual((parsed.maxAge, parsed.sMaxAge), (60, 120))
        self.assertTrue(parsed.mustUnderstand)
        self.assertFalse(parsed.maxAgeInvalid)

    def test_qualifiedFieldNames(self) -> None:
        """
        C{no-cache="..."} and C{private="..."} name fields, commas inside the quotes; they
        are not the unqualified directives.
        """
        parsed = cc(b'no-cache="Set-Cookie, X-A", private="x-b", max-age=5')
        self.assertFalse(parsed.noCache)
        self.assertFalse(parsed.private)
        self.assertEqual(parsed.noCacheFields, {b"set-cookie", b"x-a"})
        self.assertEqual(parsed.privateFields, {b"x-b"})
        self.assertEqual(parsed.maxAge, 5)

    def test_malformedQualifiedIsUnqualified(self) -> None:
        """
        A C{private=} or C{no-cache=} whose argument is neither a token nor a quoted-string
        (an unterminated quote, a space, nothing) is the unqualified directive: the most
        restrictive reading, not no directive at all.
        """
        for value in (b'private="set-cookie', b"private=a b", b"private=", b'private="a"b"'):
            parsed = cc(value + b", max-age=60")
            self.assertTrue(parsed.private, value)
            self.assertFalse(parsed.public, value)
        for value in (b'no-cache="set-cookie', b"no-cache=a b", b"no-cache="):
            self.assertTrue(cc(value).noCache, value)
        self.assertTrue(cc(b'no-cache="x-a", no-cache="oops').noCache)

    def test_invalidDelta(self) -> None:
        """
        A C{max-age} or C{s-maxage} that is not delta-seconds is invalid (the response is
        stale); other directives with bad values are ignored.
        """
        for value in (b"max-age=soon", b"max-age=-1", b"max-age=1.5", b"max-age=", b"max-age"):
            parsed = cc(value)
            self.assertTrue(parsed.maxAgeInvalid, value)
            self.assertIsNone(parsed.maxAge, value)
        self.assertTrue(cc(b"s-maxage=x").sMaxAgeInvalid)
        self.assertIsNone(cc(b"stale-if-error=x").staleIfError)

    def test_overflow(self) -> None:
        """
        A delta-seconds beyond 2^31 is read as 2^31.
        """
        self.assertEqual(cc(b"max-age=99999999999999999999").maxAge, MAX_DELTA)

    def test_thousandsOfDigits(self) -> None:
        """
        A delta-seconds of more digits than Python's C{int()} reads (4,300) is 2^31 too,
        in a response and in a request; leading zeros do not make a number large.
        """
        huge = b"9" * 5000
        self.assertEqual(cc(b"max-age=" + huge).maxAge, MAX_DELTA)
        self.assertEqual(
            cc(b"s-maxage=" + huge + b", stale-if-error=" + huge).staleIfError, MAX_DELTA
        )
        self.assertEqual(cc(b"max-stale=" + huge).maxStale, MAX_DELTA)
        self.assertEqual(cc(b"max-age=" + b"0" * 5000 + b"7").maxAge, 7)

    def test_maxStale(self) -> None:
        """
        C{max-stale} without a value accepts any staleness.
        """
        self.assertEqual(cc(b"max-stale").maxStale, MAX_DELTA)
        self.assertEqual(cc(b"max-stale=10").maxStale, 10)


class MostRestrictiveTests(SynchronousTestCase):
    """
    Repeated or conflicting directives: the most restrictive reading wins.
    """

    def test_duplicates(self) -> None:
        self.assertEqual(cc(b"max-age=60, max-age=10").maxAge, 10)
        self.assertEqual(cc(b"max-age=10", b"max-age=60").maxAge, 10)
        self.assertEqual(cc(b"s-maxage=60, s-maxage=30").sMaxAge, 30)
        self.assertEqual(cc(b"stale-if-error=60, stale-if-error=5").staleIfError, 5)
        self.assertEqual(
            cc(b"stale-while-revalidate=9, stale-while-revalidate=90").staleWhileRevalidate, 9
        )
        self.assertEqual(cc(b"min-fresh=5, min-fresh=50").minFresh, 50)
        self.assertEqual(cc(b"max-stale, max-stale=7").maxStale, 7)

    def test_invalidAmongValid(self) -> None:
        """
        An invalid C{max-age} next to a valid one makes the response stale.
        """
        parsed = cc(b"max-age=60, max-age=abc")
        self.assertTrue(parsed.maxAgeInvalid)
        self.assertIsNone(parsed.maxAge)

    def test_conflicts(self) -> None:
        """
        C{private} beats C{public}; an unqualified C{no-cache} or C{private} beats the
        qualified one (whose names are still kept); C{no-store} stays.
        """
        self.assertFalse(cc(b"public, private").public)
        self.assertTrue(cc(b"public, private").private)
        self.assertTrue(cc(b'private="x", public').public)
        both = cc(b'no-cache="x", no-cache')
        self.assertTrue(both.noCache)
        self.assertEqual(both.noCacheFields, {b"x"})
        self.assertTrue(cc(b"max-age=60, no-store").noStore)


class SplitTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.from_regex(rb"\A[a-z0-9-]{1,8}\Z"),
                st.from_regex(rb'\A[a-z]{1,5}="[a-z, ]{0,8}"\Z'),
            ),
            min_size=1,
            max_size=6,
        ),
        st.sampled_from([b",", b", ", b" , ", b",,"]),
    )
    def test_members(self, members: list[bytes], separator: bytes) -> None:
        """
        Members come back as they were, whatever the separators, commas inside quotes kept.
        """
        self.assertEqual(splitList(separator.join(members)), members)


class MemoTests(SynchronousTestCase):
    def test_longValuesNotRemembered(self) -> None:
        """
        Only short C{Cache-Control} values are remembered: distinct long ones (a client's,
        a hostile origin's) are parsed each time and kept by no cache.
        """
        from caplab.proxy.cache import directives

        directives._remembered.cache_clear()
        for i in range(50):
            parsed = cc(b"max-age=%d, x-pad=" % i + b"a" * 60000)
            self.assertEqual(parsed.maxAge, i)
        self.assertEqual(directives._remembered.cache_info().currsize, 0)
        cc(b"max-age=60")
        cc(b"max-age=60")
        info = directives._remembered.cache_info()
        self.assertEqual((info.currsize, info.hits), (1, 1))
