"""
Tests for C{contrib/}: the systemd unit's command line and its configuration file
(C{contrib/caplab.toml}) are ones C{twist caplab} accepts, it is C{Type=notify} and reloads
with SIGHUP, systemd itself finds nothing wrong with it, and the logrotate snippet rotates the
access log of a running caplab without C{copytruncate}.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from caplab.tap import Options
from tests.conftest import requireProgram
from tests.support import WAIT, runningCaplab
from tests.test_auth import BCRYPT
from tests.test_e2e_operations import proxyGet, waitForFile

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
UNIT = CONTRIB / "caplab.service"
CONFIG = CONTRIB / "caplab.toml"
LOGROTATE = CONTRIB / "logrotate"


def directives() -> dict[str, list[str]]:
    """
    The unit's directives (continuation lines joined), name -> values in order.
    """
    found: dict[str, list[str]] = {}
    logical = ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("#") or line.startswith("["):
            continue
        logical += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if line.endswith("\\"):
            continue
        if "=" in logical:
            name, value = logical.split("=", 1)
            found.setdefault(name, []).append(value)
        logical = ""
    return found


def test_commandLineParses(tmp_path: Path) -> None:
    """
    C{ExecStart} runs C{twist caplab --config /etc/caplab/caplab.toml}, and the shipped
    C{contrib/caplab.toml} is accepted, with the files it names.
    """
    [command] = directives()["ExecStart"]
    argv = shlex.split(command)
    assert argv[0] == "/opt/caplab/bin/twist"
    assert argv[1:] == ["--log-format=json", "caplab", "--config", "/etc/caplab/caplab.toml"]
    text = CONFIG.read_text()
    for path in sorted(set(re.findall(r'"(/(?:etc|var)/[^"]+)"', text))):
        local = tmp_path / Path(path).name
        if path.endswith(".htpasswd"):
            local.write_text(f"alice:{BCRYPT}\n")
        elif path.endswith(".txt"):
            local.write_text("a.example\n")
        text = text.replace(f'"{path}"', f'"{local}"')
    config = tmp_path / "caplab.toml"
    config.write_text(text)
    options = Options()
    options.parseOptions(["--config", str(config)])
    assert options["block-list"] and options["allow-list"] and options["auth-file"]
    assert options["access-log"] == str(tmp_path / "access.log")
    assert options["cache-size"] == 512 << 20


def test_typeNotify() -> None:
    """
    The unit waits for caplab's C{READY=1} (sent once every listener is up), accepted from
    the main process only, and does not restart after a configuration error.
    """
    found = directives()
    assert found["Type"] == ["notify"]
    assert found["NotifyAccess"] == ["main"]
    assert found["RestartPreventExitStatus"] == ["64"]
    assert "AF_UNIX" in found["RestrictAddressFamilies"][0].split()


def test_reloadIsSighup() -> None:
    """
    C{systemctl reload} sends SIGHUP, which reloads the lists and the auth file.
    """
    assert directives()["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_systemdVerify(tmp_path: Path) -> None:
    """
    C{systemd-analyze verify} accepts the unit (with ExecStart pointing at this venv's
    C{twist}, since /opt/caplab does not exist here).
    """
    analyze = requireProgram("systemd-analyze")
    twist = Path(sys.executable).with_name("twist")
    unit = tmp_path / "caplab.service"
    unit.write_text(UNIT.read_text().replace("/opt/caplab/bin/twist", str(twist)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if "caplab.service" in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


@pytest.mark.e2e
def test_logrotateSnippet(tmp_path: Path) -> None:
    """
    The logrotate snippet, pointed at a running caplab's access log (and its postrotate at
    that process instead of systemd's unit), rotates it: the old lines stay in the rotated
    file, and caplab writes the next ones to a new file of the old name.
    """
    logrotate = requireProgram("logrotate")
    access = tmp_path / "access.log"
    with runningCaplab(
        "--no-tcp", "--no-udp", "--access-log", str(access), services=("proxy",)
    ) as process:
        assert process.process is not None
        port = process.port("proxy")
        proxyGet(port, "/?before")
        waitForFile(access, "/?before")
        snippet = LOGROTATE.read_text()
        assert "copytruncate" not in snippet.replace("No copytruncate", "")
        snippet = snippet.replace("/var/log/caplab/access.log", str(access))
        snippet = re.sub(r"systemctl kill [^\n]*", f"kill -USR1 {process.process.pid}", snippet)
        config = tmp_path / "logrotate.conf"
        config.write_text(snippet)
        result = subprocess.run(
            [logrotate, "--force", "--state", str(tmp_path / "state"), str(config)],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert result.returncode == 0, result.stderr
        process.waitForLine(r"caplab reloaded access log: reopened ")
        proxyGet(port, "/?after")
        waitForFile(access, "/?after")
    rotated = tmp_path / "access.log.1"
    assert "/?before" in rotated.read_text() and "/?after" not in rotated.read_text()
    assert "/?before" not in access.read_text()
