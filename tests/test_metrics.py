"""
Tests for L{caplab.metrics}: the metrics, the uppercase services' counters and C{/metrics}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from prometheus_client import values
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
    MULTIPROCESS_ENVIRONMENT,
    LatencyFetcher,
    Metrics,
    MetricsDirectory,
    MetricsResource,
    RateHistory,
    adminResource,
    countReceivedBytes,
    instrumentDatagramProtocol,
    instrumentTCPFactory,
    rateChart,
    statsPage,
)
from caplab.proxy.channel import ProxySettings
from caplab.proxy.service import WorkerProxyFactory
from caplab.tcp import UppercaseFactory
from caplab.udp import UppercaseDatagramProtocol
from caplab.workers import WorkerSupervisor
from tests.test_workers import FakeProcessReactor, ended


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


class HotFigureTests(SynchronousTestCase):
    """
    The figures kept as plain numbers in a single process, exported at scrape time.
    """

    def test_connectionsAndTunnels(self) -> None:
        """
        Connections and tunnels are counted since start as well as while open, and a refused
        connection is counted.
        """
        metrics = Metrics()
        for _ in range(3):
            metrics.connectionOpened()
        metrics.connectionClosed()
        metrics.tunnelOpened()
        metrics.tunnelClosed()
        metrics.connectionRefused()
        found = samples(metrics)
        self.assertEqual(found[("caplab_proxy_active_connections", ())], 2)
        self.assertEqual(found[("caplab_proxy_connections_total", ())], 3)
        self.assertEqual(found[("caplab_proxy_active_tunnels", ())], 0)
        self.assertEqual(found[("caplab_proxy_tunnels_total", ())], 1)
        self.assertEqual(found[("caplab_proxy_refused_connections_total", ())], 1)

    def test_latencyBucketBounds(self) -> None:
        """
        An observation equal to a bucket's bound is in that bucket (C{le}); one past the last
        bound only in C{+Inf}; a negative one counts as 0.
        """
        metrics = Metrics()
        for seconds in (0.005, 0.0051, 31.0, -1.0):
            metrics.upstreamLatency(seconds)
        found = samples(metrics)

        def bucket(le: str) -> float:
            return found[("caplab_proxy_upstream_latency_seconds_bucket", (("le", le),))]

        self.assertEqual(bucket("0.005"), 2)
        self.assertEqual(bucket("0.01"), 3)
        self.assertEqual(bucket("30.0"), 3)
        self.assertEqual(bucket("+Inf"), 4)
        self.assertEqual(found[("caplab_proxy_upstream_latency_seconds_count", ())], 4)
        self.assertAlmostEqual(
            found[("caplab_proxy_upstream_latency_seconds_sum", ())], 0.005 + 0.0051 + 31.0
        )

    def test_refusedConnectionCounted(self) -> None:
        """
        L{countReceivedBytes} counts a connection its factory refuses.
        """
        metrics = Metrics()
        factory = countReceivedBytes(UppercaseFactory(maxConnections=0, clock=Clock()), metrics)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000)))
        self.assertEqual(samples(metrics)[("caplab_proxy_refused_connections_total", ())], 1)


class SharedDirectoryTests(SynchronousTestCase):
    """
    With C{--workers}: each worker's figures in a multiprocess directory, added up.

    Two "workers" are simulated in this process by giving prometheus-client's multiprocess
    values a process identifier of their own while each one's L{Metrics} is in use.
    """

    def setUp(self) -> None:
        self.directory = MetricsDirectory()
        self.path = self.directory.create()
        self.addCleanup(self.directory.remove)
        self.addCleanup(values.close_all_multiprocess_files)
        self.patch(os, "environ", {**os.environ, MULTIPROCESS_ENVIRONMENT: self.path})

    def inWorker(self, pid: int, work: Callable[[Metrics], object]) -> Metrics:
        """
        Run C{work} with a L{Metrics} of worker C{pid}, as that worker.
        """
        original = values.ValueClass
        values.ValueClass = values.MultiProcessValue(lambda: pid)
        try:
            metrics = Metrics(shared=self.path)
            work(metrics)
        finally:
            values.ValueClass = original
        return metrics

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        request = DummyRequest([b"metrics"])
        body = adminResource(self.directory.registry()).getChildWithDefault(b"metrics", request)
        text = body.render(request).decode()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def work(self, metrics: Metrics) -> None:
        metrics.connectionOpened()
        metrics.requestDone(b"GET", 200)
        metrics.requestDone(b"GET", 200)
        metrics.requestDone(b"BREW", 501)
        metrics.bytesReceived(10)
        metrics.bytesSent(100)
        metrics.upstreamLatency(0.02)
        metrics.cacheHit()
        metrics.cacheStoredBytes(1000)

    def test_directory(self) -> None:
        """
        The directory is private, and goes with L{MetricsDirectory.remove}.
        """
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o700)
        self.assertEqual(self.directory.environment(), {MULTIPROCESS_ENVIRONMENT: self.path})
        self.directory.remove()
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual(self.directory.environment(), {})
        self.assertEqual(list(self.directory.collect()), [])

    def test_wholeServer(self) -> None:
        """
        The parent's C{/metrics} adds up the workers: counters, histograms, open connections
        and cache bytes alike.
        """
        self.inWorker(101, self.work)
        self.inWorker(102, self.work)
        found = self.scrape()
        get200 = ("caplab_proxy_requests_total", (("code", "200"), ("method", "GET")))
        self.assertEqual(found[get200], 4)
        other = ("caplab_proxy_requests_total", (("code", "501"), ("method", "OTHER")))
        self.assertEqual(found[other], 2)
        self.assertEqual(found[("caplab_proxy_received_bytes_total", ())], 20)
        self.assertEqual(found[("caplab_proxy_sent_bytes_total", ())], 200)
        self.assertEqual(found[("caplab_proxy_active_connections", ())], 2)
        self.assertEqual(found[("caplab_proxy_connections_total", ())], 2)
        self.assertEqual(found[("caplab_proxy_upstream_latency_seconds_count", ())], 2)
        self.assertEqual(found[("caplab_cache_hits_total", ())], 2)
        self.assertEqual(found[("caplab_cache_stored_bytes", ())], 2000)

    def test_deadWorker(self) -> None:
        """
        When a worker has ended, what it counted still counts, its open connections no more.
        """
        self.inWorker(101, self.work)
        self.inWorker(102, self.work)
        self.directory.processEnded(101)
        found = self.scrape()
        self.assertEqual(found[("caplab_proxy_active_connections", ())], 1)
        self.assertEqual(found[("caplab_cache_stored_bytes", ())], 1000)
        self.assertEqual(found[("caplab_proxy_connections_total", ())], 2)
        get200 = ("caplab_proxy_requests_total", (("code", "200"), ("method", "GET")))
        self.assertEqual(found[get200], 4)

    def test_statsPage(self) -> None:
        """
        A worker's stats page shows the whole server's figures and says which worker
        answered.
        """
        self.inWorker(101, self.work)
        metrics = self.inWorker(102, self.work)
        page = statsPage(metrics, "worker 2 (pid 102) of 2").decode()
        self.assertIn("Answered by worker 2 (pid 102) of 2", page)
        self.assertIn("<tr><td>GET</td><td>200</td><td>4</td></tr>", page)
        self.assertIn("<tr><th>cache hits</th><td>2</td></tr>", page)
        self.assertIn("<tr><th>open client connections</th><td>2</td></tr>", page)

    def test_rateHistory(self) -> None:
        """
        Each worker publishes its request rate to the directory (only when it changed); a
        worker's chart adds up its own and what the others published.
        """
        clock = Clock()
        clock.advance(1000)
        one = RateHistory(clock.seconds, interval=10, buckets=3, shared=self.path, pid=101)
        two = RateHistory(clock.seconds, interval=10, buckets=3, shared=self.path, pid=102)
        one.record(30)
        two.record(10)
        self.assertEqual(two.series()[-1], (1000.0, 1.0))
        one.publish()
        published = os.path.join(self.path, "rate_101.json")
        self.assertTrue(os.path.exists(published))
        os.remove(published)
        one.publish()
        self.assertFalse(os.path.exists(published), "unchanged: not written again")
        one.record(10)
        one.publish()
        clock.advance(10)
        two.record(5)
        self.assertEqual(two.series(), [(990.0, 0.0), (1000.0, 5.0), (1010.0, 0.5)])
        self.assertEqual(one.series(), [(990.0, 0.0), (1000.0, 4.0), (1010.0, 0.0)])
        self.assertEqual(Metrics(shared=self.path).history.shared, self.path)

    def test_workerStatusPage(self) -> None:
        """
        A worker's proxy factory answers the status page with the whole server's figures
        and which worker it is, and publishes its request rate every second while it runs.
        """
        self.inWorker(101, self.work)
        clock = Clock()
        factory = WorkerProxyFactory(
            ProxySettings(fetcher=None, clock=clock),  # type: ignore[arg-type]
            None,
            "worker 2 (pid 102) of 2",
        )

        def start(metrics: Metrics) -> None:
            factory.settings.metrics = metrics
            self.work(metrics)
            factory.startFactory()

        metrics = self.inWorker(102, start)
        self.addCleanup(factory.stopFactory)
        counters = factory.counters()
        self.assertEqual(counters["answered by"], "worker 2 (pid 102) of 2")
        self.assertEqual(counters["requests since start"], 6)
        self.assertEqual(counters["open connections"], 2)
        self.assertEqual(counters["connections since start"], 2)
        published = os.path.join(self.path, f"rate_{os.getpid()}.json")
        self.assertFalse(os.path.exists(published))
        clock.advance(1)
        self.assertTrue(os.path.exists(published))
        metrics.requestDone(b"GET", 200)
        factory.stopFactory()
        self.assertEqual(clock.getDelayedCalls(), [])
        with open(published) as f:
            self.assertEqual(sum(json.load(f).values()), 4)

    def test_tcpOpenConnections(self) -> None:
        """
        The uppercase TCP service's open connections are counted up and down as they come
        and go (nothing can be read from the factory at scrape time).
        """
        protocols = []

        def work(metrics: Metrics) -> None:
            factory = instrumentTCPFactory(UppercaseFactory(clock=Clock()), metrics)
            for port in (40000, 40001):
                protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
                protocol.makeConnection(StringTransport())
                protocols.append(protocol)
            protocols[0].connectionLost(None)

        self.inWorker(101, work)
        found = self.scrape()
        self.assertEqual(found[("caplab_tcp_active_connections", ())], 1)
        self.assertEqual(found[("caplab_tcp_connections_total", ())], 2)


class SupervisorDirectoryTests(SynchronousTestCase):
    """
    The C{--workers} supervisor gives its workers the metrics directory and cleans up.
    """

    def test_lifecycle(self) -> None:
        """
        The directory is created before the first worker starts and named in each worker's
        environment; a worker's end drops its live gauges; it is removed once all have
        stopped.
        """
        reactor = FakeProcessReactor()
        directory = MetricsDirectory()
        supervisor = WorkerSupervisor(
            reactor,
            2,
            [],
            lambda: [],
            grace=1.0,
            environ={},
            publish=lambda event: None,
            metricsDirectory=directory,
        )
        supervisor.startService()
        path = directory.path
        assert path is not None
        self.assertEqual(
            [each["env"][MULTIPROCESS_ENVIRONMENT] for each in reactor.spawned], [path, path]
        )
        first = reactor.spawned[0]
        live = os.path.join(path, f"gauge_livesum_{first['transport'].pid}.db")
        kept = os.path.join(path, f"counter_{first['transport'].pid}.db")
        for name in (live, kept):
            open(name, "wb").close()
        first["protocol"].processEnded(ended())
        self.assertFalse(os.path.exists(live))
        self.assertTrue(os.path.exists(kept))
        stopped = supervisor.stopService()
        for each in reactor.spawned[1:]:
            each["protocol"].processEnded(ended(0))
        self.successResultOf(stopped)
        self.assertFalse(os.path.exists(path))
        self.assertIsNone(directory.path)
