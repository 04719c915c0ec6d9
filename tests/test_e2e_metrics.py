"""
End-to-end tests of the metrics through the real C{twist caplab} process: the process and
cache figures of C{/metrics}, the status pages on the proxy's port (figures matching
C{/metrics}), and the admin endpoint refusing clients outside its networks.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.origins import WAIT, OriginProcess
from tests.origins.proxy import runningProxy
from tests.support import CaplabProcess
from tests.test_e2e_policy import codes, curl

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(
    port: int, path: str, method: str = "GET", source: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """
    One origin-form request to C{127.0.0.1:port} (from C{source}, if given), read to the
    end: status, fields (lower-case names) and body.
    """
    with socket.create_connection(
        ("127.0.0.1", port), timeout=WAIT, source_address=(source, 0) if source else None
    ) as conn:
        conn.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        response = conn.makefile("rb").read()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ")[1]), fields, body


def scrape(port: int) -> Samples:
    code, _, body = get(port, "/metrics")
    assert code == 200, body
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def total(samples: Samples, name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def test_processAndCacheFigures(origin: OriginProcess, tmp_path: Path) -> None:
    """
    C{/metrics} exports the process's own figures (memory, CPU, open descriptors), the
    cache's hits, misses and stored bytes, the bytes received and the upstream latency.
    """
    with runningProxy(origin, tmp_path, "--admin-endpoint", "tcp:0:interface=127.0.0.1") as proxy:
        assert isinstance(proxy.process, CaplabProcess)
        proxy.process.waitListening("admin")
        admin = proxy.process.port("admin")
        url = origin.url("/run/metrics-figures/cache/max-age=600")
        for _ in range(2):
            assert codes(curl(proxy.address, url))[0] == 200
        samples = scrape(admin)
    assert samples[("caplab_cache_misses_total", ())] >= 1
    assert samples[("caplab_cache_hits_total", ())] >= 1
    assert samples[("caplab_cache_stored_bytes", ())] > 0
    # Both requests' heads were counted as they arrived; the miss was timed at its origin.
    assert samples[("caplab_proxy_received_bytes_total", ())] > 2 * len(url)
    assert samples[("caplab_proxy_upstream_latency_seconds_count", ())] >= 1
    assert samples[("caplab_process_resident_memory_bytes", ())] > 1_000_000
    assert samples[("caplab_process_open_fds", ())] > 3
    assert ("caplab_process_cpu_seconds_total", ()) in samples
    assert samples[("caplab_process_max_fds", ())] >= samples[("caplab_process_open_fds", ())]


def test_statusPages(origin: OriginProcess, tmp_path: Path) -> None:
    """
    The status page and C{/stats} on the proxy's own port show the same figures as
    C{/metrics} (each row names its metric and value), with the rate chart's axes, and
    refuse to be stored or to run anything but their own markup; without content filters
    the page has no Filters card.
    """
    with runningProxy(origin, tmp_path, "--admin-endpoint", "tcp:0:interface=127.0.0.1") as proxy:
        assert isinstance(proxy.process, CaplabProcess)
        proxy.process.waitListening("admin")
        admin = proxy.process.port("admin")
        for _ in range(3):
            assert codes(curl(proxy.address, origin.url("/hello/pages")))[0] == 200
        proxy.waitForAccess("GET", origin.url("/hello/pages"), 200)
        before = scrape(admin)
        code, fields, page = get(proxy.port, "/")
        assert code == 200
        assert fields["content-type"] == "text/html; charset=utf-8"
        assert fields["cache-control"] == "no-store"
        assert "default-src 'none'" in fields["content-security-policy"]
        rows = dict(re.findall(rb'data-metric="([a-z_]+)" data-value="([^"]+)"', page))
        assert len(rows) >= 12, page
        for metric in (
            b"caplab_proxy_requests_total",
            b"caplab_proxy_sent_bytes_total",
            b"caplab_proxy_tunnels_total",
            b"caplab_cache_misses_total",
        ):
            assert float(rows[metric]) == total(before, metric.decode()), metric
        assert float(rows[b"caplab_proxy_requests_total"]) == 3
        # No content filter: no Filters card, but their events are exported all the same
        # (at 0), so that a series is there before the first (a reload may switch one on).
        assert b'id="filters"' not in page
        events = {k: v for k, v in before.items() if k[0] == "caplab_filter_events_total"}
        assert (("what", "cookies-dropped"),) in {labels for _, labels in events}, before
        assert set(events.values()) == {0}
        assert b">requests/s</text>" in page and b"time before now" in page
        code, _, stats = get(proxy.port, "/stats")
        assert code == 200
        assert b"<tr><td>GET</td><td>200</td><td>4</td></tr>" in stats, stats
        assert get(proxy.port, "/stats", "HEAD")[2] == b""


def test_adminRefusesOtherNetworks() -> None:
    """
    The admin endpoint serves only the allowed networks (here the proxy's C{--allow},
    127.0.0.2/32): a client from 127.0.0.1 gets a 403 and nothing else, and a burst of
    refusals is one log line.
    """
    process = CaplabProcess(
        [
            "--workers", "2", "--no-tcp", "--no-udp", "--proxy-port", "0",
            "--allow", "127.0.0.2/32", "--admin-endpoint", "tcp:0:interface=127.0.0.1",
        ]
    ).start()  # fmt: skip
    try:
        process.waitListening("admin")
        admin = process.port("admin")
        for _ in range(3):
            code, _, body = get(admin, "/metrics")
            assert code == 403
            assert b"caplab_" not in body
        code, _, body = get(admin, "/metrics", source="127.0.0.2")
        assert code == 200 and b"caplab_process_resident_memory_bytes" in body
    finally:
        process.stop()
    refusals = [line for line in process.lines if "caplab admin: refused 127.0.0.1" in line]
    assert len(refusals) == 1, process.output
