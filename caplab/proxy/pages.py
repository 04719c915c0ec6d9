"""
The proxy's own error pages: small HTML pages that say why.  (The status pages live in
L{caplab.metrics.pages}.)
"""

from __future__ import annotations

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
