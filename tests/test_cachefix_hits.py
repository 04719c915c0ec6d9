"""
Tests for the one place a hit's C{Cache-Status} is made and counted
(L{CachingFetcher.hitStatus}, L{CachingFetcher.served}): the general way, a stored part and
the short way (L{caplab.proxy.cache.quick}) all go through it.
"""

from __future__ import annotations

from caplab.proxy.cache.fetcher import CachingFetcher
from caplab.proxy.cache.quick import QuickHits
from caplab.proxy.cache.rules import Decision, Evaluation
from caplab.proxy.hooks import Target
from tests.test_cache_fetcher import TARGET, FetcherTestCase, get
from tests.test_cache_quick import Counting


class NamedStatuses(CachingFetcher):
    """
    A cache whose hits say which evaluation they came from, so a test sees who asked.
    """

    def hitStatus(self, evaluation: Evaluation) -> str:
        return f"mine; {evaluation.decision.value}; {int(evaluation.ttl)}"


class HitStatusTests(FetcherTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.metrics = Counting()
        self.cache = NamedStatuses(
            self.origin, self.store, self.clock, collapseTimeout=5, metrics=self.metrics
        )

    def test_everyWayAsks(self) -> None:
        """
        A hit by the short way, by the general way and from a stored part all take their
        C{Cache-Status} from L{CachingFetcher.hitStatus} and are counted by
        L{CachingFetcher.served}.
        """
        stored = self.fetch(get())
        self.origin.respond(200, [(b"Cache-Control", b"max-age=60")], b"hello")
        self.assertEqual(stored.read(), b"hello")
        self.assertEqual(self.metrics.hits, 0)

        quick = QuickHits(self.cache).answer(TARGET.uri, [(b"Host", b"example.com")], [])
        assert quick is not None
        self.assertEqual(quick.cacheStatus, "mine; fresh; 60")
        self.assertEqual(self.metrics.hits, 1)

        general = self.fetch(get())
        self.assertEqual(general.status, "mine; fresh; 60")
        self.assertEqual(general.read(), b"hello")
        self.assertEqual(self.metrics.hits, 2)

        other = Target("http", "example.com", 80, b"/part")
        part = self.fetch(get((b"Range", b"bytes=0-4"), target=other))
        self.origin.respond(
            206,
            [
                (b"Cache-Control", b"max-age=30"),
                (b"ETag", b'"v1"'),
                (b"Content-Range", b"bytes 0-4/10"),
            ],
            b"01234",
        )
        self.assertEqual(part.read(), b"01234")
        inside = self.fetch(get((b"Range", b"bytes=1-3"), target=other))
        self.assertEqual((inside.code, inside.read()), (206, b"123"))
        self.assertEqual(inside.status, "mine; fresh; 30; detail=range")
        self.assertEqual(self.metrics.hits, 3)

    def test_defaultStatus(self) -> None:
        """
        The status itself: the cache's name, C{hit}, the whole seconds it stays fresh, and
        the stale-while-revalidate detail.
        """
        cache = CachingFetcher(self.origin, self.store, self.clock, name="edge")
        self.assertEqual(
            cache.hitStatus(Evaluation(Decision.FRESH, 0.0, 59.7)), "edge; hit; ttl=59"
        )
        self.assertEqual(
            cache.hitStatus(Evaluation(Decision.STALE_REVALIDATE, 70.0, -10.0)),
            "edge; hit; ttl=-10; detail=stale-while-revalidate",
        )
