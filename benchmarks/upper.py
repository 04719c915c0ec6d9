#!/usr/bin/env python3
"""
Benchmark caplab's uppercase TCP and UDP services against their peers, in one run.

This prints figures; it is not a test.  It runs ``upper_bench.py`` from the shared bench
directory (``../shared/bench`` beside the checkout, or ``--bench-dir``), which builds a C load
generator and a C epoll server (the near-physical ``limit``), pins the server under test to
CPU 0 and the load generator to CPU 1, alternates the targets inside every test and
repetition, verifies every reply, and prints a markdown table:

  stream1 / stream50   TCP streaming MB/s on one connection and on 50
  short1 / short50     the lab's pattern: connect, send a 40-byte sentence, read, close
  udp1 / udp64         UDP round trips per second, 1 or 64 datagrams outstanding

Peers in the same run: ``limit`` (C), ``seed-style`` (the lab's blocking servers),
``twisted-naive`` (a minimal Twisted Protocol/DatagramProtocol).  Targets: TCP stream at
least 50 % of ``limit``; short connections and UDP round trips at least ``twisted-naive``.

Examples::

    .venv/bin/python benchmarks/upper.py --quick          # a smoke run, not figures to quote
    .venv/bin/python benchmarks/upper.py                  # 3 repetitions, 1 GiB streams
    .venv/bin/python benchmarks/upper.py --reps 1 --md benchmarks/results/upper.md
    .venv/bin/python benchmarks/upper.py --unicode --tests stream1,udp1
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
    parser.add_argument("--reps", help="repetitions (upper_bench.py's default: 3)")
    parser.add_argument("--seconds", help="seconds per short/udp test")
    parser.add_argument("--stream-mib", help="MiB per stream test")
    parser.add_argument("--tests", help="e.g. stream1,short1,udp1 (default: all six)")
    parser.add_argument(
        "--targets", default="limit,seed-style,twisted-naive", help="peers in the same run"
    )
    parser.add_argument("--unicode", action="store_true", help="run caplab with --unicode")
    parser.add_argument("--md", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)

    script = args.bench_dir / "upper_bench.py"
    if not script.exists():
        parser.error(f"no upper_bench.py in {args.bench_dir} (give --bench-dir)")
    python = sys.executable
    twist = str(Path(python).with_name("twist"))
    command = f"{twist} caplab --no-proxy --tcp-port {{tcp}} --udp-port {{udp}}"
    name = "caplab"
    if args.unicode:
        command += " --unicode"
        name = "caplab-unicode"

    cmd = [
        python, str(script), "--python", python, "--targets", args.targets,
        "--server-cmd", command, "--server-name", name,
    ]  # fmt: skip
    if args.quick:
        cmd.append("--quick")
    for option in ("reps", "seconds", "stream_mib", "tests"):
        value = getattr(args, option)
        if value is not None:
            cmd += [f"--{option.replace('_', '-')}", value]
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--md", str(args.md)]
    print("+", shlex.join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
