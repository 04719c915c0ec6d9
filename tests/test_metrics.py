"""
Tests for L{caplab.metrics}: the metrics, the uppercase services' counters and C{/metrics}.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from caplab.metrics import (
    LatencyFetcher,
    Metrics,
    MetricsResource,
    RateHistory,
    adminResource,
    countReceivedBytes,
    instrumentDatagramProtocol,
    instrumentTCPFactory,
    rateChart,
    statsPage,
)
from caplab.tcp import UppercaseFactory
from caplab.udp import UppercaseDatagramProtocol


def scrape(metrics: Metrics, accept: bytes | None = None) -> tuple[str, DummyRequest]:
    request = DummyRequest([b"metrics"])
    if accept is not None:
        request.requestHeaders.setRawHeaders(b"accept", [accept])
    body = MetricsResource(metrics.registry).render_GET(request)
    return body.decode("utf-8"), request


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of a scrape, parsed by prometheus-client's own parser.
    """
    text, _ = scrape(metrics)
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class MetricsTests(SynchronousTestCase):
    """
    The proxy's and cache's metrics.
    """

    def test_allNamesPrefixed(self) -> None:
        """
        Every metric family is named C{caplab_...} and the issue's figures are all there.
        """
        text, _ = scrape(Metrics())
        names = {family.name for family in text_string_to_metric_families(text)}
        self.assertTrue(all(name.startswith("caplab_") for name in names), names)
        for name in [
            "caplab_proxy_requests",
            "caplab_proxy_received_bytes",
            "caplab_proxy_sent_bytes",
            "caplab_proxy_active_connections",
            "caplab_proxy_active_tunnels",
            "caplab_proxy_blocked_requests",
            "caplab_proxy_upstream_latency_seconds",
            "caplab_cache_hits",
            "caplab_cache_misses",
            "caplab_cache_stored_bytes",
            "caplab_tcp_connections",
            "caplab_udp_datagrams",
        ]:
            self.assertIn(name, names)

    def test_requests(self) -> None:
        """
        Requests are counted by method and status; unknown methods as C{OTHER}.
        """
        metrics = Metrics()
        metrics.requestDone(b"GET", 200)
        metrics.requestDone("get", 200)
        metrics.requestDone(b"CONNECT", 403)
        metrics.requestDone(b"BREW", 501)
        found = samples(metrics)
        self.assertEqual(
            found[("caplab_proxy_requests_total", (("code", "200"), ("method", "GET")))], 2
        )
        self.assertEqual(
            found[("caplab_proxy_requests_total", (("code", "403"), ("method", "CONNECT")))], 1
        )
        self.assertEqual(
            found[("caplab_proxy_requests_total", (("code", "501"), ("method", "OTHER")))], 1
        )

    def test_trafficAndGauges(self) -> None:
        """
        Bytes, open connections and tunnels, blocks, cache figures and latency are exposed.
        """
        metrics = Metrics()
        metrics.bytesReceived(100)
        metrics.bytesSent(2000)
        metrics.connectionOpened()
        metrics.connectionOpened()
        metrics.connectionClosed()
        metrics.tunnelOpened()
        metrics.requestBlocked(b"CONNECT")
        metrics.requestBlocked(b"GET")
        metrics.authenticationFailed()
        metrics.cacheHit()
        metrics.cacheMiss()
        metrics.cacheMiss()
        metrics.cacheStoredBytes(4096)
        metrics.upstreamLatency(0.02)
        metrics.upstreamLatency(3.0)
        metrics.reloaded(True)
        metrics.reloaded(False)
        found = samples(metrics)
        expected = {
            ("caplab_proxy_received_bytes_total", ()): 100,
            ("caplab_proxy_sent_bytes_total", ()): 2000,
            ("caplab_proxy_active_connections", ()): 1,
            ("caplab_proxy_active_tunnels", ()): 1,
            ("caplab_proxy_blocked_requests_total", (("method", "CONNECT"),)): 1,
            ("caplab_proxy_blocked_requests_total", (("method", "other"),)): 1,
            ("caplab_proxy_auth_failures_total", ()): 1,
            ("caplab_cache_hits_total", ()): 1,
            ("caplab_cache_misses_total", ()): 2,
            ("caplab_cache_stored_bytes", ()): 4096,
            ("caplab_proxy_upstream_latency_seconds_count", ()): 2,
            ("caplab_proxy_upstream_latency_seconds_bucket", (("le", "0.025"),)): 1,
            ("caplab_proxy_upstream_latency_seconds_bucket", (("le", "5.0"),)): 2,
            ("caplab_reloads_total", (("result", "ok"),)): 1,
            ("caplab_reloads_total", (("result", "failed"),)): 1,
        }
        for key, value in expected.items():
            self.assertEqual(found[key], value, key)

    def test_separateRegistries(self) -> None:
        """
        Two L{Metrics} do not share figures (nor collide on names).
        """
        one, two = Metrics(), Metrics()
        one.cacheHit()
        self.assertEqual(samples(two)[("caplab_cache_hits_total", ())], 0)


class UppercaseServiceTests(SynchronousTestCase):
    """
    Counting for the uppercase services without changing them.
    """

    def test_tcp(self) -> None:
        """
        Accepted connections are counted, and open ones read from the factory.
        """
        metrics = Metrics()
        factory = instrumentTCPFactory(UppercaseFactory(maxConnections=1, clock=Clock()), metrics)
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = factory.buildProtocol(peer)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"hi")
        self.assertEqual(transport.value(), b"HI")
        self.assertIsNone(factory.buildProtocol(peer))  # over --max-connections: not counted
        found = samples(metrics)
        self.assertEqual(found[("caplab_tcp_connections_total", ())], 1)
        self.assertEqual(found[("caplab_tcp_active_connections", ())], 1)
        protocol.connectionLost(None)
        self.assertEqual(samples(metrics)[("caplab_tcp_active_connections", ())], 0)

    def test_receivedBytes(self) -> None:
        """
        Every byte a connection receives is counted, and still reaches the protocol.
        """
        metrics = Metrics()
        factory = countReceivedBytes(UppercaseFactory(clock=Clock()), metrics)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"abc")
        protocol.dataReceived(b"de")
        self.assertEqual(transport.value(), b"ABCDE")
        self.assertEqual(samples(metrics)[("caplab_proxy_received_bytes_total", ())], 5)

    def test_replayedBytesCountedOnce(self) -> None:
        """
        Bytes a line receiver buffers and hands back to itself (as HTTPChannel does with
        pipelined requests) are counted once, when they arrive.
        """

        class Pipelining(LineReceiver):
            def __init__(self) -> None:
                self.lines: list[bytes] = []
                self.buffered = b""

            def lineReceived(self, line: bytes) -> None:
                self.lines.append(line)
                self.setRawMode()

            def rawDataReceived(self, data: bytes) -> None:
                self.buffered += data

        metrics = Metrics()
        factory = countReceivedBytes(Factory.forProtocol(Pipelining), metrics)
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(b"one\r\ntwo\r\nthree\r\n")
        self.assertEqual(protocol.lines, [b"one"])
        protocol.setLineMode(protocol.buffered)
        self.assertEqual(protocol.lines, [b"one", b"two"])
        self.assertEqual(samples(metrics)[("caplab_proxy_received_bytes_total", ())], 17)

    def test_udp(self) -> None:
        """
        Received datagrams are counted, and still answered.
        """
        metrics = Metrics()
        protocol = instrumentDatagramProtocol(UppercaseDatagramProtocol(clock=Clock()), metrics)
        transport = FakeDatagramTransport()
        protocol.makeConnection(transport)
        protocol.datagramReceived(b"abc", ("127.0.0.1", 5000))
        protocol.datagramReceived(b"d", ("127.0.0.1", 5000))
        self.assertEqual(
            transport.written, [(b"ABC", ("127.0.0.1", 5000)), (b"D", ("127.0.0.1", 5000))]
        )
        self.assertEqual(samples(metrics)[("caplab_udp_datagrams_total", ())], 2)


class ResourceTests(SynchronousTestCase):
    """
    The admin site.
    """

    def test_textFormat(self) -> None:
        """
        C{/metrics} answers in the Prometheus text format, not cached.
        """
        text, request = scrape(Metrics())
        self.assertIn("# TYPE caplab_proxy_requests_total counter", text)
        contentType = request.responseHeaders.getRawHeaders(b"content-type")[0]
        self.assertTrue(contentType.startswith(b"text/plain"), contentType)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-store"])

    def test_openMetrics(self) -> None:
        """
        A scraper asking for OpenMetrics gets it.
        """
        text, request = scrape(Metrics(), b"application/openmetrics-text; version=1.0.0")
        self.assertTrue(text.endswith("# EOF\n"))
        contentType = request.responseHeaders.getRawHeaders(b"content-type")[0]
        self.assertTrue(contentType.startswith(b"application/openmetrics-text"))

    def test_tree(self) -> None:
        """
        The admin root links to C{/metrics}, which is a L{MetricsResource}.
        """
        root = adminResource(Metrics())
        request = DummyRequest([b""])
        self.assertIsInstance(root.getChildWithDefault(b"metrics", request), MetricsResource)
        index = root.getChildWithDefault(b"", request)
        self.assertIn(b'href="/metrics"', index.render(request))


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
        series = history.series()
        self.assertEqual(series, [(990.0, 0.0), (1000.0, 0.5), (1010.0, 2.0)])
        clock.advance(100)
        for _ in range(10):
            history.record()
            clock.advance(10)
        self.assertLessEqual(len(history._counts), 6)
        self.assertEqual([rate for _, rate in history.series()], [0.1, 0.1, 0.0])

    def test_metricsRecordRequests(self) -> None:
        """
        L{Metrics.requestDone} feeds the history.
        """
        clock = Clock()
        metrics = Metrics(now=clock.seconds)
        metrics.requestDone(b"GET", 200)
        self.assertEqual(metrics.history.series()[-1], (0.0, 0.1))


class RateChartTests(SynchronousTestCase):
    """
    The status page's chart of the request rate.
    """

    def test_bars(self) -> None:
        """
        One bar per bucket, the busiest full height (less the label's room), an idle one
        zero; the peak is labelled.
        """
        clock = Clock()
        history = RateHistory(clock.seconds, interval=10, buckets=4)
        history.record(10)
        clock.advance(10)
        history.record(20)
        svg = rateChart(history, width=400, height=120)
        self.assertTrue(svg.startswith("<svg "))
        self.assertEqual(svg.count("<rect "), 4)
        self.assertIn('data-peak="2.000"', svg)
        self.assertIn('y="20.0" width="99.0" height="100.0"', svg)
        self.assertIn('y="70.0" width="99.0" height="50.0"', svg)
        self.assertIn("peak 2.00/s", svg)

    def test_idle(self) -> None:
        """
        Without requests every bar is empty (no division by zero).
        """
        svg = rateChart(RateHistory(Clock().seconds))
        self.assertEqual(svg.count('height="0.0"'), 60)
        self.assertIn("last 10 min", svg)


class LatencyFetcherTests(SynchronousTestCase):
    """
    L{LatencyFetcher} times the upstream response head.
    """

    def test_timed(self) -> None:
        """
        The time from the request to the response head lands in the histogram; a failure is
        passed on untimed.
        """
        clock = Clock()
        metrics = Metrics()
        pending: list[Deferred[object]] = []

        class Inner:
            def fetch(self, request: object, body: object) -> Deferred[object]:
                d: Deferred[object] = Deferred()
                pending.append(d)
                return d

        fetcher = LatencyFetcher(Inner(), metrics, clock)
        d = fetcher.fetch("request", None)
        clock.advance(0.3)
        pending[0].callback("response")
        self.assertEqual(self.successResultOf(d), "response")
        failed = fetcher.fetch("request", None)
        pending[1].errback(ValueError("no"))
        self.failureResultOf(failed, ValueError)
        found = samples(metrics)
        self.assertEqual(found[("caplab_proxy_upstream_latency_seconds_count", ())], 1)
        self.assertEqual(
            found[("caplab_proxy_upstream_latency_seconds_bucket", (("le", "0.25"),))], 0
        )
        self.assertEqual(
            found[("caplab_proxy_upstream_latency_seconds_bucket", (("le", "0.5"),))], 1
        )


class StatsPageTests(SynchronousTestCase):
    """
    The stats page for a person.
    """

    def test_content(self) -> None:
        """
        The page has the chart, requests by method and status, and the figures.
        """
        clock = Clock()
        metrics = Metrics(now=clock.seconds)
        metrics.requestDone(b"GET", 200)
        metrics.requestDone(b"GET", 200)
        metrics.requestDone(b"CONNECT", 403)
        metrics.requestBlocked(b"CONNECT")
        metrics.upstreamLatency(0.02)
        page = statsPage(metrics).decode()
        self.assertIn('<svg xmlns="http://www.w3.org/2000/svg" class="rate-chart"', page)
        self.assertIn("<tr><td>GET</td><td>200</td><td>2</td></tr>", page)
        self.assertIn("<tr><td>CONNECT</td><td>403</td><td>1</td></tr>", page)
        self.assertIn("<tr><th>requests blocked by the lists</th><td>1</td></tr>", page)
        self.assertIn("<tr><th>mean upstream latency</th><td>20.0 ms</td></tr>", page)

    def test_empty(self) -> None:
        """
        Before any request the page says so.
        """
        page = statsPage(Metrics()).decode()
        self.assertIn("none yet", page)
        self.assertIn("no upstream requests yet", page)
