"""
The Redis-shared cache end to end: a real C{redis-server} on a loopback port, two real
C{twist caplab} proxies sharing it, and the counting test origin (L{tests.origins}).
"""

from __future__ import annotations

import http.client
import itertools
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.conftest import requireProgram
from tests.origins import WAIT, LineProcess, OriginProcess, runningOrigin
from tests.origins.proxy import ProxyUnderTest, runningProxy

pytestmark = pytest.mark.e2e


def freePort() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def runningRedis(port: int, workdir: Path) -> Iterator[LineProcess]:
    """
    A throw-away C{redis-server} on 127.0.0.1:PORT, nothing persisted.
    """
    server = LineProcess(
        [
            requireProgram("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ]  # fmt: skip
    )
    try:
        server.waitForLine(r"Ready to accept connections")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def origin() -> Iterator[OriginProcess]:
    with runningOrigin() as running:
        yield running


def fetch(proxy: ProxyUnderTest, origin: OriginProcess, path: str) -> tuple[bytes, str]:
    """
    GET through C{proxy}: the body and the C{Cache-Status} header.
    """
    connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=WAIT)
    try:
        connection.request("GET", origin.url(path))
        response = connection.getresponse()
        assert response.status == 200
        return response.read(), response.headers.get("Cache-Status", "")
    finally:
        connection.close()


def redisKeys(port: int) -> int:
    """
    How many keys the Redis on C{port} holds (C{DBSIZE}, spoken directly).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
        conn.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
        reply = conn.recv(64)
    assert reply.startswith(b":"), reply
    return int(reply[1:].split(b"\r\n", 1)[0])


def waitForKeys(port: int, count: int) -> None:
    """
    Wait (bounded) until Redis holds C{count} keys: a proxy writes an entry through to Redis
    after its response ended, so another proxy can only find it once that write landed.
    """
    deadline = time.monotonic() + WAIT
    while redisKeys(port) < count:
        assert time.monotonic() < deadline, f"Redis never held {count} keys"
        time.sleep(0.02)


def unique() -> str:
    return f"/run/{uuid.uuid4().hex[:12]}/cache/max-age=600"


def test_twoProxiesShareHitsAndSurviveRedisOutage(origin: OriginProcess, tmp_path: Path) -> None:
    """
    A response fetched through one caplab is a hit through another; with Redis killed both
    keep serving (uncached) and the outage is logged once; once Redis is back, sharing
    resumes without a restart.
    """
    port = freePort()
    url = f"redis://127.0.0.1:{port}/0"
    with ExitStack() as stack:
        redis = stack.enter_context(runningRedis(port, tmp_path))
        first = stack.enter_context(runningProxy(origin, tmp_path / "a", "--cache-redis", url))
        second = stack.enter_context(runningProxy(origin, tmp_path / "b", "--cache-redis", url))

        shared = unique()
        body, status = fetch(first, origin, shared)
        assert status == "caplab; fwd=miss; stored"
        waitForKeys(port, 2)  # the variant and the URI's index
        again, status = fetch(second, origin, shared)
        assert again == body
        assert status.startswith("caplab; hit"), status
        assert origin.stats()[shared] == 1

        redis.process.send_signal(signal.SIGKILL)
        redis.process.wait(WAIT)
        during = unique()
        for proxy in (first, second):
            assert fetch(proxy, origin, during)[0]
        for proxy in (first, second):
            proxy.process.waitForLine(r"Redis at 127\.0\.0\.1:\d+/0 is unreachable")
            assert len(proxy.process.output.split("is unreachable")) == 2, "logged once"
        assert "Traceback" not in first.process.output + second.process.output
        assert fetch(first, origin, shared)[0] == body, "the near cache still answers"

        stack.enter_context(runningRedis(port, tmp_path))
        after = unique()
        # Right after the outage the proxies leave Redis alone for a second (the circuit is
        # open), so poll, bounded: store through one proxy until the other one hits.
        deadline = time.monotonic() + WAIT
        for attempt in itertools.count():
            path = f"{after}?{attempt}"
            fetch(first, origin, path)
            if fetch(second, origin, path)[1].startswith("caplab; hit"):
                break
            assert time.monotonic() < deadline, "sharing did not resume after Redis came back"
            time.sleep(0.1)
        first.process.waitForLine(r"Redis at 127\.0\.0\.1:\d+/0 is reachable again")


def test_badRedisURLIsAUsageError(tmp_path: Path) -> None:
    """
    A malformed C{--cache-redis} ends with a one-line usage error, not a traceback.
    """
    from tests.support import twistCommand

    result = subprocess.run(
        [*twistCommand(), "caplab", "--no-tcp", "--no-udp", "--cache-redis", "http://nope"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode != 0
    assert "redis://HOST[:PORT][/DB]" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
