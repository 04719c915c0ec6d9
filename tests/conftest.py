"""
Shared pytest configuration.

Browser and end-to-end tests need programs from Debian packages; outside CI they skip with
a reason when one is missing, in CI (C{CI=true}) they fail instead, so that a missing
install step can never pass silently.
"""

from __future__ import annotations

import os
import shutil

import pytest


def requireProgram(name: str) -> str:
    """
    The path of program C{name}; skip (locally) or fail (in CI) when it is not installed.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install it; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
