"""
Command-line options of the content filters (mixed into L{caplab.tap.Options}; in a
C{--config} file the same names), checked by parsing them as the filter chain will.
"""

from __future__ import annotations

from typing import Any

from caplab.config import OptionError
from caplab.proxy.filters.config import FilterConfig, parseFilterConfig, tableFromOptions
from caplab.proxy.filters.hosts import FilterConfigError
from caplab.proxy.filters.interfaces import DEFAULT_WINDOW, WINDOW_RANGE

#: The repeatable options and the list each appends to.
_LISTS = (
    "rewrite",
    "block-elements",
    "privacy-skip",
    "strip-param",
    "request-header",
    "response-header",
    "filter",
)

#: The filter options (a reload builds the chain again when one of them changed).
FILTER_OPTIONS = (*_LISTS, "privacy", "filter-window")


def windowSize(value: str) -> int:
    """
    The context a filter may keep, in bytes.
    """
    low, high = WINDOW_RANGE
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of bytes ({low}-{high})") from None
    if not low <= size <= high:
        raise ValueError(f"{value!r} is not a number of bytes from {low} to {high}")
    return size


windowSize.coerceDoc = "Bytes, 256-262144."  # type: ignore[attr-defined]


def filterConfig(options: Any) -> FilterConfig:
    """
    The filter configuration the options describe.

    @raise FilterConfigError: a rule that is not one (the message names the option).
    """
    table = tableFromOptions(
        rewrite=options["rewrite"],
        requestHeader=options["request-header"],
        responseHeader=options["response-header"],
        blockElements=options["block-elements"],
        privacy=bool(options["privacy"]),
        privacySkip=[part for each in options["privacy-skip"] for part in each.split(",")],
        stripParameters=options["strip-param"],
        filters=options["filter"],
        window=options["filter-window"],
    )
    return parseFilterConfig(table, options=True)


def anyFilter(options: Any) -> bool:
    """
    Whether the options ask for any filter at all (none: the proxy runs without a chain).
    """
    return bool(options["privacy"]) or any(options[name] for name in _LISTS)


class FilterOptions:
    """
    The content filters' options.
    """

    helpGroup = "filters"

    optParameters: list[list[Any]] = [
        [
            "filter-window",
            None,
            DEFAULT_WINDOW,
            "The longest match a rewrite is sure to find, and the longest tag element "
            "blocking waits for, in bytes.",
            windowSize,
        ],
    ]
    optFlags: list[list[Any]] = [
        [
            "privacy",
            None,
            "Remove tracking query parameters, reduce cross-site Referers to their origin, "
            "send Sec-GPC: 1, drop third-party cookies over plain HTTP.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        config: Any = self
        for name in _LISTS:
            config[name] = []

    def _appendFilter(self, name: str, value: str) -> None:
        config: Any = self
        config[name].append(value)

    def opt_rewrite(self, rule: str) -> None:
        """
        Rewrite the text bodies of these hosts as they stream, sed style
        ('example.com s/hello/HOWDY/g'); repeatable.
        """
        self._appendFilter("rewrite", rule)

    def opt_block_elements(self, hosts: str) -> None:
        """
        On these hosts' HTML pages remove the script, iframe, img and link elements whose
        host the block lists block; repeatable.
        """
        self._appendFilter("block-elements", hosts)

    def opt_privacy_skip(self, parts: str) -> None:
        """
        Leave parts of --privacy off: params, referer, gpc, cookies (comma-separated);
        repeatable.
        """
        self._appendFilter("privacy-skip", parts)

    def opt_strip_param(self, name: str) -> None:
        """
        One more tracking query parameter for --privacy to remove (NAME* for every name
        starting with NAME); repeatable.
        """
        self._appendFilter("strip-param", name)

    def opt_request_header(self, rule: str) -> None:
        """
        Add, set or remove a request header field on requests to these hosts
        ('example.com set DNT: 1'); repeatable.
        """
        self._appendFilter("request-header", rule)

    def opt_response_header(self, rule: str) -> None:
        """
        Add, set or remove a response header field on responses from these hosts
        ('*.example.com remove Server'); repeatable.
        """
        self._appendFilter("response-header", rule)

    def opt_filter(self, spec: str) -> None:
        """
        Use the installed filter plugin NAME on these hosts with its options
        ('example.com upper' or 'HOSTS NAME KEY=VALUE ...'); repeatable.
        """
        self._appendFilter("filter", spec)

    opt_rewrite.metavar = "'HOSTS s/REGEX/REPLACEMENT/FLAGS'"  # type: ignore[attr-defined]
    opt_block_elements.metavar = "HOSTS"  # type: ignore[attr-defined]
    opt_privacy_skip.metavar = "PARTS"  # type: ignore[attr-defined]
    opt_strip_param.metavar = "NAME"  # type: ignore[attr-defined]
    opt_request_header.metavar = "'HOSTS add|set|remove NAME[: VALUE]'"  # type: ignore[attr-defined]
    opt_response_header.metavar = "'HOSTS add|set|remove NAME[: VALUE]'"  # type: ignore[attr-defined]
    opt_filter.metavar = "'HOSTS NAME [KEY=VALUE ...]'"  # type: ignore[attr-defined]

    def checkFilterOptions(self) -> None:
        """
        Parse the filter rules now, so that a bad one is a usage error naming its option.
        """
        config: Any = self
        if config["block-elements"] and not (config["block-list"] or config["allow-list"]):
            raise OptionError(
                "block-elements",
                "--block-elements: needs a --block-list (or --allow-list) that says which "
                "hosts are blocked",
            )
        try:
            filterConfig(config)
        except FilterConfigError as e:
            option = next((n for n in FILTER_OPTIONS if f"--{n}" in str(e)), "rewrite")
            raise OptionError(option, str(e)) from None
