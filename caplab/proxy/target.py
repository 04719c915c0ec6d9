"""
Where a proxied request goes: absolute-form request targets (C{http://host:port/path}) and
CONNECT's authority form (C{host:port}), with IPv6 literals and international names.

Pure functions: no I/O, no reactor.
"""

from __future__ import annotations

from caplab.proxy.hooks import ProxyError, Target
from caplab.proxy.policy import normaliseHost

#: Schemes the proxy fetches itself; any other (ftp, file ...) is a 501.
DEFAULT_PORTS = {b"http": 80, b"https": 443}

#: WebSocket schemes, for a request that asks to upgrade: its handshake is an http(s) request
#: (RFC 6455 section 3).
WEBSOCKET_SCHEMES = {b"ws": b"http", b"wss": b"https"}


class TargetError(ProxyError):
    """
    A request target the proxy cannot use, with the status to answer (400 or 501).
    """


def _bad(detail: str) -> TargetError:
    return TargetError(400, "Bad Request", detail)


_hostCache: dict[bytes, str] = {}


def parseHostPort(authority: bytes, defaultPort: int | None) -> tuple[str, int]:
    """
    Split C{authority} (C{host}, C{host:port}, C{[v6]:port}) into a canonical host
    (lower-case, IDNA A-labels, IPv6 without brackets) and a port.

    @param defaultPort: the port when none is given (None: a port is required).
    @raise TargetError: not a usable authority (400).
    """
    if b"@" in authority:
        raise _bad("user information in the request target is not allowed")
    if authority.startswith(b"["):
        end = authority.find(b"]")
        if end < 0:
            raise _bad("unterminated IPv6 literal")
        hostText, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(b":"):
            raise _bad("garbage after the IPv6 literal")
        portText = rest[1:] if rest else None
        if b":" not in hostText:
            raise _bad("bracketed host is not an IPv6 address")
    else:
        hostText, colon, portText = authority.partition(b":")
        if not colon:
            portText = None
    if portText is None or portText == b"":
        if defaultPort is None:
            raise _bad("a port is required (host:port)")
        port = defaultPort
    else:
        if not portText.isdigit() or len(portText) > 5:
            raise _bad(f"bad port {portText.decode('latin-1')!r}")
        port = int(portText)
        if not 0 < port < 65536:
            raise _bad(f"port {port} out of range")
    if not hostText:
        raise _bad("no host in the request target")
    host = _hostCache.get(hostText)
    if host is None:
        try:
            host = normaliseHost(hostText.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise _bad(f"bad host name: {e}") from None
        if len(_hostCache) > 4096:
            _hostCache.clear()
        _hostCache[hostText] = host
    return host, port


#: Targets read lately (most requests name a target that was named before), bounded in
#: count and in the length of the targets kept: at most 4096 of up to 512 bytes.
_targetCache: dict[bytes, Target] = {}
_CACHED_TARGETS = 4096
_CACHED_TARGET_LENGTH = 512


def parseTarget(uri: bytes, websocket: bool = False) -> Target:
    """
    The L{Target} of an absolute-form request target (C{http://example.com:8080/a?b}).

    @param websocket: the request asks to upgrade, so C{ws://} and C{wss://} are taken as
        C{http://} and C{https://}.
    @raise TargetError: 400 for a malformed target, 501 for a scheme other than http(s).
    """
    cacheable = not websocket and len(uri) <= _CACHED_TARGET_LENGTH
    if cacheable:
        target = _targetCache.get(uri)
        if target is not None:
            return target
    target = _parseTarget(uri, websocket)
    if cacheable:
        if len(_targetCache) >= _CACHED_TARGETS:
            _targetCache.clear()
        _targetCache[uri] = target
    return target


def _parseTarget(uri: bytes, websocket: bool) -> Target:
    scheme, sep, rest = uri.partition(b"://")
    if not sep:
        raise _bad("the request target must be an absolute URI (http://host/path)")
    scheme = scheme.lower()
    if websocket:
        scheme = WEBSOCKET_SCHEMES.get(scheme, scheme)
    defaultPort = DEFAULT_PORTS.get(scheme)
    if defaultPort is None:
        name = scheme.decode("latin-1")
        raise TargetError(501, "Not Implemented", f"the proxy does not fetch {name}:// URLs")
    end = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        index = rest.find(delimiter)
        if 0 <= index < end:
            end = index
    authority, path = rest[:end], rest[end:]
    fragment = path.find(b"#")
    if fragment >= 0:
        path = path[:fragment]
    if not path.startswith(b"/"):
        path = b"/" + path
    host, port = parseHostPort(authority, defaultPort)
    return Target(scheme.decode("ascii"), host, port, path)


def parseAuthority(authority: bytes) -> tuple[str, int]:
    """
    The host and port of a CONNECT request target (C{example.com:443}, C{[::1]:8443}).

    @raise TargetError: 400 when it is not C{host:port}.
    """
    return parseHostPort(authority, None)
