#!/usr/bin/env python3
"""
Benchmark caplab's uppercase TCP and UDP services against their peers, in one run.

This prints figures; it is not a test.  It runs ``upper_bench.py`` from the shared bench
directory (``../shared/bench`` beside the checkout, or ``--bench-dir``), which builds a C load
generator and a C epoll server (the near-physical ``limit``), pins the server under test to
CPU 0 and the load generator to CPU 1, alternates the targets inside every test and
repetition, verifies every reply, and prints its markdown table; then this script prints the
table of issue 14 from the same run (medians over the repetitions):

  stream1 / stream50   TCP streaming MB/s on one connection and on 50
  short1 / short50     the lab's pattern: connect, send a 40-byte sentence, read, close
  udp1 / udp64         UDP round trips per second, 1 or 64 datagrams outstanding

with caplab's ratio to each peer of the same run: ``twisted-naive`` (a minimal Twisted
Protocol/DatagramProtocol), ``seed-style`` (the lab's blocking servers) and ``limit`` (a C
epoll server).  Targets (issue 14): every row at least 1.0x ``twisted-naive``, and udp64 at
least 0.9x ``seed-style``.  A second table gives each server's CPU time per operation (per
MiB for streams), which a busy machine disturbs less than the rates.

Examples::

    .venv/bin/python benchmarks/upper.py --quick          # a smoke run, not figures to quote
    .venv/bin/python benchmarks/upper.py                  # 3 repetitions, 1 GiB streams
    .venv/bin/python benchmarks/upper.py --reps 1 --md benchmarks/results/upper.md
    .venv/bin/python benchmarks/upper.py --unicode --tests stream1,udp1
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    with tempfile.TemporaryDirectory(prefix="caplab-upper-") as tmp:
        results = Path(tmp) / "upper.json"
        cmd += ["--json", str(results)]
        print("+", shlex.join(cmd), flush=True)
        status = subprocess.call(cmd)
        if status != 0 or not results.exists():
            return status or 1
        data = json.loads(results.read_text())
    table = issueTable(data["results"], name)
    print(table)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(table)
    return 0


#: The peers caplab is compared with, as the harness names them, and the column titles.
PEERS = (("twisted-naive", "naive Twisted"), ("seed-style", "lab seed"), ("limit", "C limit"))

#: Issue 14's targets: the least ratio of caplab to a peer, per test (any test: "*").
TARGETS = {("*", "twisted-naive"): 1.0, ("udp64", "seed-style"): 0.9}


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def issueTable(results: list[dict[str, Any]], name: str) -> str:
    """
    Issue 14's tables from the harness's raw results: rates and ratios, then CPU time.
    """
    tests = list(dict.fromkeys(r["test"] for r in results))
    targets = [name] + [peer for peer, _ in PEERS if any(r["target"] == peer for r in results)]
    titles = dict(PEERS) | {name: name}

    def runs(target: str, test: str) -> list[dict[str, Any]]:
        return [r for r in results if r["target"] == target and r["test"] == test]

    def rate(target: str, test: str) -> float | None:
        key = "mb_per_s" if test.startswith("stream") else "per_s"
        return median([r[key] for r in runs(target, test) if r.get("verified")])

    def cpu(target: str, test: str) -> float | None:
        if test.startswith("stream"):
            per = [r["server_cpu_s"] * 1e6 / (r["bytes_echoed"] / 2**20) for r in runs(target, test)
                   if r.get("verified") and r.get("bytes_echoed")]  # fmt: skip
        else:
            per = [r["server_cpu_s"] * 1e6 / r["completed"] for r in runs(target, test)
                   if r.get("verified") and r.get("completed")]  # fmt: skip
        return median(per)

    peers = [peer for peer in targets if peer != name]
    lines = [f"### {name} against its peers: medians of the same run", ""]
    head = ["test", "unit"] + [titles[t] for t in targets]
    head += [f"{name} / {titles[peer]}" for peer in peers] + ["issue 14 targets"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for test in tests:
        unit = (
            "MB/s"
            if test.startswith("stream")
            else "conn/s"
            if test.startswith("short")
            else "round trips/s"
        )
        rates = {t: rate(t, test) for t in targets}
        cells = [test, unit] + ["n/a" if rates[t] is None else f"{rates[t]:,.0f}" for t in targets]
        verdicts = []
        for peer in peers:
            mine, theirs = rates[name], rates[peer]
            ratio = mine / theirs if mine is not None and theirs else None
            cells.append("n/a" if ratio is None else f"{ratio:.2f}x")
            least = TARGETS.get((test, peer), TARGETS.get(("*", peer)))
            if least is not None and ratio is not None:
                met = "met" if ratio >= least else "MISSED"
                verdicts.append(f"{met} (>= {least:.1f}x {titles[peer]})")
        cells.append("; ".join(verdicts) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Server CPU time per operation (microseconds; per MiB for streams):", ""]
    head = ["test"] + [titles[t] for t in targets]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for test in tests:
        values = [cpu(t, test) for t in targets]
        lines.append(
            "| " + " | ".join([test] + ["n/a" if v is None else f"{v:,.1f}" for v in values]) + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
