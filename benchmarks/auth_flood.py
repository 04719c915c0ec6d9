#!/usr/bin/env python3
"""
How long a new proxy login takes while another address floods the proxy with wrong
passwords (issue 9 item 7): before and after, in one run.

This prints figures; it is not a test.  For each version of caplab (this checkout, and the
checkout given with ``--old``, e.g. one exported from ``main``), it starts ``twist caplab
--auth-file`` (bcrypt cost 10) in front of the test origin and measures, with curl from
127.0.0.1:

  * a new login (a user not logged in before, so its hash is checked) with the proxy idle;
  * new logins while ``--connections`` keep-alive connections from 127.0.0.2 send wrong
    passwords as fast as they are answered;
  * during the same flood, a request that needs a name lookup (``localhost``, through
    getaddrinfo in the reactor's thread pool) with credentials already checked.

Examples::

    .venv/bin/python benchmarks/auth_flood.py
    git archive main | (mkdir -p /tmp/caplab-main && tar -x -C /tmp/caplab-main)
    .venv/bin/python benchmarks/auth_flood.py --old /tmp/caplab-main --logins 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import bcrypt  # noqa: E402

from tests.origins import WAIT, OriginProcess, runningOrigin  # noqa: E402
from tests.support import CaplabProcess  # noqa: E402
from tests.test_e2e_policy_auth import Flood, timedLogin  # noqa: E402
from tests.tls import TEST_HOST  # noqa: E402


def timed(proxy: str, url: str, user: str) -> float:
    """
    The duration of a good login by C{user}, or infinity if it failed or timed out.
    """
    try:
        return timedLogin(proxy, url, user, "s3cret")
    except AssertionError:
        return float("inf")


def measure(
    label: str,
    pythonPath: str | None,
    origin: OriginProcess,
    users: Path,
    logins: int,
    connections: int,
) -> dict[str, Any]:
    """
    Run one version of caplab and take its figures.
    """
    env = {"PYTHONPATH": pythonPath} if pythonPath else {}
    process = CaplabProcess(
        [
            "--no-tcp", "--no-udp", "--proxy-port", "0", "--max-connections", "10000",
            "--resolve", f"{TEST_HOST}=127.0.0.1", "--auth-file", str(users),
        ],
        env=env,
    ).start()  # fmt: skip
    try:
        process.waitListening("proxy")
        host, port = process.addresses["proxy"]
        proxy = f"{host}:{port}"
        url = origin.url("/hello/bench")
        quiet = [timed(proxy, url, f"user{i}") for i in range(logins)]
        with Flood((host, port), url, connections=connections) as flood:
            deadline = time.monotonic() + WAIT
            while flood.answered < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            started, answeredBefore = time.monotonic(), flood.answered
            during = [timedLogin(proxy, url, f"user{logins + i}", "s3cret") for i in range(logins)]
            local = f"http://localhost:{origin.ports['http']}/hello/lookup"
            lookups = [timed(proxy, local, "user0") for _ in range(3)]
            rate = (flood.answered - answeredBefore) / (time.monotonic() - started)
        return {
            "label": label,
            "quiet": quiet,
            "flood": during,
            "lookup": lookups,
            "rate": rate,
        }
    finally:
        process.stop()


def summary(values: list[float]) -> str:
    """
    Median and maximum in milliseconds (C{inf}: failed or timed out after {WAIT} s).
    """
    return f"{statistics.median(values) * 1000:7.0f} / {max(values) * 1000:7.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--old", type=Path, help="a checkout of the code to compare with")
    parser.add_argument("--connections", type=int, default=150)
    parser.add_argument("--logins", type=int, default=5)
    parser.add_argument("--cost", type=int, default=10, help="bcrypt cost of the users' hashes")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        users = Path(directory) / "users.htpasswd"
        salt = bcrypt.gensalt(args.cost)
        hashed = bcrypt.hashpw(b"s3cret", salt).decode()
        users.write_text("".join(f"user{i}:{hashed}\n" for i in range(2 * args.logins)))
        results = []
        with runningOrigin() as origin:
            versions: list[tuple[str, str | None]] = [("this checkout", None)]
            if args.old is not None:
                versions.insert(0, (f"old ({args.old})", str(args.old.resolve())))
            for label, path in versions:
                results.append(measure(label, path, origin, users, args.logins, args.connections))
    print(
        f"new-login latency, median / max of {args.logins}, bcrypt cost {args.cost}, "
        f"{args.connections} flooding connections"
    )
    print(f"{'code':40} {'idle':>20} {'during flood':>20} {'lookup in flood':>20} answers/s")
    for result in results:
        print(
            f"{result['label']:40} {summary(result['quiet']):>20} "
            f"{summary(result['flood']):>20} {summary(result['lookup']):>20} "
            f"{result['rate']:9.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
