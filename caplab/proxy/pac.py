"""
A proxy auto-config (PAC) file pointing browsers at this proxy.

Browsers fetch it from C{http://PROXY/proxy.pac} (set it as the "automatic proxy configuration
URL") and call its C{FindProxyForURL(url, host)} for each request: hosts in the
C{--pac-bypass} list, and their subdomains, go C{DIRECT}; everything else goes through the
proxy.  The script is plain ECMAScript 3 without the PAC helper functions, so any PAC engine
runs it, and every value in it is a checked host name or address, so nothing can be injected.
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


def pacScript(proxyAddress: str, bypass: Sequence[str] = ()) -> str:
    """
    The PAC file text sending everything but C{bypass} through the proxy at C{proxyAddress}.

    @param proxyAddress: C{host:port} of this proxy as the browser reaches it
        (C{127.0.0.1:8080}, C{[::1]:8080}, C{proxy.lab.example:8080}).
    @param bypass: domains to reach directly, each with its subdomains.
    @raise ValueError: C{proxyAddress} is not C{host:port}, or a bypass entry is not a domain.
    """
    if not _HOST_PORT.fullmatch(proxyAddress):
        raise ValueError(f"{proxyAddress!r} is not host:port")
    domains = sorted({normaliseName(domain) for domain in bypass})
    return _TEMPLATE.format(
        bypass=json.dumps(domains),
        proxy=json.dumps(f"PROXY {proxyAddress}"),
    )


_TEMPLATE = """\
// Proxy auto-config for caplab: hosts below (and their subdomains) go DIRECT, all others
// through the proxy.
var BYPASS = {bypass};

function FindProxyForURL(url, host) {{
  host = String(host).toLowerCase();
  if (host.charAt(host.length - 1) === ".") {{
    host = host.substring(0, host.length - 1);
  }}
  for (var i = 0; i < BYPASS.length; i++) {{
    var domain = BYPASS[i];
    if (host === domain) {{
      return "DIRECT";
    }}
    var suffix = "." + domain;
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
        self.bypass = sorted({normaliseName(domain) for domain in bypass})
        self.proxyAddress = proxyAddress
        if proxyAddress is not None:
            pacScript(proxyAddress, self.bypass)

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
        script = pacScript(self.addressFor(request), self.bypass)
        return PageResponse(
            200,
            [(b"Content-Type", PAC_CONTENT_TYPE), (b"Cache-Control", b"max-age=300")],
            script.encode("ascii"),
        )


#: The former name, while the composition root still uses it.
PacResource = PacPage
