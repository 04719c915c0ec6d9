"""
Helpers for end-to-end tests: run the real C{twist caplab} process and talk to it.

Every wait here is bounded and waits on an event (a log line, a process exit), never on a
fixed sleep.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: Seconds any single wait in an end-to-end test may take before the test fails.
WAIT = 20.0

_LISTENING = re.compile(r"caplab (\w+) listening on (?:\[([^\]]+)\]|([^\s:]+)):(\d+)")


def twistCommand() -> list[str]:
    """
    The installed C{twist} next to this Python (the README's install puts it there).
    """
    twist = Path(sys.executable).with_name("twist")
    if twist.exists():
        return [str(twist)]
    found = shutil.which("twist")
    return [found] if found else [sys.executable, "-m", "twisted"]


def twistdCommand() -> list[str]:
    """
    The installed C{twistd} next to this Python, in the foreground (C{-n}), logging to stdout.
    """
    twistd = Path(sys.executable).with_name("twistd")
    found = str(twistd) if twistd.exists() else shutil.which("twistd")
    command = [found] if found else [sys.executable, "-m", "twisted.scripts.twistd"]
    return [*command, "-n", "--logfile=-"]


class CaplabProcess:
    """
    A running C{twist caplab} process whose output is collected line by line.

    @ivar addresses: service name -> (host, port), from the listening lines.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        """
        @param command: what runs the plugin (default: C{twist --log-format=text}), e.g.
            L{twistdCommand}C{()}.
        @param cwd: the working directory of the process (C{twistd} writes its pid file
            there).
        """
        self.args = list(args)
        self.command = (
            list(command) if command is not None else [*twistCommand(), "--log-format=text"]
        )
        self.cwd = cwd
        self.lines: list[str] = []
        self.addresses: dict[str, tuple[str, int]] = {}
        self._changed = threading.Condition()
        self._env = dict(os.environ, **(env or {}))
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> CaplabProcess:
        self.process = subprocess.Popen(
            [*self.command, "caplab", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._env,
            cwd=self.cwd,
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        return self

    def _collect(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                match = _LISTENING.search(line)
                if match:
                    name, host6, host, port = match.groups()
                    self.addresses[name] = (host6 or host, int(port))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def waitForLine(self, pattern: str, timeout: float = WAIT, start: int = 0) -> re.Match[str]:
        """
        Wait until a line (from index C{start} on) matches C{pattern}; fail after C{timeout}.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    found = regex.search(line)
                    if found:
                        return found
                exited = self.process is not None and self.process.poll() is not None
                remaining = deadline - time.monotonic()
                if remaining <= 0 or exited:
                    raise AssertionError(
                        f"no line matching {pattern!r} within {timeout}s "
                        f"(process {'exited' if exited else 'running'}); output:\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(min(remaining, 0.5))

    def waitListening(self, *names: str, timeout: float = WAIT) -> dict[str, tuple[str, int]]:
        """
        Wait for the listening line of each named service (C{tcp}, C{udp}, C{proxy}).
        """
        for name in names:
            self.waitForLine(rf"caplab {name} listening on ", timeout)
        return self.addresses

    def port(self, name: str) -> int:
        return self.addresses[name][1]

    def wait(self, timeout: float = WAIT) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = WAIT) -> int:
        """
        SIGTERM, then wait for the exit (SIGKILL only if it does not come).
        """
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


@contextmanager
def runningCaplab(*args: str, services: Sequence[str] = ("tcp", "udp")) -> Iterator[CaplabProcess]:
    """
    Run C{twist caplab ARGS}, wait until C{services} listen, and stop it afterwards.

    Ports default to 0 (free ports) unless C{args} name them.
    """
    argv = list(args)
    for option in ("--tcp-port", "--udp-port", "--proxy-port"):
        if not any(a.startswith(option) for a in argv):
            argv += [option, "0"]
    process = CaplabProcess(argv).start()
    try:
        process.waitListening(*services)
        yield process
    finally:
        process.stop()


@contextmanager
def fullAcceptQueue() -> Iterator[int]:
    """
    A loopback port whose accept queue is full: the kernel drops further SYNs, so a new
    connection attempt times out instead of being refused.  Yields the port.
    """
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        queued: list[socket.socket] = []
        try:
            while True:
                sock = socket.socket()
                sock.settimeout(0.2)
                queued.append(sock)
                try:
                    sock.connect(("127.0.0.1", port))
                except TimeoutError:
                    break
                assert len(queued) < 10, "the accept queue never filled"
            yield port
        finally:
            for sock in queued:
                sock.close()
