"""
README.rst documents every option of C{twist caplab}, with its default, so the docs cannot
drift from L{caplab.tap.Options}.

The check is generic: it reads the options from L{caplab.tap.Options} itself (the uppercase
services', the proxy's, the workers' and any added later), so a new option without a row in
README.rst's option table fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from caplab.tap import Options

README = Path(__file__).resolve().parent.parent / "README.rst"


def optionRows() -> dict[str, str]:
    """
    The rows of README.rst's option table: option name -> the row's text.

    The table is the C{list-table} after the C{OPTIONS-TABLE} marker; a row is an item whose
    first cell starts with C{``--name}.
    """
    text = README.read_text(encoding="utf-8")
    body = text[text.index(".. OPTIONS-TABLE") :]
    table = re.search(r"\.\. list-table::\n(?:(?:   .*)?\n)+", body)
    assert table is not None, "no list-table after the OPTIONS-TABLE marker"
    rows: dict[str, str] = {}
    for row in re.split(r"\n   \* - ", table.group(0))[1:]:
        found = re.match(r"``--([a-z0-9-]+)", row)
        if found:
            rows[found.group(1)] = row
    return rows


def documented(name: str) -> str:
    """
    How the default of option C{name} is written in the table: as C{--help} shows it
    (sizes in human units, a set of values comma-separated).
    """
    shown = Options().displayDefault(name)
    assert shown is not None
    return shown


def longOptions() -> list[str]:
    """
    Every long option C{twist caplab} accepts (parameters, flags and C{opt_} methods).
    """
    return sorted(name.rstrip("=") for name in Options().longOpt)


def test_tableFound() -> None:
    """
    The option table is there and has rows (else every other test here would be vacuous).
    """
    assert len(optionRows()) >= 10


@pytest.mark.parametrize("name", longOptions())
def test_optionDocumented(name: str) -> None:
    """
    Every option has a row in README.rst's option table.
    """
    assert name in optionRows(), f"--{name} is missing from README.rst's option table"


def parameterDefaults() -> dict[str, object]:
    """
    The options that take a value and have a default (flags are off unless given).
    """
    options = Options()
    flags = {name for name in options.longOpt if not name.endswith("=")}
    return {
        name: default
        for name, default in options.defaults.items()
        if default is not None and name not in flags
    }


@pytest.mark.parametrize("name", sorted(parameterDefaults()))
def test_defaultDocumented(name: str) -> None:
    """
    Every option with a default shows that default, as C{--help} prints it, in its row.
    """
    default = documented(name)
    row = optionRows().get(name, "")
    assert f"``{default}``" in row, f"README.rst's row for --{name} does not say ``{default}``"


def test_noStaleRows() -> None:
    """
    The table documents no option that does not exist (a renamed or removed option).
    """
    assert sorted(set(optionRows()) - set(longOptions())) == []


def test_readmeRenders() -> None:
    """
    README.rst is valid reStructuredText: docutils renders it without a warning (a broken
    table or a title underline too short would show on every page that renders it).
    """
    from docutils.core import publish_doctree
    from docutils.utils import Reporter

    messages: list[str] = []

    class Collect:
        def write(self, text: str) -> None:
            messages.append(text)

        def flush(self) -> None:
            pass

    publish_doctree(
        README.read_text(encoding="utf-8"),
        source_path=str(README),
        settings_overrides={
            "report_level": Reporter.WARNING_LEVEL,
            "halt_level": Reporter.SEVERE_LEVEL + 1,
            "warning_stream": Collect(),
        },
    )
    assert messages == []
