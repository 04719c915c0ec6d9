#!/usr/bin/env python3
"""
What a small cached object really costs: RSS per cached object against what the cache counts.

This prints figures; it is not a test.  It fills the proxy's memory cache with many small
objects (by default 40,000 objects of 100 bytes into ``--cache-size 4M``, the case of issue 9
item 11) and reports, after the store is full and again after every object was hit once:

  - the entries the store holds and the bytes it counts against ``--cache-size``;
  - the growth of the process's RSS, per held entry and as a fraction of the cache size
    (the goal: within about 25 % of ``--cache-size`` for the cache's share);
  - with ``--tracemalloc``, the bytes Python allocated per entry (exact, but slow).

Two modes:

  (default)       in process: the cache's own classes (L{CachingFetcher} over a
                  L{MemoryStore}) in front of a fake origin that answers at once, so the only
                  memory that grows is the cache's;
  --process       end to end: the real ``twist caplab --cache-size 4M`` in front of the test
                  origin (``tests/origins``), RSS read from ``/proc/PID/status``; slower (one
                  HTTP request per object) and it includes whatever else the process grows.

``--baseline DIR`` measures the same in-process case with the caplab source tree in DIR as
well (e.g. ``git archive main | tar -x -C /tmp/caplab-main``), alternating the two in child
processes for ``--rounds`` rounds, so that before and after come from one run::

    .venv/bin/python benchmarks/cache_memory.py
    .venv/bin/python benchmarks/cache_memory.py --baseline /tmp/caplab-main --rounds 3
    .venv/bin/python benchmarks/cache_memory.py --process --objects 40000
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Response fields of a typical small object (what nginx sends for a static file).
HEADERS = [
    (b"Server", b"nginx/1.22.1"),
    (b"Date", b"Tue, 24 Nov 2026 08:00:00 GMT"),
    (b"Content-Type", b"text/plain"),
    (b"Last-Modified", b"Mon, 23 Nov 2026 08:00:00 GMT"),
    (b"Connection", b"keep-alive"),
    (b"ETag", b'"6745a1c0-64"'),
    (b"Cache-Control", b"max-age=600"),
    (b"Accept-Ranges", b"bytes"),
]


def rss() -> int:
    """
    This process's resident set size in bytes.
    """
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measureInProcess(objects: int, size: int, cacheSize: int, traced: bool) -> dict[str, Any]:
    """
    Fill a memory cache in this process; the figures as a dict.
    """
    import tracemalloc

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
            # each body a bytes object of its own, as bodies read from a socket are
            body = (request.target.path + b"x" * size)[:size]

            def deliver(sink: Any) -> None:
                sink.bodyStarted(None)
                sink.bodyData(body)
                sink.bodyDone(True)

            headers = [(n, date if n == b"Date" else v) for n, v in HEADERS] + [
                (b"Content-Length", b"%d" % size)
            ]
            return succeed(UpstreamResponse(200, b"OK", headers, deliver))

    store = MemoryStore(cacheSize, min(cacheSize, 8 << 20), callLater=clock.callLater)
    cache = CachingFetcher(Origin(), store, clock)
    requests = [
        UpstreamRequest(
            b"GET",
            Target("http", "origin.example", 80, b"/objects/%d.txt" % i),
            [(b"Host", b"origin.example"), (b"User-Agent", b"bench"), (b"Accept", b"*/*")],
        )
        for i in range(objects)
    ]
    for request in requests:
        # The requests are this benchmark's input: their targets' URIs (worked out once,
        # when first asked for) are made before the memory is measured, not counted in it.
        request.target.uri  # noqa: B018
    sink = Discard()

    def get(request: UpstreamRequest) -> str:
        got: list[UpstreamResponse] = []
        cache.fetch(request, None).addCallback(got.append)
        got[0].deliverBody(sink)
        return got[0].cacheStatus or ""

    gc.collect()
    if traced:
        tracemalloc.start()
    before = rss()
    tracedBefore = tracemalloc.get_traced_memory()[0] if traced else 0
    for request in requests:
        get(request)
    gc.collect()
    stored = rss()
    tracedStored = tracemalloc.get_traced_memory()[0] if traced else 0
    held = len(store)
    hits = sum(get(request).startswith("caplab; hit") for request in requests[-held:])
    gc.collect()
    afterHits = rss()
    tracedHits = tracemalloc.get_traced_memory()[0] if traced else 0
    return {
        "objects": objects,
        "held": held,
        "hits": hits,
        "counted": store.size,
        "cacheSize": cacheSize,
        "rssStored": stored - before,
        "rssHit": afterHits - before,
        "tracedStored": tracedStored - tracedBefore,
        "tracedHit": tracedHits - tracedBefore,
    }


def measureProcess(objects: int, size: int, cacheSize: int) -> dict[str, Any]:
    """
    Fill the real C{twist caplab} process's cache through HTTP; the figures as a dict.
    """
    sys.path.insert(0, str(ROOT))
    from tests.origins import runningOrigin
    from tests.origins.proxy import proxyArguments
    from tests.support import runningCaplab

    def processRSS(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    # /cache/DIRECTIVES echoes its directives in the body: an extension directive pads the
    # body to about SIZE bytes (caches ignore directives they do not know).
    pad = "x-pad=" + "p" * max(0, size - 40)
    with (
        runningOrigin() as origin,
        (
            runningCaplab(
                *proxyArguments(origin, None),
                "--cache-size",
                str(cacheSize),
                "--cache-max-object",
                str(min(cacheSize, 1 << 20)),
                services=("proxy",),
            )
        ) as proxy,
    ):
        host, port = proxy.addresses["proxy"]
        assert proxy.process is not None
        pid = proxy.process.pid
        connection = http.client.HTTPConnection(host, port, timeout=30)

        def get(i: int) -> str:
            connection.request("GET", origin.url(f"/run/{i}/cache/max-age=600,{pad}"))
            response = connection.getresponse()
            response.read()
            return response.headers.get("Cache-Status", "")

        get(-1)  # warm up: first-request imports and buffers are not the cache's
        before = processRSS(pid)
        for i in range(objects):
            get(i)
        stored = processRSS(pid)
        hits = 0  # the most recently stored are held: hit them, newest first, until a miss
        for i in reversed(range(objects)):
            if not get(i).startswith("caplab; hit"):
                break
            hits += 1
        afterHits = processRSS(pid)
        connection.close()
    return {
        "objects": objects,
        "held": hits,
        "hits": hits,
        "counted": None,
        "cacheSize": cacheSize,
        "rssStored": stored - before,
        "rssHit": afterHits - before,
        "tracedStored": 0,
        "tracedHit": 0,
    }


def report(label: str, figures: dict[str, Any]) -> None:
    held = max(1, figures["held"])
    cacheSize = figures["cacheSize"]
    print(f"{label}:")
    print(f"  objects fetched {figures['objects']}, held {figures['held']}, hits {figures['hits']}")
    if figures["counted"] is not None:
        print(
            f"  counted against --cache-size: {figures['counted']} bytes "
            f"({figures['counted'] / held:.0f} per entry)"
        )
    for when in ("Stored", "Hit"):
        grown = figures["rss" + when]
        print(
            f"  RSS growth after {'storing' if when == 'Stored' else 'one hit each'}: "
            f"{grown / 2**20:.1f} MiB = {grown / held:.0f} bytes per held entry = "
            f"{grown / cacheSize:.2f} x --cache-size"
        )
        if figures["traced" + when]:
            traced = figures["traced" + when]
            print(f"    tracemalloc: {traced / held:.0f} bytes per held entry")


def child(source: str, arguments: list[str]) -> dict[str, Any]:
    """
    Run the in-process measurement in a child process with C{source} first on the path.
    """
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
    parser.add_argument("--objects", type=int, default=40_000)
    parser.add_argument("--size", type=int, default=100, help="body bytes of each object")
    parser.add_argument("--cache-size", type=int, default=4 << 20)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--process", action="store_true", help="measure the real process")
    parser.add_argument("--baseline", help="another caplab source tree to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    common = ["--objects", str(args.objects), "--size", str(args.size)]
    common += ["--cache-size", str(args.cache_size)]
    if args.tracemalloc:
        common.append("--tracemalloc")

    if args.json:
        figures = measureInProcess(args.objects, args.size, args.cache_size, args.tracemalloc)
        print(json.dumps(figures))
        return 0
    if args.process:
        report("twist caplab", measureProcess(args.objects, args.size, args.cache_size))
        return 0
    sources = {"this tree": str(ROOT)}
    if args.baseline:
        sources = {"baseline": args.baseline, **sources}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in sources}
    for _ in range(args.rounds):
        for label, source in sources.items():
            runs[label].append(child(source, common))
    for label, measured in runs.items():
        median = {
            key: statistics.median(f[key] for f in measured)
            if isinstance(measured[0][key], int | float)
            else measured[0][key]
            for key in measured[0]
        }
        report(f"{label} (median of {len(measured)})", median)
        spread = [f["rssStored"] / max(1, f["held"]) for f in measured]
        print(f"  RSS per entry across rounds: {', '.join(f'{s:.0f}' for s in spread)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
