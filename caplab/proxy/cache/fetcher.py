"""
The cache as an L{IFetcher}: L{CachingFetcher} wraps the fetcher that asks the origin.

For a GET or HEAD it picks the stored response of the target URI whose secondary key
(C{Vary}) matches, and asks L{caplab.proxy.cache.rules.evaluate}:

  - fresh: a hit, streamed from the store (L{caplab.proxy.cache.replies}: the client's own
    preconditions answered 304 or 412, a byte range 206 or 416, HEAD the head alone);
  - stale within C{stale-while-revalidate}: a hit, and a conditional request in the
    background refreshes the entry;
  - otherwise a conditional request (C{If-None-Match}/C{If-Modified-Since}); a 304 refreshes
    the stored head and the client is answered from the cache, anything else is handled as
    a miss; when the origin cannot be reached at all (an L{UpstreamError}), or answers 5xx
    within C{stale-if-error}, the stale response is served instead unless it forbids that
    (RFC 9111 section 4.2.4);
  - a stale response and a HEAD request: the HEAD goes to the origin, and its answer updates
    the stored response (same validators) or removes it (others: RFC 9111 section 4.3.5);
  - no stored response: a miss.  Concurrent misses for one URI are collapsed: the first goes
    to the origin, the others wait (at most C{collapseTimeout} seconds) until its response is
    stored and are then served from it; if it is not storable (C{private}, C{no-store} ...)
    or does not come, each goes to the origin itself.

Range requests are answered from a complete stored response, or from a stored part (a 206
to an earlier single-range request) that holds the range; otherwise they go to the origin,
and a 206 that comes back is stored as a part.  Parts that together hold the whole
representation (same strong validator) are combined into a complete stored response.

A storable response is streamed to the client and written to the store at the same time
(L{TeeSink}); only a body that ended properly, with the announced length, is committed.

Other methods pass through; a successful unsafe one invalidates the URIs RFC 9111 section
4.4 names.  Every response carries an RFC 9211 C{Cache-Status} value in
L{UpstreamResponse.cacheStatus}.  L{CachingFetcher.purge} and L{CachingFetcher.flush} are
the operators' L{caplab.proxy.hooks.ICacheAdmin}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from caplab.proxy.cache import partial, ranges, rules
from caplab.proxy.cache.collapsing import Flight, Waiter
from caplab.proxy.cache.entries import EntryHead, StoredEntry
from caplab.proxy.cache.fields import strongMatch
from caplab.proxy.cache.replies import CONDITIONS, DIRECTIVES, RANGE, fromPart, fromStore, scan
from caplab.proxy.cache.rules import (
    NO_REQUEST_RULES,
    Decision,
    EntryRules,
    Evaluation,
    RequestRules,
)
from caplab.proxy.cache.sinks import Discard, TeeSink
from caplab.proxy.cache.storage import IBody, IBodySource, IStore
from caplab.proxy.hooks import (
    Headers,
    IBodySink,
    IFetcher,
    IRequestBody,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)
from caplab.proxy.http1 import contentLength
from caplab.ratelimit import LogThrottle


class CachingFetcher:
    """
    An RFC 9111 shared cache in front of C{inner}.

    @param inner: the fetcher that asks the origin (the forwarder).
    @param store: where responses are kept.
    @param clock: the time source (freshness, ages, collapsing timeouts).
    @param collapseTimeout: the longest a request waits on another one's origin request.
    @param name: the cache's name in C{Cache-Status}.
    @param metrics: counts hits and misses and the stored bytes (C{cacheHit()},
        C{cacheMiss()}, C{cacheStoredBytes(n)}, as L{caplab.metrics.Metrics} has them).
    """

    log = Logger()

    def __init__(
        self,
        inner: IFetcher,
        store: IStore,
        clock: IReactorTime,
        collapseTimeout: float = 10.0,
        name: str = "caplab",
        metrics: Any = None,
    ) -> None:
        self.inner = inner
        self.store = store
        self.clock = clock
        self.collapseTimeout = collapseTimeout
        self.name = name
        self.metrics = metrics
        self._flights: dict[str, Flight] = {}
        self._revalidating: set[str] = set()
        # an unreachable origin fails every request that comes: one line a minute, counted
        self._staleServed = LogThrottle(
            self.log,
            clock,
            "cache: {uri} served stale: the origin is unreachable ({error})",
            summary="cache: stale responses served: the burst is over, {burst} in all",
            interval=60.0,
            level=LogLevel.info,
            repeat="cache: {uri} served stale: the origin is unreachable ({error}) "
            "({count} times in the last {interval} s, {burst} in this burst)",
        )
        self._backgroundFailed = LogThrottle(
            self.log,
            clock,
            "cache: background revalidation of {uri} failed: {why}",
            summary="cache: failed background revalidations: the burst is over, {burst} in all",
            interval=60.0,
            level=LogLevel.info,
            repeat="cache: background revalidation of {uri} failed: {why} "
            "({count} times in the last {interval} s, {burst} in this burst)",
        )

    # The operators' seam (ICacheAdmin)

    def purge(self, uri: str) -> Deferred[int]:
        """
        Remove every stored response (every variant and part) of C{uri}, wherever the store
        keeps them; fires with how many were removed.  C{uri} is read as the cache keys are
        written (scheme and host in lower case, no default port), so
        C{http://Example.com:80/a} purges C{http://example.com/a}.
        """
        key = rules.normalizeURI(uri)
        if key is None:
            return succeed(0)
        return self.store.purge(key)

    def flush(self) -> Deferred[int]:
        """
        Remove every stored response; fires with how many were removed.
        """
        return self.store.flush()

    # Hits: one status and one count, for the general way and the short way (quick.py)

    def hitStatus(self, evaluation: Evaluation) -> str:
        """
        The C{Cache-Status} of a hit (what the access log shows): the one place it is
        made, so that every way a hit is served says the same.
        """
        detail = ""
        if evaluation.decision is Decision.STALE_REVALIDATE:
            detail = "; detail=stale-while-revalidate"
        return f"{self.name}; hit; ttl={int(evaluation.ttl)}{detail}"

    def served(self, response: UpstreamResponse | None) -> UpstreamResponse | None:
        """
        Count a hit in the metrics if C{response} (made by L{hitStatus}'s caller from the
        store) is one; None when the stored body was gone.
        """
        if response is not None and self.metrics is not None:
            self.metrics.cacheHit()
        return response

    # The request path

    def fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        """
        The response to C{request}: from the store, the origin, or both.  Never raises: a
        bug fails the Deferred (the exchange answers it), the request is not lost.
        """
        try:
            return self._fetch(request, body)
        except Exception:
            return fail()

    def _fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        method = request.method
        if method != b"GET" and method != b"HEAD":
            return self._passUnsafe(request, body)
        if (body is not None and body.length != 0) or request.bodyLength != 0:
            return self._passThrough(request, body, "bypass")
        flags = scan(request.headers)
        if flags & RANGE:
            if method != b"GET":
                flags &= ~RANGE
            elif not _oneRange(request.headers):
                # several ranges, another unit: the origin decides (and it is not stored)
                return self._passThrough(request, None, "bypass; detail=range")
        return self._lookup(request, flags, collapsed=False)

    def _lookup(
        self, request: UpstreamRequest, flags: int, collapsed: bool
    ) -> Deferred[UpstreamResponse]:
        uri = request.target.uri
        requestRules = (
            RequestRules.fromHeaders(request.headers) if flags & DIRECTIVES else NO_REQUEST_RULES
        )
        entry, stored = self.store.select(uri, request.headers)
        now = self.clock.seconds()
        if entry is None:
            if flags & RANGE:
                part = self._fromParts(request, requestRules, now, flags)
                if part is not None:
                    return succeed(part)
            if requestRules.onlyIfCached:
                return self._notCached()
            why = "vary-miss" if stored else "miss"
            if collapsed:
                return self._forward(request, f"{why}; collapsed")
            if self.metrics is not None:
                self.metrics.cacheMiss()
            if flags & RANGE or request.method == b"HEAD":
                return self._forward(request, why)
            return self._miss(request, uri, why)
        entryRules = entry.rules
        assert entryRules is not None
        evaluation = rules.evaluate(entryRules, requestRules, now)
        if evaluation.decision is not Decision.REVALIDATE:
            status = self.hitStatus(evaluation)
            response = self.served(
                fromStore(self.store, entry, request.method, request.headers, now, status, flags)
            )
            if response is not None:
                if evaluation.decision is Decision.STALE_REVALIDATE:
                    self._revalidateInBackground(entry, entryRules, request)
                return succeed(response)
            if collapsed:
                return self._forward(request, "miss; collapsed")
            return self._miss(request, uri, "miss")
        if requestRules.onlyIfCached:
            return self._notCached()
        if self.metrics is not None:
            self.metrics.cacheMiss()
        why = "request" if evaluation.ttl > 0 and not entryRules.noCache else "stale"
        if request.method == b"HEAD":
            return self._forwardHead(request, entry, why)
        if not entryRules.hasValidator:
            return self._forward(request, why, fallback=(entry, requestRules))
        if collapsed or flags & RANGE:
            return self._revalidate(entry, request, requestRules, why, flags, None)
        return self._collapse(
            uri,
            request,
            lambda done: self._revalidate(entry, request, requestRules, why, flags, done),
        )

    def _afterWait(self, request: UpstreamRequest) -> Deferred[UpstreamResponse]:
        """
        A collapsed request whose wait ended: served from what is stored now, or forwarded.
        """
        return self._lookup(request, scan(request.headers), collapsed=True)

    def _fromParts(
        self, request: UpstreamRequest, requestRules: RequestRules, now: float, flags: int
    ) -> UpstreamResponse | None:
        """
        A 206 from a fresh stored part that holds the requested range, or None.
        """
        if flags & CONDITIONS:
            return None
        for part in self.store.parts(request.target.uri):
            head = part.head
            if head.varyNames and rules.secondaryKey(head.varyNames, request.headers) != (
                head.variant
            ):
                continue
            assert part.rules is not None
            evaluation = rules.evaluate(part.rules, requestRules, now)
            if evaluation.decision is not Decision.FRESH:
                continue
            response = self.served(
                fromPart(self.store, part, request, now, self.hitStatus(evaluation))
            )
            if response is not None:
                return response
        return None

    def _notCached(self) -> Deferred[UpstreamResponse]:
        """
        C{only-if-cached} and nothing usable stored: 504 (RFC 9111 section 5.2.1.7).
        """
        return fail(UpstreamError(504, "Not cached", "only-if-cached: nothing usable is stored"))

    # Misses

    def _miss(self, request: UpstreamRequest, uri: str, why: str) -> Deferred[UpstreamResponse]:
        """
        Forward a miss, or wait on the origin request already in flight for the URI.
        """
        return self._collapse(uri, request, lambda done: self._forward(request, why, done))

    def _collapse(
        self, uri: str, request: UpstreamRequest, start: Any
    ) -> Deferred[UpstreamResponse]:
        """
        Wait on the origin request in flight for C{uri}, or start one: C{start(done)} makes
        it and calls C{done()} once its response is stored or known not to be.
        """
        flight = self._flights.get(uri)
        if flight is not None:
            waiter = Waiter(self.clock, self._afterWait, request, flight, self.collapseTimeout)
            flight.waiters.append(waiter)
            return waiter.result
        flight = self._flights[uri] = Flight()

        def done() -> None:
            if self._flights.get(uri) is flight:
                del self._flights[uri]
            flight.finish()

        def failed(reason: Failure) -> Failure:
            done()  # whatever failed (the origin, or a bug), the flight is over
            return reason

        try:
            result: Deferred[UpstreamResponse] = start(done)
        except BaseException:
            done()
            raise
        return result.addErrback(failed)

    def _forward(
        self,
        request: UpstreamRequest,
        why: str,
        onDone: Any = None,
        fallback: tuple[StoredEntry, RequestRules] | None = None,
    ) -> Deferred[UpstreamResponse]:
        """
        Ask the origin; store the response if it may be, streaming it to the client.

        @param onDone: called once it is known whether the response was stored.
        @param fallback: a stale stored response (and the request's directives) to serve if
            the origin cannot be reached or fails within C{stale-if-error}.
        """
        requestTime = self.clock.seconds()
        d = self.inner.fetch(request, None)

        def got(response: UpstreamResponse) -> UpstreamResponse:
            if fallback is not None and response.code >= 500:
                stale = self._staleOnError(*fallback, request, response.code)
                if stale is not None:
                    if onDone is not None:
                        onDone()
                    response.deliverBody(Discard())
                    return stale
            return self._store(request, response, requestTime, f"{self.name}; fwd={why}", onDone)

        def failed(reason: Failure) -> UpstreamResponse | Failure:
            if onDone is not None:
                onDone()
            if fallback is not None:
                stale = self._staleWhenUnreachable(*fallback, request, reason)
                if stale is not None:
                    return stale
            return reason

        return d.addCallbacks(got, failed)

    def _store(
        self,
        request: UpstreamRequest,
        response: UpstreamResponse,
        requestTime: float,
        status: str,
        onDone: Any = None,
    ) -> UpstreamResponse:
        """
        Arrange for C{response} to be stored while its body streams, if it may be.
        """
        responseTime = self.clock.seconds()
        uri = request.target.uri
        try:
            decision = rules.storable(
                request.method, uri, request.headers, response.code, response.headers, responseTime
            )
        except Exception:
            self.log.failure("cache: deciding whether to store {uri}", uri=uri)
            decision = rules.Storability(False, "error", [])
        writer = None
        expected: int | None = None
        isPart = False
        if decision.ok:
            lengths = rules.headerValues(response.headers, b"content-length")
            expected = contentLength(lengths) if lengths else None
            if lengths and expected is None:
                expected = -1  # a malformed length: never stored
            part = ranges.contentRange(response.headers) if response.code == 206 else None
            isPart = part is not None
            if part is not None and expected != part[1] - part[0]:
                expected = -1  # a part whose length does not match its range: never stored
            if expected is None or 0 <= expected <= self.store.maxObjectSize:
                names = decision.varyNames
                head = EntryHead(
                    uri=uri,
                    varyNames=names,
                    variant=rules.secondaryKey(names, request.headers),
                    code=response.code,
                    phrase=response.phrase,
                    headers=rules.storedFields(decision.headers, responseTime),
                    requestTime=requestTime,
                    responseTime=responseTime,
                    age=rules.ageValue(decision.headers),
                    partial=part,
                )
                writer = self.store.writer(head)
        if writer is None:
            if onDone is not None:
                onDone()
            response.cacheStatus = status
            return response
        response.cacheStatus = f"{status}; stored"
        deliverBody = response.deliverBody

        def finished(entry: StoredEntry | None) -> None:
            if onDone is not None:
                onDone()
            if entry is None:
                return
            if self.metrics is not None:
                self.metrics.cacheStoredBytes(getattr(self.store, "size", 0))
            if isPart:
                self._combine(entry)

        def tee(sink: IBodySink) -> None:
            deliverBody(TeeSink(sink, writer, expected, finished))

        response.deliverBody = tee
        return response

    def _combine(self, newest: StoredEntry) -> None:
        """
        If the stored parts of C{newest}'s representation now hold all of it, write them
        into one complete stored response.
        """
        parts = partial.combinable(self.store.parts(newest.head.uri), newest)
        covering = partial.cover(parts)
        assert newest.head.partial is not None
        if covering is None or newest.head.partial[2] > self.store.maxObjectSize:
            return
        combiner = partial.Combiner(self.store, covering, partial.completeHead(newest.head))
        combiner.run().addErrback(
            lambda reason: self.log.failure(
                "cache: combining the parts of {uri}", reason, uri=newest.head.uri
            )
        )

    def _passThrough(
        self, request: UpstreamRequest, body: IRequestBody | None, why: str
    ) -> Deferred[UpstreamResponse]:
        def got(response: UpstreamResponse) -> UpstreamResponse:
            response.cacheStatus = f"{self.name}; fwd={why}"
            return response

        return self.inner.fetch(request, body).addCallback(got)

    def _passUnsafe(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        """
        Forward a method the cache does not answer; a successful unsafe one invalidates its
        target and same-origin C{Location}/C{Content-Location} (RFC 9111 section 4.4).
        """

        def got(response: UpstreamResponse) -> UpstreamResponse:
            for uri in rules.invalidatedURIs(
                request.method, request.target.uri, response.code, response.headers
            ):
                self.store.invalidate(uri)
            response.cacheStatus = f"{self.name}; fwd=method"
            return response

        return self.inner.fetch(request, body).addCallback(got)

    # Validation

    def _conditional(self, request: UpstreamRequest, entryRules: EntryRules) -> UpstreamRequest:
        return replace(
            request,
            method=b"GET",
            headers=rules.conditionalHeaders(request.headers, entryRules),
            bodyLength=0,
        )

    def _revalidate(
        self,
        entry: StoredEntry,
        request: UpstreamRequest,
        requestRules: RequestRules,
        why: str,
        flags: int,
        onDone: Any,
    ) -> Deferred[UpstreamResponse]:
        """
        Ask the origin whether the stored response is still good; answer from the cache on
        304 (the client's range and preconditions applied), stale when the origin cannot be
        reached or fails within C{stale-if-error}, else relay (and store) what came.

        @param onDone: called once the entry is refreshed, replaced, or neither will be.
        """
        entryRules = entry.rules
        assert entryRules is not None
        requestTime = self.clock.seconds()
        d = self.inner.fetch(self._conditional(request, entryRules), None)

        def finished() -> None:
            if onDone is not None:
                onDone()

        def got(response: UpstreamResponse) -> UpstreamResponse | Deferred[UpstreamResponse]:
            status = f"{self.name}; fwd={why}; fwd-status={response.code}"
            if response.code == 304:
                response.deliverBody(Discard())

                def answer(store: IBodySource, refreshed: StoredEntry) -> UpstreamResponse | None:
                    now = self.clock.seconds()
                    method, headers = request.method, request.headers
                    return fromStore(store, refreshed, method, headers, now, status, flags)

                outcome = self._refresh(entry, response, requestTime, answer)
                fromStored, perClient = (None, []) if outcome is None else outcome
                if fromStored is not None:
                    finished()
                    # the 304's per-client fields (Set-Cookie ...) are this client's
                    fromStored.headers.extend(perClient)
                    return fromStored
                return self._forward(request, why, onDone)
            if response.code >= 500:
                stale = self._staleOnError(entry, requestRules, request, response.code)
                if stale is not None:
                    finished()
                    response.deliverBody(Discard())
                    return stale
            if response.code == 206 and self._partOfStored(entry, response, requestTime):
                finished()
                response.cacheStatus = status
                return response
            return self._store(request, response, requestTime, status, onDone)

        def failed(reason: Failure) -> UpstreamResponse | Failure:
            finished()
            stale = self._staleWhenUnreachable(entry, requestRules, request, reason)
            return reason if stale is None else stale

        return d.addCallbacks(got, failed)

    def _partOfStored(
        self, entry: StoredEntry, response: UpstreamResponse, requestTime: float
    ) -> bool:
        """
        A 206 came for a stored complete response: with the same strong validator it is a
        part of it, and updates its fields and freshness (RFC 9111 section 3.4: True); with
        another the stored response is outdated and removed (False: store the part).
        """
        entryRules = entry.rules
        assert entryRules is not None
        if strongMatch(rules.firstHeader(response.headers, b"etag"), entryRules.etag):
            return self._refresh(entry, response, requestTime) is not None
        self.store.remove(entry)
        return False

    def _refresh(
        self,
        entry: StoredEntry,
        newer: UpstreamResponse,
        requestTime: float,
        answer: Callable[[IBodySource, StoredEntry], UpstreamResponse | None] | None = None,
    ) -> tuple[UpstreamResponse | None, Headers] | None:
        """
        Update a stored response with a newer response about it: the one place every update
        goes through (a 304, a 206 or a HEAD response).  None if it is not about C{entry}
        (a 304 for another one, or C{entry} is gone); else C{answer}'s response made from
        the updated entry (None without C{answer}), and the newer response's per-client
        fields, for the one client it answers.

        An update that makes the response one a shared cache must not keep (it brings
        C{private}, C{no-store}, other C{Vary} names: L{rules.updatedHeaders}) removes the
        stored response: the updated response answers this client only (C{answer} reads
        the body before it goes), and no one after it.
        """
        entryRules = entry.rules
        assert entryRules is not None
        if not entry.live or (
            newer.code == 304 and not rules.validatorsMatch(entryRules, newer.headers)
        ):
            return None
        now = self.clock.seconds()
        stored = entry.head
        update = rules.updatedHeaders(
            stored.headers, rules.withDate(newer.headers, now), stored.code, stored.varyNames
        )
        head = replace(
            stored,
            headers=update.headers,
            requestTime=requestTime,
            responseTime=now,
            age=rules.ageValue(newer.headers),
        )
        if not update.unstorable:
            refreshed = self.store.refresh(entry, head)
            return (None if answer is None else answer(self.store, refreshed)), update.perClient
        response = None
        if answer is not None:
            view = StoredEntry(head, entry.bodyLength, body=entry.body)
            view.refreshed()
            response = answer(_Leaving(self.store, entry), view)
        self.store.remove(entry)
        return response, update.perClient

    def _forwardHead(
        self, request: UpstreamRequest, entry: StoredEntry, why: str
    ) -> Deferred[UpstreamResponse]:
        """
        Relay a HEAD request the stored response cannot answer; its 200 updates the stored
        GET response when it describes the same representation, else removes it (RFC 9111
        section 4.3.5).
        """
        requestTime = self.clock.seconds()

        def got(response: UpstreamResponse) -> UpstreamResponse:
            if response.code == 200 and entry.live:
                assert entry.rules is not None
                if rules.sameRepresentation(entry.rules, response.headers, entry.bodyLength):
                    self._refresh(entry, response, requestTime)
                else:
                    self.store.remove(entry)
            response.cacheStatus = f"{self.name}; fwd={why}; fwd-status={response.code}"
            return response

        return self.inner.fetch(request, None).addCallback(got)

    def _staleOnError(
        self,
        entry: StoredEntry,
        requestRules: RequestRules,
        request: UpstreamRequest,
        code: int,
    ) -> UpstreamResponse | None:
        """
        The stale response for an origin's 5xx, within C{stale-if-error}, or None.
        """
        now = self.clock.seconds()
        assert entry.rules is not None
        if not rules.mayServeStaleOnError(entry.rules, requestRules, now):
            return None
        status = f"{self.name}; fwd=stale; fwd-status={code}; detail=stale-if-error"
        return fromStore(
            self.store, entry, request.method, request.headers, now, status, scan(request.headers)
        )

    def _staleWhenUnreachable(
        self,
        entry: StoredEntry,
        requestRules: RequestRules,
        request: UpstreamRequest,
        reason: Failure,
    ) -> UpstreamResponse | None:
        """
        The stale response when the origin could not be reached or gave nothing usable (an
        L{UpstreamError}; not when the client went away), or None.
        """
        if not isinstance(reason.value, UpstreamError) or reason.check(CancelledError):
            return None
        now = self.clock.seconds()
        assert entry.rules is not None
        if not rules.mayServeStaleOnError(entry.rules, requestRules, now, unreachable=True):
            return None
        ttl = int(entry.rules.freshness.lifetime - entry.rules.freshness.currentAge(now))
        status = f"{self.name}; fwd=stale; ttl={ttl}; detail=origin-unreachable"
        stale = fromStore(
            self.store, entry, request.method, request.headers, now, status, scan(request.headers)
        )
        if stale is not None:
            self._staleServed.event(
                uri=request.target.uri,
                error=reason.value,
            )
        return stale

    def _revalidateInBackground(
        self, entry: StoredEntry, entryRules: EntryRules, request: UpstreamRequest
    ) -> None:
        """
        Refresh a stale entry served under C{stale-while-revalidate}, one at a time per URI.
        The background request is the whole GET (no range), and has no client to tell about
        interim responses.
        """
        key = entry.head.key
        if key in self._revalidating:
            return
        self._revalidating.add(key)
        requestTime = self.clock.seconds()
        plain = replace(
            request,
            method=b"GET",
            headers=[(n, v) for n, v in request.headers if n.lower() not in _PARTIAL],
            interim=None,
        )

        def got(response: UpstreamResponse) -> None:
            if response.code == 304:
                self._refresh(entry, response, requestTime)
                response.deliverBody(Discard())
                return
            stored = self._store(plain, response, requestTime, "")
            stored.deliverBody(Discard())

        def failed(reason: Failure) -> None:
            self._backgroundFailed.event(
                uri=request.target.uri,
                why=reason.getErrorMessage(),
            )

        def done(_: object) -> None:
            self._revalidating.discard(key)

        d = self.inner.fetch(self._conditional(plain, entryRules), None)
        d.addCallbacks(got, failed).addBoth(done)


_PARTIAL = frozenset({b"range", b"if-range"})


class _Leaving:
    """
    The store as one last answer from an entry about to be removed sees it: the body is
    the stored entry's (C{entry}), and nothing is marked as used.
    """

    def __init__(self, store: IStore, entry: StoredEntry) -> None:
        self._store = store
        self._entry = entry

    def touch(self, entry: StoredEntry) -> None:
        pass

    def openBody(self, entry: StoredEntry) -> IBody | None:
        return self._store.openBody(self._entry)


def _oneRange(headers: Headers) -> bool:
    """
    Whether the request's C{Range} asks for one byte range (the cache serves those).
    """
    value = rules.firstHeader(headers, b"range")
    return value is not None and ranges.parseRange(value, 1 << 62) is not None
