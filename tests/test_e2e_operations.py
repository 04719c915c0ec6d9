"""
End-to-end tests of the operator's side of C{twist caplab}: log rotation with SIGUSR1 and
SIGHUP, the access log in twist's JSON stream, a reload without lists, a configuration file
read again on SIGHUP, systemd's readiness protocol, rate-limited floods (the connection cap,
running out of file descriptors), and Ctrl-C under C{--workers}.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import requireProgram
from tests.support import WAIT, CaplabProcess, runningCaplab, twistCommand

pytestmark = pytest.mark.e2e


def proxyGet(port: int, target: str = "/", host: str = "127.0.0.1") -> bytes:
    """
    One request to the proxy on a connection of its own, read to the end.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return conn.makefile("rb").read()


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def waitForFile(path: Path, text: str) -> str:
    """
    Wait (bounded) until the file at C{path} holds C{text}.
    """
    deadline = time.monotonic() + WAIT
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        assert time.monotonic() < deadline, f"{text!r} never reached {path}: {content!r}"
        time.sleep(0.05)


@pytest.mark.parametrize("signalName", ["SIGUSR1", "SIGHUP"])
def test_logRotation(tmp_path: Path, signalName: str) -> None:
    """
    logrotate without copytruncate: after C{mv access.log access.log.1} and a signal, new
    lines go to a new C{access.log} (and a new trace file), the old file keeps the old ones.
    """
    access, trace = tmp_path / "access.log", tmp_path / "trace.txt"
    with runningCaplab(
        "--no-udp", "--access-log", str(access), "--trace", str(trace),
        services=("tcp", "proxy"),
    ) as process:  # fmt: skip
        port = process.port("proxy")
        assert status(proxyGet(port, "/?before")) == 200
        waitForFile(access, '"GET /?before HTTP/1.1" 200')
        access.rename(tmp_path / "access.log.1")
        trace.rename(tmp_path / "trace.txt.1")
        mark = len(process.lines)
        assert process.process is not None
        process.process.send_signal(getattr(signal, signalName))
        process.waitForLine(r"caplab reloaded access log: reopened ", start=mark)
        process.waitForLine(r"caplab reloaded trace: reopened ", start=mark)
        assert status(proxyGet(port, "/?after")) == 200
        waitForFile(access, '"GET /?after HTTP/1.1" 200')
        waitForFile(trace, "recv")
    old = (tmp_path / "access.log.1").read_text()
    assert "/?before" in old and "/?after" not in old
    assert "/?before" not in access.read_text()
    assert "GET /?after" in trace.read_text()
    assert "GET /?after" not in (tmp_path / "trace.txt.1").read_text()
    assert "Traceback" not in process.output


def test_sighupWithoutListsKeepsRunning() -> None:
    """
    SIGHUP without any list or auth file reloads nothing, but is handled: the process goes
    on serving (it used to end, SIGHUP's default action).
    """
    with runningCaplab("--no-proxy") as process:
        mark = len(process.lines)
        assert process.process is not None
        process.process.send_signal(signal.SIGHUP)
        process.process.send_signal(signal.SIGUSR1)
        process.waitForLine(r"caplab received SIGHUP: reloading", start=mark)
        process.waitForLine(r"caplab has nothing to reload \(no --config", start=mark)
        process.waitForLine(r"caplab received SIGUSR1: reopening the log files", start=mark)
        with socket.create_connection(("127.0.0.1", process.port("tcp")), timeout=WAIT) as conn:
            conn.sendall(b"still here")
            conn.shutdown(socket.SHUT_WR)
            assert conn.makefile("rb").read() == b"STILL HERE"
        assert process.process.poll() is None


def test_accessLogInJSONStream() -> None:
    """
    C{twist caplab --access-log - | jq .} works: with twist's JSON log on standard output,
    each access record is a JSON event (namespace C{caplab.access}) with its fields, not a
    Combined Log line in the middle of the stream.
    """
    jq = requireProgram("jq")
    process = CaplabProcess(
        ["--no-tcp", "--no-udp", "--proxy-port", "0", "--access-log", "-"],
        command=[*twistCommand(), "--log-format=json"],
    ).start()
    try:
        port = 0
        deadline = time.monotonic() + WAIT
        while not port:
            for line in process.lines:
                found = re.search(r'"address": "127\.0\.0\.1:(\d+)"', line)
                if found:
                    port = int(found.group(1))
            assert time.monotonic() < deadline, process.output
            time.sleep(0.05)
        assert status(proxyGet(port, "/?json")) == 200
        process.waitForLine(r'"log_namespace": "caplab\.access"')
    finally:
        process.stop()
    text = process.output
    parsed = subprocess.run(
        [jq, "-c", 'select(.log_namespace == "caplab.access") | {method, uri, code}'],
        input=text,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert parsed.returncode == 0, parsed.stderr
    assert json.loads(parsed.stdout.splitlines()[0]) == {
        "method": "GET",
        "uri": "/?json",
        "code": 200,
    }
    for line in text.split("\n"):  # not splitlines(): it splits at twist's \x1e too
        assert json.loads(line.lstrip("\x1e")), line  # every line of the stream is JSON


def test_configFileReloaded(tmp_path: Path) -> None:
    """
    C{--config FILE}: SIGHUP reads it again; a new block list is in force at once, a
    changed setting that needs a restart is named, and a bad file is one line naming the
    file and key while the old configuration stays.
    """
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("blocked.invalid\n")
    second.write_text("other.invalid\n")
    config = tmp_path / "caplab.toml"
    config.write_text(f'no-tcp = true\nno-udp = true\nblock-list = ["{first}"]\n')
    with runningCaplab(
        "--config", str(config), "--proxy-port", "0", services=("proxy",)
    ) as process:
        port = process.port("proxy")
        assert status(proxyGet(port, "http://blocked.invalid/", "blocked.invalid")) == 403
        config.write_text(
            f'no-tcp = true\nno-udp = true\nblock-list = ["{second}"]\ncache-size = "32M"\n'
        )
        mark = len(process.lines)
        assert process.process is not None
        process.process.send_signal(signal.SIGHUP)
        process.waitForLine(rf"caplab reloaded configuration {config}: changed --block-list")
        process.waitForLine(r"changing --cache-size needs a restart", start=mark)
        process.waitForLine(
            rf"caplab reloaded block/allow lists: block list {second}: 1 rule", start=mark
        )
        assert status(proxyGet(port, "http://blocked.invalid/", "blocked.invalid")) != 403
        assert status(proxyGet(port, "http://other.invalid/", "other.invalid")) == 403

        config.write_text("block-lists = []\n")
        mark = len(process.lines)
        process.process.send_signal(signal.SIGHUP)
        line = process.waitForLine(r"caplab reload of configuration .* failed", start=mark)
        assert f"{config}: block-lists: no such option" in line.string
        assert status(proxyGet(port, "http://other.invalid/", "other.invalid")) == 403
    assert "Traceback" not in process.output


def test_systemdReadiness(tmp_path: Path) -> None:
    """
    With C{NOTIFY_SOCKET} set (as systemd does for C{Type=notify}), caplab sends C{READY=1}
    once every listener is up, C{RELOADING=1} then C{READY=1} around a SIGHUP reload, and
    C{STOPPING=1} on SIGTERM, to a datagram socket this test plays systemd with.
    """
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(WAIT)
        process = CaplabProcess(
            ["--tcp-port", "0", "--udp-port", "0", "--proxy-port", "0"],
            env={"NOTIFY_SOCKET": str(path)},
        ).start()
        try:
            ready = dict(field.split("=", 1) for field in notify.recv(4096).decode().splitlines())
            assert ready["READY"] == "1"
            assert process.process is not None
            assert ready["MAINPID"] == str(process.process.pid)
            assert ready["STATUS"].startswith("serving; caplab configuration: ")
            # Every listener is up by then: all three were announced (before READY, in the
            # output this test reads in a thread of its own), and they answer.
            process.waitListening("tcp", "udp", "proxy")
            mark = process.lines.index(
                next(line for line in process.lines if "caplab proxy listening" in line)
            )
            assert status(proxyGet(process.port("proxy"))) == 200
            process.waitForLine(r"caplab configuration: ", start=mark)
            process.process.send_signal(signal.SIGHUP)
            assert notify.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert notify.recv(4096).decode().startswith("READY=1\nSTATUS=reloaded")
        finally:
            process.stop()
        assert notify.recv(4096) == b"STOPPING=1"


def test_refusalsSummarised() -> None:
    """
    A burst of 300 connections over C{--max-connections 1} makes a few lines, each with a
    running count, and one summary line once the burst is over (not "1 refused so far").
    """
    with runningCaplab(
        "--no-proxy", "--no-udp", "--max-connections", "1", services=("tcp",)
    ) as process:
        port = process.port("tcp")
        mark = len(process.lines)
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as first:
            first.sendall(b"a")
            assert first.recv(10) == b"A"
            for _ in range(300):
                with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as refused:
                    assert refused.recv(10) == b""
            process.waitForLine(r"caplab tcp refused \d+ connections in ", start=mark)
    lines = [line for line in process.lines[mark:] if "refus" in line]
    assert len(lines) <= 8, lines
    assert lines[-1].endswith("(--max-connections 1; 300 refused so far)"), lines
    assert re.search(r"refused 300 connections in [\d.]+s", lines[-1]), lines


def test_outOfFileDescriptors() -> None:
    """
    With a file limit too low for the connections that come (EMFILE), the connections that
    cannot be accepted are closed at once and the log says so in a few lines with a count
    and a summary, instead of two or three lines per connection.
    """
    launcher = (
        "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    twist = shutil.which("twist", path=str(Path(sys.executable).parent)) or twistCommand()[0]
    process = CaplabProcess(
        ["--no-proxy", "--no-udp", "--tcp-port", "0", "--idle-timeout", "0"],
        command=[sys.executable, "-c", launcher, twist, "--log-format=text"],
    ).start()
    held: list[socket.socket] = []
    try:
        process.waitListening("tcp")
        port = process.port("tcp")
        mark = len(process.lines)
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
            held.append(sock)
        process.waitForLine(r"caplab tcp closed \d+ connections at once in ", start=mark)
    finally:
        for sock in held:
            sock.close()
        process.stop()
    lines = process.lines[mark:]
    assert not [line for line in lines if "EMFILE recovery" in line or "EMFILE encountered" in line]
    accepting = [line for line in lines if "cannot accept connections" in line]
    assert 1 <= len(accepting) <= 8, lines
    assert "out of file descriptors (EMFILE" in accepting[0]


def test_ctrlCUnderWorkers() -> None:
    """
    Ctrl-C in a terminal signals the whole process group: the workers leave the stop to
    their parent, which stops them gracefully; no traceback (ReactorNotRunning) anywhere.
    """
    process = subprocess.Popen(
        [*twistCommand(), "--log-format=text", "caplab", "--workers", "2", "--no-proxy",
         "--tcp-port", "0", "--udp-port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    ready = 0
    deadline = time.monotonic() + WAIT
    try:
        while ready < 2:
            line = process.stdout.readline()
            assert line and time.monotonic() < deadline, "".join(lines)
            lines.append(line)
            ready += bool(re.search(r"\[worker \d pid \d+\] caplab configuration: ", line))
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=WAIT)
    finally:
        try:  # the whole group: a worker left behind by a failure must not outlive the test
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(WAIT)
    output = "".join(lines) + rest
    assert process.returncode == -signal.SIGINT, output
    assert "Traceback" not in output and "ReactorNotRunning" not in output, output
    assert len(re.findall(r"\[worker \d pid \d+\] Main loop terminated", output)) == 2, output
    assert "starting it again" not in output
