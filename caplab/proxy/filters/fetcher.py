"""
A filter chain as an L{IFetcher} wrapped around another (the cache, or the forwarder): the
request filters run before the wrapped fetcher computes its cache key, the response filters
on whatever it answers, hit or miss, per request.

This puts the filters in front of the cache without the proxy core calling
L{caplab.proxy.hooks.IFilterChain} itself: C{makeProxyFactory(config, reactor,
fetcher=lambda upstream: FilteringFetcher(filters, cache(upstream)))}.  What it cannot give
the filters is the client's address (they get C{""}); none of the built-in filters uses it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from caplab.proxy.hooks import (
    IFetcher,
    IFilterChain,
    IRequestBody,
    UpstreamRequest,
    UpstreamResponse,
)


class FilteringFetcher:
    """
    An L{IFetcher}: C{chain} around C{fetcher}.

    A chain with a C{current} attribute (a L{caplab.proxy.filters.chain.ReloadableFilterChain})
    is read once per request, so a request keeps the chain it started with across a reload.
    """

    log = Logger()

    def __init__(self, chain: IFilterChain | Any, fetcher: IFetcher, client: str = "") -> None:
        self.chain = chain
        self.fetcher = fetcher
        self.client = client

    def fetch(
        self, request: UpstreamRequest, body: IRequestBody | None
    ) -> Deferred[UpstreamResponse]:
        chain: IFilterChain = getattr(self.chain, "current", self.chain)
        filtered = chain.filterRequest(request, self.client)

        def filterResponse(response: UpstreamResponse) -> UpstreamResponse:
            try:
                return chain.filterResponse(filtered, response)
            except Exception:
                # A bug in the chain must not cost the client its page: pass it unfiltered.
                self.log.failure("caplab filters failed on {uri}", uri=filtered.target.uri)
                return response

        return self.fetcher.fetch(filtered, body).addCallback(filterResponse)
