"""
The canonical form of a host: a name in lower-case IDNA A-labels, or an address in its
canonical text whatever its spelling (L{caplab.proxy.addresses}).

Block lists, C{--resolve}, the cache key and the request's target all use this form, so that
one host is always written one way.  Pure functions.
"""

from __future__ import annotations

import re
from functools import lru_cache

import idna

from caplab.proxy.addresses import canonicalAddress

_ASCII_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")


def normaliseName(name: str) -> str:
    """
    The canonical form of host name C{name}: lower-case ASCII (IDNA A-labels), without a
    trailing dot, whichever dot it was written with (UTS 46 maps C{\u3002} and C{\uff0e} to
    C{.}, so the trailing dot is taken off after the conversion too).

    @raise ValueError: C{name} is not a host name.
    """
    name = name.strip().rstrip(".")
    if name.isascii():
        name = name.lower()
    else:
        try:
            name = idna.encode(name, uts46=True).decode("ascii").rstrip(".")
        except idna.IDNAError as e:
            raise ValueError(f"{name!r} is not a valid international domain name ({e})") from None
    if len(name) > 253 or not _ASCII_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a host name")
    return name


#: The longest host whose canonical form is remembered (a name has at most 253 bytes), and
#: how many are: each request's host is read more than once (its target, the lists), and
#: most requests go to a few hosts; a client's long ones must not be kept alive.
NORMALISED_LONGEST = 256
NORMALISED_KEPT = 4096


def normaliseHost(host: str) -> str:
    """
    The canonical form of a request's host: an IP address in its canonical text (whatever
    spelling a resolver accepts: C{127.1}, C{0x7f000001} and C{[::ffff:127.0.0.1]} are all
    C{127.0.0.1}), a name as L{normaliseName} writes it.  The answers for the latest
    L{NORMALISED_KEPT} short hosts are remembered.

    @raise ValueError: C{host} is neither.
    """
    if len(host) <= NORMALISED_LONGEST:
        return _remembered(host)
    return _normaliseHost(host)


def _normaliseHost(host: str) -> str:
    address = canonicalAddress(host)
    if address is not None:
        return address
    name = normaliseName(host)
    # A name that a resolver reads as an address once normalised (C{0..} is C{0}, which is
    # 0.0.0.0) is that address: so the canonical form of a canonical form is itself.
    address = canonicalAddress(name)
    return address if address is not None else name


_remembered = lru_cache(maxsize=NORMALISED_KEPT)(_normaliseHost)
