"""
The cache hit's short way: a fresh stored response asked for by a plain C{GET} (no range,
no preconditions, no cache directives of the client's) is answered straight from the
request the client sent, without the upstream request and the Deferred the general way
makes for it.  It is wired for the memory store only: the disk store's bodies are opened
from files, and the Redis store must first bring a URI's entries into its near cache.

Everything else (a stale entry, the client's own directives or preconditions, a response
that varies on a field the proxy rewrites on its way upstream) takes the general way,
L{caplab.proxy.cache.fetcher.CachingFetcher.fetch}, which answers the short way's requests
the same: the response is made by the same L{fromStore}, and a test holds both ways to the
same bytes.
"""

from __future__ import annotations

from caplab.proxy.cache.fetcher import CachingFetcher
from caplab.proxy.cache.replies import fromStore, scan
from caplab.proxy.cache.rules import NO_REQUEST_RULES, Decision, evaluate
from caplab.proxy.headers import CHANGED_UPSTREAM
from caplab.proxy.hooks import Headers, UpstreamResponse


class QuickHits:
    """
    Answers the simplest hits of C{cache} (see the module's docstring) on the spot.
    """

    def __init__(self, cache: CachingFetcher) -> None:
        self.cache = cache

    def answer(
        self, uri: str, headers: Headers, connection: list[bytes]
    ) -> UpstreamResponse | None:
        """
        The stored response for a C{GET} of C{uri} with the client's C{headers} (and its
        C{Connection} options), if the short way can give it; None sends the request the
        general way.
        """
        if scan(headers):
            return None  # a range, preconditions or directives: the general way
        cache = self.cache
        store = cache.store
        entry, _ = store.select(uri, headers)
        if entry is None:
            return None
        head = entry.head
        varyNames = head.varyNames
        if varyNames and not (
            CHANGED_UPSTREAM.isdisjoint(varyNames) and set(connection).isdisjoint(varyNames)
        ):
            return None  # selected by a field that goes upstream changed
        entryRules = entry.rules
        assert entryRules is not None
        now = cache.clock.seconds()
        evaluation = evaluate(entryRules, NO_REQUEST_RULES, now)
        if evaluation.decision is not Decision.FRESH:
            return None
        status = cache.hitStatus(evaluation)
        return cache.served(fromStore(store, entry, b"GET", headers, now, status, 0))
