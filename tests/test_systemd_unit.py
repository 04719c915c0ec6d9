"""
Tests for C{contrib/caplab.service}: its command line is one C{twist caplab} accepts, it
reloads with SIGHUP, and systemd itself finds nothing wrong with it.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from caplab.tap import Options
from tests.test_auth import BCRYPT

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "caplab.service"


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
    The options of C{ExecStart} are accepted by C{twist caplab}, with the files it names.
    """
    [command] = directives()["ExecStart"]
    argv = shlex.split(command)
    assert argv[0] == "/opt/caplab/bin/twist"
    assert argv[1:3] == ["--log-format=json", "caplab"]
    options = argv[3:]
    for index, value in enumerate(options):
        if value.startswith("/etc/caplab/"):
            path = tmp_path / Path(value).name
            path.write_text(f"alice:{BCRYPT}\n" if value.endswith(".htpasswd") else "a.example\n")
            options[index] = str(path)
        elif value.startswith("/var/cache/caplab"):
            options[index] = str(tmp_path / "cache")
    config = Options()
    config.parseOptions(options)
    assert config["block-list"] and config["allow-list"] and config["auth-file"]


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
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (optional: part of systemd)")
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
