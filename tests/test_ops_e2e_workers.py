"""
End-to-end: C{SIGHUP} sent to the C{--workers} parent while its workers are still starting
does not kill them (its default action would): each gets it once it is ready, and reloads.
"""

from __future__ import annotations

import signal

import pytest

from tests.support import CaplabProcess

pytestmark = pytest.mark.e2e


def test_hangupWhileWorkersStart() -> None:
    """
    A C{SIGHUP} as soon as the workers are started is held for each until it says it is
    ready: no worker is killed by it, and each reloads once.
    """
    process = CaplabProcess(
        ["--workers", "2", "--no-proxy", "--tcp-port", "0", "--udp-port", "0"]
    ).start()
    try:
        process.waitForLine(r"caplab worker 2 started \(pid \d+\)")
        assert process.process is not None
        process.process.send_signal(signal.SIGHUP)
        for index in (1, 2):
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab configuration: ")
            process.waitForLine(rf"\[worker {index} pid \d+\] caplab received SIGHUP: reloading")
        assert "killed by SIGHUP" not in process.output
        assert "starting it again" not in process.output
    finally:
        process.stop()
