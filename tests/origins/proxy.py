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

#: A Combined Log Format line's request and status: C{"GET http://h/p HTTP/1.1" 200}.
_ACCESS = re.compile(r'"[A-Z]+ \S+ HTTP/1\.[01]" \d{3} ')


@dataclass
class ProxyUnderTest:
    """
    A running proxy: where it listens and its process, whose output (collected line by line)
    includes the access log.
    """

    host: str
    port: int
    process: CaplabProcess | LineProcess
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
        The access log's lines so far.
        """
        if self.peer:
            return [line for line in self.process.output.splitlines() if "access_log" in line]
        return [line for line in self.process.output.splitlines() if _ACCESS.search(line)]

    def waitForAccess(
        self,
        method: str,
        target: str,
        status: int | None = None,
        timeout: float = WAIT,
        cacheStatus: str | None = None,
    ) -> str:
        """
        Wait (bounded) until the access log has a Combined Log Format line for C{method
        target} (with C{status}, if given, and a C{Cache-Status} field matching the regular
        expression C{cacheStatus}, if given) and return it.
        """
        if self.peer:
            # proxy.py logs one line per connection (its last request), "- GET host:port/path
            # - 200 OK ...", so only the method and the authority can be looked for.
            authority = target.split("://", 1)[-1].split("/", 1)[0]
            pattern = rf"- {re.escape(method)} {re.escape(authority)}[/ ]"
        else:
            pattern = (
                rf'"{re.escape(method)} {re.escape(target)} HTTP/1\.[01]" '
                + (str(status) if status is not None else r"\d{3}")
                + r"\b"
                + (rf'.* "[^"]*{cacheStatus}[^"]*"$' if cacheStatus is not None else "")
            )
        return self.process.waitForLine(pattern, timeout).string


def proxyArguments(origin: OriginProcess, caCert: Path | None) -> list[str]:
    """
    The C{twist caplab} options that put the proxy in front of C{origin}.
    """
    arguments = [
        "--no-tcp",
        "--no-udp",
        "--resolve",
        f"{TEST_HOST}=127.0.0.1",
        "--access-log",
        "-",
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
    if os.environ.get("CAPLAB_TEST_PEER_PROXY"):
        with _runningPeer(workdir) as peer:
            yield peer
        return
    with runningCaplab(*proxyArguments(origin, caCert), *extra, services=("proxy",)) as caplab:
        host, port = caplab.addresses["proxy"]
        yield ProxyUnderTest(host, port, caplab)


@contextmanager
def _runningPeer(workdir: Path) -> Iterator[ProxyUnderTest]:
    """
    proxy.py on a free port, resolving the test host with L{tests.origins.peer_plugin}.
    """
    portFile = workdir / "peer.port"
    argv = [
        str(Path(sys.executable).with_name("proxy")),
        "--hostname=127.0.0.1",
        "--port=0",
        f"--port-file={portFile}",
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
        yield ProxyUnderTest("127.0.0.1", int(portFile.read_text()), peer, peer=True)
    finally:
        peer.stop()
