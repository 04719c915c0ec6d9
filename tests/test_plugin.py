"""
The C{caplab} plugin is discoverable and C{twist caplab} starts from the installed package.
"""

from __future__ import annotations

import subprocess

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins

from tests.support import WAIT, runningCaplab, twistCommand


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
