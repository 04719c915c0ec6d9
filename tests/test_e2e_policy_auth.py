"""
End-to-end tests of proxy authentication through the real C{twist caplab}: hashes made by a
real C{htpasswd} (Apache's, from apache2-utils), and a good login answered promptly while 150
connections from another address send wrong passwords (issue 9 item 7, issue 11), with the
failures logged by address, rate-limited.

L{Flood} is also what C{benchmarks/auth_flood.py} runs.
"""

from __future__ import annotations

import re
import selectors
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import bcrypt
import pytest

from caplab.proxy.auth import basicCredentials
from tests.conftest import requireProgram
from tests.origins import WAIT, OriginProcess
from tests.origins.proxy import runningProxy
from tests.support import CaplabProcess
from tests.test_e2e_policy import codes, curl

pytestmark = pytest.mark.e2e


class Flood:
    """
    C{connections} keep-alive connections from C{source} to a proxy, each sending a request
    with a new wrong password as soon as the last was answered, until stopped (or for at most
    C{limit} seconds): a thread with one selector.

    @ivar answered: responses received; @ivar statuses: their status codes, counted.
    """

    def __init__(
        self,
        proxy: tuple[str, int],
        url: str,
        connections: int = 150,
        source: str = "127.0.0.2",
        user: str = "alice",
        limit: float = 60.0,
    ) -> None:
        self.proxy = proxy
        self.url = url
        self.connections = connections
        self.source = source
        self.user = user
        self.limit = limit
        self.answered = 0
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self._sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auth-flood", daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _request(self) -> bytes:
        self._sent += 1
        credentials = basicCredentials(self.user, f"wrong-{self._sent}")
        host = self.url.split("/")[2]
        return (
            f"GET {self.url} HTTP/1.1\r\nHost: {host}\r\n".encode()
            + b"Proxy-Authorization: "
            + credentials
            + b"\r\n\r\n"
        )

    def _open(self, selector: selectors.BaseSelector) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.source, 0))
        sock.setblocking(False)
        sock.connect_ex(self.proxy)
        selector.register(sock, selectors.EVENT_WRITE, [b"", self._request()])

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        deadline = time.monotonic() + self.limit
        for _ in range(self.connections):
            self._open(selector)
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                for key, events in selector.select(0.1):
                    self._step(selector, key, events)
        finally:
            for key in list(selector.get_map().values()):
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()

    def _step(
        self, selector: selectors.BaseSelector, key: selectors.SelectorKey, events: int
    ) -> None:
        sock: socket.socket = key.fileobj  # type: ignore[assignment]
        state = key.data
        try:
            if events & selectors.EVENT_WRITE:
                sent = sock.send(state[1])
                state[1] = state[1][sent:]
                if not state[1]:
                    selector.modify(sock, selectors.EVENT_READ, state)
                return
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.errors += 1
            selector.unregister(sock)
            sock.close()
            if not self._stop.is_set():
                self._open(selector)
            return
        state[0] += data
        head, sep, rest = state[0].partition(b"\r\n\r\n")
        if not sep:
            return
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        size = int(length.group(1)) if length else 0
        if len(rest) < size:
            return
        status = int(head.split(b" ", 2)[1])
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.answered += 1
        state[0] = rest[size:]
        state[1] = self._request()
        selector.modify(sock, selectors.EVENT_WRITE, state)


def timedLogin(proxy: str, url: str, user: str = "alice", password: str = "s3cret") -> float:
    """
    A good login through the proxy with curl: assert it succeeds, return its duration.
    """
    result = subprocess.run(
        [
            requireProgram("curl"), "-sS", "--max-time", str(WAIT), "-x", f"http://{proxy}",
            "--proxy-user", f"{user}:{password}", "-o", "/dev/null",
            "-w", "%{http_code} %{time_total}", url,
        ],
        capture_output=True,
        timeout=WAIT + 5,
    )  # fmt: skip
    code, took = result.stdout.split()
    assert code == b"200", result
    return float(took)


README = Path(__file__).resolve().parent.parent / "README.rst"


def fail2banHosts(lines: list[str], workdir: Path) -> list[str]:
    """
    The hosts fail2ban's own C{fail2ban-regex} finds in log C{lines} with the filter README.rst
    gives.
    """
    program = requireProgram("fail2ban-regex")
    text = README.read_text()
    start = text.index("    # /etc/fail2ban/filter.d/caplab.conf\n")
    end = text.index("\n\n", start)
    conf = workdir / "caplab.conf"
    conf.write_text("\n".join(line[4:] for line in text[start:end].splitlines()) + "\n")
    log = workdir / "caplab.log"
    log.write_text("\n".join(lines) + "\n")
    found = subprocess.run(
        [program, "-o", "ip", str(log), str(conf)], capture_output=True, text=True, timeout=WAIT
    )
    assert found.returncode == 0, found
    return found.stdout.split()


def test_goodLoginDuringFlood(origin: OriginProcess, tmp_path: Path) -> None:
    """
    While 150 connections from 127.0.0.2 send wrong passwords (bcrypt cost 10), a first
    login from 127.0.0.1 is answered 200 within a second (it waited behind the whole queue of
    wrong ones, over ten seconds, before); the failures are logged with the flooding address,
    no more than five lines of them per ten seconds, then a count, in lines the README's
    fail2ban filter finds the address in.
    """
    users = tmp_path / "users.htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(10)).decode()
    users.write_text(f"alice:{hashed}\n")
    with runningProxy(origin, tmp_path, "--auth-file", str(users)) as proxy:
        assert isinstance(proxy.process, CaplabProcess)
        with Flood((proxy.host, proxy.port), origin.url("/hello/flood")) as flood:
            proxy.process.waitForLine(r"proxy authentication failed from 127\.0\.0\.2 for user")
            deadline = time.monotonic() + WAIT
            while flood.answered < 10:  # the flood's wrong passwords are being checked
                assert time.monotonic() < deadline, (flood.statuses, flood.errors)
                time.sleep(0.05)
            took = timedLogin(proxy.address, origin.url("/hello/good"))
            assert took < 1.0, (took, flood.answered)
            start = len(proxy.process.lines)
        proxy.process.waitForLine(
            r"proxy authentication failed from 127\.0\.0\.2 \d+ more times in 10 s "
            r"\(user 'alice'\)",
            start=start,
        )
        single = [
            line
            for line in proxy.process.lines
            if "proxy authentication failed from 127.0.0.2 for user 'alice'" in line
        ]
        assert 1 <= len(single) <= 10, single  # five per ten seconds: at most two intervals
        failures = [
            line
            for line in proxy.process.lines
            if "proxy authentication failed from 127.0.0.2 " in line
        ]
        assert fail2banHosts(proxy.process.lines, tmp_path) == ["127.0.0.2"] * len(failures)
        assert "wrong-" not in proxy.process.output
        assert flood.statuses.get(407, 0) == flood.answered > 10, flood.statuses


def test_htpasswdHashes(origin: OriginProcess, tmp_path: Path) -> None:
    """
    Users added by Apache's own C{htpasswd} log in: its default (Apache MD5, with one warning
    in the log that bcrypt is better), C{-B} (bcrypt) and C{-5} (SHA-512 crypt); C{-s}
    ({SHA}) and C{-p} (plain text) stop C{twist caplab} with a message naming file and line.
    """
    htpasswd = requireProgram("htpasswd")
    users = tmp_path / "users.htpasswd"
    for flags, user in [(["-c"], "md5"), (["-B"], "bcrypt"), (["-5"], "sha512")]:
        subprocess.run(
            [htpasswd, "-b", *flags, str(users), user, f"pw-{user}"], check=True, timeout=WAIT
        )
    assert "md5:$apr1$" in users.read_text()
    with runningProxy(origin, tmp_path, "--auth-file", str(users)) as proxy:
        assert isinstance(proxy.process, CaplabProcess)
        warning = proxy.process.waitForLine(r"Apache MD5 \(\$apr1\$\) hashes \('md5'\)")
        assert "htpasswd -B" in warning.string
        for user in ["md5", "bcrypt", "sha512"]:
            timedLogin(proxy.address, origin.url(f"/hello/{user}"), user, f"pw-{user}")
        wrong = curl(proxy.address, "--proxy-user", "md5:pw-bcrypt", origin.url("/hello/x"))
        assert codes(wrong)[0] == 407, wrong
        assert len(re.findall(r"Apache MD5", proxy.process.output)) == 1
        assert "pw-" not in proxy.process.output

    for flag, why in [("-s", "{SHA}"), ("-p", "unsupported hash")]:
        weak = tmp_path / f"weak{flag}.htpasswd"
        subprocess.run(
            [htpasswd, "-c", "-b", flag, str(weak), "eve", "pw"], check=True, timeout=WAIT
        )
        process = CaplabProcess(
            ["--no-tcp", "--no-udp", "--proxy-port", "0", "--auth-file", str(weak)]
        ).start()
        try:
            assert process.wait() != 0
        finally:
            process.stop()
        assert f"{weak}:1" in process.output and why in process.output, process.output
        assert "Traceback" not in process.output, process.output


def test_fail2banJsonLog(tmp_path: Path) -> None:
    """
    The README's fail2ban filter finds the client address in the failure events as
    Twisted writes them in a JSON log (C{twist --log-format=json}, the systemd unit's), and
    nowhere else, however the user name is crafted.
    """
    from twisted.internet.task import Clock
    from twisted.logger import capturedLogs, eventAsJSON

    from caplab.proxy.throttle import FailureLog

    clock = Clock()
    clock.advance(1_800_000_000)
    failures = FailureLog(clock, perAddress=1)
    with capturedLogs() as events:
        failures.failed("192.0.2.7", "alice")
        failures.failed("2001:db8::5", 'x", "client": "10.6.6.6", "log_format": "x')
        failures.failed("192.0.2.7", "from 10.6.6.6 ")
        clock.advance(10)
    lines = [eventAsJSON(event) for event in events]
    assert len(lines) == 3, lines
    assert fail2banHosts(lines, tmp_path) == ["192.0.2.7", "2001:db8::5", "192.0.2.7"]
