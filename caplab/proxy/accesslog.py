"""
The access log: one Combined Log Format line per request and per tunnel, with the cache's
C{Cache-Status} appended when there is one::

    127.0.0.1 - alice [24/Nov/2026:08:01:02 +0000] "GET http://example.com/ HTTP/1.1" 200 12
        "-" "curl/8.5.0" "caplab; hit"

(one line in the file)

Lines are buffered and handed to the file a moment later (never more than C{flushDelay}
seconds), so a busy proxy does not make one write system call per request; the writes run in
a thread of their own (L{ThreadWriter}), in order, so a slow disk never holds up the
reactor.  L{reopener} reopens the file (logrotate moves it away, then signals).

With C{-} as the path, each record is a log event instead (namespace C{caplab.access}, with
the line in C{line} and every field apart), so that it goes to C{twist}'s log in the log's own
format: a line of text, or a JSON object when the log is JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from caplab.ratelimit import LogThrottle

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: The namespace of the access log's events when it goes to the log (C{--access-log -}).
NAMESPACE = "caplab.access"

#: Bytes of lines that may wait for a slow disk before new lines are dropped (and counted).
MAX_PENDING = 16 << 20

log = Logger(namespace="caplab.proxy.accesslog")


def _quote(value: bytes | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


class ThreadWriter:
    """
    Runs file writes in one thread of its own, one after the other, in the order given.
    """

    def __init__(self, reactor: Any, name: str = "caplab file writer") -> None:
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name=name)

    def start(self) -> None:
        if not self.pool.started:
            self.pool.start()

    def stop(self) -> None:
        """
        Wait for the writes under way, then end the thread.
        """
        if self.pool.started:
            self.pool.stop()

    def __call__(self, work: Callable[[], Any]) -> Deferred[Any]:
        self.start()
        return deferToThreadPool(self.reactor, self.pool, work)


def inline(work: Callable[[], Any]) -> Deferred[Any]:
    """
    Runs a write at once (tests, and the standard output).
    """
    return maybeDeferred(work)


class AccessLog:
    """
    Writes access log lines to a file (C{-}: to the log, as events).
    """

    def __init__(
        self,
        path: str,
        clock: Any,
        flushDelay: float = 0.2,
        runInThread: Callable[[Callable[[], Any]], Deferred[Any]] = inline,
        publish: Logger | None = None,
    ) -> None:
        """
        @param runInThread: where the file is opened, written and closed: a L{ThreadWriter}
            (one thread, in order), or L{inline}.
        @param publish: where the events go with C{-} (a logger of namespace L{NAMESPACE}
            by default).
        """
        self.path = path
        self.clock = clock
        self.flushDelay = flushDelay
        self.runInThread = runInThread
        self.events = publish if publish is not None else Logger(namespace=NAMESPACE)
        self.toLog = path == "-"
        self._file: IO[str] | None = None
        self._opened = False
        self._lines: list[str] = []
        self._pending = 0
        self._flush: Any = None
        self._stamp = ""
        self._stampSecond = -1
        self._dropped = LogThrottle(
            log,
            clock,
            "caplab access log {path} is behind (a slow disk?): dropped {count} lines "
            "({total} so far)",
            summary="caplab access log {path} dropped {burst} lines in {duration}s",
        )

    def open(self) -> None:
        """
        Open the file (in the writer's thread) unless it is open.

        The file object is only ever touched by the writer (opened, written, swapped,
        closed in its one thread, in order), never by the reactor thread.
        """
        if self.toLog or self._opened:
            return
        self._opened = True
        path = self.path

        def openFile() -> None:
            self._file = open(path, "a", encoding="utf-8")

        self.runInThread(openFile).addErrback(self._failed)

    def close(self) -> None:
        self.flush()
        self._dropped.stop()
        if self._opened:
            self._opened = False
            self.useFile(None)
        stop = getattr(self.runInThread, "stop", None)
        if stop is not None:
            stop()

    def useFile(self, new: IO[str] | None) -> None:
        """
        Write to C{new} (None: nowhere) once the lines handed over so far are written, and
        close the file in use: in the writer's thread, in order with the writes.
        """

        def swap() -> None:
            old, self._file = self._file, new
            if old is not None:
                old.close()

        self.runInThread(swap).addErrback(self._failed)

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
        if self.toLog:
            self.events.info(
                "{line}",
                line=line,
                client=client,
                user=user,
                method=_text(method),
                uri=_text(uri),
                version=_text(version),
                code=code,
                size=size,
                referer=_text(referer),
                agent=_text(agent),
                cacheStatus=cacheStatus,
            )
            return
        if self._pending > MAX_PENDING:
            self._dropped.event(path=self.path)
            return
        self._lines.append(line + "\n")
        self._pending += len(line) + 1
        if self._flush is None:
            self._flush = self.clock.callLater(self.flushDelay, self.flush)

    def flush(self) -> None:
        """
        Hand the buffered lines to the writer.
        """
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        data = "".join(lines)
        self.open()

        def write() -> None:
            f = self._file
            if f is not None:
                f.write(data)
                f.flush()

        def written(result: object) -> None:
            self._pending -= len(data)

        self.runInThread(write).addCallbacks(written, self._failed)

    def _failed(self, failure: Any) -> None:
        log.error(
            "caplab cannot write the access log {path}: {reason}",
            path=self.path,
            reason=failure.getErrorMessage(),
        )

    def reopener(self) -> LogReopener:
        """
        What reopens this log (an L{IReloadable} of L{caplab.reload}).
        """
        return LogReopener(self)


class LogReopener:
    """
    Reopens an L{AccessLog}'s file: L{load} opens the path again (in a thread), L{use} hands
    the new file to the writer after every line already buffered, then closes the old one.
    """

    def __init__(self, accessLog: AccessLog) -> None:
        self.accessLog = accessLog

    def load(self) -> IO[str] | None:
        if self.accessLog.toLog:
            return None
        return open(self.accessLog.path, "a", encoding="utf-8")

    def use(self, new: IO[str] | None) -> str:
        accessLog = self.accessLog
        if new is None:
            return "standard output, nothing to reopen"
        accessLog.flush()
        accessLog._opened = True
        accessLog.useFile(new)
        return f"reopened {accessLog.path}"
