"""
Command-line options of the proxy's cache, mixed into L{caplab.tap.Options}.  The cache
they describe is built by the composition root (L{caplab.wiring.buildCache}).
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.python import usage

from caplab.config import OptionError, humanSize

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byteSize(value: str) -> int:
    """
    A size in bytes: a number with an optional binary suffix, C{64M}, C{512k}, C{1GiB},
    C{1048576}.
    """
    match = _SIZE.match(value)
    if match is None:
        raise ValueError("not a size (e.g. 64M, 512K, 1G or a number of bytes)")
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


byteSize.coerceDoc = "A size: bytes, or with a suffix K, M, G (powers of 1024)."  # type: ignore[attr-defined]
byteSize.formatDefault = humanSize  # type: ignore[attr-defined]
byteSize.metavar = "SIZE"  # type: ignore[attr-defined]


#: The largest object the cache stores unless told otherwise (and --cache-size allows).
DEFAULT_MAX_OBJECT = 8 << 20


class CacheOptions:
    """
    The cache's options.
    """

    helpGroup = "cache"

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
            None,
            "Largest response body the cache stores; larger ones are only passed on. "
            "Default: 8M, or --cache-size if that is smaller.",
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
            "Share the cache through Redis at redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] "
            "(rediss:// for TLS, ?ssl_ca_certs=FILE for a private CA) with every caplab that "
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
                raise OptionError("cache-redis", f"--cache-redis: {e}") from None
        if config["cache-max-object"] is None:
            config["cache-max-object"] = min(DEFAULT_MAX_OBJECT, config["cache-size"])
        if config["cache-max-object"] > config["cache-size"]:
            raise usage.UsageError("--cache-max-object must not be larger than --cache-size")
        directory = config["cache-dir"]
        if directory is not None and config.get("workers", 1) > 1:
            # Each worker would index the directory on its own, evict the others' files
            # and hold --cache-size of its own.
            raise usage.UsageError("--cache-dir is one process's cache: not with --workers")
        if directory is not None:
            try:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            except OSError as e:
                raise OptionError("cache-dir", f"--cache-dir {directory!r}: {e.strerror}") from None
            if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
                raise OptionError("cache-dir", f"--cache-dir {directory!r}: not writable")
