"""
The proxy's status pages, as L{IPage}s the proxy serves on its own port: the status page
(C{/}) and the figures page (C{/stats}).

Both are styled HTML that needs no JavaScript (they refresh themselves every ten seconds),
render from memory (the figures of a L{caplab.metrics.figures.FiguresSource}) and show the
same figures C{/metrics} exports: each figure's row names its metric (C{data-metric}) and
exact value (C{data-value}).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from html import escape

from caplab.metrics.chart import rateChart
from caplab.metrics.figures import Figures, FiguresSource
from caplab.proxy.hooks import Headers, PageRequest, PageResponse

#: The fields of every page: HTML, never stored, no script, nothing loaded from elsewhere.
PAGE_HEADERS: Headers = [
    (b"Content-Type", b"text/html; charset=utf-8"),
    (b"Cache-Control", b"no-store"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (
        b"Content-Security-Policy",
        b"default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'",
    ),
]

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2733;
background:#f4f6f9}
header{background:#1d3557;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:1.5em}
header p{margin:4px 0 0;color:#cfd8e3}
main{padding:8px 24px 24px;max-width:1100px}
h2{font-size:1.1em;margin:22px 0 8px;color:#1d3557}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px}
.card{background:#fff;border:1px solid #d8dde6;border-radius:6px;padding:10px 14px}
.card h2{margin:0 0 6px}
table{border-collapse:collapse;background:#fff}
th,td{padding:3px 10px;text-align:left;border-bottom:1px solid #eef1f5}
td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.card th{font-weight:normal}
.card table{width:100%;background:none}
table.list td{text-align:left}
.chart{background:#fff;border:1px solid #d8dde6;border-radius:6px;padding:8px;
display:inline-block}
tr.self{background:#fff6d6}
footer{padding:0 24px 24px;color:#555}
a{color:#1d5fa8}
code{background:#e8ecf2;padding:1px 4px;border-radius:3px}
"""


def uptimeText(seconds: float) -> str:
    """
    C{0:02:05}, C{3 days, 4:05:06}.
    """
    return str(timedelta(seconds=int(max(seconds, 0))))


def byteText(count: float) -> str:
    """
    A byte count for a person: C{512 B}, C{1.5 KiB}, C{3.2 GiB}.
    """
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


_USERINFO_PASSWORD = re.compile(r"(//[^/@:\s]*:)[^/@\s]*@")
_SECRET_NAME = re.compile(r"password|passwd|secret|token|credential", re.IGNORECASE)


def configText(name: str, value: object) -> str:
    """
    A configuration value for the page: lists joined, flags as on/off, and never a secret
    (a value whose name says it is one is hidden, a URL's password is masked), even if one
    slipped into the mapping.
    """
    if _SECRET_NAME.search(name):
        return "(hidden)"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple | set | frozenset):
        text = ", ".join(str(item) for item in value) or "none"
    else:
        text = str(value)
    return _USERINFO_PASSWORD.sub(r"\1***@", text)


def _page(title: str, heading: str, lead: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="10"><link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        f"<header><h1>{escape(heading)}</h1><p>{lead}</p></header>\n<main>\n{body}</main>\n"
        "<footer>This is an HTTP forward proxy: point a browser or <code>curl -x</code> at "
        'this address to use it. <a href="/">Status</a> · <a href="/stats">figures</a> · '
        '<a href="/proxy.pac">PAC file</a></footer>\n</body></html>\n'
    ).encode()


def _row(label: str, figures: Figures, metric: str, text: str | None = None) -> str:
    """
    A figure's row: its label, and its value as text, marked with its metric's name and
    exact value.
    """
    value = figures.total(metric)
    shown = text if text is not None else f"{value:,.0f}"
    return (
        f'<tr data-metric="{metric}" data-value="{value:.17g}"><th>{escape(label)}</th>'
        f"<td>{escape(shown)}</td></tr>\n"
    )


def _labelValue(value: str) -> str:
    """
    A label value escaped as the Prometheus text format escapes it.
    """
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sampleName(metric: str, labels: Mapping[str, str]) -> str:
    """
    A labelled sample's name as the Prometheus text format writes it,
    C{caplab_filter_events_total{what="rewrites"}}: what a labelled row's C{data-metric}
    says, so that it can be looked up in C{/metrics} as it is.
    """
    if not labels:
        return metric
    pairs = ",".join(f'{name}="{_labelValue(value)}"' for name, value in sorted(labels.items()))
    return f"{metric}{{{pairs}}}"


def _card(title: str, rows: str, cardId: str | None = None) -> str:
    attribute = f' id="{escape(cardId)}"' if cardId else ""
    return (
        f'<section class="card"{attribute}><h2>{escape(title)}</h2><table>\n{rows}</table>'
        "</section>\n"
    )


#: The filters' events, by C{what}: the sample the status page's Filters card shows.
FILTER_EVENTS = "caplab_filter_events_total"


@dataclass(frozen=True)
class FilterCard:
    """
    What the status page needs for its Filters card besides the figures.

    @ivar active: whether content filters run now (asked at each rendering: a reload may
        switch them on or off); the card is shown only while they do.
    @ivar meanings: what each kind of event (the C{what} label) means, for a person, in
        the order the card lists them; a kind it does not name (a plugin's) is listed
        after them under its label.
    """

    active: Callable[[], bool]
    meanings: Mapping[str, str] = field(default_factory=dict)

    def render(self, figures: Figures) -> str:
        """
        The card: a row per kind of event with its count, named by the sample it shows
        (C{data-metric}, labels included) and its exact value, as C{/metrics} has them.
        """
        counts = figures.byLabel(FILTER_EVENTS, "what")
        kinds = [*self.meanings, *sorted(set(counts) - set(self.meanings))]
        rows = []
        for what in kinds:
            value = counts.get(what, 0.0)
            rows.append(
                f'<tr data-metric="{escape(sampleName(FILTER_EVENTS, {"what": what}))}" '
                f'data-value="{value:.17g}"><th>{escape(self.meanings.get(what, what))}</th>'
                f"<td>{value:,.0f}</td></tr>\n"
            )
        return _card("Filters", "".join(rows), cardId="filters")


def _answeredBy(worker: str | None) -> str:
    if not worker:
        return ""
    return (
        f'<p id="answered-by">Answered by {escape(worker)}; the figures are the whole '
        "server's (every worker's).</p>\n"
    )


def _chart(figures: Figures) -> str:
    return (
        '<h2>Requests per second</h2>\n<div class="chart">'
        f"{rateChart(figures.rate, figures.interval)}</div>\n"
    )


def _refuse(request: PageRequest) -> PageResponse | None:
    """
    A 405 for anything but GET and HEAD.
    """
    if request.method in (b"GET", b"HEAD"):
        return None
    return PageResponse(
        405,
        [(b"Allow", b"GET, HEAD"), (b"Content-Type", b"text/plain; charset=utf-8")],
        b"405 Method Not Allowed: this page is for GET and HEAD\n",
    )


class StatusPage:
    """
    C{/}: version, uptime, connections, requests, tunnels, the cache, traffic, what the
    content filters did (while they run), the request rate, the configuration in force and
    (under C{--workers}) a row per worker.
    """

    def __init__(
        self,
        source: FiguresSource,
        version: str,
        config: Mapping[str, object] | Callable[[], Mapping[str, object]] | None = None,
        worker: str | None = None,
        pid: int | None = None,
        filters: FilterCard | None = None,
    ) -> None:
        """
        @param config: the configuration in force, option name -> value (never secrets),
            or a function that gives it when the page is rendered (so that it follows a
            reload).
        @param worker: under C{--workers}, which worker this is, for a person (C{"worker
            1 (pid 123) of 2"}).
        @param pid: this process's id, to mark its row among the workers'.
        @param filters: the Filters card (None: the proxy has no content filters).
        """
        self.source = source
        self.version = version
        if callable(config):
            self.configInForce = config
        else:
            fixed = dict(config or {})
            self.configInForce = lambda: fixed
        self.worker = worker
        self.pid = os.getpid() if pid is None else pid
        self.filters = filters

    def render(self, request: PageRequest) -> PageResponse:
        refused = _refuse(request)
        if refused is not None:
            return refused
        figures = self.source.figures()
        up = uptimeText(figures.uptime)
        lead = f"Version {escape(self.version)}, up {up} ({figures.uptime:.0f} seconds)"
        if self.worker:
            lead += f"; answered by {escape(self.worker)}"
        body = [_answeredBy(self.worker), '<div class="cards">\n', self._cards(figures)]
        if self.filters is not None and self.filters.active():
            body.append(self.filters.render(figures))
        body.append("</div>\n")
        body.append(_chart(figures))
        if figures.workers:
            body.append(self._workers(figures))
        config = self.config
        if config:
            body.append(self._config(config))
        return PageResponse(
            200, list(PAGE_HEADERS), _page("caplab proxy", "caplab proxy", lead, "".join(body))
        )

    def _cards(self, figures: Figures) -> str:
        f = figures
        ratio = f.hitRatio()
        if ratio is None:
            cache = '<tr id="hit-ratio"><th>hit ratio</th><td>no lookups yet</td></tr>\n'
        else:
            cache = (
                f'<tr id="hit-ratio" data-value="{ratio:.17g}"><th>hit ratio</th>'
                f"<td>{100 * ratio:.1f} %</td></tr>\n"
            )
        cache += _row("hits", f, "caplab_cache_hits_total")
        cache += _row("misses", f, "caplab_cache_misses_total")
        cache += _row(
            "stored", f, "caplab_cache_stored_bytes", byteText(f.total("caplab_cache_stored_bytes"))
        )
        if f.has("caplab_cache_stored_entries"):
            cache += _row("stored responses", f, "caplab_cache_stored_entries")
        return "".join(
            [
                _card(
                    "Connections",
                    _row("open connections", f, "caplab_proxy_active_connections")
                    + _row("connections since start", f, "caplab_proxy_connections_total")
                    + _row(
                        "refused (--max-connections)",
                        f,
                        "caplab_proxy_refused_connections_total",
                    ),
                ),
                _card(
                    "Requests",
                    _row("requests since start", f, "caplab_proxy_requests_total")
                    + _row("blocked by the lists", f, "caplab_proxy_blocked_requests_total")
                    + _row("answered 407", f, "caplab_proxy_auth_failures_total"),
                ),
                _card(
                    "Tunnels",
                    _row("open tunnels", f, "caplab_proxy_active_tunnels")
                    + _row("tunnels since start", f, "caplab_proxy_tunnels_total"),
                ),
                _card("Cache", cache),
                _card(
                    "Traffic",
                    _row(
                        "received",
                        f,
                        "caplab_proxy_received_bytes_total",
                        byteText(f.total("caplab_proxy_received_bytes_total")),
                    )
                    + _row(
                        "sent",
                        f,
                        "caplab_proxy_sent_bytes_total",
                        byteText(f.total("caplab_proxy_sent_bytes_total")),
                    ),
                ),
            ]
        )

    def _workers(self, figures: Figures) -> str:
        rows = []
        for w in figures.workers:
            up = "?" if w.started is None else uptimeText(figures.now - w.started)
            rss = w.total("caplab_process_resident_memory_bytes")
            mark = ' class="self"' if w.pid == self.pid else ""
            rows.append(
                f'<tr{mark} data-pid="{w.pid}">'
                f"<td>{'?' if w.index is None else w.index}</td><td>{w.pid}</td>"
                f"<td>{up}</td>"
                f"<td>{w.total('caplab_proxy_active_connections'):,.0f}</td>"
                f"<td>{w.total('caplab_proxy_requests_total'):,.0f}</td>"
                f"<td>{w.total('caplab_proxy_active_tunnels'):,.0f}</td>"
                f"<td>{byteText(rss) if rss else '?'}</td></tr>\n"
            )
        return (
            f"<h2>Workers</h2>\n<p>The server has been up {uptimeText(figures.uptime)}.</p>\n"
            '<table id="workers"><tr><th>worker</th><th>pid</th><th>up</th>'
            "<th>open connections</th><th>requests</th><th>open tunnels</th>"
            f"<th>memory</th></tr>\n{''.join(rows)}</table>\n"
        )

    @property
    def config(self) -> dict[str, object]:
        """
        The configuration in force now.
        """
        return dict(self.configInForce())

    def _config(self, config: Mapping[str, object]) -> str:
        rows = "".join(
            f"<tr><th>{escape(name)}</th><td>{escape(configText(name, value))}</td></tr>\n"
            for name, value in sorted(config.items())
        )
        return f'<h2>Configuration</h2>\n<table id="config" class="list">\n{rows}</table>\n'


#: The figures of the stats page: (label, metric sample name), in order.
STATS_FIGURES = (
    ("open client connections", "caplab_proxy_active_connections"),
    ("open CONNECT tunnels", "caplab_proxy_active_tunnels"),
    ("bytes received from clients", "caplab_proxy_received_bytes_total"),
    ("bytes sent to clients", "caplab_proxy_sent_bytes_total"),
    ("requests blocked by the lists", "caplab_proxy_blocked_requests_total"),
    ("requests answered 407", "caplab_proxy_auth_failures_total"),
    ("cache hits", "caplab_cache_hits_total"),
    ("cache misses", "caplab_cache_misses_total"),
    ("bytes in the cache", "caplab_cache_stored_bytes"),
    ("uppercase TCP connections", "caplab_tcp_connections_total"),
    ("uppercase UDP datagrams", "caplab_udp_datagrams_total"),
)


class StatsPage:
    """
    C{/stats}: the request rate, requests by method and status, and every other figure.
    """

    def __init__(self, source: FiguresSource, worker: str | None = None) -> None:
        """
        @param worker: under C{--workers}, which worker answers (the page says so).
        """
        self.source = source
        self.worker = worker

    def render(self, request: PageRequest) -> PageResponse:
        refused = _refuse(request)
        if refused is not None:
            return refused
        f = self.source.figures()
        requestRows = (
            "".join(
                f"<tr><td>{escape(method)}</td><td>{escape(code)}</td><td>{count}</td></tr>\n"
                for method, code, count in f.requestsByStatus()
            )
            or '<tr><td colspan="3">none yet</td></tr>\n'
        )
        figureRows = "".join(
            f'<tr data-metric="{name}" data-value="{f.total(name):.17g}">'
            f"<th>{escape(label)}</th><td>{int(f.total(name))}</td></tr>\n"
            for label, name in STATS_FIGURES
        )
        latency = f.meanLatency()
        latencyText = "no upstream requests yet" if latency is None else f"{1000 * latency:.1f} ms"
        body = (
            f"{_answeredBy(self.worker)}{_chart(f)}"
            "<h2>Requests by method and status</h2>\n"
            '<table id="requests" class="list"><tr><th>method</th><th>status</th>'
            f"<th>requests</th></tr>\n{requestRows}</table>\n"
            f'<h2>Figures</h2>\n<table id="figures">\n{figureRows}'
            f"<tr><th>mean upstream latency</th><td>{latencyText}</td></tr>\n</table>\n"
        )
        lead = f"Up {uptimeText(f.uptime)}; refreshed every 10 seconds"
        return PageResponse(
            200,
            list(PAGE_HEADERS),
            _page("caplab proxy figures", "caplab proxy figures", lead, body),
        )
