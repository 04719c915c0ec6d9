"""
The filter chain around the cache: an L{IFilterChain} made of the configured filters, each
selected per host pattern.

Requests: each request filter selected for the target's host runs in order, before the
cache key is computed.  Responses, after the cache, per client, on hits and misses alike:
the selected response filters first edit the head (header rules, C{Set-Cookie}), then say
whether they transform the body.  A body is transformed only if

    - it is a body: not the response to C{HEAD}, not a 1xx, C{204} or C{304};
    - it is whole: a C{206} (part of a body) passes untransformed, since a match or an
      element may straddle the range and the offsets of the transformed bytes are not the
      original's; transformed responses say C{Accept-Ranges: none} instead, so clients do
      not ask for ranges of them, and their C{ETag} is weak, so C{If-Range} never matches;
    - neither the response nor the request says C{Cache-Control: no-transform} (RFC 9110
      §7.7);
    - its content codings are known: C{gzip}, C{deflate} and C{br} are decoded for the
      filters, others pass untransformed, and so do bodies with more than two codings
      (L{caplab.proxy.filters.coding.MAX_CODINGS}).

A transformed body is sent as C{identity}, not encoded again: compressing costs several
times what the filters cost (gzip at its fastest level about 6 ms per MiB, against about 1
for a rewrite), the leg between proxy and client is the fast one (a LAN, often loopback),
and the origin-to-proxy leg stays compressed.  It loses C{Content-Length} (the client gets
it chunked, or close-delimited over HTTP/1.0), its digests (C{Content-MD5}, C{Digest},
C{Repr-Digest}, C{Content-Digest}) and C{Accept-Ranges}; its strong C{ETag} becomes weak.
The response to a C{HEAD} that would be transformed gets the same fields, and a C{304}
weak C{ETag}s, so a client's stored copy stays consistent.

When no filter is selected for a host, or none applies to a response, the request or
response is returned as it came: no copy, no wrapping.

What a request filter returns is checked before it is used (L{requestRefusal}): it must be
an L{UpstreamRequest} with the same body, and a target it moved elsewhere (host, port or
scheme) must be one the host policy lets through, since the block lists were checked on the
client's target at admission and are not checked again.  A result that fails is refused,
logged as the filter's failure, and the request goes on as it was before that filter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from caplab.proxy.filters.coding import KNOWN_CODINGS, MAX_CODINGS, Decoding
from caplab.proxy.filters.fields import (
    contentCodings,
    hasNoTransform,
    markTransformed,
    parseContentType,
    weakenETags,
)
from caplab.proxy.filters.hosts import HostSelector
from caplab.proxy.filters.interfaces import (
    MAX_WINDOW,
    IRequestFilter,
    IResponseFilter,
    ITransform,
    ResponseHead,
)
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.filters.stream import TransformSink
from caplab.proxy.hooks import IBodySink, IHostPolicy, Target, UpstreamRequest, UpstreamResponse
from caplab.proxy.http1 import BODILESS_STATUSES
from caplab.ratelimit import LogThrottles


class RefusedRequest(ValueError):
    """
    What a request filter returned cannot be used (see L{requestRefusal}).
    """


def transformProblem(transform: object) -> ValueError | None:
    """
    Why the chain cannot use C{transform}, what a response filter's C{transformBody} made,
    or None.  Without a C{window} it declares it holds nothing back (0): a plugin need not
    say so.  A window that is no number of bytes, or over L{MAX_WINDOW}, and a missing
    C{feed} or C{finish}, are problems.
    """
    if not all(callable(getattr(transform, name, None)) for name in ("feed", "finish")):
        return ValueError(f"it made {transform.__class__.__name__}, which has no feed and finish")
    window = getattr(transform, "window", 0)
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        return ValueError(f"its transform's window {window!r} is not a number of bytes")
    if window > MAX_WINDOW:
        return ValueError(f"it holds back {window} bytes, over {MAX_WINDOW}")
    return None


def requestRefusal(
    before: UpstreamRequest, after: object, hostPolicy: IHostPolicy | None
) -> RefusedRequest | None:
    """
    Why C{after}, what a request filter made of C{before}, may not be sent, or None.

    It must be an L{UpstreamRequest} with C{before}'s body (the body streams from the
    client as it is); if its target's scheme, host or port changed, the scheme must be
    C{http} or C{https}, the port one, and C{hostPolicy} must let the host through (the
    admission checked only the client's target).  A policy that raises refuses too: this
    check fails closed.
    """
    if not isinstance(after, UpstreamRequest):
        return RefusedRequest(f"it returned {after.__class__.__name__}, not an UpstreamRequest")
    if after.bodyLength != before.bodyLength or after.upgrade != before.upgrade:
        return RefusedRequest("it changed the request's body or upgrade")
    old, new = before.target, after.target
    if new is old:
        return None
    if not isinstance(new, Target):
        return RefusedRequest(f"its target is a {new.__class__.__name__}, not a Target")
    if (new.scheme, new.host, new.port) == (old.scheme, old.host, old.port):
        return None
    if new.scheme not in ("http", "https"):
        return RefusedRequest(f"it sent the request to a {new.scheme!r} URI")
    if not isinstance(new.port, int) or not 0 < new.port < 65536:
        return RefusedRequest(f"it sent the request to port {new.port!r}")
    if not isinstance(new.host, str) or not new.host:
        return RefusedRequest(f"it sent the request to host {new.host!r}")
    if hostPolicy is None:
        return None
    try:
        verdict = hostPolicy.check(new.host)
    except Exception as e:
        return RefusedRequest(
            f"the host policy failed on {new.host!r}, its new host: {e.__class__.__name__}: {e}"
        )
    if verdict is not None:
        return RefusedRequest(
            f"it sent the request to {new.host}, which the rule {verdict.rule!r} "
            f"({verdict.source}) blocks"
        )
    return None


class FilterChain:
    """
    An L{IFilterChain}: the request and response filters, each with the hosts it is for.
    """

    def __init__(
        self,
        requestFilters: Sequence[tuple[HostSelector, IRequestFilter]] = (),
        responseFilters: Sequence[tuple[HostSelector, IResponseFilter]] = (),
        counters: FilterCounters | None = None,
        log: LogThrottles | None = None,
        callLater: Callable[..., Any] | None = None,
        summary: str = "",
        hostPolicy: IHostPolicy | None = None,
    ) -> None:
        """
        @param log: where failures go (a broken body, a failing plugin: see
            L{caplab.proxy.filters.reporting.filterLog}); None: nowhere.
        @param callLater: C{reactor.callLater}, so a transformed body gives the reactor back
            now and then; None: never.
        @param summary: what the chain holds, for the log (L{describe}).
        @param hostPolicy: the block/allow lists a request filter's new target must pass
            (L{requestRefusal}); None: no lists.
        """
        self.requestFilters = list(requestFilters)
        self.responseFilters = list(responseFilters)
        self.counters = counters if counters is not None else FilterCounters()
        self.log = log
        self.callLater = callLater
        self.summary = summary
        self.hostPolicy = hostPolicy

    def describe(self) -> str:
        return self.summary or (
            f"{len(self.requestFilters)} request and {len(self.responseFilters)} response filters"
        )

    # IFilterChain

    def filterRequest(self, request: UpstreamRequest, client: str) -> UpstreamRequest:
        host = request.target.host
        for hosts, requestFilter in self.requestFilters:
            if hosts.matches(host):
                try:
                    filtered = requestFilter.filterRequest(request, client)
                except Exception as e:
                    self._failed(requestFilter, "a request", e)
                    continue
                if filtered is request:
                    continue
                refusal = requestRefusal(request, filtered, self.hostPolicy)
                if refusal is not None:
                    self._failed(requestFilter, "a request", refusal)
                    continue
                request = filtered
        return request

    def filterResponse(
        self, request: UpstreamRequest, response: UpstreamResponse
    ) -> UpstreamResponse:
        host = request.target.host
        selected = [f for hosts, f in self.responseFilters if hosts.matches(host)]
        if not selected:
            return response
        headers = list(response.headers)
        mediaType, charset = parseContentType(headers)
        head = ResponseHead(response.code, response.phrase, headers, mediaType, charset)
        for responseFilter in selected:
            try:
                responseFilter.filterHead(request, head)
            except Exception as e:
                self._failed(responseFilter, "a response head", e)
        if head.headers != response.headers:
            head.mediaType, head.charset = parseContentType(head.headers)
        deliverBody = self._transformed(request, response, head, selected)
        if deliverBody is None and head.headers == response.headers:
            return response
        return replace(
            response,
            headers=head.headers,
            deliverBody=deliverBody if deliverBody is not None else response.deliverBody,
        )

    # The body

    def _transformed(
        self,
        request: UpstreamRequest,
        response: UpstreamResponse,
        head: ResponseHead,
        selected: list[IResponseFilter],
    ) -> Callable[[IBodySink], None] | None:
        """
        The wrapped C{deliverBody} if the body is transformed, else None; edits
        C{head.headers} for a transformed body, or a bodiless stand-in for one.
        """
        code = response.code
        if code < 200 or code in BODILESS_STATUSES:
            if code == 304 and not all(getattr(f, "headersOnly", False) for f in selected):
                weakenETags(head.headers)
            return None
        transforms = self._transforms(request, head, selected)
        if not transforms:
            return None
        counters = self.counters
        if code == 206:
            counters.add("untransformed-partial")
            return None
        if hasNoTransform(head.headers) or hasNoTransform(request.headers):
            counters.add("untransformed-no-transform")
            return None
        codings = contentCodings(head.headers)
        if len(codings) > MAX_CODINGS or any(coding not in KNOWN_CODINGS for coding in codings):
            counters.add("untransformed-coding")
            return None
        markTransformed(head.headers)
        if request.method == b"HEAD":
            return None
        counters.add("responses-transformed")
        original = response.deliverBody
        decoding = Decoding(codings) if codings else None
        uri = request.target.uri
        callLater = self.callLater

        def onError(reason: str) -> None:
            counters.add("broken-bodies")
            if self.log is not None:
                self.log.throttle(
                    "broken-body",
                    "caplab filters cut off the body of {uri}: {reason} ({total} so far)",
                    summary="caplab filters cut off {burst} bodies in {duration}s ({total} so far)",
                    repeat="caplab filters cut off {count} bodies in the last {interval}s, "
                    "the latest of {uri}: {reason} ({total} so far)",
                ).event(uri=uri, reason=reason)

        def deliverBody(sink: IBodySink) -> None:
            original(TransformSink(sink, transforms, decoding, onError, callLater))

        return deliverBody

    def _transforms(
        self, request: UpstreamRequest, head: ResponseHead, selected: list[IResponseFilter]
    ) -> list[ITransform]:
        transforms = []
        for responseFilter in selected:
            try:
                transform = responseFilter.transformBody(request, head)
            except Exception as e:
                self._failed(responseFilter, "a response", e)
                continue
            if transform is None:
                continue
            problem = transformProblem(transform)
            if problem is not None:
                self._failed(responseFilter, "a response", problem)
                continue
            transforms.append(transform)
        return transforms

    def _failed(self, failing: object, what: str, error: Exception) -> None:
        name = getattr(failing, "name", failing.__class__.__name__)
        if self.log is not None:
            self.log.throttle(
                f"filter-{name}",
                "caplab filter {name} failed on {what} and was skipped: {error} ({total} so far)",
                summary="caplab filter {name} failed {burst} times in {duration}s ({total} so far)",
                repeat="caplab filter {name} failed {count} times in the last {interval}s, "
                "the latest on {what}: {error} ({total} so far)",
            ).event(name=name, what=what, error=f"{error.__class__.__name__}: {error}")


class ReloadableFilterChain:
    """
    An L{IFilterChain} and L{caplab.reload.IReloadable}: L{load} builds a new chain from the
    configuration as it is now, L{use} swaps it in atomically.

    A request in flight keeps the chain it started with if the request flow takes
    L{current} once per request and uses that for both of its calls; this object's own
    methods use whatever chain is current at the time.
    """

    def __init__(self, build: Callable[[], FilterChain]) -> None:
        """
        @param build: builds a chain from the current configuration (may raise
            L{caplab.proxy.filters.hosts.FilterConfigError}).
        """
        self.build = build
        self.current = build()

    def load(self) -> FilterChain:
        return self.build()

    def use(self, chain: FilterChain) -> str:
        self.current = chain
        return chain.describe()

    def describe(self) -> str:
        return self.current.describe()

    def filterRequest(self, request: UpstreamRequest, client: str) -> UpstreamRequest:
        return self.current.filterRequest(request, client)

    def filterResponse(
        self, request: UpstreamRequest, response: UpstreamResponse
    ) -> UpstreamResponse:
        return self.current.filterResponse(request, response)
