"""
The cache as an L{IFetcher}: L{CachingFetcher} wraps the fetcher that asks the origin.

For a GET or HEAD it looks up the stored responses of the target URI, picks the variant
whose secondary key (C{Vary}) matches, and asks L{caplab.proxy.cache.rules.evaluate}:

  - fresh: a hit, streamed from the store (a client's conditional request gets a 304);
  - stale within C{stale-while-revalidate}: a hit, and a conditional request in the
    background refreshes the entry;
  - otherwise a conditional request (C{If-None-Match}/C{If-Modified-Since}); a 304 refreshes
    the stored head and the client is answered from the cache, anything else is handled as
    a miss (an origin error may be answered stale within C{stale-if-error});
  - no stored response: a miss.  Concurrent misses for one URI are collapsed: the first goes
    to the origin, the others wait (at most C{collapseTimeout} seconds) until its response is
    stored and are then served from it; if it is not storable (C{private}, C{no-store} ...)
    or does not come, each goes to the origin itself.

A storable response is streamed to the client and written to the store at the same time
(L{TeeSink}); only a body that ended properly, with the announced length, is committed.

Other methods pass through; a successful unsafe one invalidates the URIs RFC 9111 section
4.4 names.  Every response carries an RFC 9211 C{Cache-Status} value in
L{UpstreamResponse.cacheStatus}.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from caplab.proxy.cache import rules
from caplab.proxy.cache.collapsing import Flight, Waiter
from caplab.proxy.cache.entries import EntryHead, StoredEntry
from caplab.proxy.cache.rules import NO_REQUEST_RULES, Decision, EntryRules, RequestRules
from caplab.proxy.cache.sinks import Discard, SliceSink, TeeSink, noBody
from caplab.proxy.cache.storage import IStore
from caplab.proxy.hooks import (
    Headers,
    IBodySink,
    IFetcher,
    IRequestBody,
    UpstreamError,
    UpstreamRequest,
    UpstreamResponse,
)

#: Fields of a response not stored (recomputed on a hit: age, framing).
_NOT_REPLAYED = frozenset({b"age", b"content-length", b"transfer-encoding"})

_RANGE, _DIRECTIVES, _CONDITIONS = 1, 2, 4
_FLAGS = {
    b"range": _RANGE,
    b"cache-control": _DIRECTIVES,
    b"pragma": _DIRECTIVES,
    b"if-none-match": _CONDITIONS,
    b"if-modified-since": _CONDITIONS,
}


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

    # The request path

    def fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        method = request.method
        if method != b"GET" and method != b"HEAD":
            return self._passUnsafe(request, body)
        if (body is not None and body.length != 0) or request.bodyLength != 0:
            return self._passThrough(request, body, "bypass")
        flags = _scan(request.headers)
        if flags & _RANGE:
            partial = self._rangeFromStore(request, flags)
            if partial is not None:
                return succeed(partial)
            return self._passThrough(request, None, "bypass; detail=range")
        return self._lookup(request, flags, collapsed=False)

    def _lookup(
        self, request: UpstreamRequest, flags: int, collapsed: bool
    ) -> Deferred[UpstreamResponse]:
        uri = request.target.uri
        requestRules = (
            RequestRules.fromHeaders(request.headers) if flags & _DIRECTIVES else NO_REQUEST_RULES
        )
        entry, stored = self.store.select(uri, request.headers)
        now = self.clock.seconds()
        if entry is None:
            if requestRules.onlyIfCached:
                return self._notCached()
            why = "vary-miss" if stored else "miss"
            if collapsed:
                return self._forward(request, f"{why}; collapsed")
            if self.metrics is not None:
                self.metrics.cacheMiss()
            return self._miss(request, uri, why)
        entryRules = entry.rules
        assert entryRules is not None
        evaluation = rules.evaluate(entryRules, requestRules, now)
        if evaluation.decision is not Decision.REVALIDATE:
            detail = ""
            if evaluation.decision is Decision.STALE_REVALIDATE:
                detail = "; detail=stale-while-revalidate"
            response = self._fromStore(
                entry,
                request,
                now,
                f"{self.name}; hit; ttl={int(evaluation.ttl)}{detail}",
                bool(flags & _CONDITIONS),
            )
            if response is not None:
                if self.metrics is not None:
                    self.metrics.cacheHit()
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
        if request.method == b"HEAD" or not entryRules.hasValidator:
            return self._forward(request, why)
        if collapsed:
            return self._revalidate(entry, entryRules, request, requestRules, why, None)
        return self._collapse(
            uri,
            request,
            lambda done: self._revalidate(entry, entryRules, request, requestRules, why, done),
        )

    def _afterWait(self, request: UpstreamRequest) -> Deferred[UpstreamResponse]:
        """
        A collapsed request whose wait ended: served from what is stored now, or forwarded.
        """
        return self._lookup(request, _scan(request.headers), collapsed=True)

    def _fromStore(
        self,
        entry: StoredEntry,
        request: UpstreamRequest,
        now: float,
        status: str,
        conditional: bool | None = None,
    ) -> UpstreamResponse | None:
        """
        A response from the store (None if its body is gone or damaged): a 304 if the
        client's own precondition says so, the head alone for HEAD.

        @param conditional: whether the request has preconditions (None: look).
        """
        entryRules = entry.rules
        assert entryRules is not None
        head = entry.head
        age = (b"Age", b"%d" % int(entryRules.freshness.currentAge(now)))
        if conditional is None:
            conditional = bool(_scan(request.headers) & _CONDITIONS)
        if conditional and rules.notModified(request.headers, entryRules):
            self.store.touch(entry)
            if entry.notModified is None:
                entry.notModified = rules.notModifiedHeaders(head.headers)
            return UpstreamResponse(304, b"Not Modified", [*entry.notModified, age], noBody, status)
        if request.method == b"HEAD":
            if not entry.live:
                return None
            self.store.touch(entry)
            return UpstreamResponse(
                head.code, head.phrase, [*head.headers, entry.lengthField, age], noBody, status
            )
        body = self.store.openBody(entry)
        if body is None:
            return None
        self.store.touch(entry)
        return UpstreamResponse(
            head.code, head.phrase, [*head.headers, entry.lengthField, age], body.deliver, status
        )

    def _rangeFromStore(self, request: UpstreamRequest, flags: int) -> UpstreamResponse | None:
        """
        A 206 for a single-range GET that a fresh stored 200 can answer, or None (the
        request then passes through): no C{If-Range}, preconditions or request directives.
        """
        if request.method != b"GET" or flags & (_CONDITIONS | _DIRECTIVES):
            return None
        if rules.firstHeader(request.headers, b"if-range") is not None:
            return None
        value = rules.firstHeader(request.headers, b"range")
        entry, _ = self.store.select(request.target.uri, request.headers)
        if value is None or entry is None or entry.head.code != 200:
            return None
        entryRules = entry.rules
        assert entryRules is not None
        now = self.clock.seconds()
        evaluation = rules.evaluate(entryRules, NO_REQUEST_RULES, now)
        wanted = rules.byteRange(value, entry.bodyLength)
        if evaluation.decision is not Decision.FRESH or wanted is None:
            return None
        body = self.store.openBody(entry)
        if body is None:
            return None
        self.store.touch(entry)
        start, stop = wanted
        headers = list(entry.head.headers)
        headers += [
            (b"Content-Range", b"bytes %d-%d/%d" % (start, stop - 1, entry.bodyLength)),
            (b"Content-Length", b"%d" % (stop - start)),
            (b"Age", b"%d" % int(evaluation.age)),
        ]

        def deliver(sink: IBodySink) -> None:
            body.deliver(SliceSink(sink, start, stop))

        return UpstreamResponse(
            206,
            b"Partial Content",
            headers,
            deliver,
            f"{self.name}; hit; ttl={int(evaluation.ttl)}; detail=range",
        )

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

        result: Deferred[UpstreamResponse] = start(done)
        return result

    def _forward(
        self, request: UpstreamRequest, why: str, onDone: Any = None
    ) -> Deferred[UpstreamResponse]:
        """
        Ask the origin; store the response if it may be, streaming it to the client.

        @param onDone: called once it is known whether the response was stored.
        """
        requestTime = self.clock.seconds()
        d = self.inner.fetch(request, None)

        def got(response: UpstreamResponse) -> UpstreamResponse:
            return self._store(request, response, requestTime, f"{self.name}; fwd={why}", onDone)

        def failed(reason: Failure) -> Failure:
            if onDone is not None:
                onDone()
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
        if decision.ok:
            length = rules.firstHeader(response.headers, b"content-length")
            expected = int(length) if length is not None and length.isdigit() else None
            if expected is None or expected <= self.store.maxObjectSize:
                names = rules.varyNames(response.headers) or ()
                head = EntryHead(
                    uri=uri,
                    varyNames=names,
                    variant=rules.secondaryKey(names, request.headers),
                    code=response.code,
                    phrase=response.phrase,
                    headers=_storedFields(decision.headers, responseTime),
                    requestTime=requestTime,
                    responseTime=responseTime,
                    age=rules.ageValue(decision.headers),
                )
                writer = self.store.writer(head)
        if writer is None:
            if onDone is not None:
                onDone()
            response.cacheStatus = status
            return response
        response.cacheStatus = f"{status}; stored"
        deliverBody = response.deliverBody

        def finished(entry: object) -> None:
            if onDone is not None:
                onDone()
            if entry is not None and self.metrics is not None:
                self.metrics.cacheStoredBytes(getattr(self.store, "size", 0))

        def tee(sink: IBodySink) -> None:
            deliverBody(TeeSink(sink, writer, expected, finished))

        response.deliverBody = tee
        return response

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
        entryRules: EntryRules,
        request: UpstreamRequest,
        requestRules: RequestRules,
        why: str,
        onDone: Any,
    ) -> Deferred[UpstreamResponse]:
        """
        Ask the origin whether the stored response is still good; answer from the cache on
        304, stale on an error where C{stale-if-error} allows, else relay (and store) what
        came.

        @param onDone: called once the entry is refreshed, replaced, or neither will be.
        """
        requestTime = self.clock.seconds()
        d = self.inner.fetch(self._conditional(request, entryRules), None)

        def finished() -> None:
            if onDone is not None:
                onDone()

        def got(response: UpstreamResponse) -> UpstreamResponse | Deferred[UpstreamResponse]:
            status = f"{self.name}; fwd={why}; fwd-status={response.code}"
            if response.code == 304:
                response.deliverBody(Discard())
                refreshed = self._refresh(entry, entryRules, response, requestTime)
                if refreshed is not None:
                    now = self.clock.seconds()
                    fromStore = self._fromStore(refreshed[0], request, now, status)
                    if fromStore is not None:
                        finished()
                        # the 304's per-client fields (Set-Cookie ...) are this client's
                        fromStore.headers.extend(refreshed[1])
                        return fromStore
                return self._forward(request, why, onDone)
            if response.code >= 500:
                stale = self._staleOnError(entry, entryRules, request, requestRules, response.code)
                if stale is not None:
                    finished()
                    response.deliverBody(Discard())
                    return stale
            return self._store(request, response, requestTime, status, onDone)

        def failed(reason: Failure) -> UpstreamResponse | Failure:
            finished()
            error = reason.value
            if isinstance(error, UpstreamError) and not reason.check(CancelledError):
                code = error.code
                stale = self._staleOnError(entry, entryRules, request, requestRules, code)
                if stale is not None:
                    return stale
            return reason

        return d.addCallbacks(got, failed)

    def _refresh(
        self,
        entry: StoredEntry,
        entryRules: EntryRules,
        notModified: UpstreamResponse,
        requestTime: float,
    ) -> tuple[StoredEntry, Headers] | None:
        """
        Update a stored response with a 304 (None if the 304 is about another one): the
        refreshed entry and the 304's per-client fields, for the one client it answers.
        """
        if not entry.live or not rules.validatorsMatch(entryRules, notModified.headers):
            return None
        update = rules.updatedHeaders(entry.head.headers, notModified.headers)
        head = replace(
            entry.head,
            headers=update.headers,
            requestTime=requestTime,
            responseTime=self.clock.seconds(),
        )
        return self.store.refresh(entry, head), update.perClient

    def _staleOnError(
        self,
        entry: StoredEntry,
        entryRules: EntryRules,
        request: UpstreamRequest,
        requestRules: RequestRules,
        code: int,
    ) -> UpstreamResponse | None:
        now = self.clock.seconds()
        if not rules.mayServeStaleOnError(entryRules, requestRules, now):
            return None
        return self._fromStore(
            entry,
            request,
            now,
            f"{self.name}; fwd=stale; fwd-status={code}; detail=stale-if-error",
        )

    def _revalidateInBackground(
        self, entry: StoredEntry, entryRules: EntryRules, request: UpstreamRequest
    ) -> None:
        """
        Refresh a stale entry served under C{stale-while-revalidate}, one at a time per URI.
        """
        key = entry.head.key
        if key in self._revalidating:
            return
        self._revalidating.add(key)
        requestTime = self.clock.seconds()
        plain = replace(request, method=b"GET")

        def got(response: UpstreamResponse) -> None:
            if response.code == 304:
                self._refresh(entry, entryRules, response, requestTime)
                response.deliverBody(Discard())
                return
            stored = self._store(plain, response, requestTime, "")
            stored.deliverBody(Discard())

        def failed(reason: Failure) -> None:
            self.log.info(
                "cache: background revalidation of {uri} failed: {why}",
                uri=request.target.uri,
                why=reason.getErrorMessage(),
            )

        def done(_: object) -> None:
            self._revalidating.discard(key)

        d = self.inner.fetch(self._conditional(plain, entryRules), None)
        d.addCallbacks(got, failed).addBoth(done)


def _storedFields(headers: Headers, responseTime: float) -> Headers:
    """
    The fields of a response as they are stored and sent on hits: without C{Age} (the age
    is recomputed) and framing (C{Content-Length} comes from the stored body); with a
    C{Date} (the time it was received) if the origin sent none (RFC 9110 section 6.6.1).
    """
    stored = [(n, v) for n, v in headers if n.lower() not in _NOT_REPLAYED]
    if rules.firstHeader(stored, b"date") is None:
        stored.append((b"Date", rules.formatHTTPDate(responseTime)))
    return stored


def _scan(headers: Headers) -> int:
    """
    Which request fields the cache must look at (L{_RANGE}, L{_DIRECTIVES},
    L{_CONDITIONS}), in one pass: most requests have none of them.
    """
    flags = 0
    get = _FLAGS.get
    for name, _ in headers:
        flags |= get(name.lower(), 0)
    return flags
