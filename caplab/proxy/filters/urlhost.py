"""
The host a browser would fetch a URL in an HTML attribute from, and the URLs of a
C{srcset}: the parts of the WHATWG URL and HTML standards the element blocker needs, pure.

Written as browsers parse, not as RFC 3986 would: leading and trailing spaces and controls
are ignored, tabs and newlines inside are dropped, a backslash is a slash in C{http(s)}
URLs, any number of slashes may follow the scheme, user information and port are not part
of the host, and a host may be percent-encoded.  Character references (C{&#46;}) are
decoded by the caller first, as the HTML parser does.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_TABS_NEWLINES = re.compile(r"[\t\n\r]")
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))
#: Schemes whose URLs have a host (the WHATWG "special" schemes, less file:).
_SPECIAL = frozenset({"http", "https", "ws", "wss", "ftp"})
_AUTHORITY_END = re.compile(r"[/\\?#]")
_SPACES = " \t\n\r\f"
#: The common absolute URL, quickly: a plain host name after http(s):// or //.
_PLAIN = re.compile(r"(?:[hH][tT][tT][pP][sS]?:)?//([A-Za-z0-9.\-_]+)(?::[0-9]*)?(?=[/?#]|$)")


def urlHost(url: str, pageScheme: str, baseHost: str | None) -> str | None:
    """
    The host a browser would fetch C{url} from, on a page served over C{pageScheme}
    (C{http}) whose relative URLs resolve against C{baseHost}.

    @return: the host (lower-case, maybe not yet IDNA-encoded), C{baseHost} for a relative
        URL, or None for a URL without a host (C{data:}, C{javascript:}, or relative with no
        C{baseHost}).
    """
    plain = _PLAIN.match(url)
    if plain is not None:
        return plain.group(1).lower()
    url = _TABS_NEWLINES.sub("", url.strip(_C0_AND_SPACE))
    scheme = _SCHEME.match(url)
    if scheme is not None:
        name = scheme.group(1).lower()
        if name not in _SPECIAL:
            return None
        rest = url[scheme.end() :].replace("\\", "/")
        if not rest.startswith("/") and name == pageScheme:
            return baseHost  # "http:x.png" on an http page is relative
        return _authorityHost(rest.lstrip("/"))
    if url[:2].replace("\\", "/") == "//":
        return _authorityHost(url.replace("\\", "/").lstrip("/"))
    return baseHost


def _authorityHost(rest: str) -> str | None:
    end = _AUTHORITY_END.search(rest)
    authority = rest[: end.start()] if end else rest
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        host = authority[1 : authority.find("]")] if "]" in authority else authority[1:]
    else:
        host = authority.partition(":")[0]
    if "%" in host:
        host = unquote(host, errors="surrogateescape")
    host = host.lower()
    return host or None


def srcsetURLs(value: str) -> list[str]:
    """
    The URLs of a C{srcset} attribute (image candidates separated by commas, each a URL
    and optional descriptors such as C{2x} or C{640w}), as the HTML standard splits them:
    a URL may itself hold commas, except at its end.
    """
    urls: list[str] = []
    index = 0
    size = len(value)
    while True:
        while index < size and (value[index] in _SPACES or value[index] == ","):
            index += 1
        if index >= size:
            return urls
        start = index
        while index < size and value[index] not in _SPACES:
            index += 1
        url = value[start:index]
        if url.endswith(","):
            urls.append(url.rstrip(","))
            continue
        urls.append(url)
        depth = 0
        while index < size:
            c = value[index]
            index += 1
            if c == "(":
                depth += 1
            elif c == ")" and depth:
                depth -= 1
            elif c == "," and not depth:
                break
