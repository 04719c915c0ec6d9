#!/usr/bin/env python3
"""
Instructions per operation of the uppercase services, counted by valgrind's callgrind.

This prints figures; it is not a test.  Timings on a shared machine are noisy; instruction
counts are not (within about 1 %), so changes to the services' hot paths are decided with
this script and the timed table of ``benchmarks/upper.py`` is left for a quiet machine.

Each target runs under ``valgrind --tool=callgrind`` with collection off while it starts;
collection is switched on only while the C load generator of the shared harness
(``../shared/bench/limit/upper_load.c``) drives one test, and the server's instructions are
divided by the operations the load generator completed:

  short1 / short50   the lab's pattern (connect, 40 bytes, read, close): per connection
  udp1 / udp64       UDP round trips with 1 or 64 datagrams outstanding: per datagram
  stream1            one connection streaming 40 MiB: per KiB

Under valgrind the server runs about 50 times slower, so a UDP target sees more datagrams
waiting per readiness event than it would at full speed: compare targets with each other
in one run, not with another day's figures.  udp1 is the exception to "counts barely move":
whether the client's next datagram has arrived before the server looks again decides
between one readiness event per round trip and a few, so its count swings by a factor of
three from run to run; judge udp1 with ``benchmarks/upper.py`` on a quiet machine.  Targets
are alternated within each repetition.

Examples::

    .venv/bin/python benchmarks/upper_instructions.py
    .venv/bin/python benchmarks/upper_instructions.py --targets caplab,twisted-naive \\
        --tests udp64 --reps 3
    .venv/bin/python benchmarks/upper_instructions.py --targets before,caplab \\
        --before /tmp/caplab-main     # a checkout of another revision, for A/B
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_CPU = 0
CLIENT_CPU = 1


def serverCommand(name: str, python: str, bench: Path, before: Path | None) -> list[str]:
    """
    The command (with C{{tcp}} and C{{udp}} placeholders) that runs target C{name}.
    """
    caplab = [python, "-m", "twisted", "caplab", "--no-proxy"]
    caplab += ["--tcp-port", "{tcp}", "--udp-port", "{udp}"]
    if name in ("caplab", "before"):
        return caplab
    if name == "caplab-unicode":
        return caplab + ["--unicode"]
    if name == "caplab-trace":
        return caplab + ["--trace", "/dev/null"]
    if name == "caplab-noidle":
        return caplab + ["--idle-timeout", "0"]
    if name == "twisted-naive":
        return [python, str(bench / "servers" / "twisted_naive.py"), "{tcp}", "{udp}"]
    if name in ("seed-tcp", "seed-udp"):
        kind, port = name[5:], "{" + name[5:] + "}"
        return [python, str(bench / "servers" / "seed_style.py"), kind, port]
    raise SystemExit(f"unknown target {name}")


def totalInstructions(path: Path) -> int:
    """
    The instructions a callgrind output file counts (its C{totals:} line; a dump's
    C{summary:} line may say 0).
    """
    text = path.read_text(errors="replace")
    match = re.search(r"^totals:\s*(\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no totals in {path}")
    return int(match.group(1))


def waitForDump(path: Path, timeout: float = 60.0) -> Path:
    """
    Wait until callgrind has written the dump at C{path} completely.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and b"\ntotals:" in path.read_bytes():
            return path
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump at {path}")


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def measure(
    target: str,
    test: str,
    argv: list[str],
    load: str,
    seconds: float,
    tmp: Path,
    env: dict[str, str],
    bl: Any,
    warmup: float,
    keep: Path | None,
) -> dict[str, object]:
    """
    Run C{target} under callgrind, drive C{test} at it, and count its instructions.
    """
    tcp = bl.free_port()
    udp = bl.free_port(socket.SOCK_DGRAM)
    out = tmp / f"callgrind.{target}.{test}.{time.monotonic_ns()}"
    cmd = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        *(part.format(tcp=tcp, udp=udp) for part in argv),
    ]  # fmt: skip
    # cwd: not the checkout, which "python -m" would put first on sys.path.
    proc = bl.Proc(f"{target}-{test}", cmd, SERVER_CPU, str(tmp), env=env, cwd=str(tmp))
    try:
        if not target.startswith("seed-udp"):
            bl.wait_tcp(tcp, proc, timeout=180)
        if not target.startswith("seed-tcp"):
            bl.wait_udp(udp, proc, timeout=180)
        pid = str(proc.pid)
        # Warm up (first-use imports and caches) with collection off, then count.
        warm = ["short" if test.startswith("stream") else test.rstrip("0123456789")]
        warm += ["127.0.0.1", str(udp if warm[0] == "udp" else tcp), "1", str(warmup)]
        subprocess.run(["taskset", "-c", str(CLIENT_CPU), load, *warm], capture_output=True)
        control("-i", "on", pid)
        if test.startswith("short"):
            cmdline = ["short", "127.0.0.1", str(tcp), test[5:], str(seconds)]
        elif test.startswith("udp"):
            cmdline = ["udp", "127.0.0.1", str(udp), test[3:], str(seconds)]
        else:
            size = 40 << 20
            cmdline = ["stream", "127.0.0.1", str(tcp), test[6:], str(size // int(test[6:])), "600"]
        run = subprocess.run(
            ["taskset", "-c", str(CLIENT_CPU), load, *cmdline],
            capture_output=True,
            text=True,
            timeout=seconds + 660,
        )
        result = json.loads(run.stdout.strip().splitlines()[-1])
        control("-i", "off", pid)
        control("-d", pid)
        dump = waitForDump(Path(f"{out}.1"))
        instructions = totalInstructions(dump)
        if keep is not None:
            shutil.copy(dump, keep / f"callgrind.{target}.{test}.{time.strftime('%H%M%S')}")
    finally:
        proc.stop()
    if test.startswith("stream"):
        operations = (40 << 20) / 1024
    else:
        operations = float(result["completed"])
    return {
        "target": target,
        "test": test,
        "operations": operations,
        "instructions": instructions,
        "perOperation": instructions / operations if operations else float("nan"),
        "verified": result.get("verified"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench-dir", type=Path, default=HERE.parent.parent / "shared" / "bench")
    parser.add_argument(
        "--targets",
        default="caplab,twisted-naive,seed",
        help="caplab, caplab-unicode, caplab-trace, caplab-noidle, before, twisted-naive, seed "
        "(default: "
        "%(default)s)",
    )
    parser.add_argument("--tests", default="short1,short50,udp1,udp64")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4.0, help="per short/udp test")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of uncounted load first")
    parser.add_argument(
        "--before", type=Path, help="a checkout whose caplab the target 'before' runs"
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the callgrind files here (for callgrind_annotate)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("needs valgrind (Debian: apt-get install valgrind)")
    sys.path.insert(0, str(args.bench_dir))
    import benchlib as bl

    python = sys.executable
    targets = args.targets.split(",")
    tests = args.tests.split(",")
    if "before" in targets and args.before is None:
        parser.error("the target 'before' needs --before CHECKOUT")
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="caplab-instr-") as tmpName:
        tmp = Path(tmpName)
        load = tmp / "upper_load"
        source = args.bench_dir / "limit" / "upper_load.c"
        subprocess.run(["gcc", "-O2", "-o", str(load), str(source)], check=True)
        for rep in range(args.reps):
            for test in tests:
                for target in targets:
                    name = target
                    if target == "seed":
                        if test.startswith("stream"):
                            continue
                        name = "seed-tcp" if test.startswith("short") else "seed-udp"
                    env = dict(os.environ)
                    if target == "before":
                        env["PYTHONPATH"] = str(args.before)
                    command = serverCommand(name, python, args.bench_dir, args.before)
                    result = measure(
                        name,
                        test,
                        command,
                        str(load),
                        args.seconds,
                        tmp,
                        env,
                        bl,
                        args.warmup,
                        args.keep,
                    )
                    result["target"] = target
                    result["rep"] = rep
                    results.append(result)
                    print(
                        f"rep {rep} {test:8} {target:15} {result['perOperation']:>12,.0f} "
                        f"instructions/op over {result['operations']:,.0f} ops "
                        f"(verified={result['verified']})",
                        flush=True,
                    )
    print()
    print("| test | " + " | ".join(targets) + " |")
    print("|---|" + "---|" * len(targets))
    for test in tests:
        cells = []
        for target in targets:
            values = sorted(
                float(r["perOperation"])  # type: ignore[arg-type]
                for r in results
                if r["target"] == target and r["test"] == test
            )
            cells.append(f"{values[len(values) // 2]:,.0f}" if values else "n/a")
        unit = "per KiB" if test.startswith("stream") else "per op"
        print(f"| {test} ({unit}) | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
