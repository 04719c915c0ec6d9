#!/usr/bin/env python3
"""
Benchmark caplab's content filters on a 1 MiB HTML page.  This prints figures; it is not a
test.

Modes:

  (default)   in-process: each filter's throughput through the real chain
              (L{caplab.proxy.filters.chain.FilterChain}: head, transforming sink,
              transforms) on a 1 MiB page delivered in 64 KiB pieces, in MB/s of CPU time
              and milliseconds per page, best and median of --reps runs;
  --wrk       through the real proxy: wrk (10 connections, absolute-form requests, on CPU
              1 with the nginx origin) against caplab passing through, caplab rewriting,
              caplab blocking elements, and privoxy with a one-line s/hello/HOWDY/g filter
              (all on CPU 0), with the shared harness (../shared/bench beside the
              checkout, or --bench-dir).  Needs Debian's nginx-light, wrk and privoxy, and
              the filter options wired into twist caplab (--rewrite, --block-elements).

Examples::

    .venv/bin/python benchmarks/filters.py
    .venv/bin/python benchmarks/filters.py --wrk --seconds 5 --reps 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from caplab.proxy.body import NoProducer  # noqa: E402
from caplab.proxy.filters.config import buildChain, parseFilterConfig  # noqa: E402
from caplab.proxy.hooks import Target, UpstreamRequest, UpstreamResponse  # noqa: E402
from caplab.proxy.policy import HostList, HostPolicy  # noqa: E402

PAGE_SIZE = 1 << 20
PIECE = 65536
#: Hosts of the page's third-party elements that the block list names.
BLOCKED = ("ads.example", "tracker.example")

_WORDS = (
    "the quick brown fox jumps over the lazy dog lab proxy cache network socket server "
    "client packet stream filter privacy colour color hello world"
).split()


def makePage(size: int = PAGE_SIZE, seed: int = 12000) -> bytes:
    """
    A realistic HTML page of C{size} bytes: paragraphs and links, images (some from
    blocked hosts), scripts (inline and external, some blocked), stylesheets, comments,
    and the word C{hello} about once per 4 KiB.
    """
    rnd = random.Random(seed)
    parts = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>caplab benchmark</title>\n'
        '<link rel=stylesheet href="/css/site.css">\n'
        '<link rel=preload as=script href="https://cdn.tracker.example/t.js">\n'
        '<script>var config = {"a": 1, "b": "<img src=x>"};</script>\n</head><body>\n'
    ]
    size_so_far = len(parts[0])
    index = 0
    while size_so_far < size - 64:
        index += 1
        roll = rnd.random()
        if roll < 0.05:
            host = rnd.choice(["cdn.example", "img.example", "ads.example", "static.example"])
            piece = (
                f'<img src="https://{host}/i/{index}.jpg" alt="picture {index}" '
                f'width="300" height="200" loading="lazy">\n'
            )
        elif roll < 0.06:
            host = rnd.choice(["cdn.example", "ads.example", "pixel.tracker.example"])
            piece = f'<script src="//{host}/js/{index}.js" async></script>\n'
        elif roll < 0.065:
            piece = f'<iframe src="https://ads.example/frame/{index}" width=300></iframe>\n'
        elif roll < 0.07:
            piece = "<!-- a comment with <img src=//ads.example/old.png> in it -->\n"
        elif roll < 0.3:
            words = " ".join(rnd.choice(_WORDS) for _ in range(4))
            piece = f'<li><a href="/article/{index}?ref=home" class="nav">{words}</a></li>\n'
        else:
            words = " ".join(rnd.choice(_WORDS[:-4]) for _ in range(rnd.randint(20, 60)))
            if rnd.random() < 0.07:
                words += " hello"
            piece = f'<p class="text">{words}.</p>\n'
        parts.append(piece)
        size_so_far += len(piece)
    parts.append("</body></html>\n")
    page = "".join(parts).encode("utf-8")
    return page[:size] if len(page) > size else page + b" " * (size - len(page))


def policy() -> HostPolicy:
    blocked = HostList()
    blocked.addLines(BLOCKED, "benchmark")
    return HostPolicy(blocked, HostList())


class _Sink:
    def __init__(self) -> None:
        self.received = 0
        self.complete: bool | None = None

    def bodyStarted(self, producer: Any) -> None:
        pass

    def bodyData(self, data: bytes) -> None:
        self.received += len(data)

    def bodyDone(self, complete: bool) -> None:
        self.complete = complete


def throughput(
    table: dict[str, Any], body: bytes, headers: list[tuple[bytes, bytes]], reps: int
) -> tuple[list[float], int]:
    """
    CPU seconds per page through a chain built from C{table}, and the output size.
    """
    chain = buildChain(parseFilterConfig(table), policy())
    pieces = [body[i : i + PIECE] for i in range(0, len(body), PIECE)]
    request = UpstreamRequest(b"GET", Target("http", "www.example", 80, b"/"), [])
    times = []
    out = 0
    for _ in range(reps):
        started = time.process_time()

        def deliver(sink: Any) -> None:
            sink.bodyStarted(NoProducer())
            for piece in pieces:
                sink.bodyData(piece)
            sink.bodyDone(True)

        response = chain.filterResponse(request, UpstreamResponse(200, b"OK", headers, deliver))
        sink = _Sink()
        response.deliverBody(sink)
        times.append(time.process_time() - started)
        assert sink.complete, "the body did not end complete"
        out = sink.received
    return times, out


def inProcess(reps: int) -> None:
    page = makePage()
    html = [(b"Content-Type", b"text/html")]
    gzipped = gzip.compress(page, 6)
    cases: list[tuple[str, dict[str, Any], bytes, list[tuple[bytes, bytes]]]] = [
        ("no filter applies (pass-through)", {"rewrite": ["other.example s/a/b/g"]}, page, html),
        ("rewrite s/hello/HOWDY/g", {"rewrite": ["* s/hello/HOWDY/g"]}, page, html),
        ("rewrite s/colou?r/colour/gi (regex)", {"rewrite": ["* s/colou?r/colour/gi"]}, page, html),
        (
            "rewrite s/<!--.*?-->//gs (64 KiB window)",
            {"rewrite": ["* s/<!--.*?-->//gs"]},
            page,
            html,
        ),
        ("element blocking", {"block-elements": ["*"]}, page, html),
        (
            "element blocking + rewrite",
            {"block-elements": ["*"], "rewrite": ["* s/hello/HOWDY/g"]},
            page,
            html,
        ),
        (
            "rewrite, gzip-encoded page",
            {"rewrite": ["* s/hello/HOWDY/g"]},
            gzipped,
            [*html, (b"Content-Encoding", b"gzip")],
        ),
        ("header rules only", {"response-header": ["* remove Server"]}, page, html),
    ]
    print(
        f"1 MiB HTML page ({len(page)} bytes; {len(gzipped)} gzipped), {PIECE // 1024} KiB pieces,"
    )
    print(f"CPU time per page, best and median of {reps} runs (figures for orientation: the")
    print("machine is shared; compare rows of one run)\n")
    print(f"{'filter':44} {'best ms':>8} {'median ms':>10} {'MB/s':>8} {'out bytes':>10}")
    for name, table, body, headers in cases:
        times, out = throughput(table, body, headers, reps)
        best = min(times)
        print(
            f"{name:44} {best * 1e3:8.2f} {statistics.median(times) * 1e3:10.2f} "
            f"{len(page) / best / 1e6 if best else float('inf'):8.0f} {out:10d}"
        )


# --- through the real proxy ------------------------------------------------------------

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    types {{ text/html html; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 10000000;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""

PRIVOXY_CONF = """
listen-address 127.0.0.1:{port}
confdir {d}
logdir {d}
actionsfile caplab.action
filterfile caplab.filter
toggle 1
enable-remote-toggle 0
enable-edit-actions 0
buffer-limit 8192
keep-alive-timeout 30
max-client-connections 1024
"""
PRIVOXY_FILTER = "FILTER: caplab the issue's one-line rewrite\ns/hello/HOWDY/g\n"
PRIVOXY_ACTION = "{+filter{caplab}}\n/\n"


def wrkMode(args: argparse.Namespace) -> int:
    bench = args.bench_dir
    if not (bench / "benchlib.py").exists() or not (bench / "proxy_bench.py").exists():
        print(f"no shared harness in {bench} (give --bench-dir)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(bench))
    import benchlib as bl
    import proxy_bench as pb

    for program in ("nginx", "wrk", "privoxy", "taskset"):
        if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
            print(
                f"{program} is missing (apt-get install nginx-light wrk privoxy)", file=sys.stderr
            )
            return 2
    twist = str(Path(sys.executable).with_name("twist"))
    bl.raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="caplab-filters-"))
    os.chmod(tmp, 0o755)
    processes = []
    rows: list[dict[str, Any]] = []
    try:
        root = tmp / "www"
        root.mkdir()
        page = makePage()
        (root / "page.html").write_bytes(page)
        blockList = tmp / "blocked.txt"
        blockList.write_text("\n".join(BLOCKED) + "\n")
        origin = _nginx(bl, tmp, root, pb.CLIENT_CPU)
        processes.append(origin)
        lua = tmp / "absolute_form.lua"
        lua.write_text(pb.WRK_LUA)
        base = [twist, "caplab", "--no-tcp", "--no-udp", "--no-cache", "--max-connections", "10000"]
        rewrite = [*base, "--rewrite", "* s/hello/HOWDY/g"]
        blocking = [*base, "--block-list", str(blockList), "--block-elements", "*"]
        targets: list[tuple[str, list[str] | None, Callable[[bytes], bool]]] = [
            ("caplab pass-through", base, lambda body: body == page),
            (
                "caplab rewrite",
                rewrite,
                lambda body: body == page.replace(b"hello", b"HOWDY"),
            ),
            (
                "caplab element blocking",
                blocking,
                lambda body: b"ads.example/frame" not in body and len(body) < len(page),
            ),
            (
                "privoxy s/hello/HOWDY/g",
                None,
                lambda body: body == page.replace(b"hello", b"HOWDY"),
            ),
        ]
        started = []
        for name, command, check in targets:
            port = bl.free_port()
            if command is None:
                directory = tmp / "privoxy"
                directory.mkdir()
                (directory / "config").write_text(PRIVOXY_CONF.format(port=port, d=directory))
                (directory / "caplab.filter").write_text(PRIVOXY_FILTER)
                (directory / "caplab.action").write_text(PRIVOXY_ACTION)
                privoxy = shutil.which("privoxy") or "/usr/sbin/privoxy"
                argv = [privoxy, "--no-daemon", str(directory / "config")]
            else:
                argv = [*command, "--proxy-port", str(port)]
            proc = bl.Proc(name.replace(" ", "-"), argv, pb.PROXY_CPU, str(tmp))
            processes.append(proc)
            try:
                bl.wait_tcp(port, proc, timeout=40)
            except RuntimeError as e:
                print(f"{name}: did not start: {str(e).splitlines()[-1]}", file=sys.stderr)
                continue
            target = type("T", (), {"port": port, "name": name})()
            body = _fetch(port, origin.port)
            if not check(body):
                print(f"{name}: preflight FAILED ({len(body)} bytes, not the expected body)")
                continue
            started.append((name, target, proc))
        for rep in range(args.reps):
            for name, target, proc in started:
                with bl.Monitor(proc.pid) as monitor:
                    result = pb.run_wrk(
                        str(lua), target, origin, "page.html", args.conns, args.seconds
                    )
                if "requests" not in result:
                    print(f"{name}: wrk failed: {result.get('error')}")
                    continue
                seconds = result["duration_us"] / 1e6
                errors = sum(result[k] for k in ("connect", "read", "write", "timeout", "status"))
                row = {
                    "target": name,
                    "rep": rep,
                    "rps": result["requests"] / seconds,
                    "errors": errors,
                    "cpu_pct": 100 * monitor.cpu / seconds,
                    "peak_rss_mib": monitor.peak / 2**20,
                    "bytes_per_response": result["bytes"] / max(1, result["requests"]),
                }
                rows.append(row)
                bl.log(
                    f"rep {rep} {name:26} {row['rps']:8.1f} req/s  errors {errors}  "
                    f"CPU {row['cpu_pct']:.0f}%  peak RSS {row['peak_rss_mib']:.1f} MiB"
                )
                time.sleep(0.2)
    finally:
        for proc in processes:
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    _table(rows, args)
    return 0


def _nginx(bl: Any, tmp: Path, root: Path, cpu: int) -> Any:
    directory = tmp / "nginx"
    directory.mkdir()
    port = bl.free_port()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=directory, root=root, port=port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = bl.Proc("origin-nginx", [nginx, "-p", str(directory), "-e", str(directory / "error.log"),
                                    "-c", str(conf)], cpu, str(tmp))  # fmt: skip
    bl.wait_tcp(port, proc)
    proc.port = port
    return proc


def _fetch(port: int, originPort: int) -> bytes:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "GET",
        f"http://127.0.0.1:{originPort}/page.html",
        headers={"Host": f"127.0.0.1:{originPort}"},
    )
    body = connection.getresponse().read()
    connection.close()
    return body


def _table(rows: Iterable[dict[str, Any]], args: argparse.Namespace) -> None:
    byTarget: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        byTarget.setdefault(row["target"], []).append(row)
    if not byTarget:
        return
    privoxy = [r["rps"] for r in byTarget.get("privoxy s/hello/HOWDY/g", [])]
    reference = statistics.median(privoxy) if privoxy else None
    print(
        f"\n1 MiB HTML page, {args.conns} connections, median (min-max) of {args.reps} "
        f"runs of {args.seconds} s; proxy on CPU 0, wrk and nginx on CPU 1\n"
    )
    print("| target | req/s | ratio to privoxy | proxy CPU % | peak RSS MiB | errors |")
    print("|---|---|---|---|---|---|")
    for name, found in byTarget.items():
        rps = [r["rps"] for r in found]
        median = statistics.median(rps)
        ratio = f"{median / reference:.2f}" if reference else "-"
        print(
            f"| {name} | {median:.0f} ({min(rps):.0f}-{max(rps):.0f}) | {ratio} | "
            f"{statistics.median(r['cpu_pct'] for r in found):.0f} | "
            f"{max(r['peak_rss_mib'] for r in found):.1f} | {sum(r['errors'] for r in found)} |"
        )
    if args.json:
        args.json.write_text(json.dumps(list(rows), indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wrk", action="store_true", help="drive the real proxy with wrk")
    parser.add_argument("--bench-dir", type=Path, default=HERE.parent.parent / "shared" / "bench")
    parser.add_argument("--reps", type=int, default=0, help="runs per case (in-process 20, wrk 3)")
    parser.add_argument("--seconds", type=int, default=5, help="wrk: seconds per run")
    parser.add_argument("--conns", type=int, default=10, help="wrk: connections")
    parser.add_argument("--json", type=Path, help="wrk: also write the raw rows here")
    args = parser.parse_args(argv)
    if args.wrk:
        args.reps = args.reps or 3
        return wrkMode(args)
    inProcess(args.reps or 20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
