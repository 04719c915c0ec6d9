"""
Run the test origin: C{python -m tests.origins [--tls-dir DIR] [--interface ADDRESS]}.

Listens on free ports and prints C{caplab-test origin http listening on HOST:PORT} (and the
same for C{https} when C{--tls-dir} holds C{server.pem} and C{server-key.pem} from
L{tests.tls.makePKI}), then one JSON line per request. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor

from tests.origins.site import OriginSite, RequestLog

#: Listen queue of both ports: hundreds of clients may connect at once through a proxy.
BACKLOG = 1024


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.origins")
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--tls-dir", type=Path, default=None)
    options = parser.parse_args(argv)

    reactor: Any = _reactor
    log = RequestLog(_print)

    plain = reactor.listenTCP(
        0, OriginSite(log, reactor, "http"), backlog=BACKLOG, interface=options.interface
    )
    _print(f"caplab-test origin http listening on {options.interface}:{plain.getHost().port}")

    if options.tls_dir is not None:
        from twisted.internet import ssl

        certificate = ssl.PrivateCertificate.loadPEM(
            (options.tls_dir / "server.pem").read_bytes()
            + (options.tls_dir / "server-key.pem").read_bytes()
        )
        secure = reactor.listenSSL(
            0,
            OriginSite(log, reactor, "https"),
            certificate.options(),
            backlog=BACKLOG,
            interface=options.interface,
        )
        _print(f"caplab-test origin https listening on {options.interface}:{secure.getHost().port}")

    reactor.run()


if __name__ == "__main__":
    main()
