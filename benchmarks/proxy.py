#!/usr/bin/env python3
"""
Benchmark caplab's web proxy against its peers, in one run, with the shared harness.

This prints figures; it is not a test.  It runs ``proxy_bench.py`` from the shared bench
directory (``../shared/bench`` beside the checkout, or ``--bench-dir``), which pins the proxy
to CPU 0 and wrk plus the nginx origin to CPU 1, alternates the targets inside every cell,
and checks every response.  It needs Debian's ``nginx-light wrk tinyproxy squid`` and a Python
with caplab, Twisted and proxy.py (the venv this script runs in).

Modes:

  (default)        caching off: caplab against direct, tinyproxy, squid without cache,
                   proxy.py and the stock twisted.web.proxy
  --cache          cache hits: caplab with its cache against squid's cache and the stock proxy
  --workers N      caplab with --workers N against --workers 1 and squid on the same cores
  --floor          caplab, then the floor of any proxy on Twisted (benchmarks/floor_proxy.py:
                   a bare relay), each against proxy.py and squid without cache

Examples::

    .venv/bin/python benchmarks/proxy.py --quick
    .venv/bin/python benchmarks/proxy.py --sizes 1k,64k,1m --conns 50
    .venv/bin/python benchmarks/proxy.py --cache --sizes 1k,64k --conns 50
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench-dir", type=Path, default=HERE.parent.parent / "shared" / "bench")
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run, not figures to quote"
    )
    parser.add_argument("--cache", action="store_true", help="measure cache hits")
    parser.add_argument("--workers", type=int, default=0, help="measure caplab --workers N")
    parser.add_argument(
        "--floor", action="store_true", help="also measure a bare Twisted relay (the floor)"
    )
    parser.add_argument("--sizes", default="1k,64k,1m")
    parser.add_argument("--conns", default="1,50,200")
    parser.add_argument("--reps", default="3")
    parser.add_argument("--seconds", default="2")
    parser.add_argument("--md", type=Path, help="also write the markdown tables here")
    args = parser.parse_args(argv)

    script = args.bench_dir / "proxy_bench.py"
    if not script.exists():
        parser.error(f"no proxy_bench.py in {args.bench_dir} (give --bench-dir)")
    python = sys.executable
    twist = str(Path(python).with_name("twist"))
    caplab = f"{twist} caplab --no-tcp --no-udp --proxy-port {{port}} --max-connections 10000"

    if args.cache:
        targets = "squid-cache,twisted-stock"
        name, command = "caplab-cache", caplab
    elif args.workers or args.floor:
        targets = "squid-nocache" if args.workers else "squid-nocache,proxypy"
        name = f"caplab-workers{args.workers}"
        command = f"{caplab} --no-cache --workers {args.workers}"
    else:
        targets = "direct,tinyproxy,squid-nocache,proxypy,twisted-stock"
        name, command = "caplab", f"{caplab} --no-cache"

    runs = [(name, command)]
    if args.workers:
        runs.append(("caplab-workers1", f"{caplab} --no-cache"))
    if args.floor:
        runs[0] = ("caplab", f"{caplab} --no-cache")
        runs.append(("twisted-floor", f"{python} {HERE / 'floor_proxy.py'} {{port}}"))
    status = 0
    for index, (runName, runCommand) in enumerate(runs):
        cmd = [
            python, str(script), "--python", python,
            "--targets", targets if index == 0 or args.floor else "none",
            "--proxy-cmd", runCommand, "--proxy-name", runName,
            "--sizes", args.sizes,
        ]  # fmt: skip
        if args.quick:
            cmd.append("--quick")
        else:
            cmd += ["--conns", args.conns, "--reps", args.reps, "--seconds", args.seconds]
        if args.cache:
            cmd.append("--proxy-caches")
        if args.md:
            cmd += ["--md", str(args.md.with_suffix(f".{runName}.md"))]
        print("+", shlex.join(cmd), flush=True)
        status = subprocess.call(cmd) or status
    return status


if __name__ == "__main__":
    raise SystemExit(main())
