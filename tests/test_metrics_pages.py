"""
Tests for the status pages: L{caplab.metrics.history}, L{caplab.metrics.chart},
L{caplab.metrics.figures} and L{caplab.metrics.pages}.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from caplab.metrics.chart import niceCeiling, rateChart
from caplab.metrics.figures import Figures, LocalFigures, WorkerFigures
from caplab.metrics.history import RateHistory, seriesOf
from caplab.metrics.pages import (
    FilterCard,
    StatsPage,
    StatusPage,
    byteText,
    configText,
    sampleName,
    uptimeText,
)
from caplab.metrics.registry import CacheFigures, Metrics
from caplab.metrics.shared import mergeFamilies
from caplab.proxy.filters.reporting import COUNTERS, FilterCounters
from caplab.proxy.hooks import PageRequest


def get(path: bytes = b"/", method: bytes = b"GET") -> PageRequest:
    return PageRequest(method, path, b"", [], "127.0.0.1", ("127.0.0.1", 8080))


class FigureRows(HTMLParser):
    """
    The C{data-metric}/C{data-value} pairs and the visible text of each figure's row.
    """

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, float] = {}
        self.shown: dict[str, str] = {}
        self._current: str | None = None
        self._cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-metric"):
            self._current = found["data-metric"]
            assert self._current is not None
            self.values[self._current] = float(found["data-value"] or "nan")
            self._cells = []

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._cells.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._current is not None:
            self.shown[self._current] = self._cells[-1].strip()
            self._current = None


def rowsOf(body: bytes) -> FigureRows:
    parser = FigureRows()
    parser.feed(body.decode())
    return parser


class RateHistoryTests(SynchronousTestCase):
    """
    The request rate over the last minutes.
    """

    def test_series(self) -> None:
        """
        Requests land in 10-second buckets reported as requests per second, oldest first;
        buckets older than the window are dropped.
        """
        clock = Clock()
        clock.advance(1000)
        history = RateHistory(clock.seconds, interval=10, buckets=3)
        history.record(5)
        clock.advance(10)
        history.record(20)
        self.assertEqual(history.series(), [(990.0, 0.0), (1000.0, 0.5), (1010.0, 2.0)])
        self.assertEqual(history.recent(), {100: 5, 101: 20})
        clock.advance(100)
        for _ in range(10):
            history.record()
            clock.advance(10)
        self.assertLessEqual(len(history._counts), 6)
        self.assertEqual([rate for _, rate in history.series()], [0.1, 0.1, 0.0])

    @given(st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 5)), max_size=50))
    def test_seriesAddsUp(self, events: list[tuple[int, int]]) -> None:
        """
        Whatever the order requests come in, the series counts each recorded in the window
        once, at the rate of its bucket.
        """
        clock = Clock()
        history = RateHistory(clock.seconds, interval=10, buckets=60)
        for at, count in sorted(events):
            clock.advance(at - clock.seconds())
            history.record(count)
        now = clock.seconds()
        inWindow = sum(c for at, c in events if at // 10 > now // 10 - 60)
        self.assertAlmostEqual(sum(rate * 10 for _, rate in history.series()), inWindow)
        self.assertEqual(seriesOf(history.recent(), now), history.series())


class RateChartTests(SynchronousTestCase):
    """
    The status pages' chart of the request rate.
    """

    def test_axes(self) -> None:
        """
        One bar per bucket scaled to a round ceiling; a y axis in requests per second with
        labelled grid lines; an x axis labelled in time before now; units in the titles.
        """
        series = [(float(i * 10), 0.0) for i in range(60)]
        series[-1] = (590.0, 2.0)
        series[-2] = (580.0, 1.0)
        svg = rateChart(series, 10.0, width=640, height=220)
        self.assertTrue(svg.startswith("<svg "))
        self.assertEqual(svg.count("<rect "), 60)
        self.assertIn('data-peak="2.000"', svg)
        self.assertIn('data-interval="10"', svg)
        labels = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
        self.assertEqual(labels, ["0", "0.5", "1", "1.5", "2"])
        self.assertIn(">requests/s</text>", svg)
        ticks = re.findall(r'text-anchor="middle">([^<]+)</text>', svg)
        self.assertEqual(
            ticks[:6],
            ["now", "-2 min", "-4 min", "-6 min", "-8 min", "time before now (one bar per 10 s)"],
        )
        # The plot is 220 - 12 - 44 = 164 high: 2 req/s is full height, 1 req/s half.
        self.assertIn('y="12.0" width="8.6" height="164.0"><title>now: 2.00 requests/s', svg)
        self.assertIn('height="82.0"><title>-10 s: 1.00 requests/s', svg)

    def test_idle(self) -> None:
        """
        Without requests every bar is empty and the axis goes to 1 (no division by zero).
        """
        svg = rateChart(RateHistory(Clock().seconds).series(), 10.0)
        self.assertEqual(svg.count('height="0.0"'), 60)
        self.assertIn('data-peak="0.000"', svg)
        self.assertIn("over the last 10 minutes", svg)

    @given(st.floats(min_value=1e-6, max_value=1e9))
    def test_niceCeiling(self, value: float) -> None:
        """
        The ceiling is at least the value, at most 2.5 times it, and round.
        """
        ceiling = niceCeiling(value)
        self.assertGreaterEqual(ceiling * (1 + 1e-9), value)
        self.assertLessEqual(ceiling, value * 2.5 * (1 + 1e-9))
        mantissa = f"{ceiling:e}".split("e")[0].rstrip("0").rstrip(".")
        self.assertIn(mantissa, ("1", "2", "2.5", "5"))


class TextTests(SynchronousTestCase):
    """
    How figures and configuration read.
    """

    def test_uptimeAndBytes(self) -> None:
        self.assertEqual(uptimeText(125.7), "0:02:05")
        self.assertEqual(uptimeText(3 * 86400 + 3723), "3 days, 1:02:03")
        self.assertEqual(byteText(512), "512 B")
        self.assertEqual(byteText(1536), "1.5 KiB")
        self.assertEqual(byteText(3 * 1024**3), "3.0 GiB")

    def test_noSecrets(self) -> None:
        """
        A value named like a secret is hidden, a URL's password masked, lists and flags
        read naturally.
        """
        self.assertEqual(configText("redis-password", "hunter2"), "(hidden)")
        self.assertEqual(
            configText("cache-redis", "redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0",
        )
        self.assertEqual(
            configText("upstream-proxy", "http://alice:s3cret@parent:3128"),
            "http://alice:***@parent:3128",
        )
        self.assertEqual(configText("block-list", ["a.txt", "b.txt"]), "a.txt, b.txt")
        self.assertEqual(configText("default-deny", True), "on")
        self.assertEqual(configText("auth-file", None), "none")


def busyMetrics(clock: Clock) -> Metrics:
    metrics = Metrics(now=clock.seconds)
    for _ in range(3):
        metrics.connectionOpened()
    metrics.connectionClosed()
    metrics.requestDone(b"GET", 200, 2000)
    metrics.requestDone(b"GET", 200, 3000)
    metrics.requestDone(b"CONNECT", 403)
    metrics.requestBlocked(b"CONNECT")
    metrics.tunnelOpened()
    metrics.cacheHit()
    metrics.cacheMiss()
    metrics.cacheMiss()
    metrics.cacheMiss()
    metrics.watchCache(lambda: CacheFigures(3 * 1024 * 1024, 7))
    metrics.upstreamLatency(0.02)
    return metrics


class StatusPageTests(SynchronousTestCase):
    """
    The status page (C{/}) as an C{IPage}.
    """

    def test_figuresMatchMetrics(self) -> None:
        """
        Every figure the page shows is the value C{/metrics} exports for its metric, and
        reads as that number.
        """
        clock = Clock()
        clock.advance(10_000)
        metrics = busyMetrics(clock)
        clock.advance(125)
        response = StatusPage(LocalFigures(metrics), "1.2.3").render(get())
        self.assertEqual(response.code, 200)
        rows = rowsOf(response.body)
        exported: dict[str, float] = {}
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
            for sample in family.samples:
                exported[sample.name] = exported.get(sample.name, 0) + sample.value
        self.assertGreaterEqual(len(rows.values), 12)
        for metric, value in rows.values.items():
            self.assertEqual(value, exported[metric], metric)
        self.assertEqual(rows.shown["caplab_proxy_requests_total"], "3")
        self.assertEqual(rows.shown["caplab_proxy_active_connections"], "2")
        self.assertEqual(rows.shown["caplab_cache_stored_bytes"], "3.0 MiB")
        self.assertEqual(rows.shown["caplab_cache_stored_entries"], "7")
        body = response.body.decode()
        self.assertIn("<h1>caplab proxy</h1>", body)
        self.assertIn("Version 1.2.3, up 0:02:05 (125 seconds)", body)
        self.assertIn(
            '<tr id="hit-ratio" data-value="0.25"><th>hit ratio</th><td>25.0 %</td>', body
        )
        self.assertIn('class="rate-chart"', body)
        self.assertNotIn("<script", body)

    def test_headers(self) -> None:
        """
        The page is HTML, never stored, and may load nothing from elsewhere nor run script.
        """
        response = StatusPage(LocalFigures(Metrics()), "1").render(get())
        headers = dict(response.headers)
        self.assertEqual(headers[b"Content-Type"], b"text/html; charset=utf-8")
        self.assertEqual(headers[b"Cache-Control"], b"no-store")
        self.assertIn(b"default-src 'none'", headers[b"Content-Security-Policy"])
        self.assertIn(
            '<tr id="hit-ratio"><th>hit ratio</th><td>no lookups yet</td>', response.body.decode()
        )

    def test_onlyGetAndHead(self) -> None:
        """
        Other methods get a 405 that says which are allowed.
        """
        page = StatusPage(LocalFigures(Metrics()), "1")
        self.assertEqual(page.render(get(method=b"HEAD")).code, 200)
        refused = page.render(get(method=b"POST"))
        self.assertEqual(refused.code, 405)
        self.assertIn((b"Allow", b"GET, HEAD"), refused.headers)

    def test_configuration(self) -> None:
        """
        The configuration in force is listed by name, escaped, without secrets.
        """
        config = {
            "proxy-endpoint": "tcp:8080:interface=127.0.0.1",
            "block-list": ["/etc/caplab/<ads>.txt"],
            "upstream-proxy": "http://alice:s3cret@parent:3128",
        }
        body = StatusPage(LocalFigures(Metrics()), "1", config).render(get()).body.decode()
        self.assertIn('<table id="config"', body)
        self.assertIn("<tr><th>block-list</th><td>/etc/caplab/&lt;ads&gt;.txt</td></tr>", body)
        self.assertIn("http://alice:***@parent:3128", body)
        self.assertNotIn("s3cret", body)
        self.assertNotIn(
            'id="config"', StatusPage(LocalFigures(Metrics()), "1").render(get()).body.decode()
        )

    def test_workers(self) -> None:
        """
        Under C{--workers} the page says which worker answered, the whole server's uptime,
        and has a row per worker (this one marked).
        """

        class Source:
            def figures(self) -> Figures:
                return Figures(
                    families=[],
                    rate=[],
                    started=1000.0,
                    now=4723.0,
                    workers=[
                        WorkerFigures(
                            101,
                            1,
                            4000.0,
                            {
                                "caplab_proxy_requests_total": 5.0,
                                "caplab_process_resident_memory_bytes": 2**25,
                            },
                        ),
                        WorkerFigures(102, 2, 4600.0, {"caplab_proxy_requests_total": 7.0}),
                    ],
                )

        page = StatusPage(Source(), "1", worker="worker 2 (pid 102) of 2", pid=102)
        body = page.render(get()).body.decode()
        self.assertIn("answered by worker 2 (pid 102) of 2", body)
        self.assertIn("The server has been up 1:02:03.", body)
        self.assertIn(
            '<tr data-pid="101"><td>1</td><td>101</td><td>0:12:03</td><td>0</td><td>5</td>'
            "<td>0</td><td>32.0 MiB</td></tr>",
            body,
        )
        self.assertIn(
            '<tr class="self" data-pid="102"><td>2</td><td>102</td><td>0:02:03</td>', body
        )


class FilterCardTests(SynchronousTestCase):
    """
    The status page's Filters card: what the content filters did, while they run.
    """

    def setUp(self) -> None:
        self.metrics = Metrics()
        self.counters = FilterCounters()
        self.metrics.watchFilters(self.counters)
        self.active = True
        self.card = FilterCard(lambda: self.active, COUNTERS)
        self.page = StatusPage(LocalFigures(self.metrics), "1", filters=self.card)

    def shownRows(self, body: bytes) -> FigureRows:
        """
        The filter card's rows of a rendered page (the other cards' left out).
        """
        rows = rowsOf(body)
        for table in (rows.values, rows.shown):
            for metric in [m for m in table if not m.startswith("caplab_filter_")]:
                del table[metric]
        return rows

    def exported(self) -> dict[str, float]:
        """
        The labelled filter samples of C{/metrics} as its text has them, C{name{labels}}
        (the text before the value) -> value.
        """
        found = {}
        for line in generate_latest(self.metrics.registry).decode().splitlines():
            if line.startswith("caplab_filter_events_total{"):
                sample, _, value = line.rpartition(" ")
                found[sample] = float(value)
        return found

    def test_countsMatchMetrics(self) -> None:
        """
        A row per kind of event, in the filters' order, each named as C{/metrics} names its
        sample (labels included) and showing its value; a plugin's kind follows, by its
        label.
        """
        self.counters.add("cookies-dropped", 2)
        self.counters.add("tracking-parameters", 1234)
        self.counters.add("my-plugin-event")
        body = self.page.render(get()).body
        rows = self.shownRows(body)
        exported = self.exported()
        self.assertEqual(rows.values, exported)
        self.assertEqual(len(rows.values), len(COUNTERS) + 1)
        cookies = 'caplab_filter_events_total{what="cookies-dropped"}'
        self.assertEqual(rows.shown[cookies], "2")
        tracking = 'caplab_filter_events_total{what="tracking-parameters"}'
        self.assertEqual(rows.shown[tracking], "1,234")
        self.assertEqual(rows.shown['caplab_filter_events_total{what="rewrites"}'], "0")
        text = body.decode()
        self.assertIn('<section class="card" id="filters"><h2>Filters</h2>', text)
        self.assertIn(f"<th>{COUNTERS['cookies-dropped']}</th><td>2</td>", text)
        self.assertIn("<th>my-plugin-event</th><td>1</td>", text)
        order = [text.index(f"what=&quot;{what}&quot;") for what in [*COUNTERS, "my-plugin-event"]]
        self.assertEqual(order, sorted(order))

    def test_onlyWhileFiltersRun(self) -> None:
        """
        No card when the proxy has no filters, nor while a reload has switched them off
        (asked at each rendering); their counts stay in C{/metrics} all the same.
        """
        self.counters.add("rewrites")
        self.assertIn('id="filters"', self.page.render(get()).body.decode())
        self.active = False
        self.assertNotIn('id="filters"', self.page.render(get()).body.decode())
        self.assertEqual(self.exported()['caplab_filter_events_total{what="rewrites"}'], 1)
        self.active = True
        self.assertIn('id="filters"', self.page.render(get()).body.decode())
        plain = StatusPage(LocalFigures(self.metrics), "1").render(get()).body.decode()
        self.assertNotIn('id="filters"', plain)
        self.assertNotIn("caplab_filter", plain)

    def test_escaped(self) -> None:
        """
        A kind whose label needs escaping (a plugin's) is named as the Prometheus text
        format escapes it, and shown as HTML escapes it.
        """
        what = 'odd "<kind>"\\'
        self.counters.add(what, 3)
        body = self.page.render(get()).body
        self.assertEqual(self.shownRows(body).values, self.exported())
        self.assertIn(sampleName("caplab_filter_events_total", {"what": what}), self.exported())
        self.assertIn("<th>odd &quot;&lt;kind&gt;&quot;\\</th><td>3</td>", body.decode())
        self.assertEqual(sampleName("caplab_x", {}), "caplab_x")

    def test_wholeServer(self) -> None:
        """
        Under C{--workers} the card shows the whole server's counts (the families as added
        up from every worker).
        """
        one, two = Metrics(), Metrics()
        for metrics, count in ((one, 2), (two, 5)):
            counters = FilterCounters()
            counters.add("set-cookies-dropped", count)
            metrics.watchFilters(counters)
        families = mergeFamilies([list(one.registry.collect()), list(two.registry.collect())])

        class Source:
            def figures(self) -> Figures:
                return Figures(families=families, rate=[], started=0.0, now=1.0)

        page = StatusPage(Source(), "1", filters=self.card)
        rows = rowsOf(page.render(get()).body)
        self.assertEqual(rows.shown['caplab_filter_events_total{what="set-cookies-dropped"}'], "7")


class StatsPageTests(SynchronousTestCase):
    """
    The figures page (C{/stats}).
    """

    def test_content(self) -> None:
        """
        The page has the chart, requests by method and status, and the figures.
        """
        clock = Clock()
        page = StatsPage(LocalFigures(busyMetrics(clock)))
        body = page.render(get(b"/stats")).body.decode()
        self.assertIn('<svg xmlns="http://www.w3.org/2000/svg" class="rate-chart"', body)
        self.assertIn("<tr><td>GET</td><td>200</td><td>2</td></tr>", body)
        self.assertIn("<tr><td>CONNECT</td><td>403</td><td>1</td></tr>", body)
        self.assertIn("<th>requests blocked by the lists</th><td>1</td></tr>", body)
        self.assertIn("<tr><th>mean upstream latency</th><td>20.0 ms</td></tr>", body)
        self.assertIn("caplab proxy figures", body)

    def test_otherCodes(self) -> None:
        """
        Status codes no standard names are one row, C{other}, whatever their number.
        """
        metrics = Metrics()
        for code in (200, 299, 599, 999):
            metrics.requestDone(b"GET", code)
        body = StatsPage(LocalFigures(metrics)).render(get(b"/stats")).body.decode()
        self.assertIn("<tr><td>GET</td><td>200</td><td>1</td></tr>", body)
        self.assertIn("<tr><td>GET</td><td>other</td><td>3</td></tr>", body)
        self.assertNotIn("299", body)

    def test_empty(self) -> None:
        """
        Before any request the page says so.
        """
        body = StatsPage(LocalFigures(Metrics())).render(get(b"/stats")).body.decode()
        self.assertIn("none yet", body)
        self.assertIn("no upstream requests yet", body)

    def test_answeredBy(self) -> None:
        body = StatsPage(LocalFigures(Metrics()), "worker 1 (pid 5) of 2").render(get()).body
        self.assertIn(
            b"Answered by worker 1 (pid 5) of 2; the figures are the whole server's", body
        )
