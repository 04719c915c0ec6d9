"""
Command-line options of the proxy's cache, mixed into L{caplab.tap.Options}, and the one
function that builds the cache they describe.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.logger import Logger
from twisted.python import usage

from caplab.proxy.hooks import IFetcher

log = Logger(namespace="caplab.cache")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byteSize(value: str) -> int:
    """
    A size in bytes: a number with an optional binary suffix, C{64M}, C{512k}, C{1GiB},
    C{1048576}.
    """
    match = _SIZE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a size (e.g. 64M, 512K, 1G or a number of bytes)")
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


byteSize.coerceDoc = "A size: bytes, or with a suffix K, M, G (powers of 1024)."  # type: ignore[attr-defined]


class CacheOptions:
    """
    The cache's options.
    """

    optParameters: list[list[Any]] = [
        [
            "cache-size",
            None,
            64 << 20,
            "Bytes the proxy's HTTP cache may hold (in memory, or on disk with --cache-dir); "
            "least recently used entries go first.",
            byteSize,
        ],
        [
            "cache-max-object",
            None,
            8 << 20,
            "Largest response body the cache stores; larger ones are only passed on.",
            byteSize,
        ],
        [
            "cache-dir",
            None,
            None,
            "Keep the cache in this directory (created if needed) instead of memory, so it "
            "survives restarts.",
        ],
        [
            "cache-redis",
            None,
            None,
            "Share the cache through Redis at redis://HOST[:PORT][/DB] with every caplab that "
            "names it (each keeps a near cache of --cache-size in memory).",
        ],
    ]
    optFlags: list[list[Any]] = [
        ["no-cache", None, "Do not cache: every request goes to the origin."],
    ]

    def checkCacheOptions(self) -> None:
        """
        Check the cache options together; raise L{usage.UsageError} on a bad combination.
        """
        config: Any = self
        if config["no-cache"]:
            for option in ("cache-dir", "cache-redis"):
                if config[option] is not None:
                    raise usage.UsageError(f"--no-cache and --{option} contradict each other")
            return
        if config["cache-redis"] is not None:
            from caplab.proxy.cache.redisstore import parseRedisURL

            if config["cache-dir"] is not None:
                raise usage.UsageError("--cache-dir and --cache-redis: choose one store")
            try:
                parseRedisURL(config["cache-redis"])
            except ValueError as e:
                raise usage.UsageError(f"--cache-redis: {e}") from None
        if config["cache-max-object"] > config["cache-size"]:
            raise usage.UsageError("--cache-max-object must not be larger than --cache-size")
        directory = config["cache-dir"]
        if directory is not None and _get(config, "workers", 1) > 1:
            # Each worker would index the directory on its own, evict the others' files
            # and hold --cache-size of its own.
            raise usage.UsageError("--cache-dir is one process's cache: not with --workers")
        if directory is not None:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as e:
                raise usage.UsageError(f"--cache-dir {directory!r}: {e.strerror}") from None
            if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
                raise usage.UsageError(f"--cache-dir {directory!r} is not writable")


def _get(config: Any, key: str, default: Any) -> Any:
    try:
        return config[key]
    except KeyError:
        return default


def cachingFetcher(config: Any, inner: IFetcher, reactor: Any, metrics: Any = None) -> IFetcher:
    """
    C{inner} wrapped in the cache the options describe (C{inner} itself with C{--no-cache}).

    @param config: parsed options (a L{CacheOptions}, or a mapping with its keys; missing
        keys take the defaults).
    @param metrics: where the cache counts hits, misses and stored bytes (or None).
    """
    from caplab.proxy.cache.disk import DiskStore
    from caplab.proxy.cache.fetcher import CachingFetcher
    from caplab.proxy.cache.storage import IStore, MemoryStore

    if config.get("no-cache", False):
        return inner
    size = config.get("cache-size", 64 << 20)
    maxObject = config.get("cache-max-object", 8 << 20)
    directory = config.get("cache-dir")
    store: IStore
    if config.get("cache-redis"):
        from caplab.proxy.cache.redisstore import PrimingFetcher, RedisStore, connectRedis

        client, where = connectRedis(config["cache-redis"], reactor)
        shared = RedisStore(client, reactor, size, maxObject, where=where)
        log.info(
            "caplab cache shared through Redis at {where}, near cache up to {maxSize} bytes",
            where=where,
            maxSize=size,
        )
        caching = CachingFetcher(inner, shared, reactor, metrics=metrics)
        return PrimingFetcher(caching, shared, lambda request: request.target.uri)
    if directory:
        from twisted.internet.threads import deferToThreadPool

        disk = DiskStore(
            directory,
            size,
            maxObject,
            callLater=reactor.callLater,
            runInThread=lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f),
        )
        log.info(
            "caplab cache in {directory}: {count} entries, {size} of {maxSize} bytes",
            directory=directory,
            count=len(disk),
            size=disk.size,
            maxSize=size,
        )
        store = disk
    else:
        store = MemoryStore(size, maxObject, callLater=reactor.callLater)
        log.info("caplab cache in memory: up to {maxSize} bytes", maxSize=size)
    return CachingFetcher(inner, store, reactor, metrics=metrics)
