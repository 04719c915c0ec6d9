"""
A proxy auto-config (PAC) file pointing browsers at this proxy.

Browsers fetch it from C{http://PROXY/proxy.pac} (set it as the "automatic proxy configuration
URL") and call its C{FindProxyForURL(url, host)} for each request: hosts in the
C{--pac-bypass} list, and their subdomains, go C{DIRECT} (of an entry C{*.example.com}, the
subdomains only, as in block lists); everything else goes through the proxy.  The script is
plain ECMAScript 3 without the PAC helper functions, so any PAC engine runs it, and every
value in it is a checked host name or address, so nothing can be injected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from caplab.address import hostPort
from caplab.proxy.hooks import PageRequest, PageResponse
from caplab.proxy.hostnames import normaliseName

#: The media type browsers expect for a PAC file.
PAC_CONTENT_TYPE = b"application/x-ns-proxy-autoconfig"

#: host:port as it may appear in a Host header (name, IPv4, or bracketed IPv6).
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}")


def bypassDomain(entry: str) -> str:
    """
    The canonical form of a C{--pac-bypass} entry: a domain (C{example.com}, which goes
    C{DIRECT} with its subdomains) as L{normaliseName} writes it, or C{*.} and such a domain
    (its subdomains only).  The option check and L{PacPage} both read entries with it.

    @raise ValueError: C{entry} is neither.
    """
    entry = entry.strip()
    if entry.startswith("*."):
        return "*." + normaliseName(entry[2:])
    return normaliseName(entry)


def bypassList(bypass: Sequence[str]) -> list[str]:
    """
    The canonical bypass entries of C{bypass} (L{bypassDomain}), sorted, each once.

    @raise ValueError: an entry is not one.
    """
    return sorted({bypassDomain(entry) for entry in bypass})


def pacScript(proxyAddress: str, bypass: Sequence[str] = ()) -> str:
    """
    The PAC file text sending everything but C{bypass} through the proxy at C{proxyAddress}.

    @param proxyAddress: C{host:port} of this proxy as the browser reaches it
        (C{127.0.0.1:8080}, C{[::1]:8080}, C{proxy.lab.example:8080}).
    @param bypass: domains to reach directly, each with its subdomains (C{*.domain}: its
        subdomains only).
    @raise ValueError: C{proxyAddress} is not C{host:port}, or a bypass entry is not a domain.
    """
    return _script(proxyAddress, bypassList(bypass))


def _script(proxyAddress: str, bypass: list[str]) -> str:
    """
    L{pacScript}, C{bypass} being canonical already (L{bypassList}).
    """
    if not _HOST_PORT.fullmatch(proxyAddress):
        raise ValueError(f"{proxyAddress!r} is not host:port")
    return _TEMPLATE.format(
        bypass=json.dumps(bypass),
        proxy=json.dumps(f"PROXY {proxyAddress}"),
    )


_TEMPLATE = """\
// Proxy auto-config for caplab: hosts below (and their subdomains; of "*.domain" the
// subdomains only) go DIRECT, all others through the proxy.
var BYPASS = {bypass};

function FindProxyForURL(url, host) {{
  host = String(host).toLowerCase();
  if (host.charAt(host.length - 1) === ".") {{
    host = host.substring(0, host.length - 1);
  }}
  for (var i = 0; i < BYPASS.length; i++) {{
    var domain = BYPASS[i];
    var suffix = domain.substring(1);
    if (domain.charAt(0) !== "*") {{
      if (host === domain) {{
        return "DIRECT";
      }}
      suffix = "." + domain;
    }}
    if (host.length > suffix.length &&
        host.substring(host.length - suffix.length) === suffix) {{
      return "DIRECT";
    }}
  }}
  return {proxy};
}}
"""


class PacPage:
    """
    The L{IPage} at C{/proxy.pac}: L{pacScript} for the address the browser used to reach the
    proxy.

    @ivar proxyAddress: the C{host:port} to name in the script; None to take it from the
        request's C{Host} header (if well-formed) or else the local address it came to.
    """

    def __init__(self, bypass: Sequence[str] = (), proxyAddress: str | None = None) -> None:
        """
        @raise ValueError: see L{pacScript}.
        """
        self._bypass = bypassList(bypass)
        self.proxyAddress = proxyAddress
        if proxyAddress is not None:
            _script(proxyAddress, self._bypass)

    @property
    def bypass(self) -> list[str]:
        """
        The bypass entries, canonical (L{bypassList}); set to any entries, at start and by a
        reload: they are read then, not for each request.

        @raise ValueError: (when set) an entry is not a domain or C{*.domain}; the old
            entries stay.
        """
        return list(self._bypass)

    @bypass.setter
    def bypass(self, entries: Sequence[str]) -> None:
        self._bypass = bypassList(entries)

    def addressFor(self, request: PageRequest) -> str:
        """
        The proxy's C{host:port} as the client reached it.
        """
        if self.proxyAddress is not None:
            return self.proxyAddress
        for name, value in request.headers:
            if name.lower() == b"host":
                host = value.decode("latin-1").strip()
                if _HOST_PORT.fullmatch(host):
                    return host
                break
        return hostPort(*request.local)

    def render(self, request: PageRequest) -> PageResponse:
        """
        The script for C{GET} and C{HEAD} (the writer leaves out the body of a C{HEAD}); 405
        for any other method.
        """
        if request.method not in (b"GET", b"HEAD"):
            return PageResponse(
                405,
                [(b"Allow", b"GET, HEAD"), (b"Content-Type", b"text/plain; charset=utf-8")],
                b"the PAC file is read with GET\n",
            )
        script = _script(self.addressFor(request), self._bypass)
        return PageResponse(
            200,
            [(b"Content-Type", PAC_CONTENT_TYPE), (b"Cache-Control", b"max-age=300")],
            script.encode("ascii"),
        )


#: The former name, while the composition root still uses it.
PacResource = PacPage
