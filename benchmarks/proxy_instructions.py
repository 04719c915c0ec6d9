#!/usr/bin/env python3
"""
Instructions per request of the web proxy, counted by valgrind's callgrind.

This prints figures; it is not a test.  Timings on a shared machine are noisy; instruction
counts are not (within about 1 %), so changes to the proxy's hot paths are decided with this
script, and the timed table of ``benchmarks/proxy.py`` is left for a quiet machine.

The proxy runs under ``valgrind --tool=callgrind`` with collection off while it starts and
warms up; collection is on only while wrk drives one test through it, and the proxy's
instructions are divided by the requests wrk completed (kernel work, the ``send`` and
``recv`` themselves, is not counted: this measures the Python around them):

  nocache-1k, nocache-64k   ``--no-cache``: every request goes to the nginx origin
  hit-1k, hit-64k           the cache on, the object stored during the warm-up: hits

    .venv/bin/python benchmarks/proxy_instructions.py
    .venv/bin/python benchmarks/proxy_instructions.py --tests hit-1k \\
        --before ../old/.venv/bin/python

``--before PYTHON`` also measures another revision's caplab (the ``python`` of a virtual
environment where it is installed), alternated with this one in each repetition.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
PROXY_CPU = 0
CLIENT_CPU = 1

LUA = """
wrk.path = "http://127.0.0.1:{port}/{name}"
wrk.headers["Host"] = "127.0.0.1:{port}"
"""


def totalInstructions(path: Path) -> int:
    """
    The instructions a callgrind output file counts (its C{totals:} line).
    """
    match = re.search(r"^totals:\s*(\d+)", path.read_text(errors="replace"), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no totals in {path}")
    return int(match.group(1))


def waitForDump(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and b"\ntotals:" in path.read_bytes():
            return
        time.sleep(0.2)
    raise RuntimeError(f"callgrind wrote no dump at {path}")


def wrk(lua: Path, port: int, seconds: float, connections: int) -> int:
    """
    Run wrk against the proxy on C{port}; the number of requests it completed.
    """
    result = subprocess.run(
        ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{connections}",
         f"-d{int(seconds)}s", "--timeout", "60s", "-s", str(lua), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    match = re.search(r"(\d+) requests in", result.stdout)
    if match is None or "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        raise RuntimeError(f"wrk failed:\n{result.stdout}\n{result.stderr}")
    return int(match.group(1))


def measure(
    python: str, test: str, origin: int, tmp: Path, bl: ModuleType, seconds: float, conns: int
) -> float:
    """
    Instructions per request of the caplab that C{python} runs, for C{test}.
    """
    kind, name = test.split("-")
    port = bl.free_port()
    out = tmp / f"callgrind.{time.monotonic_ns()}"
    argv = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        python, "-m", "twisted", "caplab", "--no-tcp", "--no-udp", "--proxy-port", str(port),
        "--max-connections", "10000",
    ]  # fmt: skip
    if kind == "nocache":
        argv.append("--no-cache")
    proc = bl.Proc(f"caplab-{test}", argv, PROXY_CPU, str(tmp), cwd=str(tmp))
    try:
        bl.wait_tcp(port, proc, timeout=180)
        lua = tmp / f"{name}.lua"
        lua.write_text(LUA.format(port=origin, name=f"{name}.bin"))
        wrk(lua, port, 3, conns)  # warm-up, collection off: imports, caches, the stored object
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        requests = wrk(lua, port, seconds, conns)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                       capture_output=True, timeout=60)  # fmt: skip
    finally:
        proc.stop(grace=60)
    waitForDump(out)
    return totalInstructions(out) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench-dir", type=Path, default=HERE.parent.parent / "shared" / "bench")
    parser.add_argument("--tests", default="nocache-1k,hit-1k,nocache-64k,hit-64k")
    parser.add_argument("--before", help="another revision's python, for A/B")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--conns", type=int, default=10)
    args = parser.parse_args()
    sys.path.insert(0, str(args.bench_dir))
    import benchlib as bl
    import proxy_bench as pb

    targets = {"caplab": sys.executable}
    if args.before:
        targets = {"before": args.before, **targets}
    with tempfile.TemporaryDirectory(prefix="caplab-instructions-") as name:
        tmp = Path(name)
        root = tmp / "root"
        root.mkdir()
        for label, size in (("1k", 1024), ("64k", 65536)):
            (root / f"{label}.bin").write_bytes(bytes(range(256)) * (size // 256))
        origin = pb.Nginx("origin", str(tmp), str(root), CLIENT_CPU)
        try:
            print(
                f"{'test':<14}"
                + "".join(f"{t:>16}" for t in targets)
                + "   (instructions a request)"
            )
            for test in args.tests.split(","):
                results: dict[str, list[float]] = {t: [] for t in targets}
                for _ in range(args.reps):
                    for target, python in targets.items():
                        results[target].append(
                            measure(python, test, origin.port, tmp, bl, args.seconds, args.conns)
                        )
                row = [min(values) for values in results.values()]
                print(f"{test:<14}" + "".join(f"{value:>16,.0f}" for value in row), flush=True)
        finally:
            origin.proc.stop()


if __name__ == "__main__":
    main()
