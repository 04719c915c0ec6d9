"""
Tests for L{caplab.metrics.registry}: the figures the services count, and how they are
exported.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from caplab.metrics.registry import FAMILIES, CacheFigures, Metrics, codeLabel, methodLabel
from caplab.proxy.filters.reporting import COUNTERS, FilterCounters
from caplab.tcp import UppercaseFactory, UppercaseProtocol
from caplab.udp import UppercaseDatagramProtocol

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    """
    Every sample of C{metrics}' registry in the Prometheus text format, parsed by
    prometheus-client's own parser.
    """
    text = generate_latest(metrics.registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class MetricsTests(SynchronousTestCase):
    """
    The proxy's, the cache's and the operations' figures.
    """

    def test_allNamesPrefixed(self) -> None:
        """
        Every metric family is named C{caplab_...} and the issue's figures are all there.
        """
        text = generate_latest(Metrics().registry).decode()
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
            "caplab_reloads",
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
        self.assertEqual(methodLabel(b"patch"), "PATCH")

    def test_codeLabelsBounded(self) -> None:
        """
        A status code is a label only if it is a standard one (L{http.HTTPStatus}); any
        other an origin sends (so any a client asks an origin of its own for) is counted as
        C{other}: the series are bounded whatever the origins answer.
        """
        metrics = Metrics()
        for code in range(100, 1000):
            metrics.requestDone(b"GET", code)
        found = samples(metrics)
        codes = {
            dict(labels)["code"]: value
            for (name, labels), value in found.items()
            if name == "caplab_proxy_requests_total"
        }
        standard = {str(int(status)) for status in HTTPStatus}
        self.assertEqual(set(codes), standard | {"other"})
        self.assertEqual(codes["other"], 900 - len(standard))
        self.assertEqual(codes["404"], 1)
        self.assertEqual((codeLabel(418), codeLabel(299), codeLabel(0)), ("418", "other", "other"))

    def test_trafficAndGauges(self) -> None:
        """
        Bytes, open connections and tunnels, blocks, cache figures, latency and reloads are
        exposed.
        """
        metrics = Metrics()
        metrics.receivedTotal += 100  # as the proxy's channel counts
        metrics.requestDone(b"GET", 200, 2000)
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

    def test_separateMetrics(self) -> None:
        """
        Two L{Metrics} do not share figures (nor collide on names).
        """
        one, two = Metrics(), Metrics()
        one.cacheHit()
        self.assertEqual(samples(two)[("caplab_cache_hits_total", ())], 0)

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

    def test_createdTimes(self) -> None:
        """
        Counters carry the time counting started, a request pair the time it was first seen.
        """
        clock = Clock()
        clock.advance(1000)
        metrics = Metrics(now=clock.seconds)
        clock.advance(5)
        metrics.requestDone(b"GET", 200)
        found = samples(metrics)
        self.assertEqual(found[("caplab_proxy_sent_bytes_created", ())], 1000)
        self.assertEqual(
            found[("caplab_proxy_requests_created", (("code", "200"), ("method", "GET")))], 1005
        )

    def test_watchedCache(self) -> None:
        """
        With L{Metrics.watchCache}, the stored bytes, entries and variant evictions are
        read from the cache whenever the metrics are read (not from the last push).
        """
        metrics = Metrics()
        metrics.cacheStoredBytes(10)
        self.assertNotIn(("caplab_cache_stored_entries", ()), samples(metrics))
        figures = [CacheFigures(2048, 3, 1)]
        metrics.watchCache(lambda: figures[0])
        found = samples(metrics)
        self.assertEqual(found[("caplab_cache_stored_bytes", ())], 2048)
        self.assertEqual(found[("caplab_cache_stored_entries", ())], 3)
        self.assertEqual(found[("caplab_cache_variant_evictions_total", ())], 1)
        figures[0] = CacheFigures(0, 0)
        found = samples(metrics)
        self.assertEqual(found[("caplab_cache_stored_bytes", ())], 0)
        self.assertNotIn(("caplab_cache_variant_evictions_total", ()), found)

    def test_requestRecordedInHistory(self) -> None:
        """
        L{Metrics.requestDone} feeds the rate history.
        """
        clock = Clock()
        metrics = Metrics(now=clock.seconds)
        metrics.requestDone(b"GET", 200)
        self.assertEqual(metrics.history.series()[-1], (0.0, 0.1))


class _Pipelining(LineReceiver):
    """
    A line receiver that buffers raw data and hands it back to itself, as L{HTTPChannel}
    does with pipelined requests.
    """

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.buffered = b""

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        self.setRawMode()

    def rawDataReceived(self, data: bytes) -> None:
        self.buffered += data


@implementer(IHalfCloseableProtocol)
class _HalfClosing(Protocol):
    def __init__(self) -> None:
        self.events: list[str] = []

    def readConnectionLost(self) -> None:
        self.events.append("read")

    def writeConnectionLost(self) -> None:
        self.events.append("write")


class UppercaseServiceTests(SynchronousTestCase):
    """
    Counting for the uppercase services without changing them.
    """

    def test_tcp(self) -> None:
        """
        Accepted and open connections are read from the factory's own counts when the
        metrics are read: nothing wraps it or its protocols.
        """
        metrics = Metrics()
        factory = UppercaseFactory(maxConnections=1, clock=Clock())
        metrics.watchTCPFactory(factory)
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        protocol = factory.buildProtocol(peer)
        assert isinstance(protocol, UppercaseProtocol)
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

    def test_udp(self) -> None:
        """
        Datagrams are read from the protocol's own count: its C{datagramReceived} is left
        alone.
        """
        metrics = Metrics()
        protocol = UppercaseDatagramProtocol(clock=Clock())
        metrics.watchDatagramProtocol(protocol)
        protocol.received = 2
        self.assertNotIn("datagramReceived", vars(protocol))
        self.assertEqual(samples(metrics)[("caplab_udp_datagrams_total", ())], 2)


class FakeFilterCounters:
    """
    The filters' counters as L{Metrics.watchFilters} reads them: kind -> count.
    """

    def __init__(self, **counts: int) -> None:
        self.counts = {what.replace("_", "-"): count for what, count in counts.items()}
        self.snapshots = 0

    def snapshot(self) -> dict[str, int]:
        self.snapshots += 1
        return dict(self.counts)


class FilterEventsTests(SynchronousTestCase):
    """
    The content filters' events, C{caplab_filter_events_total} by C{what}.
    """

    def event(self, metrics: Metrics, what: str) -> float:
        return samples(metrics)[("caplab_filter_events_total", (("what", what),))]

    def test_notWatched(self) -> None:
        """
        Without a proxy (nothing watched) the family is not exported.
        """
        names = {name for name, _ in samples(Metrics())}
        self.assertFalse([name for name in names if name.startswith("caplab_filter")], names)

    def test_readWhenScraped(self) -> None:
        """
        The counts are read from the filters' own counters at each scrape, never pushed:
        an event counted after L{Metrics.watchFilters} shows at the next scrape.
        """
        metrics = Metrics()
        counters = FakeFilterCounters(cookies_dropped=2, rewrites=0)
        metrics.watchFilters(counters)
        self.assertEqual(counters.snapshots, 0)
        self.assertEqual(self.event(metrics, "cookies-dropped"), 2)
        self.assertEqual(self.event(metrics, "rewrites"), 0)
        counters.counts["rewrites"] = 5
        self.assertEqual(self.event(metrics, "rewrites"), 5)
        created = ("caplab_filter_events_created", (("what", "rewrites"),))
        self.assertEqual(samples(metrics)[created], metrics.created)

    def test_everyKindFromTheStart(self) -> None:
        """
        Every kind the filters count is exported at 0 before its first event (so a
        C{rate()} or an alert has a series from the first scrape), with a plugin's own
        kinds beside them.
        """
        metrics = Metrics()
        counters = FilterCounters()
        metrics.watchFilters(counters)
        found = samples(metrics)
        exported = {
            dict(labels)["what"]: value
            for (name, labels), value in found.items()
            if name == "caplab_filter_events_total"
        }
        self.assertEqual(exported, dict.fromkeys(COUNTERS, 0))
        counters.add("tracking-parameters", 3)
        counters.add("my-plugin-event")
        self.assertEqual(self.event(metrics, "tracking-parameters"), 3)
        self.assertEqual(self.event(metrics, "my-plugin-event"), 1)

    def test_addedUp(self) -> None:
        """
        Two watched chains' counts add up by kind.
        """
        metrics = Metrics()
        metrics.watchFilters(FakeFilterCounters(rewrites=1, gpc_sent=4))
        metrics.watchFilters(FakeFilterCounters(rewrites=2))
        self.assertEqual(self.event(metrics, "rewrites"), 3)
        self.assertEqual(self.event(metrics, "gpc-sent"), 4)


class DocumentedTests(SynchronousTestCase):
    """
    README.rst's Metrics section keeps up with what is exported.
    """

    def test_everyFamilyAndFilterEvent(self) -> None:
        """
        Every family L{MetricsCollector} exports is in the README's table, and every kind
        of filter event in the text that explains C{caplab_filter_events_total}.
        """
        readme = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
        for name, _ in FAMILIES.values():
            self.assertIn(f"``{name}", readme)
        explained = readme.split("``caplab_filter_events_total`` has one series", 1)[1]
        explained = explained.split("\n\n", 1)[0]
        for what in COUNTERS:
            self.assertIn(f"``{what}``", explained)
