"""
The proxy's promises under a dying or lying origin and a hostile client, through the real
C{twist caplab} process: a body cut off is never relayed or stored as whole; control bytes
in an origin's fields never reach the client raw; interim responses are relayed, never
stored; absurd sizes and unadmitted expectations are refused at once.

The origin is L{tests.origins.scripted.ScriptedOrigin}: it sends exactly the bytes a test
scripts, resets included.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from tests.clients import codeAndBody, curl, rawExchange, readResponseHead
from tests.origins import WAIT
from tests.origins.proxy import ProxyUnderTest
from tests.origins.scripted import OriginConnection, ScriptedOrigin
from tests.support import runningCaplab

pytestmark = pytest.mark.e2e

CACHEABLE = b"Cache-Control: public, max-age=600\r\n"


def _proxy(*args: str) -> Iterator[ProxyUnderTest]:
    with runningCaplab("--no-tcp", "--no-udp", *args, services=("proxy",)) as caplab:
        host, port = caplab.addresses["proxy"]
        yield ProxyUnderTest(host, port, caplab)


@pytest.fixture
def proxy() -> Iterator[ProxyUnderTest]:
    """
    A fresh proxy (caching on) with its access log on standard output.
    """
    yield from _proxy("--access-log", "-")


@pytest.fixture(params=["cache", "no-cache"])
def eitherProxy(request: pytest.FixtureRequest) -> Iterator[ProxyUnderTest]:
    """
    A fresh proxy with caching on (its fetcher is the cache, told through a Deferred), or
    off (the exchange told directly by the forwarder): what an origin does wrong is
    answered alike both ways.
    """
    yield from _proxy("--no-cache") if request.param == "no-cache" else _proxy()


@pytest.fixture
def origin() -> Iterator[ScriptedOrigin]:
    with ScriptedOrigin() as running:
        yield running


def _answer(body: bytes) -> Callable[[OriginConnection], None]:
    def script(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.respond(headers=[(b"Cache-Control", b"public, max-age=600")], body=body)
        conn.close()

    return script


# Bodies cut off


def _cutByReset(conn: OriginConnection) -> None:
    conn.readRequest()
    conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + CACHEABLE + b"\r\n" + b"x" * 50000)
    conn.reset()


def test_closeDelimitedBodyResetIsCutNotStored(
    origin: ScriptedOrigin, proxy: ProxyUnderTest
) -> None:
    """
    An origin that sends 50,000 bytes of a body that lasts until the connection closes, then
    resets the connection: curl sees a transfer cut off (no last chunk: exit 18), and the
    next client is not served those bytes from the cache: the origin is asked again.
    """
    origin.script(_cutByReset, _answer(b"whole"))
    first = curl(proxy, origin.url("/cut"))
    assert first.returncode == 18, (first.returncode, first.stderr)
    assert 0 < len(first.stdout) <= 50000
    second = curl(proxy, "-w", "\n%{http_code}", origin.url("/cut"))
    assert codeAndBody(second) == (200, b"whole")
    assert len(origin.waitForRequests(2)) == 2


def test_closeDelimitedBodyStalledIsCutNotStored(origin: ScriptedOrigin) -> None:
    """
    The same body stalling until C{--upstream-timeout} aborts it: cut off for the client,
    not stored.
    """
    released = []

    def stall(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + CACHEABLE + b"\r\n" + b"x" * 50000)
        released.append(conn.waitClosed())

    origin.script(stall, _answer(b"whole"))
    for proxy in _proxy("--upstream-timeout", "1"):
        started = time.monotonic()
        first = curl(proxy, origin.url("/stall"))
        assert first.returncode == 18, (first.returncode, first.stderr)
        assert time.monotonic() - started < WAIT / 2
        second = curl(proxy, origin.url("/stall"))
        assert second.stdout == b"whole"


def test_closeDelimitedBodyEndedInOrderIsStored(
    origin: ScriptedOrigin, proxy: ProxyUnderTest
) -> None:
    """
    The control: a body that ends with an orderly close (FIN) is whole, relayed complete,
    and stored (the next client gets it from the cache).
    """

    def orderly(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + CACHEABLE + b"\r\n" + b"y" * 50000)
        conn.close()

    origin.script(orderly)
    first = curl(proxy, origin.url("/whole"))
    assert first.returncode == 0 and first.stdout == b"y" * 50000, first.stderr
    second = curl(proxy, "-D", "-", origin.url("/whole"))
    assert second.stdout.endswith(b"y" * 50000)
    assert b"hit" in second.stdout.split(b"\r\n\r\n")[0]
    assert origin.connections == 1


def test_contentLengthBodyResetIsCut(origin: ScriptedOrigin, eitherProxy: ProxyUnderTest) -> None:
    """
    A body shorter than its C{Content-Length}, then a reset: the client gets a short body
    (curl exit 18) and nothing is stored.
    """

    def short(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.send(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n" + CACHEABLE + b"\r\n" + b"z" * 500
        )
        conn.reset()

    origin.script(short, _answer(b"whole"))
    first = curl(eitherProxy, origin.url("/short"))
    assert first.returncode == 18, (first.returncode, first.stderr)
    assert curl(eitherProxy, origin.url("/short")).stdout == b"whole"


# Control bytes in fields


def test_controlBytesInOriginFieldsNeverRaw(
    origin: ScriptedOrigin, proxy: ProxyUnderTest, tmp_path: Path
) -> None:
    """
    An origin's field value with a bare LF (C{X-A: foo<LF>Set-Cookie: injected=1}), a bare
    CR or a NUL reaches the client with each replaced by a space (RFC 9110 section 5.5): no
    field line of its own, nothing in curl's cookie jar; the stored copy is the mended one.
    """

    def inject(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.send(
            b"HTTP/1.1 200 OK\r\nX-A: foo\nSet-Cookie: injected=1\r\nX-B: a\rSet-Cookie: cr=1\r\n"
            b"X-C: a\x00b\r\n" + CACHEABLE + b"Content-Length: 2\r\n\r\nok"
        )
        conn.close()

    origin.script(inject)
    jar = tmp_path / "jar"
    for attempt in ("miss", "hit"):
        result = curl(proxy, "-D", "-", "-c", str(jar), origin.url("/inject"))
        head = result.stdout.split(b"\r\n\r\n")[0]
        lines = head.split(b"\r\n")
        assert b"X-A: foo Set-Cookie: injected=1" in lines, (attempt, head)
        assert b"X-B: a Set-Cookie: cr=1" in lines, (attempt, head)
        assert b"X-C: a b" in lines, (attempt, head)
        assert not any(line.lower().startswith(b"set-cookie") for line in lines), head
        assert b"\x00" not in head and b"\n" not in head.replace(b"\r\n", b"")
        assert b"injected" not in jar.read_bytes() and b"cr=1" not in jar.read_bytes()
    assert origin.connections == 1


def test_malformedOriginHead502(origin: ScriptedOrigin, eitherProxy: ProxyUnderTest) -> None:
    """
    An origin whose head breaks the grammar where it cannot be mended (a field name with a
    space) gets the client a 502 that says so, never the head.
    """

    def broken(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.send(b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 2\r\n\r\nok")
        conn.waitClosed()

    origin.script(broken)
    code, body = codeAndBody(curl(eitherProxy, "-w", "\n%{http_code}", origin.url("/broken")))
    assert code == 502 and b"malformed" in body


def test_originClosesWithoutAnswer502(origin: ScriptedOrigin, eitherProxy: ProxyUnderTest) -> None:
    """
    An origin that reads the request and closes without a word: a 502 that says so (a
    fresh connection is not retried: the origin saw the request).
    """

    def silent(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.close()

    origin.script(silent)
    code, body = codeAndBody(curl(eitherProxy, "-w", "\n%{http_code}", origin.url("/silent")))
    assert code == 502 and b"closed the connection without a response" in body, body
    assert origin.connections == 1


def test_controlBytesMendedEitherWay(origin: ScriptedOrigin, eitherProxy: ProxyUnderTest) -> None:
    """
    A field value with a bare LF reaches the client mended, whether the cache or the
    forwarder itself answers the exchange.
    """

    def inject(conn: OriginConnection) -> None:
        conn.readRequest()
        conn.send(b"HTTP/1.1 200 OK\r\nX-A: foo\nSet-Cookie: i=1\r\nContent-Length: 2\r\n\r\nok")
        conn.close()

    origin.script(inject)
    result = curl(eitherProxy, "-D", "-", origin.url("/inject"))
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert b"\r\nX-A: foo Set-Cookie: i=1\r\n" in head + b"\r\n", head
    assert body == b"ok"


def test_controlBytesInRequestFields400(origin: ScriptedOrigin, proxy: ProxyUnderTest) -> None:
    """
    A client's field value with a NUL or a bare CR is a 400; nothing reaches the origin.
    """
    for value in (b"a\x00b", b"a\rb"):
        reply = rawExchange(
            (proxy.host, proxy.port),
            b"GET %s HTTP/1.1\r\nHost: x\r\nX-A: %s\r\n\r\n" % (origin.url("/").encode(), value),
        )
        assert reply.startswith(b"HTTP/1.1 400 "), reply
    assert origin.connections == 0


# Interim responses


def _earlyHints(conn: OriginConnection) -> None:
    conn.readRequest()
    conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
    conn.respond(headers=[(b"Cache-Control", b"public, max-age=600")], body=b"page")
    conn.close()


def test_earlyHintsRelayedNeverStored(origin: ScriptedOrigin, proxy: ProxyUnderTest) -> None:
    """
    A C{103 Early Hints} reaches an HTTP/1.1 client before the final response, with its
    fields; an HTTP/1.0 client never gets one; the stored response served later has none.
    """
    origin.script(_earlyHints, _earlyHints)
    address = (proxy.host, proxy.port)
    url = origin.url("/hints").encode()
    reply = rawExchange(address, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % url)
    assert reply.startswith(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"
    ), reply
    assert reply.endswith(b"page")
    hit = rawExchange(address, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % url)
    assert hit.startswith(b"HTTP/1.1 200 OK\r\n") and b"hit" in hit, hit
    other = origin.url("/hints-1.0").encode()
    old = rawExchange(address, b"GET %s HTTP/1.0\r\n\r\n" % other)
    assert old.startswith(b"HTTP/1.1 200 OK\r\n") and b" 103 " not in old, old


# Hostile clients


def test_absurdContentLength400(origin: ScriptedOrigin, proxy: ProxyUnderTest) -> None:
    """
    A request C{Content-Length} beyond 63 bits (or malformed) is a 400 at once, not a wait.
    """
    for length in (b"99999999999999999999999", b"9223372036854775808", b"-1", b"1, 2"):
        started = time.monotonic()
        reply = rawExchange(
            (proxy.host, proxy.port),
            b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n"
            % (origin.url("/").encode(), length),
        )
        assert reply.startswith(b"HTTP/1.1 400 "), (length, reply)
        assert time.monotonic() - started < 5
    assert origin.connections == 0


def _htpasswd(path: Path) -> Path:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"alice:{hashed}\n")
    return path


def test_expectContinueOnlyAfterAdmission(origin: ScriptedOrigin, tmp_path: Path) -> None:
    """
    With C{--auth-file}, a client that sends C{Expect: 100-continue} without credentials is
    told 407 at once, never "100 Continue" (its body would be thrown away); with good
    credentials it gets 100 Continue once the origin is ready for the body, then the answer.
    """

    def echo(conn: OriginConnection) -> None:
        request = conn.readRequest()
        conn.respond(body=b"got " + request.body)
        conn.close()

    origin.script(echo)
    url = origin.url("/upload").encode()
    head = b"PUT %s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n" % url
    for proxy in _proxy("--auth-file", str(_htpasswd(tmp_path / "users"))):
        with socket.create_connection((proxy.host, proxy.port), timeout=WAIT) as s:
            s.sendall(head + b"\r\n")
            first = readResponseHead(s)
        assert first.startswith(b"HTTP/1.1 407 "), first
        with socket.create_connection((proxy.host, proxy.port), timeout=WAIT) as s:
            s.sendall(head + b"Proxy-Authorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n")
            assert readResponseHead(s) == b"HTTP/1.1 100 Continue\r\n\r\n"
            s.sendall(b"hello")
            final = readResponseHead(s)
            assert final.startswith(b"HTTP/1.1 200 "), final
            assert s.recv(100) == b"got hello"
    assert len(origin.requests) == 1
