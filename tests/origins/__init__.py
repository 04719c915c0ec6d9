"""
Local origin servers for the proxy's real-client tests, run as subprocesses.

L{runningOrigin} starts C{python -m tests.origins} (see L{tests.origins.site} for its routes),
waits for its listening lines and gives a L{OriginProcess} whose request log tests can wait on.
Every wait is bounded and waits on an event (a line of output, a process exit).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.tls import TEST_HOST

#: Seconds any single wait on an origin may take.
WAIT = 20.0

_ROOT = Path(__file__).resolve().parent.parent.parent


class LineProcess:
    """
    A subprocess whose merged stdout and stderr are collected line by line by a thread, so
    that tests can wait for a line (bounded) instead of sleeping.
    """

    def __init__(self, argv: list[str], cwd: Path | None = None) -> None:
        self.argv = argv
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def waitFor(self, test: Callable[[list[str]], Any], what: str, timeout: float = WAIT) -> Any:
        """
        Wait until C{test(lines)} returns something true and return it; fail after C{timeout}
        seconds or when the process has exited without it.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = test(self.lines)
                if found:
                    return found
                exited = self.process.poll() is not None
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (exited and not self._reader.is_alive()):
                    raise AssertionError(
                        f"{what}: not seen within {timeout}s "
                        f"(process {'exited' if exited else 'running'}); output:\n"
                        + "\n".join(self.lines[-200:])
                    )
                self._changed.wait(min(remaining, 0.5))

    def waitForLine(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        regex = re.compile(pattern)

        def test(lines: list[str]) -> re.Match[str] | None:
            for line in lines:
                found = regex.search(line)
                if found:
                    return found
            return None

        return self.waitFor(test, f"a line matching {pattern!r}", timeout)

    def stop(self, timeout: float = WAIT) -> int:
        """
        SIGTERM the process group, then SIGKILL it if it has not exited within C{timeout}.
        """
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        self._reader.join(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


class OriginProcess(LineProcess):
    """
    A running test origin.

    @ivar ports: scheme (C{http}, C{https}) -> port on 127.0.0.1.
    """

    def __init__(self, tlsDir: Path | None = None, interface: str = "127.0.0.1") -> None:
        argv = [sys.executable, "-m", "tests.origins", "--interface", interface]
        if tlsDir is not None:
            argv += ["--tls-dir", str(tlsDir)]
        super().__init__(argv, cwd=_ROOT)
        self.ports: dict[str, int] = {}
        try:
            for scheme in ("http", "https") if tlsDir is not None else ("http",):
                found = self.waitForLine(rf"caplab-test origin {scheme} listening on \S+:(\d+)")
                self.ports[scheme] = int(found.group(1))
        except BaseException:
            self.stop()
            raise

    def url(self, path: str = "/", scheme: str = "http", host: str = TEST_HOST) -> str:
        """
        The URL of C{path} under the test host name (which only the proxy can resolve).
        """
        return f"{scheme}://{host}:{self.ports[scheme]}{path}"

    def requests(self) -> list[dict[str, Any]]:
        """
        Every request the origin has logged so far, oldest first.
        """
        with self._changed:
            lines = list(self.lines)
        return [json.loads(line) for line in lines if line.startswith('{"event": "request"')]

    def waitForRequest(
        self, path: str, scheme: str | None = None, timeout: float = WAIT
    ) -> dict[str, Any]:
        """
        Wait until the origin has logged a request for C{path} (the path, or the whole URI
        when C{path} has a query) and return the first such request.
        """

        def test(lines: list[str]) -> dict[str, Any] | None:
            for line in lines:
                if not line.startswith('{"event": "request"'):
                    continue
                request = json.loads(line)
                if path in (request["path"], request["uri"]) and scheme in (
                    None,
                    request["scheme"],
                ):
                    return request
            return None

        return self.waitFor(test, f"a request for {path}", timeout)

    def waitForEnd(self, path: str, timeout: float = WAIT) -> dict[str, Any]:
        """
        Wait until the response to the first request for C{path} (path or whole URI) has
        ended, and return that event (its C{complete} is False if the connection was lost).
        """

        def test(lines: list[str]) -> dict[str, Any] | None:
            for line in lines:
                if line.startswith('{"event": "ended"'):
                    event = json.loads(line)
                    if path in (event["path"], event["uri"]):
                        return event
            return None

        return self.waitFor(test, f"the end of the response to {path}", timeout)

    def waitForCount(self, path: str, count: int, timeout: float = WAIT) -> None:
        """
        Wait until the origin has logged C{count} requests for C{path} (the path alone).
        """

        def test(lines: list[str]) -> bool:
            marker = f'"path": {json.dumps(path)},'
            return sum(1 for line in lines if marker in line) >= count

        self.waitFor(test, f"{count} requests for {path}", timeout)

    def stats(self) -> dict[str, int]:
        """
        Request counts per path, asked of the origin directly (not through a proxy).
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.ports["http"], timeout=WAIT)
        try:
            connection.request("GET", "/_stats")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()


@contextmanager
def runningOrigin(
    tlsDir: Path | None = None, interface: str = "127.0.0.1"
) -> Iterator[OriginProcess]:
    """
    Run the test origin on C{interface} (plain HTTP, plus HTTPS when C{tlsDir} holds
    L{tests.tls.makePKI} output) until the block ends.
    """
    origin = OriginProcess(tlsDir, interface)
    try:
        yield origin
    finally:
        origin.stop()
