"""
The filter plugin interface: what a request filter, a response filter and a body transform
are.  Built-in filters and third-party plugins implement the same small protocols, so the
chain (L{caplab.proxy.filters.chain}) treats them alike.

A request filter changes a request before the cache key is computed (its URL or fields); a
response filter may change a response's header fields (L{IResponseFilter.filterHead}) and may
transform its body as it streams (L{IResponseFilter.transformBody} returns an L{ITransform}).
A transform sees the body already decoded from its C{Content-Encoding}, as bytes, piece by
piece, and must keep its memory bounded: it may hold back at most L{ITransform.window} bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from caplab.proxy.hooks import Headers, UpstreamRequest

#: The default C{--filter-window}: the longest match a rewrite is sure to find (in
#: characters) and the longest tag the element blocker waits for (in bytes).
DEFAULT_WINDOW = 65536

#: The smallest and largest C{--filter-window}.
WINDOW_RANGE = (256, 262144)

#: The most bytes a transform may declare it holds back (L{ITransform.window}); the chain
#: does not use one that declares more.  A rewrite at the largest window holds that many
#: characters, up to 4 bytes each, plus a few and the bytes a body's encoding is sniffed
#: from: this is twice that, so every built-in filter fits at every window.
MAX_WINDOW = 2 * 4 * WINDOW_RANGE[1]

#: A transform that searches again what it holds back when a piece comes lets small pieces
#: wait until they add up to 1/GATHER of what it holds: so a body that comes a byte at a
#: time costs each byte GATHER searches at most, not one of the whole window ...
GATHER = 8
#: ... unless it holds at most this many characters, which cost less to search than a
#: piece costs to get here.
GATHER_FLOOR = 512


class ITransform(Protocol):
    """
    A streaming body transformation: bytes in, bytes out, for one response.

    @ivar window: the most bytes the transform holds back between calls (the context it
        needs, e.g. to find a match that crosses two pieces); the chain refuses a filter
        whose transforms declare more than its limit (L{MAX_WINDOW}).  A transform without
        one holds nothing back (0).
    """

    window: int

    def feed(self, data: bytes) -> bytes:
        """
        Take the next piece of the body; return what can be passed on now (maybe nothing).
        """

    def finish(self) -> bytes:
        """
        The body ended: return what was held back, transformed.
        """


@dataclass
class ResponseHead:
    """
    What a response filter sees of a response.

    @ivar headers: the response's fields, a list of its own that filters may edit (never
        the framing: C{Content-Length} and C{Content-Encoding} are the chain's).
    @ivar mediaType: the lower-case media type of C{Content-Type} (C{"text/html"}), None
        when there is none or several.
    @ivar charset: the lower-case C{charset} parameter of C{Content-Type}, None if absent.
    """

    code: int
    phrase: bytes
    headers: Headers
    mediaType: str | None
    charset: str | None


class IRequestFilter(Protocol):
    """
    Changes requests: runs before the cache key is computed, so a changed URL is the one
    looked up and forwarded.
    """

    #: The filter's name, for logs and configuration.
    name: str

    def filterRequest(self, request: UpstreamRequest, client: str) -> UpstreamRequest:
        """
        The request to send instead of C{request} (from client address C{client}), or
        C{request} itself.  Never change C{request} in place: return a changed copy
        (C{dataclasses.replace}).  The body may not change.
        """


class IResponseFilter(Protocol):
    """
    Changes responses, per client, after the cache (hits and misses alike).
    """

    #: The filter's name, for logs and configuration.
    name: str

    def filterHead(self, request: UpstreamRequest, head: ResponseHead) -> None:
        """
        Edit C{head.headers} in place if the filter changes header fields (every response
        passes here, bodiless ones and C{no-transform} ones too).
        """

    def transformBody(self, request: UpstreamRequest, head: ResponseHead) -> ITransform | None:
        """
        A transform of this response's body, or None to leave it alone (the usual answer:
        decide from C{head.mediaType}).  Only asked for bodies that may be transformed.
        """


class ResponseFilter:
    """
    A base for response filters that do only one of the two things: both do nothing.
    """

    name = "response-filter"

    def filterHead(self, request: UpstreamRequest, head: ResponseHead) -> None:
        pass

    def transformBody(self, request: UpstreamRequest, head: ResponseHead) -> ITransform | None:
        return None
