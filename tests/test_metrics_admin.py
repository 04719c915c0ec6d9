"""
Tests for L{caplab.metrics.admin}: the admin endpoint's C{/metrics}, its cache operations,
and who may use it.  The site is driven over an in-memory transport, as a client would.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from caplab.metrics.admin import (
    LOOPBACK,
    MAX_BODY,
    AdminSite,
    CoalescedScrape,
    LocalScrape,
    adminNetworks,
    adminResource,
    allowedAddress,
)
from caplab.metrics.registry import Metrics
from tests.test_metrics_shared import InlineOffloader, QueuedOffloader

LOCAL = IPv4Address("TCP", "127.0.0.1", 40000)
REMOTE = IPv4Address("TCP", "192.0.2.7", 40000)


class FakeCacheAdmin:
    """
    An L{ICacheAdmin} that records what it is asked and answers with C{counts}.
    """

    def __init__(self, count: int = 2, error: Exception | None = None) -> None:
        self.count = count
        self.error = error
        self.calls: list[tuple[str, ...]] = []

    def purge(self, uri: str) -> Deferred[int]:
        self.calls.append(("purge", uri))
        return fail(self.error) if self.error else succeed(self.count)

    def flush(self) -> Deferred[int]:
        self.calls.append(("flush",))
        return fail(self.error) if self.error else succeed(self.count)


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.code = int(lines[0].split(b" ")[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in lines[1:])
        }

    def json(self) -> Any:
        return json.loads(self.body)


class AdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.metrics = Metrics()
        self.cache = FakeCacheAdmin()

    def site(self, allow: Any = LOOPBACK, cache: Any = "default") -> AdminSite:
        source = LocalScrape(self.metrics, InlineOffloader())
        site = AdminSite(
            adminResource(source, self.cache if cache == "default" else cache),
            allow,
            self.reactor,
        )
        self.addCleanup(site.stopFactory)
        return site

    def exchange(
        self, site: AdminSite, data: bytes, peer: Any = LOCAL
    ) -> tuple[Any, StringTransport]:
        channel = site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        channel.dataReceived(data)
        return channel, transport

    def request(self, site: AdminSite, data: bytes, peer: Any = LOCAL) -> Response:
        _, transport = self.exchange(site, data, peer)
        return Response(transport.value())


class MetricsEndpointTests(AdminTests):
    """
    C{/metrics}.
    """

    def test_text(self) -> None:
        """
        C{/metrics} answers in the Prometheus text format, not cached, with the proxy's
        figures and the process's own.
        """
        self.metrics.requestDone(b"GET", 200)
        response = self.request(self.site(), b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers[b"content-type"].startswith(b"text/plain"))
        self.assertEqual(response.headers[b"cache-control"], b"no-store")
        names = {f.name for f in text_string_to_metric_families(response.body.decode())}
        self.assertIn("caplab_proxy_requests", names)
        self.assertIn("caplab_process_resident_memory_bytes", names)

    def test_openMetrics(self) -> None:
        """
        A scraper asking for OpenMetrics gets it.
        """
        response = self.request(
            self.site(),
            b"GET /metrics HTTP/1.1\r\nHost: a\r\n"
            b"Accept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        )
        self.assertTrue(response.headers[b"content-type"].startswith(b"application/openmetrics"))
        self.assertTrue(response.body.endswith(b"# EOF\n"))

    def test_coalesced(self) -> None:
        """
        Scrapes asked for while one is under way share its reading.
        """
        queued = QueuedOffloader()
        coalesced = CoalescedScrape(LocalScrape(self.metrics, queued))
        first, second = coalesced.scrape(), coalesced.scrape()
        self.assertEqual(len(queued.jobs), 1)
        queued.runAll()
        self.assertEqual(
            [f.name for f in self.successResultOf(first)],
            [f.name for f in self.successResultOf(second)],
        )
        coalesced.scrape()
        self.assertEqual(len(queued.jobs), 1)

    def test_index(self) -> None:
        response = self.request(self.site(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(response.code, 200)
        self.assertIn(b'href="/metrics"', response.body)
        self.assertIn(b"/cache/flush", response.body)


class AccessTests(AdminTests):
    """
    Only the admin networks may use the endpoint.
    """

    def test_networks(self) -> None:
        """
        C{--admin-allow} wins; without it the proxy's C{--allow}; without either,
        loopback.
        """
        admin = [ipaddress.ip_network("192.0.2.0/24")]
        allow = [ipaddress.ip_network("198.51.100.0/24")]
        self.assertEqual(adminNetworks(admin, allow), tuple(admin))
        self.assertEqual(adminNetworks(None, allow), tuple(allow))
        self.assertEqual(adminNetworks([], None), LOOPBACK)

    def test_addresses(self) -> None:
        """
        IPv4-mapped IPv6 clients count as their IPv4 address; a UNIX socket's clients are
        let in (the socket's permissions decide).
        """
        self.assertTrue(allowedAddress(IPv6Address("TCP", "::ffff:127.0.0.1", 1), LOOPBACK))
        self.assertTrue(allowedAddress(IPv6Address("TCP", "::1", 1), LOOPBACK))
        self.assertFalse(allowedAddress(IPv6Address("TCP", "2001:db8::1", 1), LOOPBACK))
        self.assertFalse(allowedAddress(REMOTE, LOOPBACK))
        self.assertTrue(allowedAddress(UNIXAddress(b"/run/admin.sock"), LOOPBACK))

    def test_proxyRule(self) -> None:
        """
        The admin endpoint decides who is a client of its networks by the proxy's own rule
        (L{caplab.proxy.admission}): one loopback default, one reading of an address.
        """
        from caplab.proxy import admission

        self.assertIs(LOOPBACK, admission.LOOPBACK)
        networks = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("fe80::/64"))
        for host in ("192.0.2.9", "::ffff:192.0.2.9", "fe80::1%eth0", "203.0.113.1", "x"):
            self.assertEqual(
                allowedAddress(IPv6Address("TCP", host, 1), networks),
                admission.clientAllowed(networks, host),
                host,
            )

    def test_refused(self) -> None:
        """
        A client from elsewhere gets a 403 and the connection closes; a burst of them is
        one log line, then one summary after the interval.
        """
        site = self.site()
        with capturedLogs() as events:
            for _ in range(3):
                channel, transport = self.exchange(
                    site, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", REMOTE
                )
                response = Response(transport.value())
                self.assertEqual(response.code, 403)
                self.assertNotIn(b"caplab_", response.body)
                self.assertTrue(transport.disconnecting)
            self.reactor.advance(60)
            self.reactor.advance(60)
        lines = [e["log_format"] for e in events if e.get("log_namespace") == "caplab.admin"]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("refused {client}", lines[0])
        self.assertIn("refused {count} more", lines[1])

    def test_allowedElsewhere(self) -> None:
        """
        With C{--admin-allow} naming its network, a remote client is served.
        """
        site = self.site(adminNetworks([ipaddress.ip_network("192.0.2.0/24")], None))
        response = self.request(site, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", REMOTE)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            self.request(site, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", LOCAL).code, 403
        )

    def test_refusedCannotOperate(self) -> None:
        """
        A client from elsewhere cannot purge or flush.
        """
        response = self.request(
            self.site(),
            b"POST /cache/flush HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            REMOTE,
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(self.cache.calls, [])


class CacheOperationTests(AdminTests):
    """
    C{POST /cache/purge} and C{POST /cache/flush}.
    """

    def post(self, path: bytes, body: bytes = b"", headers: bytes = b"") -> Response:
        form = b"Content-Type: application/x-www-form-urlencoded\r\n" if body else b""
        return self.request(
            self.site(),
            b"POST %s HTTP/1.1\r\nHost: a\r\n%s%sContent-Length: %d\r\n\r\n%s"
            % (path, form, headers, len(body), body),
        )

    def test_purge(self) -> None:
        """
        A purge names a URL in the query or a form body; it is normalised as the cache keys
        it, and the answer says how many responses went.
        """
        response = self.post(b"/cache/purge?url=http://Example.COM:80/a%3Fb")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        self.assertEqual(response.json(), {"url": "http://example.com/a?b", "purged": 2})
        self.post(b"/cache/purge", b"url=https%3A%2F%2Fexample.com%3A8443%2Fx%3Fy%3D1%26z")
        self.assertEqual(
            self.cache.calls,
            [("purge", "http://example.com/a?b"), ("purge", "https://example.com:8443/x?y=1&z")],
        )

    def test_purgeNothing(self) -> None:
        """
        A purge that removed nothing is a 404 (as C{PURGE} on the proxy port).
        """
        self.cache.count = 0
        response = self.post(b"/cache/purge?url=http://example.com/")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.json()["purged"], 0)

    def test_badPurge(self) -> None:
        """
        No URL, two, or one that is not absolute http(s) is a 400 that says why.
        """
        for path in [
            b"/cache/purge",
            b"/cache/purge?url=http://a/&url=http://b/",
            b"/cache/purge?url=/relative",
            b"/cache/purge?url=ftp://example.com/",
            b"/cache/purge?url=http://exa%0Ample.com/",
        ]:
            response = self.post(path)
            self.assertEqual(response.code, 400, path)
            self.assertIn("error", response.json())
        self.assertEqual(self.cache.calls, [])

    def test_flush(self) -> None:
        self.cache.count = 17
        with capturedLogs() as events:
            response = self.post(b"/cache/flush")
        self.assertEqual(response.json(), {"flushed": 17})
        self.assertEqual(self.cache.calls, [("flush",)])
        self.assertEqual([e["count"] for e in events if "count" in e], [17])

    def test_postOnly(self) -> None:
        """
        A link (GET) cannot purge or flush: 405, naming POST.
        """
        for path in (b"/cache/flush", b"/cache/purge?url=http://example.com/"):
            response = self.request(self.site(), b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % path)
            self.assertEqual(response.code, 405)
            self.assertEqual(response.headers[b"allow"], b"POST")
        self.assertEqual(self.cache.calls, [])

    def test_noCrossSiteRequests(self) -> None:
        """
        What a browser sends on a page's behalf (an C{Origin}, or C{Sec-Fetch-Site} other
        than C{none}) is refused.
        """
        for headers in (b"Origin: http://evil.example\r\n", b"Sec-Fetch-Site: cross-site\r\n"):
            response = self.post(b"/cache/flush", headers=headers)
            self.assertEqual(response.code, 403)
        self.assertEqual(self.cache.calls, [])
        self.assertEqual(self.post(b"/cache/flush", headers=b"Sec-Fetch-Site: none\r\n").code, 200)

    def test_noCache(self) -> None:
        """
        Without a cache, the operations say so.
        """
        site = self.site(cache=None)
        response = self.request(
            site, b"POST /cache/flush HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertEqual(response.code, 404)
        self.assertIn("no cache", response.json()["error"])

    def test_failure(self) -> None:
        """
        A failed operation is a 500 and one log line.
        """
        self.cache.error = OSError("disk gone")
        with capturedLogs() as events:
            response = self.post(b"/cache/flush")
        self.assertEqual(response.code, 500)
        self.assertEqual([e["error"] for e in events if "error" in e], ["disk gone"])

    def test_bodyBounded(self) -> None:
        """
        A body over the limit is a 413 and one of unknown length a 411, at once, before any
        of it is read; the connection closes.
        """
        for head, status in [
            (b"Content-Length: %d\r\n" % (MAX_BODY + 1), b"413"),
            (b"Transfer-Encoding: chunked\r\n", b"411"),
        ]:
            channel, transport = self.exchange(
                self.site(), b"POST /cache/flush HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n"
            )
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 " + status), transport.value())
            self.assertTrue(transport.disconnecting)
            channel.dataReceived(b"x" * 1000)
            self.assertEqual(self.cache.calls, [])
