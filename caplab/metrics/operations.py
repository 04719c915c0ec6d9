"""
The cache's operations (purge, flush) under C{--workers}: every worker has a cache of its
own, so the supervisor's admin endpoint asks every running worker, through the metrics
directory, and adds up their answers (L{WorkersCacheAdmin}, an C{ICacheAdmin}).

The supervisor writes C{command-ID.json}; each worker sees it the next time it publishes its
figures (within a second), runs it on its own cache (L{CommandRunner}) and writes
C{result-ID-PID.json}; the supervisor waits, for a bounded time, for every worker that was
running when it asked, then removes the files.  A worker ignores commands older than a
minute, so one started later never replays them.
"""

from __future__ import annotations

import glob
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from caplab.metrics.directory import MetricsDirectory
from caplab.metrics.offload import IOffloader
from caplab.metrics.shared import readJSON, writeJSON
from caplab.proxy.hooks import ICacheAdmin

#: A worker ignores a command older than this many seconds.
COMMAND_LIFETIME = 60.0

#: Command and result files older than this are removed (left by a stopped supervisor).
STALE_AFTER = 300.0

_ID = re.compile(r"[0-9a-f]{32}")
_OPERATIONS = ("purge", "flush")
_RESULT = re.compile(r"result-([0-9a-f]{32})-(\d+)\.json")

log = Logger(namespace="caplab.admin")


class NoCache(Exception):
    """
    No worker has a cache (C{--no-cache}).
    """


@dataclass(frozen=True)
class Command:
    """
    One cache operation for every worker: C{purge} (of C{url}) or C{flush}.
    """

    id: str
    operation: str
    url: str | None
    issued: float

    def toJSON(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.operation, "url": self.url, "issued": self.issued}

    @classmethod
    def fromJSON(cls, data: object) -> Command:
        """
        @raise ValueError: not a command.
        """
        if not isinstance(data, dict):
            raise ValueError("not an object")
        id, operation, url, issued = (data.get(k) for k in ("id", "op", "url", "issued"))
        if not (isinstance(id, str) and _ID.fullmatch(id)):
            raise ValueError("id: not a command id")
        if operation not in _OPERATIONS:
            raise ValueError(f"op: not one of {_OPERATIONS}")
        if (operation == "purge") != isinstance(url, str):
            raise ValueError("url: a purge names one URL, a flush none")
        if isinstance(issued, bool) or not isinstance(issued, int | float):
            raise ValueError("issued: not a time")
        return cls(id, str(operation), url, float(issued))


def _commandFile(directory: str, id: str) -> str:
    return os.path.join(directory, f"command-{id}.json")


def _resultFile(directory: str, id: str, pid: int) -> str:
    return os.path.join(directory, f"result-{id}-{pid}.json")


def issueCommand(directory: str, command: Command) -> list[int]:
    """
    Write C{command} for the workers (after removing stale command and result files).
    Blocking.

    @return: the pids of the workers running now (those with a figures file).
    """
    for pattern in ("command-*.json", "result-*.json"):
        for path in glob.glob(os.path.join(directory, pattern)):
            try:
                if os.stat(path).st_mtime < command.issued - STALE_AFTER:
                    os.remove(path)
            except FileNotFoundError:
                pass
    writeJSON(_commandFile(directory, command.id), command.toJSON())
    pids = []
    for path in glob.glob(os.path.join(directory, "worker-*.json")):
        found = re.fullmatch(r"worker-(\d+)\.json", os.path.basename(path))
        if found:
            pids.append(int(found.group(1)))
    return sorted(pids)


def readResults(directory: str, id: str) -> dict[int, int | str]:
    """
    The workers' answers to command C{id} so far: a count, or an error's text.  Blocking.
    """
    results: dict[int, int | str] = {}
    for path in glob.glob(os.path.join(directory, f"result-{id}-*.json")):
        found = _RESULT.fullmatch(os.path.basename(path))
        if found is None:
            continue
        try:
            data = readJSON(path)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        count, error = data.get("count"), data.get("error")
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            results[int(found.group(2))] = count
        elif isinstance(error, str):
            results[int(found.group(2))] = error[:500]
    return results


def removeCommand(directory: str, id: str) -> None:
    """
    Remove command C{id} and its results.  Blocking.
    """
    paths = [_commandFile(directory, id), *glob.glob(os.path.join(directory, f"result-{id}-*"))]
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def readCommands(directory: str) -> list[Command]:
    """
    The commands waiting in C{directory} (damaged files skipped).  Blocking.
    """
    commands = []
    for path in glob.glob(os.path.join(directory, "command-*.json")):
        try:
            commands.append(Command.fromJSON(readJSON(path)))
        except (OSError, ValueError):
            continue
    return sorted(commands, key=lambda c: c.issued)


#: What a worker answers when it has no cache.
NO_CACHE = "no cache"


class WorkersCacheAdmin:
    """
    The supervisor's L{ICacheAdmin}: every running worker's cache, through the metrics
    directory.  Fires with the total removed by the workers that answered within
    C{timeout} (those that did not are logged); fails if none did.
    """

    def __init__(
        self,
        directory: MetricsDirectory,
        reactor: Any,
        timeout: float = 5.0,
        poll: float = 0.1,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.offloader: IOffloader = directory.offloader
        self.reactor = reactor
        self.timeout = timeout
        self.poll = poll
        self.now = now

    def purge(self, uri: str) -> Deferred[int]:
        return ensureDeferred(self._ask("purge", uri))

    def flush(self) -> Deferred[int]:
        return ensureDeferred(self._ask("flush", None))

    async def _ask(self, operation: str, url: str | None) -> int:
        path = self.directory.path
        if path is None:
            raise RuntimeError("the server is stopping")
        command = Command(uuid.uuid4().hex, operation, url, self.now())
        expected = set(await self.offloader.run(issueCommand, path, command))
        deadline = self.reactor.seconds() + self.timeout
        results: dict[int, int | str] = {}
        try:
            while expected - set(results) and self.reactor.seconds() < deadline:
                await deferLater(self.reactor, self.poll, lambda: None)
                results = await self.offloader.run(readResults, path, command.id)
        finally:
            await self.offloader.run(removeCommand, path, command.id)
        return self._total(command, expected, results)

    def _total(self, command: Command, expected: set[int], results: dict[int, int | str]) -> int:
        counts = [results[pid] for pid in sorted(expected) if isinstance(results.get(pid), int)]
        errors = {pid: results[pid] for pid in expected if isinstance(results.get(pid), str)}
        missing = sorted(expected - set(results))
        if expected and not counts and set(errors.values()) == {NO_CACHE}:
            raise NoCache()
        problems = [f"pid {pid}: {error}" for pid, error in sorted(errors.items())]
        problems += [f"pid {pid}: no answer within {self.timeout:g}s" for pid in missing]
        if problems:
            log.warn(
                "caplab admin: cache {operation} incomplete: {problems}",
                operation=command.operation,
                problems="; ".join(problems),
            )
        if expected and not counts:
            raise RuntimeError(f"no worker answered the cache {command.operation}")
        return sum(int(c) for c in counts)


class CommandRunner:
    """
    A worker's side: runs each new command on this worker's cache and answers it.
    """

    def __init__(
        self,
        directory: str,
        offloader: IOffloader,
        pid: int,
        cache: ICacheAdmin | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        """
        @param cache: this worker's cache (None: it has none).
        """
        self.directory = directory
        self.offloader = offloader
        self.pid = pid
        self.cache = cache
        self.now = now
        self._seen: set[str] = set()

    def run(self, commands: list[Command]) -> None:
        """
        Run the commands not seen before (and not too old); forget those no longer there.
        """
        present = {command.id for command in commands}
        self._seen &= present
        for command in commands:
            if command.id in self._seen:
                continue
            self._seen.add(command.id)
            if self.now() - command.issued > COMMAND_LIFETIME:
                continue
            self._run(command)

    def _run(self, command: Command) -> None:
        cache = self.cache
        if cache is None:
            self._answer(command, {"error": NO_CACHE})
            return
        if command.operation == "flush":
            d = cache.flush()
        else:
            assert command.url is not None
            d = cache.purge(command.url)

        def failed(failure: Failure) -> None:
            self._answer(command, {"error": failure.getErrorMessage() or repr(failure.value)})

        d.addCallbacks(lambda count: self._answer(command, {"count": int(count)}), failed)

    def _answer(self, command: Command, answer: dict[str, object]) -> None:
        path = _resultFile(self.directory, command.id, self.pid)
        d = self.offloader.run(writeJSON, path, {"id": command.id, "pid": self.pid, **answer})
        d.addErrback(
            lambda failure: log.warn(
                "caplab admin: cannot answer cache {operation}: {error}",
                operation=command.operation,
                error=failure.getErrorMessage(),
            )
        )
