"""
The proxy's RFC 9111 shared HTTP cache.

  - L{caplab.proxy.cache.rules}: the RFC 9111 rules (pure);
  - L{caplab.proxy.cache.entries}: what is kept of a response (compact, its cost counted)
    and the checked record format of heads;
  - L{caplab.proxy.cache.bodies}: stored bodies in blocks and their delivery;
  - L{caplab.proxy.cache.storage}: where responses are kept (the interfaces, the index
    every store shares, memory);
  - L{caplab.proxy.cache.disk}: the disk store (C{--cache-dir});
  - L{caplab.proxy.cache.redisstore}: the store shared through Redis (C{--cache-redis});
  - L{caplab.proxy.cache.fetcher}: the L{caplab.proxy.hooks.IFetcher} that puts them together,
    with L{caplab.proxy.cache.collapsing} (request collapsing) and
    L{caplab.proxy.cache.sinks} (tee into the store, byte ranges);
  - L{caplab.proxy.cache.options}: the command-line options.
"""
