"""
The proxy's own pages: small HTML error pages that say why, and the status page.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from http import HTTPStatus

from twisted.web.http import RESPONSES


def reason(code: int) -> bytes:
    """
    The standard reason phrase of C{code}.
    """
    phrase = RESPONSES.get(code)
    if phrase is None:
        try:
            phrase = HTTPStatus(code).phrase.encode("ascii")
        except ValueError:
            phrase = b"Unknown"
    return phrase


def errorPage(code: int, title: str, detail: str) -> bytes:
    """
    An HTML page for an error the proxy answers itself.
    """
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{code} {escape(title)}</title></head>\n<body><h1>{code} {escape(title)}</h1>\n"
        f"<p>{escape(detail)}</p>\n<hr><address>caplab proxy</address></body></html>\n"
    ).encode()


def statusPage(version: str, uptime: float, counters: Mapping[str, int | str]) -> bytes:
    """
    The page a browser gets for C{http://proxy:port/}: version, uptime and counters.
    """
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(str(value))}</td></tr>\n"
        for name, value in counters.items()
    )
    hours, rest = divmod(int(uptime), 3600)
    minutes, secs = divmod(rest, 60)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>caplab proxy</title>'
        "</head>\n<body><h1>caplab proxy</h1>\n"
        f"<p>Version {escape(version)}, up {hours}:{minutes:02d}:{secs:02d} "
        f"({uptime:.0f} seconds).</p>\n<table>\n{rows}</table>\n"
        "<p>This is an HTTP forward proxy: point your browser or <code>curl -x</code> at "
        "this address to use it.</p>\n"
        '<p><a href="/stats">Request rate and figures</a> · '
        '<a href="/proxy.pac">PAC file</a></p>\n</body></html>\n'
    ).encode()
