"""
Checks and conversions of command-line values shared by the option sets (C{usage.Options}
calls them; a ValueError becomes a one-line usage error).
"""

from __future__ import annotations


def seconds(value: str) -> float:
    """
    A duration in seconds, 0 or more (finite).
    """
    try:
        number = float(value)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError("not a number of seconds (0 or more)")
    return number


def timeoutSeconds(value: str) -> float:
    """
    A timeout in seconds, 0 or more; 0 switches it off.
    """
    return seconds(value)


seconds.metavar = "SECONDS"  # type: ignore[attr-defined]
timeoutSeconds.metavar = "SECONDS"  # type: ignore[attr-defined]
