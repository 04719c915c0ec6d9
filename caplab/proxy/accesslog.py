"""
The access log: one Combined Log Format line per request and per tunnel, with the cache's
C{Cache-Status} appended when there is one::

    127.0.0.1 - alice [24/Nov/2026:08:01:02 +0000] "GET http://example.com/ HTTP/1.1" 200 12
        "-" "curl/8.5.0" "caplab; hit"

(one line in the file)

Lines are buffered and handed to the file a moment later (never more than C{flushDelay}
seconds), so a busy proxy does not make one write system call per request; the writes run in
a thread of their own (the wiring's L{caplab.metrics.offload.Offloader}), in order, so a slow
disk never holds up the reactor.  L{reopener} reopens the file (logrotate moves it away, then
signals).

Lines that cannot be written (a full disk, a file that cannot be opened) are dropped and
counted (L{AccessLog.dropped}) in one rate-limited line; every later batch is tried again (the
file opened again if need be), so the log resumes by itself once there is room.  A line cut
short by a full disk is ended before the next one.  L{AccessLog.close} hands the last lines
over and fires once they are written (the caller bounds the wait).

With C{-} as the path, each record is a log event instead (namespace C{caplab.access}, with
the line in C{line} and every field apart), so that it goes to C{twist}'s log in the log's own
format: a line of text, or a JSON object when the log is JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

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


def inline(work: Callable[[], Any]) -> Deferred[Any]:
    """
    Runs a write at once (tests, and the standard output).
    """
    return maybeDeferred(work)


class AccessLog:
    """
    Writes access log lines to a file (C{-}: to the log, as events).

    @ivar dropped: lines dropped since the log was made (a writer behind, a full disk).
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
        @param runInThread: where the file is opened, written and closed: one thread of its
            own, in order (L{caplab.metrics.offload.Offloader.run}), or L{inline}.
        @param publish: where the events go with C{-} (a logger of namespace L{NAMESPACE}
            by default).
        """
        self.path = path
        self.clock = clock
        self.flushDelay = flushDelay
        self.runInThread = runInThread
        self.events = publish if publish is not None else Logger(namespace=NAMESPACE)
        self.toLog = path == "-"
        self.dropped = 0
        # The writer's own: only ever touched in its thread (runInThread), in order.
        self._file: IO[bytes] | None = None
        self._cutShort = False
        self._closed = False
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
        self._failures = LogThrottle(
            log,
            clock,
            "caplab cannot write the access log {path}: {reason}; {dropped} lines dropped so "
            "far (the next lines are tried again)",
            summary="caplab access log {path}: writes failed for {duration}s ({reason}); "
            "{dropped} lines dropped so far",
        )

    def open(self) -> None:
        """
        Open the file now (in the writer's thread) rather than with the first lines, so
        that a path that cannot be written is reported at start-up.
        """
        if self.toLog or self._closed:
            return
        path = self.path

        def openFile() -> tuple[int, str | None]:
            try:
                self._openIfNeeded(path)
            except OSError as e:
                return 0, _reason(e)
            return 0, None

        self.runInThread(openFile).addBoth(self._written, 0, 0)

    def close(self) -> Deferred[None]:
        """
        Hand the buffered lines to the writer, then close the file after them; fires once
        that is done.  Lines recorded after this are dropped.
        """
        self.flush()
        if self._closed:
            return succeed(None)
        self._closed = True
        self._dropped.stop()
        if self.toLog:
            self._failures.stop()
            return succeed(None)
        done = self.useFile(None)
        done.addBoth(lambda _: self._failures.stop())
        return done

    def useFile(self, new: IO[bytes] | None) -> Deferred[None]:
        """
        Write to C{new} (None: nowhere until lines come) once the lines handed over so far
        are written, and close the file in use: in the writer's thread, in order with the
        writes.
        """

        def swap() -> tuple[int, str | None]:
            old, self._file = self._file, new
            self._cutShort = False
            if old is not None:
                try:
                    old.close()
                except OSError as e:
                    return 0, _reason(e)
            return 0, None

        done: Deferred[None] = self.runInThread(swap).addBoth(self._written, 0, 0)
        return done

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
        if self._closed:
            self.dropped += 1
            return
        if self._pending > MAX_PENDING:
            self.dropped += 1
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
        text = "".join(lines)
        path = self.path

        def write() -> tuple[int, str | None]:
            return self._writeOut(path, text.encode("utf-8", "backslashreplace"))

        self.runInThread(write).addBoth(self._written, len(lines), len(text))

    def _openIfNeeded(self, path: str) -> IO[bytes]:
        """
        The file to write to, opened if it is not (in the writer's thread).
        """
        if self._file is None:
            # Unbuffered: what a failed write did not write is never written later.
            self._file = open(path, "ab", buffering=0)
            self._cutShort = False
        return self._file

    def _writeOut(self, path: str, data: bytes) -> tuple[int, str | None]:
        """
        Write C{data} (whole lines) to the file, in the writer's thread; return how many
        lines were not written whole and why (None: all were).
        """
        ending = self._cutShort
        if ending:
            data = b"\n" + data
        view = memoryview(data)
        try:
            f = self._openIfNeeded(path)
            while view:
                written = f.write(view)
                if not written:
                    raise OSError("the file took no bytes")
                view = view[written:]
        except OSError as e:
            lost = view.tobytes().count(b"\n")
            if len(view) < len(data):
                self._cutShort = not data[: len(data) - len(view)].endswith(b"\n")
            elif ending:
                lost -= 1  # the end of the line cut short before, not one of these
            return lost, _reason(e)
        self._cutShort = False
        return 0, None

    def _written(self, result: object, lines: int, size: int) -> None:
        """
        Back in the reactor thread after a job of the writer: count and report what it
        could not write.
        """
        self._pending -= size
        if isinstance(result, Failure):  # the writer has stopped, say
            dropped, reason = lines, result.getErrorMessage()
        else:
            dropped, reason = result  # type: ignore[misc]
        if reason is None:
            return
        self.dropped += dropped
        self._failures.event(path=self.path, reason=reason, dropped=self.dropped)

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

    def load(self) -> IO[bytes] | None:
        if self.accessLog.toLog:
            return None
        return open(self.accessLog.path, "ab", buffering=0)

    def use(self, new: IO[bytes] | None) -> str:
        accessLog = self.accessLog
        if new is None:
            return "standard output, nothing to reopen"
        if accessLog._closed:  # the services stopped meanwhile
            new.close()
            return "closed meanwhile (stopping)"
        accessLog.flush()
        accessLog.useFile(new)
        return f"reopened {accessLog.path}"


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or repr(error)
