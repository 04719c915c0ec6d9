"""
The access log: one Combined Log Format line per request and per tunnel, with the cache's
C{Cache-Status} appended when there is one::

    127.0.0.1 - alice [24/Nov/2026:08:01:02 +0000] "GET http://example.com/ HTTP/1.1" 200 12
        "-" "curl/8.5.0" "caplab; hit"

(one line in the file)

Lines are buffered and flushed a moment later (never more than C{flushDelay} seconds), so a
busy proxy does not make one write system call per request.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _quote(value: bytes | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


class AccessLog:
    """
    Writes access log lines to a file (C{-}: standard output).
    """

    def __init__(self, path: str, clock: Any, flushDelay: float = 0.2) -> None:
        self.path = path
        self.clock = clock
        self.flushDelay = flushDelay
        self._file: IO[str] | None = None
        self._lines: list[str] = []
        self._flush: Any = None
        self._stamp = ""
        self._stampSecond = -1

    def open(self) -> None:
        if self._file is None:
            if self.path == "-":
                self._file = sys.stdout
            else:
                self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self.flush()
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
        self._file = None

    def _timestamp(self) -> str:
        now = int(self.clock.seconds())
        if now != self._stampSecond:
            t = time.gmtime(now)
            self._stampSecond = now
            self._stamp = (
                f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000]"
            )
        return self._stamp

    def record(
        self,
        client: str,
        user: str | None,
        method: bytes,
        uri: bytes,
        version: bytes,
        code: int,
        size: int,
        referer: bytes | None,
        agent: bytes | None,
        cacheStatus: str | None = None,
    ) -> None:
        """
        Add the line of one request.
        """
        line = (
            f"{client} - {_quote(user) if user else '-'} {self._timestamp()} "
            f'"{_quote(method)} {_quote(uri)} {_quote(version)}" {code} {size} '
            f'"{_quote(referer)}" "{_quote(agent)}"'
        )
        if cacheStatus is not None:
            line += f' "{_quote(cacheStatus)}"'
        self._lines.append(line + "\n")
        if self._flush is None:
            self._flush = self.clock.callLater(self.flushDelay, self.flush)

    def flush(self) -> None:
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        lines, self._lines = self._lines, []
        if lines:
            self.open()
            assert self._file is not None
            self._file.write("".join(lines))
            self._file.flush()
