"""
RFC 9110 header rules for a forwarding proxy: hop-by-hop fields (section 7.6.1), C{Via}
(7.6.3), C{Max-Forwards} (7.6.2) and the optional C{X-Forwarded-For}.

Pure functions over header lists (L{caplab.proxy.hooks.Headers}): no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from caplab.proxy.hooks import Headers

#: Fields that describe one connection, never forwarded (lower-case).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-authentication-info",  # for the next client only (RFC 9110 section 11.7.4)
    }
)

#: Request fields the proxy writes itself: framing comes from the body it sends, the
#: 100-continue exchange is answered by the proxy.
_REQUEST_OWN = HOP_BY_HOP | {b"content-length", b"expect", b"host"}


def _connectionTokens(fields: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in fields:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    tokens.discard(b"")
    return frozenset(tokens)


def _named(
    fields: Iterable[tuple[bytes, bytes]], connection: Iterable[bytes] | None
) -> tuple[Iterable[tuple[bytes, bytes]], frozenset[bytes]]:
    """
    C{fields} (read into a list if they must be searched) and the fields their C{Connection}
    names: C{connection} if the caller has it at hand, else found in C{fields}.
    """
    if connection is not None:
        return fields, frozenset(connection)
    fields = list(fields)
    return fields, _connectionTokens(fields)


#: The lengths of the hop-by-hop field names: a field of another length is none of them.
_HOP_LENGTHS = frozenset(len(name) for name in HOP_BY_HOP)

#: The request fields L{upstreamRequestHeaders} drops or rewrites (besides those the
#: request's C{Connection} names): every other field goes upstream as the client sent it.
CHANGED_UPSTREAM = _REQUEST_OWN | {b"via", b"x-forwarded-for"}

#: The lengths of the request fields L{upstreamRequestHeaders} drops or rewrites.
_REQUEST_LENGTHS = frozenset(len(name) for name in CHANGED_UPSTREAM)


def endToEnd(
    fields: Iterable[tuple[bytes, bytes]], connection: Iterable[bytes] | None = None
) -> Headers:
    """
    The fields of C{fields} that are end-to-end: without the hop-by-hop ones and without any
    field that a C{Connection} field names. Order and repeated fields are kept.

    @param connection: the C{Connection} options (lower-case), if the caller has them at
        hand (else C{fields} are searched for them).
    """
    fields, named = _named(fields, connection)
    drop, lengths = HOP_BY_HOP, _HOP_LENGTHS
    if named and not named <= HOP_BY_HOP:  # Connection: keep-alive names nothing new
        drop = drop | named
        lengths = lengths | {len(name) for name in named}
    # Only the names of a dropped field's length are lowered to be compared.
    return [
        (name, value)
        for name, value in fields
        if len(name) not in lengths or name.lower() not in drop
    ]


def upstreamRequestHeaders(
    fields: Iterable[tuple[bytes, bytes]],
    host: bytes,
    via: bytes,
    forwardedFor: bytes | None = None,
    connection: Iterable[bytes] | None = None,
) -> Headers:
    """
    The header list to send upstream for a client's request header C{fields}: end-to-end
    fields only, C{Host} set to the target's authority, C{Via} extended with C{via}, and
    C{X-Forwarded-For} extended with C{forwardedFor} if that is given.

    C{Content-Length}, C{Transfer-Encoding} and C{Expect} are left out: the forwarder frames
    the body it sends itself.

    @param connection: the C{Connection} options (lower-case), if the caller has them at
        hand (else C{fields} are searched for them).
    """
    fields, named = _named(fields, connection)
    if named:
        drop = _REQUEST_OWN | named
        lengths = _REQUEST_LENGTHS | {len(name) for name in named}
    else:
        drop, lengths = _REQUEST_OWN, _REQUEST_LENGTHS
    out: Headers = [(b"Host", host)]
    vias: list[bytes] = []
    xff: list[bytes] = []
    for name, value in fields:
        if len(name) not in lengths:
            out.append((name, value))
            continue
        lower = name.lower()
        if lower in drop:
            continue
        if lower == b"via":
            vias.append(value)
        elif lower == b"x-forwarded-for" and forwardedFor is not None:
            xff.append(value)
        else:
            out.append((name, value))
    vias.append(via)
    out.append((b"Via", b", ".join(vias)))
    if forwardedFor is not None:
        xff.append(forwardedFor)
        out.append((b"X-Forwarded-For", b", ".join(xff)))
    return out


@lru_cache(maxsize=64)
def viaValue(version: bytes, pseudonym: bytes) -> bytes:
    """
    This proxy's C{Via} entry for a message received with HTTP C{version} (C{b"HTTP/1.1"}):
    remembered, as a process has one pseudonym and requests two versions.
    """
    return version.rpartition(b"/")[2] + b" " + pseudonym


#: The largest C{Max-Forwards} read: a longer number counts as this many hops (int() of
#: thousands of digits would raise, and no path is that long anyway).
MAX_FORWARDS_CAP = 2**31 - 1


def maxForwards(fields: Iterable[tuple[bytes, bytes]]) -> int | None:
    """
    The C{Max-Forwards} value of a request (None: absent or not a number), at most
    L{MAX_FORWARDS_CAP}.
    """
    for name, value in fields:
        if name.lower() == b"max-forwards":
            value = value.strip()
            if not value.isdigit():
                return None
            value = value.lstrip(b"0") or b"0"
            return min(int(value), MAX_FORWARDS_CAP) if len(value) <= 10 else MAX_FORWARDS_CAP
    return None


def withMaxForwards(fields: Headers, remaining: int) -> Headers:
    """
    C{fields} with C{Max-Forwards} set to C{remaining}.
    """
    out = [(n, v) for n, v in fields if n.lower() != b"max-forwards"]
    out.append((b"Max-Forwards", b"%d" % (remaining,)))
    return out


def loops(via: Iterable[bytes], pseudonym: bytes) -> bool:
    """
    Whether a request already passed through this proxy (its C{Via} values name
    C{pseudonym}).
    """
    for value in via:
        if pseudonym in value:
            for entry in value.split(b","):
                parts = entry.split()
                if len(parts) >= 2 and parts[1] == pseudonym:
                    return True
    return False
