"""
The proxy's RFC 9111 shared HTTP cache.

  - L{caplab.proxy.cache.rules}: the RFC 9111 rules (pure; partly hishel's sans-I/O core);
  - L{caplab.proxy.cache.storage}: where responses are kept (the interface, memory);
  - L{caplab.proxy.cache.disk}: the disk store (C{--cache-dir});
  - L{caplab.proxy.cache.fetcher}: the L{caplab.proxy.hooks.IFetcher} that puts them together,
    with L{caplab.proxy.cache.collapsing} (request collapsing) and
    L{caplab.proxy.cache.sinks} (tee into the store, byte ranges);
  - L{caplab.proxy.cache.options}: the command-line options.
"""
