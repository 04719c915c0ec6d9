"""
Run the proxy under test in front of a test origin: the real C{twist caplab} process, with the
test host name resolved to loopback inside the proxy and the origin's TLS port allowed for
CONNECT, writing its access log to a file the test reads.

With C{CAPLAB_TEST_PEER_PROXY=1} in the environment the same tests run against proxy.py
instead (if installed), which checks the harness against a proxy nobody here wrote: the
browser tests and the body, download, CONNECT and concurrency tests pass there too; the
checks of caplab's own choices (403/501/504 pages, hop-by-hop removal, caching) do not.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.origins import WAIT, LineProcess, OriginProcess
from tests.support import CaplabProcess, runningCaplab
from tests.tls import TEST_HOST


@dataclass
class ProxyUnderTest:
    """
    A running proxy: where it listens, its process, and its access log.
    """

    host: str
    port: int
    process: CaplabProcess | LineProcess
    accessLog: Path
    peer: bool = False

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def accessLines(self) -> list[str]:
        """
        The access log's complete lines so far.
        """
        try:
            text = self.accessLog.read_text("utf-8", "replace")
        except FileNotFoundError:
            return []
        return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]

    def waitForAccess(
        self, method: str, target: str, status: int | None = None, timeout: float = WAIT
    ) -> str:
        """
        Wait (bounded) until the access log has a Combined Log Format line for C{method
        target} (with C{status}, if given) and return it.

        The log is a file written by another process, so this polls it every 20 ms until the
        line appears or C{timeout} passes.
        """
        if self.peer:
            # proxy.py logs one line per connection (its last request), "- GET host:port/path
            # - 200 OK ...", so only the method and the authority can be looked for.
            authority = target.split("://", 1)[-1].split("/", 1)[0]
            pattern = re.compile(rf"- {re.escape(method)} {re.escape(authority)}[/ ]")
        else:
            pattern = re.compile(
                rf'"{re.escape(method)} {re.escape(target)} HTTP/1\.[01]" '
                + (str(status) if status is not None else r"\d{3}")
                + r"\b"
            )
        deadline = time.monotonic() + timeout
        while True:
            for line in self.accessLines():
                if pattern.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no access-log line for {method} {target} {status or ''} within "
                    f"{timeout}s; access log:\n" + "\n".join(self.accessLines()[-50:])
                )
            time.sleep(0.02)


def proxyArguments(origin: OriginProcess, accessLog: Path, caCert: Path | None) -> list[str]:
    """
    The C{twist caplab} options that put the proxy in front of C{origin}.
    """
    arguments = [
        "--no-tcp",
        "--no-udp",
        "--resolve",
        f"{TEST_HOST}=127.0.0.1",
        "--access-log",
        str(accessLog),
    ]
    if "https" in origin.ports:
        arguments += ["--connect-ports", f"443,{origin.ports['https']}"]
    if caCert is not None:
        arguments += ["--upstream-ca", str(caCert)]
    return arguments


@contextmanager
def runningProxy(
    origin: OriginProcess, workdir: Path, *extra: str, caCert: Path | None = None
) -> Iterator[ProxyUnderTest]:
    """
    Run C{twist caplab} with only its proxy, in front of C{origin}, plus C{extra} options.
    """
    accessLog = workdir / "access.log"
    if os.environ.get("CAPLAB_TEST_PEER_PROXY"):
        with _runningPeer(workdir, accessLog) as peer:
            yield peer
        return
    with runningCaplab(
        *proxyArguments(origin, accessLog, caCert), *extra, services=("proxy",)
    ) as caplab:
        host, port = caplab.addresses["proxy"]
        yield ProxyUnderTest(host, port, caplab, accessLog)


@contextmanager
def _runningPeer(workdir: Path, accessLog: Path) -> Iterator[ProxyUnderTest]:
    """
    proxy.py on a free port, resolving the test host with L{tests.origins.peer_plugin}; its
    log (access lines included) goes to C{accessLog}.
    """
    portFile = workdir / "peer.port"
    argv = [
        *[str(Path(sys.executable).with_name("proxy"))],
        "--hostname=127.0.0.1",
        "--port=0",
        f"--port-file={portFile}",
        f"--log-file={accessLog}",
        "--num-acceptors=1",
        "--plugins=tests.origins.peer_plugin.ResolveTestHost",
    ]
    peer = LineProcess(argv, cwd=Path(__file__).resolve().parent.parent.parent)
    try:
        deadline = time.monotonic() + WAIT
        while not (portFile.exists() and portFile.read_text().strip()):
            assert time.monotonic() < deadline, f"proxy.py did not start:\n{peer.output}"
            assert peer.process.poll() is None, f"proxy.py exited:\n{peer.output}"
            time.sleep(0.02)
        yield ProxyUnderTest("127.0.0.1", int(portFile.read_text()), peer, accessLog, peer=True)
    finally:
        peer.stop()
