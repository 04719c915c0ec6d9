"""
The filters' configuration: a plain structure (what a TOML table C{[filters]} or the
command-line options give) parsed into a L{FilterConfig}, and a L{FilterChain} built from
it.  Parsing is pure and checks everything, so a bad rule stops C{twist caplab} (or a
reload keeps the old chain) with a message naming the rule.

The table::

    [filters]
    rewrite = ["example.com s/hello/HOWDY/g", "*.example.org s/colou?r/colour/gi"]
    request-header = ["* set Accept-Language: en"]
    response-header = ["* remove Server"]
    block-elements = ["*"]              # pages whose blocked elements go ("*": all)
    window = 65536                      # the longest match or tag waited for
    filter = ["example.com upper"]      # plugins: HOSTPATTERN NAME [KEY=VALUE ...]

    [filters.privacy]                   # or: privacy = true (every part)
    skip = ["gpc"]                      # parts left off: params, referer, gpc, cookies
    strip-parameters = ["ref_src", "spm_*"]   # tracking parameters besides the built-in ones
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

from caplab.proxy.filters.chain import FilterChain
from caplab.proxy.filters.elements import ElementBlockingFilter
from caplab.proxy.filters.headerrules import (
    HeaderRule,
    RequestHeaderFilter,
    ResponseHeaderFilter,
    parseHeaderRule,
)
from caplab.proxy.filters.hosts import FilterConfigError, HostSelector
from caplab.proxy.filters.interfaces import (
    DEFAULT_WINDOW,
    WINDOW_RANGE,
    IRequestFilter,
    IResponseFilter,
)
from caplab.proxy.filters.plugins import (
    PluginSpec,
    isRequestFilter,
    isResponseFilter,
    loadPlugin,
    parsePluginSpec,
)
from caplab.proxy.filters.privacy import (
    DEFAULT_TRACKING_PARAMETERS,
    PARTS,
    PrivacyFilter,
    PrivacySettings,
    TrackingParameters,
    parsePrivacyParts,
    publicSuffixList,
)
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.filters.rewrite import RewriteFilter, RewriteRule, parseRewrite
from caplab.proxy.hooks import IHostPolicy
from caplab.ratelimit import LogThrottles

#: The keys of the C{[filters]} table.
KEYS = frozenset(
    {
        "rewrite",
        "request-header",
        "response-header",
        "block-elements",
        "privacy",
        "filter",
        "window",
    }
)
#: The keys of the C{[filters.privacy]} table.
PRIVACY_KEYS = frozenset({"enabled", "skip", "strip-parameters"})
#: The command-line option of each key (for messages about options).
OPTION_NAMES = {
    "rewrite": "--rewrite",
    "request-header": "--request-header",
    "response-header": "--response-header",
    "block-elements": "--block-elements",
    "privacy": "--privacy",
    "privacy.skip": "--privacy-skip",
    "privacy.strip-parameters": "--strip-param",
    "filter": "--filter",
    "window": "--filter-window",
}


@dataclass(frozen=True)
class FilterConfig:
    """
    Every filter's configuration, parsed and checked.
    """

    rewrites: tuple[RewriteRule, ...] = ()
    requestHeaders: tuple[HeaderRule, ...] = ()
    responseHeaders: tuple[HeaderRule, ...] = ()
    blockElements: HostSelector | None = None
    privacy: PrivacySettings | None = None
    plugins: tuple[PluginSpec, ...] = ()
    window: int = DEFAULT_WINDOW

    @property
    def empty(self) -> bool:
        """
        Whether no filter is configured (the proxy then needs no chain at all).
        """
        return not (
            self.rewrites
            or self.requestHeaders
            or self.responseHeaders
            or self.blockElements
            or self.privacy
            or self.plugins
        )


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise FilterConfigError(f"{where}: expected a string or a list of strings, got {value!r}")


def _privacy(value: Any, where: str, options: bool = False) -> PrivacySettings | None:
    if isinstance(value, bool):
        return PrivacySettings() if value else None
    if not isinstance(value, Mapping):
        raise FilterConfigError(f"{where}: expected true, false or a table, got {value!r}")
    unknown = sorted(set(value) - PRIVACY_KEYS)
    if unknown:
        raise FilterConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(PRIVACY_KEYS))})"
        )
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise FilterConfigError(f"{where}.enabled: expected true or false, got {enabled!r}")
    if not enabled:
        return None
    skipWhere = OPTION_NAMES["privacy.skip"] if options else f"{where}.skip"
    stripWhere = (
        OPTION_NAMES["privacy.strip-parameters"] if options else f"{where}.strip-parameters"
    )
    skipped: frozenset[str] = frozenset()
    for text in _strings(value.get("skip", []), skipWhere):
        skipped |= parsePrivacyParts(text, skipWhere)
    extra = _strings(value.get("strip-parameters", []), stripWhere)
    try:
        tracking = TrackingParameters([*DEFAULT_TRACKING_PARAMETERS, *extra])
    except FilterConfigError as e:
        raise FilterConfigError(f"{stripWhere}: {e}") from None
    parts = frozenset(PARTS) - skipped
    if not parts:
        return None
    return PrivacySettings(parts, tracking)


def _plugins(value: Any, where: str, options: bool = False) -> tuple[PluginSpec, ...]:
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    specs = []
    for index, item in enumerate(items):
        place = where if options else f"{where}[{index}]"
        if isinstance(item, str):
            specs.append(parsePluginSpec(item, place))
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise FilterConfigError(
                f"{place}: expected 'HOSTPATTERN NAME [KEY=VALUE ...]' or a table with "
                f"name, hosts and options, got {item!r}"
            )
        hosts = HostSelector(_strings(item.get("hosts", "*"), f"{place}.hosts"), place)
        options = item.get("options", {})
        if not isinstance(options, Mapping):
            raise FilterConfigError(f"{place}.options: expected a table, got {options!r}")
        specs.append(
            PluginSpec(
                str(item["name"]),
                hosts,
                item["name"],
                {str(k): str(v) for k, v in options.items()},
            )
        )
    return tuple(specs)


def parseFilterConfig(
    table: Mapping[str, Any], source: str = "[filters]", options: bool = False
) -> FilterConfig:
    """
    Parse the C{[filters]} table (see the module docstring).

    @param source: where the table comes from, for messages (C{[filters]}).
    @param options: the table stands for command-line options (L{tableFromOptions}):
        messages name the options (C{--rewrite}) instead of the keys.
    @raise FilterConfigError: an unknown key, a value of the wrong kind, or a bad rule; the
        message names the key or option (and the rule).
    """
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise FilterConfigError(
            f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})"
        )

    def where(key: str) -> str:
        return OPTION_NAMES[key] if options else f"{source} {key}"

    window = table.get("window", DEFAULT_WINDOW)
    low, high = WINDOW_RANGE
    if not isinstance(window, int) or isinstance(window, bool) or not low <= window <= high:
        raise FilterConfigError(
            f"{where('window')}: expected a number of bytes from {low} to {high}, got {window!r}"
        )
    rewrites = tuple(
        parseRewrite(text, where("rewrite"))
        for text in _strings(table.get("rewrite", []), where("rewrite"))
    )
    requestHeaders = tuple(
        parseHeaderRule(text, where("request-header"))
        for text in _strings(table.get("request-header", []), where("request-header"))
    )
    responseHeaders = tuple(
        parseHeaderRule(text, where("response-header"))
        for text in _strings(table.get("response-header", []), where("response-header"))
    )
    blockPatterns = [
        pattern.strip()
        for text in _strings(table.get("block-elements", []), where("block-elements"))
        for pattern in text.split(",")
    ]
    blockElements = HostSelector(blockPatterns, where("block-elements")) if blockPatterns else None
    privacy = _privacy(table.get("privacy", False), where("privacy"), options)
    plugins = _plugins(table.get("filter", []), where("filter"), options)
    return FilterConfig(
        rewrites, requestHeaders, responseHeaders, blockElements, privacy, plugins, window
    )


def tableFromOptions(
    rewrite: Iterable[str] = (),
    requestHeader: Iterable[str] = (),
    responseHeader: Iterable[str] = (),
    blockElements: Iterable[str] = (),
    privacy: bool = False,
    privacySkip: Iterable[str] = (),
    stripParameters: Iterable[str] = (),
    filters: Iterable[str] = (),
    window: int = DEFAULT_WINDOW,
) -> dict[str, Any]:
    """
    The C{[filters]} table the command-line options stand for (C{--rewrite} ... each
    repeatable), for L{parseFilterConfig} with C{options=True}.
    """
    table: dict[str, Any] = {
        "rewrite": list(rewrite),
        "request-header": list(requestHeader),
        "response-header": list(responseHeader),
        "block-elements": list(blockElements),
        "filter": list(filters),
        "window": window,
    }
    if privacy:
        table["privacy"] = {"skip": list(privacySkip), "strip-parameters": list(stripParameters)}
    return table


def buildChain(
    config: FilterConfig,
    policy: IHostPolicy | None = None,
    counters: FilterCounters | None = None,
    log: LogThrottles | None = None,
    callLater: Callable[..., Any] | None = None,
    findPlugins: Callable[[], list[EntryPoint]] | None = None,
) -> FilterChain:
    """
    The chain of C{config}'s filters, in this order: on requests header rules, plugins,
    privacy; on responses header rules, element blocking, rewrite rules (so they see the
    page without its blocked elements), plugins, privacy (C{Set-Cookie}).  Privacy comes
    last so that it wins: what it removes or reduces (a third-party C{Cookie} or
    C{Set-Cookie}, a cross-site C{Referer}, tracking parameters) no header rule or plugin
    can put back, and C{Sec-GPC: 1} is sent whatever they remove.

    @param policy: the host policy whose blocked hosts element blocking removes, and that a
        request filter's new target must pass (L{caplab.proxy.filters.chain.requestRefusal}).
    @param counters: kept across reloads, so the status page's counts go on.
    @raise FilterConfigError: element blocking without a policy, or a plugin that cannot be
        loaded.
    """
    counters = counters if counters is not None else FilterCounters()
    requests: list[tuple[HostSelector, IRequestFilter]] = []
    responses: list[tuple[HostSelector, IResponseFilter]] = []
    everything = HostSelector(["*"])
    summary = []
    privacy = None
    if config.privacy is not None:
        publicSuffixList()  # load it now, not at the first request
        privacy = PrivacyFilter(config.privacy, counters)
        summary.append(f"privacy ({privacy.describe()})")
    for rule in config.requestHeaders:
        requests.append((rule.hosts, RequestHeaderFilter(rule, counters)))
    for rule in config.responseHeaders:
        responses.append((rule.hosts, ResponseHeaderFilter(rule, counters)))
    if config.requestHeaders or config.responseHeaders:
        summary.append(f"{len(config.requestHeaders) + len(config.responseHeaders)} header rules")
    if config.blockElements is not None:
        if policy is None:
            raise FilterConfigError(
                "block-elements removes the elements of blocked hosts, but no block list "
                "is given (--block-list)"
            )
        responses.append(
            (config.blockElements, ElementBlockingFilter(policy, counters, config.window))
        )
        summary.append(f"element blocking on {','.join(config.blockElements.patterns)}")
    for rewrite in config.rewrites:
        responses.append((rewrite.hosts, RewriteFilter(rewrite, counters, config.window)))
    if config.rewrites:
        summary.append(f"{len(config.rewrites)} rewrite rules")
    for spec in config.plugins:
        made = loadPlugin(spec.name, spec.options, f"filter {spec.text!r}", findPlugins)
        if isRequestFilter(made):
            requests.append((spec.hosts, made))  # type: ignore[arg-type]
        if isResponseFilter(made):
            responses.append((spec.hosts, made))  # type: ignore[arg-type]
        summary.append(f"plugin {spec.name}")
    if privacy is not None:
        requests.append((everything, privacy))
        responses.append((everything, privacy))
    return FilterChain(
        requests,
        responses,
        counters,
        log,
        callLater,
        "; ".join(summary) or "no filters",
        hostPolicy=policy,
    )
