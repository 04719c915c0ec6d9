"""
The C{caplab} plugin is discoverable and C{twist caplab} starts from the installed package.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

from tests.support import WAIT, CaplabProcess, runningCaplab, twistCommand, twistdCommand


def test_pluginIsDiscoverable() -> None:
    """
    Twisted's plugin discovery finds C{caplab}; an editable install in the default PEP 660
    mode would hide it.
    """
    names = {plugin.tapname for plugin in getPlugins(IServiceMaker)}
    assert "caplab" in names


def test_twistHelpThroughInstalledEntryPoint() -> None:
    """
    C{twist caplab --help} works through the installed C{twist} and documents the options.
    """
    result = subprocess.run(
        [*twistCommand(), "caplab", "--help"], capture_output=True, text=True, timeout=WAIT
    )
    assert result.returncode == 0, result.stderr
    for option in ("--interface", "--tcp-port", "--udp-port", "--proxy-port", "--trace"):
        assert option in result.stdout


def test_listeningLinesNameRealPorts() -> None:
    """
    With port 0 each service logs the port it really listens on.
    """
    with runningCaplab("--no-proxy") as caplab:
        assert caplab.addresses["tcp"][0] == "127.0.0.1"
        assert caplab.port("tcp") > 0
        assert caplab.port("udp") > 0


def test_helpShowsEveryDefault() -> None:
    """
    C{twist caplab --help} names every option (the uppercase services', the proxy's, the
    workers'), and every option that takes a value and has a default shows it.
    """
    from caplab.tap import Options

    result = subprocess.run(
        [*twistCommand(), "caplab", "--help"], capture_output=True, text=True, timeout=WAIT
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    options = Options()
    for name in options.longOpt:
        assert f"--{name}" in text
    for name, default in options.defaults.items():
        if default is not None and f"{name}=" in options.longOpt:
            assert f"[default: {options.displayDefault(name)}]" in text, name
    assert "[default: 64M]" in text


def test_twistdRunsServices(tmp_path: Path) -> None:
    """
    C{twistd -n caplab} starts the same services (writing C{twistd.pid} in its working
    directory, and removing it when it stops).
    """
    process = CaplabProcess(
        ["--no-proxy", "--tcp-port", "0", "--udp-port", "0"], command=twistdCommand(), cwd=tmp_path
    ).start()
    try:
        process.waitListening("tcp", "udp")
        assert process.process is not None
        assert (tmp_path / "twistd.pid").read_text().strip() == str(process.process.pid)
        with socket.create_connection(("127.0.0.1", process.port("tcp")), timeout=WAIT) as conn:
            conn.sendall(b"via twistd")
            conn.shutdown(socket.SHUT_WR)
            assert conn.makefile("rb").read() == b"VIA TWISTD"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(WAIT)
            udp.sendto(b"udp too", ("127.0.0.1", process.port("udp")))
            assert udp.recvfrom(100)[0] == b"UDP TOO"
    finally:
        process.stop()
    assert "Traceback" not in process.output
    assert not (tmp_path / "twistd.pid").exists()
