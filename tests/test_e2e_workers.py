"""
End-to-end tests of C{twist caplab --workers 2}: two processes answer on one port, a killed
worker comes back, SIGTERM lets an open connection finish before everything stops, and the
metrics are the whole server's.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import WAIT, CaplabProcess, twistdCommand

pytestmark = pytest.mark.e2e

_T = TypeVar("_T")


def exchange(port: int, text: bytes = b"which worker?") -> bytes:
    """
    One lab-style exchange with the TCP service: send, half-close, read to the end.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
        conn.sendall(text)
        conn.shutdown(socket.SHUT_WR)
        return conn.makefile("rb").read()


def workerPids(process: CaplabProcess, start: int = 0) -> dict[int, int]:
    """
    Worker number -> pid, from the supervisor's "worker N started (pid P)" lines.
    """
    pids: dict[int, int] = {}
    for line in process.lines[start:]:
        found = re.search(r"caplab worker (\d+) started \(pid (\d+)\)", line)
        if found:
            pids[int(found.group(1))] = int(found.group(2))
    return pids


@pytest.fixture
def workers() -> Iterator[CaplabProcess]:
    process = CaplabProcess(
        [
            "--workers",
            "2",
            "--no-proxy",
            "--tcp-port",
            "0",
            "--udp-port",
            "0",
            "--worker-grace",
            "15",
        ]
    ).start()
    try:
        process.waitListening("tcp", "udp")
        for index in (1, 2):
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab tcp listening on ")
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab udp listening on ")
            # Logged once the worker's reactor runs, with its signal handlers in place.
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab configuration: ")
        yield process
    finally:
        process.stop()


def test_bothWorkersAnswerOnOnePort(workers: CaplabProcess) -> None:
    """
    With either worker frozen (SIGSTOP), the other one answers on the same port: both serve.
    """
    port = workers.port("tcp")
    pids = workerPids(workers)
    assert len(set(pids.values())) == 2
    for frozen in pids.values():
        os.kill(frozen, signal.SIGSTOP)
        try:
            assert exchange(port) == b"WHICH WORKER?"
        finally:
            os.kill(frozen, signal.SIGCONT)


def test_killedWorkerIsRestarted(workers: CaplabProcess) -> None:
    """
    C{kill -9} of a worker: the service keeps answering and the worker is started again.
    """
    port = workers.port("tcp")
    victim = workerPids(workers)[1]
    mark = len(workers.lines)
    os.kill(victim, signal.SIGKILL)
    assert exchange(port, b"still here") == b"STILL HERE"
    workers.waitForLine(
        rf"caplab worker 1 \(pid {victim}\) was killed by SIGKILL; starting it again in ",
        start=mark,
    )
    workers.waitForLine(r"caplab worker 1 started \(pid \d+\)", start=mark)
    replacement = workerPids(workers, mark)[1]
    assert replacement != victim
    workers.waitForLine(rf"\[worker 1 pid {replacement}\] caplab tcp listening on ", start=mark)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        udp.settimeout(WAIT)
        udp.sendto(b"udp too", ("127.0.0.1", workers.port("udp")))
        assert udp.recvfrom(100)[0] == b"UDP TOO"


def test_sigtermLetsOpenConnectionsFinish(workers: CaplabProcess) -> None:
    """
    On SIGTERM the workers stop accepting but an open connection is still served until the
    client is done; then the whole server exits as twist does on SIGTERM.
    """
    port = workers.port("tcp")
    conn = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    with conn:
        conn.sendall(b"first half ")
        assert conn.recv(100) == b"FIRST HALF "
        mark = len(workers.lines)
        assert workers.process is not None
        workers.process.send_signal(signal.SIGTERM)
        workers.waitForLine(r"waiting up to 15\.0s for 1 open connections", start=mark)
        conn.sendall(b"second half")
        assert conn.recv(100) == b"SECOND HALF"
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(100) == b""
    # twist ends by re-raising the signal it stopped on: killed by SIGTERM, after a clean stop.
    assert workers.wait(WAIT) == -signal.SIGTERM
    workers.waitForLine(r"\[worker 1 pid \d+\] Main loop terminated", start=mark)
    workers.waitForLine(r"\[worker 2 pid \d+\] Main loop terminated", start=mark)
    assert "Traceback" not in workers.output
    assert "KILL" not in workers.output
    with pytest.raises(OSError):
        exchange(port)


def proxyGet(proxyPort: int, target: str) -> tuple[int, bytes]:
    """
    One C{GET} through the proxy (absolute or origin form), on a connection of its own that
    is read to its end, so that the proxy is done with the request (and has counted it).
    """
    with socket.create_connection(("127.0.0.1", proxyPort), timeout=WAIT) as conn:
        conn.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        response = conn.makefile("rb").read()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def adminSamples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    The supervisor's C{/metrics}, parsed by prometheus-client.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
        conn.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        text = conn.makefile("rb").read().partition(b"\r\n\r\n")[2].decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def waitFor(check: Callable[[], _T | None], what: str, timeout: float = WAIT) -> _T:
    """
    Call C{check} until it returns something true (the workers share their figures once a
    second); fail after C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)


def test_metricsOfTheWholeServer() -> None:
    """
    With C{--workers 2 --admin-endpoint}, the parent's C{/metrics} counts the requests both
    workers answered (within a second), each worker's status page has a row per worker and
    a total that adds them up, the stats page says which worker answered, and each process's
    memory is exported under its pid.  The metrics directory goes when the server stops.
    """
    process = CaplabProcess(
        [
            "--workers", "2", "--no-tcp", "--no-udp", "--proxy-port", "0",
            "--admin-endpoint", "tcp:0:interface=127.0.0.1",
        ]
    ).start()  # fmt: skip
    try:
        process.waitListening("proxy", "admin")
        directory = process.waitForLine(r"caplab workers keep their metrics in (\S+)").group(1)
        for index in (1, 2):
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab proxy listening on ")
        proxyPort, adminPort = process.port("proxy"), process.port("admin")
        pids = workerPids(process)
        origin = f"http://127.0.0.1:{adminPort}/"
        sent = 0
        for frozenIndex, answering in ((1, 2), (2, 1)):
            os.kill(pids[frozenIndex], signal.SIGSTOP)
            try:
                for _ in range(3):
                    code, body = proxyGet(proxyPort, origin)
                    sent += 1
                    assert code == 200 and b"caplab admin" in body
                code, page = proxyGet(proxyPort, "/")
                sent += 1
                assert code == 200
                assert f"worker {answering} (pid {pids[answering]}) of 2".encode() in page
            finally:
                os.kill(pids[frozenIndex], signal.SIGCONT)

        get200 = ("caplab_proxy_requests_total", (("code", "200"), ("method", "GET")))
        waitFor(lambda: adminSamples(adminPort).get(get200) == sent, f"/metrics counting {sent}")
        samples = adminSamples(adminPort)
        assert [k for k in samples if k[0] == "caplab_proxy_requests_total"] == [get200]
        supervisor = process.process.pid  # type: ignore[union-attr]
        for pid in (*pids.values(), supervisor):
            rss = ("caplab_process_resident_memory_bytes", (("pid", str(pid)),))
            assert samples.get(rss, 0) > 1_000_000, (pid, samples)

        def rows() -> tuple[int, list[int]] | None:
            code, page = proxyGet(proxyPort, "/")
            assert code == 200
            total = re.search(rb"requests since start</th><td>([\d,]+)<", page)
            assert total is not None, page
            counts = re.findall(rb'<tr(?: class="self")? data-pid="\d+">(?:<td>[^<]*</td>){4}'
                                rb"<td>([\d,]+)</td>", page)  # fmt: skip
            shown = int(total.group(1).replace(b",", b""))
            perWorker = [int(c.replace(b",", b"")) for c in counts]
            return (shown, perWorker) if shown >= sent and len(perWorker) == 2 else None

        shown, perWorker = waitFor(rows, "the status page showing every worker")
        assert sum(perWorker) == shown and all(perWorker), (shown, perWorker)

        code, stats = proxyGet(proxyPort, "/stats")
        assert code == 200
        assert b"the figures are the whole server's" in stats
        assert re.search(rb"<tr><td>GET</td><td>200</td><td>\d+</td></tr>", stats), stats
        assert os.path.isdir(directory)
    finally:
        process.stop()
    assert not os.path.exists(directory)
    assert "Traceback" not in process.output


def test_workersUnderTwistd(tmp_path: Path) -> None:
    """
    C{twistd -n caplab --workers 2} supervises the same way: both workers serve the parent's
    port, and SIGTERM to twistd stops them and removes its pid file.
    """
    process = CaplabProcess(
        ["--workers", "2", "--no-proxy", "--tcp-port", "0", "--udp-port", "0"],
        command=twistdCommand(),
        cwd=tmp_path,
    ).start()
    try:
        process.waitListening("tcp", "udp")
        for index in (1, 2):
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab tcp listening on ")
        port = process.port("tcp")
        for frozen in workerPids(process).values():
            os.kill(frozen, signal.SIGSTOP)
            try:
                assert exchange(port, b"via twistd") == b"VIA TWISTD"
            finally:
                os.kill(frozen, signal.SIGCONT)
    finally:
        process.stop()
    for index in (1, 2):
        process.waitForLine(rf"\[worker {index} pid \d+\] Main loop terminated")
    assert "Traceback" not in process.output
    assert not (tmp_path / "twistd.pid").exists()


def test_configurationErrorStopsTheServer(tmp_path: Path) -> None:
    """
    Under C{--workers}, a file the workers cannot use stops the server with status 64:
    the parent reads it before it binds; a worker that finds one later (the file was
    changed, then the worker started again) makes the parent stop the others and exit 64,
    where it used to start workers again forever.
    """
    bad = tmp_path / "bad.txt"
    bad.write_text("http://[::1/path\n")
    process = CaplabProcess(
        ["--workers", "2", "--no-tcp", "--no-udp", "--proxy-port", "0", "--block-list", str(bad)]
    ).start()
    try:
        assert process.wait(WAIT) == 64
    finally:
        process.stop()
    assert f"Error: --block-list/--allow-list: {bad}:1" in process.output
    assert "listening" not in process.output and "started" not in process.output

    good = tmp_path / "good.txt"
    good.write_text("ads.example\n")
    config = tmp_path / "caplab.toml"
    config.write_text(f'block-list = ["{good}"]\n')
    process = CaplabProcess(
        ["--workers", "2", "--no-tcp", "--no-udp", "--proxy-port", "0", "--config", str(config)]
    ).start()
    try:
        for index in (1, 2):
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab configuration: ")
        config.write_text(f'block-list = ["{bad}"]\n')
        mark = len(process.lines)
        os.kill(workerPids(process)[1], signal.SIGKILL)
        process.waitForLine(
            r"caplab worker 1 \(pid \d+\) exited with status 64: its configuration cannot be "
            r"used \(see its lines above\); caplab stops",
            start=mark,
        )
        assert process.wait(WAIT) == 64
    finally:
        process.stop()
    process.waitForLine(r"\[worker 2 pid \d+\] Main loop terminated", start=mark)
    assert len(workerPids(process, mark)) == 1  # worker 1 started once more, not again
    assert "Traceback" not in process.output
