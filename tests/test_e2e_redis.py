"""
The Redis-shared cache end to end: a real C{redis-server} on a loopback port, two real
C{twist caplab} proxies sharing it, and the counting test origin (L{tests.origins}).
"""

from __future__ import annotations

import http.client
import itertools
import re
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
def runningRedis(port: int, workdir: Path, *extra: str) -> Iterator[LineProcess]:
    """
    A throw-away C{redis-server} on 127.0.0.1:PORT, nothing persisted, with C{extra}
    arguments (C{--requirepass}, a config file, TLS ...).
    """
    config = [a for a in extra if a.endswith(".conf")]
    options = [a for a in extra if not a.endswith(".conf")]
    server = LineProcess(
        [
            requireProgram("redis-server"),
            *config,
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
            *options,
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


def command(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def redisKeys(port: int, auth: tuple[bytes, ...] = ()) -> int:
    """
    How many keys the Redis on C{port} holds (C{DBSIZE}, spoken directly, after C{AUTH}
    with C{auth} if given).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
        if auth:
            conn.sendall(command(b"AUTH", *auth))
            assert conn.recv(64).startswith(b"+OK")
        conn.sendall(command(b"DBSIZE"))
        reply = conn.recv(64)
    assert reply.startswith(b":"), reply
    return int(reply[1:].split(b"\r\n", 1)[0])


def waitForKeys(port: int, count: int, auth: tuple[bytes, ...] = ()) -> None:
    """
    Wait (bounded) until Redis holds C{count} keys: a proxy writes an entry through to Redis
    after its response ended, so another proxy can only find it once that write landed.
    """
    deadline = time.monotonic() + WAIT
    while redisKeys(port, auth) < count:
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
        for proxy in (first, second):
            # the retries during the outage are logged readably
            proxy.process.waitForLine(
                r"to connect Redis at 127\.0\.0\.1:\d+/0 in \d+(\.\d)? seconds"
            )
            assert not _LONG_SECONDS.search(proxy.process.output), proxy.process.output
            assert " object at 0x" not in proxy.process.output


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


#: The password of the test Redis: it must never appear in caplab's output.
PASSWORD = "pw-Xq7-never-logged"

#: No retry delay printed with a run of decimals ("in 2.725240993582395 seconds").
_LONG_SECONDS = re.compile(r"\d\.\d{4,} seconds")


def assertShared(
    first: ProxyUnderTest,
    second: ProxyUnderTest,
    origin: OriginProcess,
    port: int,
    auth: tuple[bytes, ...] = (),
) -> None:
    """
    A response stored through C{first} is a hit through C{second}.
    """
    path = unique()
    body, status = fetch(first, origin, path)
    assert status == "caplab; fwd=miss; stored"
    waitForKeys(port, 2, auth)
    again, status = fetch(second, origin, path)
    assert (again, status[:11]) == (body, "caplab; hit")


def assertClean(*proxies: ProxyUnderTest) -> None:
    for proxy in proxies:
        output = proxy.process.output
        assert PASSWORD not in output
        assert "NOAUTH" not in output and "Traceback" not in output
        assert not _LONG_SECONDS.search(output), output


def test_passwordAuthenticates(origin: OriginProcess, tmp_path: Path) -> None:
    """
    C{redis://:PASSWORD@HOST:PORT/DB} logs in to a C{requirepass} Redis: two proxies share
    their cache; the password never reaches the log (issue 11).
    """
    port = freePort()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    with ExitStack() as stack:
        stack.enter_context(runningRedis(port, tmp_path, "--requirepass", PASSWORD))
        first = stack.enter_context(runningProxy(origin, tmp_path / "a", "--cache-redis", url))
        second = stack.enter_context(runningProxy(origin, tmp_path / "b", "--cache-redis", url))
        assertShared(first, second, origin, port, (PASSWORD.encode(),))
        assertClean(first, second)


def test_aclUser(origin: OriginProcess, tmp_path: Path) -> None:
    """
    C{redis://USER:PASSWORD@...} logs in as a Redis 6 ACL user (the default user off).
    """
    port = freePort()
    config = tmp_path / "acl.conf"
    config.write_text(f"user default off\nuser cacheuser on >{PASSWORD} ~caplab:* &* +@all\n")
    url = f"redis://cacheuser:{PASSWORD}@127.0.0.1:{port}/0"
    with ExitStack() as stack:
        stack.enter_context(runningRedis(port, tmp_path, str(config)))
        first = stack.enter_context(runningProxy(origin, tmp_path / "a", "--cache-redis", url))
        second = stack.enter_context(runningProxy(origin, tmp_path / "b", "--cache-redis", url))
        assertShared(first, second, origin, port, (b"cacheuser", PASSWORD.encode()))
        assertClean(first, second)


def test_wrongPasswordOneClearLine(origin: OriginProcess, tmp_path: Path) -> None:
    """
    A wrong password: one line saying Redis refused to log in, the proxy serves uncached,
    the password is not logged.
    """
    port = freePort()
    url = f"redis://:{PASSWORD}-wrong@127.0.0.1:{port}/0"
    with ExitStack() as stack:
        stack.enter_context(runningRedis(port, tmp_path, "--requirepass", "another"))
        proxy = stack.enter_context(runningProxy(origin, tmp_path / "a", "--cache-redis", url))
        proxy.process.waitForLine(r"Redis at 127\.0\.0\.1:\d+/0 refused to log in \(.*WRONGPASS")
        assert fetch(proxy, origin, unique())[0]
        assert len(proxy.process.output.split("refused to log in")) == 2, "logged once"
        assert "is unreachable" not in proxy.process.output
        assertClean(proxy)


def test_tls(origin: OriginProcess, tmp_path: Path) -> None:
    """
    C{rediss://} with the CA given in C{ssl_ca_certs}: TLS with the server's certificate
    verified; a Redis whose certificate another CA signed is never used.
    """
    from tests.tls import makePKI

    pki = makePKI(tmp_path / "pki")
    other = makePKI(tmp_path / "other")
    port, plain = freePort(), freePort()
    tls = [
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(pki.serverCert),
        "--tls-key-file",
        str(pki.serverKey),
        "--tls-ca-cert-file",
        str(pki.caCert),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        PASSWORD,
    ]
    url = f"rediss://:{PASSWORD}@localhost:{port}/0?ssl_ca_certs={pki.caCert}"
    untrusted = f"rediss://:{PASSWORD}@localhost:{port}/0?ssl_ca_certs={other.caCert}"
    with ExitStack() as stack:
        stack.enter_context(runningRedis(plain, tmp_path, *tls))
        first = stack.enter_context(runningProxy(origin, tmp_path / "a", "--cache-redis", url))
        second = stack.enter_context(runningProxy(origin, tmp_path / "b", "--cache-redis", url))
        assertShared(first, second, origin, plain, (PASSWORD.encode(),))
        doubtful = stack.enter_context(
            runningProxy(origin, tmp_path / "c", "--cache-redis", untrusted)
        )
        shared = unique()
        fetch(first, origin, shared)
        waitForKeys(plain, 4, (PASSWORD.encode(),))
        body, status = fetch(doubtful, origin, shared)
        assert status == "caplab; fwd=miss; stored", "never read from an unverified Redis"
        doubtful.process.waitForLine(
            r"TLS with Redis at localhost:\d+/0 \(TLS\) failed \(TLS: certificate verify failed\)"
        )
        assertClean(first, second, doubtful)


class _Replies:
    """
    Reads RESP replies from a socket (enough of RESP for the bounded read's test).
    """

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            more = self.conn.recv(65536)
            assert more, "Redis closed the connection"
            self.buffer += more
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, count: int) -> bytes:
        while len(self.buffer) < count + 2:
            more = self.conn.recv(1 << 20)
            assert more, "Redis closed the connection"
            self.buffer += more
        data, self.buffer = self.buffer[:count], self.buffer[count + 2 :]
        return data

    def reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        assert kind != b"-", line
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        if kind == b"$":
            return None if int(rest) < 0 else self._exactly(int(rest))
        return int(rest) if kind == b":" else rest


def test_primeReadIsBounded(tmp_path: Path) -> None:
    """
    The script that brings a URI's entries from Redis (redisstore._GET), run by a real
    Redis, takes at most the members, the size of each and the bytes in all it is given,
    skips a value that is not a string, and drops the members whose value is gone: another
    writer of the same Redis cannot make a proxy pull gigabytes.
    """
    from caplab.proxy.cache import redisstore

    port = freePort()
    with (
        runningRedis(port, tmp_path),
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn,
    ):
        replies = _Replies(conn)
        sent = []
        for i in range(300):
            sent.append(command(b"SADD", b"u:a", b"m%d" % i))
            sent.append(command(b"SET", b"e:a:m%d" % i, b"x" * 1000))
        for member in (b"ok", b"gone", b"list", b"huge"):
            sent.append(command(b"SADD", b"u:b", member))
        sent.append(command(b"SET", b"e:b:ok", b"fine"))
        sent.append(command(b"RPUSH", b"e:b:list", b"not a string"))
        sent.append(command(b"SET", b"e:b:huge", b"x" * (2 << 20)))
        conn.sendall(b"".join(sent))
        for _ in sent:
            replies.reply()

        def read(index: bytes, prefix: bytes, most: int, longest: int, budget: int) -> object:
            arguments = [b"%d" % n for n in (most, longest, budget)]
            conn.sendall(
                command(b"EVAL", redisstore._GET.encode(), b"1", index, prefix, *arguments)
            )
            return replies.reply()

        values = read(b"u:a", b"e:a:", 144, 1000, 50_000)
        assert isinstance(values, list)
        assert len(values) == 50, "the bytes in all"
        values = read(b"u:a", b"e:a:", 20, 1000, 1 << 30)
        assert isinstance(values, list) and len(values) == 20, "the members"
        assert read(b"u:a", b"e:a:", 144, 999, 1 << 30) == [], "the size of each"
        assert read(b"u:b", b"e:b:", 10, 1 << 20, 1 << 30) == [b"fine"]
        conn.sendall(command(b"SMEMBERS", b"u:b"))
        members = replies.reply()
        assert isinstance(members, list)
        assert sorted(members) == [b"huge", b"list", b"ok"], "the gone member dropped"
