#!/usr/bin/env python3
"""
Many C{Vary} variants of one URL: what a request costs with 10,000 of them stored.

This prints figures; it is not a test.  ``Vary: Accept-Language`` (or ``User-Agent``) lets
ordinary clients make one URL hold thousands of variants (issue 9 item 8).  The script stores
``--variants`` of them and then measures, per request:

  - a request for one of the URL's variants that is stored (a hit among many);
  - a request with a new value (a miss: the origin answers, the variant is stored);
  - a hit on an unrelated URL, alone, and (``--process`` only) while another client keeps
    sending variant requests, which is where a slow variant lookup hurts everyone.

Two modes:

  (default)       in process: the cache's classes (L{CachingFetcher} over a L{MemoryStore})
                  in front of a fake origin that answers at once, timed with
                  C{perf_counter_ns}, median of many requests; this is the cache's own cost;
  --process       end to end: the real ``twist caplab`` in front of the test origin
                  (``tests/origins``, route ``/vary/Accept-Language``), timed per HTTP request.

``--baseline DIR`` measures the in-process case with the caplab source tree in DIR as well
(e.g. ``git archive main | tar -x -C /tmp/caplab-main``), alternating the two in child
processes for ``--rounds`` rounds, so that before and after come from one run::

    .venv/bin/python benchmarks/cache_vary.py
    .venv/bin/python benchmarks/cache_vary.py --baseline /tmp/caplab-main --rounds 3
    .venv/bin/python benchmarks/cache_vary.py --process --variants 10000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def measureInProcess(variants: int, samples: int) -> dict[str, Any]:
    """
    Median microseconds per request of each kind, in this process.
    """
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock

    from caplab.proxy.cache.fetcher import CachingFetcher
    from caplab.proxy.cache.rules import formatHTTPDate
    from caplab.proxy.cache.sinks import Discard
    from caplab.proxy.cache.storage import MemoryStore
    from caplab.proxy.hooks import Target, UpstreamRequest, UpstreamResponse

    clock = Clock()
    clock.advance(1_795_000_000)
    date = formatHTTPDate(clock.seconds())

    class Origin:
        def fetch(self, request: Any, _: Any) -> Any:
            body = b"variant " + (request.headers[-1][1] if request.headers else b"-")

            def deliver(sink: Any) -> None:
                sink.bodyStarted(None)
                sink.bodyData(body)
                sink.bodyDone(True)

            headers = [
                (b"Date", date),
                (b"Content-Type", b"text/plain"),
                (b"Cache-Control", b"max-age=600"),
                (b"Vary", b"Accept-Language"),
                (b"Content-Length", b"%d" % len(body)),
            ]
            return succeed(UpstreamResponse(200, b"OK", headers, deliver))

    store = MemoryStore(1 << 30, 8 << 20, callLater=clock.callLater)
    cache = CachingFetcher(Origin(), store, clock)
    page = Target("http", "origin.example", 80, b"/page")
    other = Target("http", "origin.example", 80, b"/other")
    common = [(b"Host", b"origin.example"), (b"User-Agent", b"bench/1"), (b"Accept", b"*/*")]

    def request(target: Any, language: bytes | None) -> Any:
        extra = [(b"Accept-Language", language)] if language is not None else []
        return UpstreamRequest(b"GET", target, [*common, *extra])

    sink = Discard()

    def get(r: Any) -> str:
        got: list[Any] = []
        cache.fetch(r, None).addCallback(got.append)
        got[0].deliverBody(sink)
        return str(got[0].cacheStatus)

    for i in range(variants):
        get(request(page, b"x-%d" % i))
    get(request(other, None))

    def timed(make: Any) -> tuple[float, str]:
        times = []
        status = ""
        for i in range(samples):
            r = make(i)
            start = time.perf_counter_ns()
            status = get(r)
            times.append(time.perf_counter_ns() - start)
        return statistics.median(times) / 1000, status

    # the most recently stored variants are kept whatever the per-URL cap
    hit, hitStatus = timed(lambda i: request(page, b"x-%d" % (variants - 1 - i % 16)))
    miss, missStatus = timed(lambda i: request(page, b"new-%d" % i))
    unrelated, unrelatedStatus = timed(lambda i: request(other, None))
    return {
        "variantsHeld": float(len(store.lookup(page.uri))),
        "variantHit": hit,
        "variantMiss": miss,
        "unrelatedHit": unrelated,
        "statuses": [hitStatus, missStatus, unrelatedStatus],
    }


def measureProcess(variants: int, samples: int) -> dict[str, Any]:
    """
    Median milliseconds per HTTP request through the real process.
    """
    sys.path.insert(0, str(ROOT))
    from tests.origins import runningOrigin
    from tests.origins.proxy import proxyArguments
    from tests.support import runningCaplab

    with (
        runningOrigin() as origin,
        (
            runningCaplab(
                *proxyArguments(origin, None), "--cache-size", "256M", services=("proxy",)
            )
        ) as proxy,
    ):
        host, port = proxy.addresses["proxy"]
        page = origin.url("/run/bench/vary/Accept-Language")
        unrelated = origin.url("/run/bench/cache/max-age=600")

        def client() -> http.client.HTTPConnection:
            return http.client.HTTPConnection(host, port, timeout=60)

        def get(connection: http.client.HTTPConnection, url: str, language: str | None) -> str:
            headers = {"Accept-Language": language} if language is not None else {}
            connection.request("GET", url, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.headers.get("Cache-Status", "")

        main = client()
        for i in range(variants):
            get(main, page, f"x-{i}")
        get(main, unrelated, None)

        def timed(url: str, language: Any) -> float:
            times = []
            for i in range(samples):
                start = time.perf_counter()
                get(main, url, language(i))
                times.append(time.perf_counter() - start)
            return statistics.median(times) * 1000

        figures = {
            "variantHit": timed(page, lambda i: f"x-{variants - 1 - i % 16}"),
            "variantMiss": timed(page, lambda i: f"new-{i}"),
            "unrelatedHit": timed(unrelated, lambda i: None),
        }
        stop = threading.Event()

        def hammer() -> None:
            connection = client()
            i = 0
            while not stop.is_set():
                get(connection, page, f"busy-{i}")
                i += 1
            connection.close()

        thread = threading.Thread(target=hammer, daemon=True)
        thread.start()
        try:
            figures["unrelatedHitUnderLoad"] = timed(unrelated, lambda i: None)
        finally:
            stop.set()
            thread.join(60)
        main.close()
    return figures


def child(source: str, arguments: list[str]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=source)
    out = subprocess.run(
        [sys.executable, __file__, "--json", *arguments],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--process", action="store_true", help="measure the real process")
    parser.add_argument("--baseline", help="another caplab source tree to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    common = ["--variants", str(args.variants), "--samples", str(args.samples)]

    if args.json:
        print(json.dumps(measureInProcess(args.variants, args.samples)))
        return 0
    if args.process:
        figures = measureProcess(args.variants, args.samples)
        print(f"twist caplab, {args.variants} variants stored, median ms per request:")
        for key, value in figures.items():
            print(f"  {key:24} {value:8.2f}")
        return 0
    sources = {"this tree": str(ROOT)}
    if args.baseline:
        sources = {"baseline": args.baseline, **sources}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in sources}
    for _ in range(args.rounds):
        for label, source in sources.items():
            runs[label].append(child(source, common))
    print(f"{args.variants} variants of one URL, median microseconds per request (in process)")
    print(f"{'':12} {'variant hit':>24} {'variant miss':>24} {'unrelated hit':>24}  held")
    for label, measured in runs.items():
        cells = []
        for key in ("variantHit", "variantMiss", "unrelatedHit"):
            values = [f[key] for f in measured]
            cells.append(f"{statistics.median(values):9.1f} ({min(values):.0f}-{max(values):.0f})")
        print(
            f"{label:12} {cells[0]:>24} {cells[1]:>24} {cells[2]:>24}  "
            f"{measured[0]['variantsHeld']:.0f}"
        )
        print(f"{'':12} statuses: {measured[0]['statuses']}")
    print("(median of the rounds' medians; min-max across rounds in parentheses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
