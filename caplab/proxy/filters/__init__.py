"""
Content filters around the cache: the proxy changes what passes through, as it streams.

    - L{chain}: the L{caplab.proxy.hooks.IFilterChain} (request filters before the cache
      key, response filters after the cache, per client) and its reloadable wrapper;
    - L{stream}: the body sink that transforms a body as it streams, with back-pressure;
    - L{interfaces}: what a filter is (L{interfaces.IRequestFilter},
      L{interfaces.IResponseFilter}, L{interfaces.ITransform}), for built-ins and plugins;
    - L{plugins}: third-party filters as C{caplab.filters} entry points;
    - L{config}: the configuration table and the chain built from it;
    - the built-in filters: L{headerrules}, L{privacy}, L{rewrite} (with L{substitute},
      L{regexwidth}, L{text}), L{elements} (with L{urlhost});
    - L{fields}, L{coding}, L{hosts}, L{reporting}: header fields, content codings, host
      patterns, counters and the log of failures.
"""

from caplab.proxy.filters.chain import FilterChain, ReloadableFilterChain
from caplab.proxy.filters.config import (
    FilterConfig,
    buildChain,
    parseFilterConfig,
    tableFromOptions,
)
from caplab.proxy.filters.hosts import FilterConfigError
from caplab.proxy.filters.interfaces import (
    IRequestFilter,
    IResponseFilter,
    ITransform,
    ResponseFilter,
    ResponseHead,
)
from caplab.proxy.filters.reporting import COUNTERS, FilterCounters, filterLog

__all__ = [
    "COUNTERS",
    "FilterChain",
    "FilterConfig",
    "FilterConfigError",
    "FilterCounters",
    "IRequestFilter",
    "IResponseFilter",
    "ITransform",
    "ReloadableFilterChain",
    "ResponseFilter",
    "ResponseHead",
    "buildChain",
    "filterLog",
    "parseFilterConfig",
    "tableFromOptions",
]
