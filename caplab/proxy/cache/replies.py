"""
Responses made from stored entries: the whole stored response, its head alone (HEAD), a 304
or a 412 for the client's own preconditions, a 206 for one byte range (of a complete stored
response or of a stored part), a 416 for a range past the end.

Everything a hit sends is ready in the entry (its fields, its C{Content-Length} line, its
rules): a hit only adds C{Age} and, for a range, C{Content-Range}.
"""

from __future__ import annotations

from caplab.proxy.cache import ranges, rules
from caplab.proxy.cache.entries import StoredEntry
from caplab.proxy.cache.rules import Precondition
from caplab.proxy.cache.sinks import SliceSink, noBody
from caplab.proxy.cache.storage import IBodySource
from caplab.proxy.hooks import Headers, IBodySink, UpstreamRequest, UpstreamResponse

#: Request fields a cache must look at: what L{scan} looks for (the preconditions are
#: L{rules.CONDITIONAL_FIELDS}).
RANGE, CONDITIONS, DIRECTIVES = 1, 2, 4
_FLAGS = {
    b"range": RANGE,
    b"cache-control": DIRECTIVES,
    b"pragma": DIRECTIVES,
    **dict.fromkeys(rules.CONDITIONAL_FIELDS, CONDITIONS),
}


def scan(headers: Headers, flags: dict[bytes, int] = _FLAGS) -> int:
    """
    Which of L{RANGE}, L{CONDITIONS} and L{DIRECTIVES} a request has (one pass: most have
    none).
    """
    found = 0
    get = flags.get
    for name, _ in headers:
        found |= get(name.lower(), 0)
    return found


def fromStore(
    store: IBodySource,
    entry: StoredEntry,
    method: bytes,
    headers: Headers,
    now: float,
    status: str,
    flags: int,
) -> UpstreamResponse | None:
    """
    The response C{entry} gives a request with C{method} and C{headers} (None if its body is
    gone or damaged): the client's preconditions first (304, 412; for a 2xx only), then a
    range of a GET (206, 416; C{If-Range} with a strong validator only, else the whole
    response), the head alone for HEAD.

    @param flags: L{scan} of the request's fields (C{headers} are read only for those).
    """
    entryRules = entry.rules
    assert entryRules is not None
    head = entry.head
    age = (b"Age", b"%d" % int(entryRules.freshness.currentAge(now)))
    if flags & CONDITIONS and 200 <= head.code < 300:
        # only a 2xx is about a selected representation: preconditions are ignored for the
        # others (a stored 404, a redirect: RFC 9110 section 13.2.1)
        outcome = rules.preconditions(headers, entryRules)
        if outcome is Precondition.NOT_MODIFIED:
            store.touch(entry)
            if entry.notModified is None:
                entry.notModified = rules.notModifiedHeaders(head.headers)
            return UpstreamResponse(304, b"Not Modified", [*entry.notModified, age], noBody, status)
        if outcome is Precondition.FAILED:
            store.touch(entry)
            return UpstreamResponse(
                412, b"Precondition Failed", [(b"Content-Length", b"0")], noBody, status
            )
    if method == b"HEAD":
        if not entry.live:
            return None
        store.touch(entry)
        return UpstreamResponse(
            head.code, head.phrase, [*head.headers, entry.lengthField, age], noBody, status
        )
    if flags & RANGE and head.code == 200:
        wanted = wantedRange(headers, entry, entry.bodyLength)
        if wanted is not None:
            return _range(store, entry, wanted, 0, entry.bodyLength, age, status)
    body = store.openBody(entry)
    if body is None:
        return None
    store.touch(entry)
    return UpstreamResponse(
        head.code, head.phrase, [*head.headers, entry.lengthField, age], body.deliver, status
    )


def wantedRange(
    headers: Headers, entry: StoredEntry, length: int
) -> tuple[int, int] | ranges.Unsatisfiable | None:
    """
    The range a request wants of C{entry}'s representation (C{length} bytes), or None for
    the whole: no C{Range}, or an C{If-Range} that does not match.
    """
    value = rules.firstHeader(headers, b"range")
    if value is None:
        return None
    ifRange = rules.firstHeader(headers, b"if-range")
    entryRules = entry.rules
    assert entryRules is not None
    if ifRange is not None and not ranges.ifRangeAllows(
        ifRange, entryRules.etag, entryRules.lastModified, entryRules.date
    ):
        return None
    return ranges.parseRange(value, length)


def fromPart(
    store: IBodySource, part: StoredEntry, request: UpstreamRequest, now: float, status: str
) -> UpstreamResponse | None:
    """
    A 206 (or 416) for a range that falls inside a stored part, or None if it does not.
    """
    assert part.head.partial is not None
    first, stop, complete = part.head.partial
    wanted = wantedRange(request.headers, part, complete)
    if wanted is None:
        return None
    if isinstance(wanted, tuple) and not (first <= wanted[0] and wanted[1] <= stop):
        return None
    entryRules = part.rules
    assert entryRules is not None
    age = (b"Age", b"%d" % int(entryRules.freshness.currentAge(now)))
    return _range(store, part, wanted, first, complete, age, status)


def _range(
    store: IBodySource,
    entry: StoredEntry,
    wanted: tuple[int, int] | ranges.Unsatisfiable,
    offset: int,
    complete: int,
    age: tuple[bytes, bytes],
    status: str,
) -> UpstreamResponse | None:
    """
    A 206 with bytes C{wanted} of the representation, cut from C{entry}'s body (which holds
    the representation from C{offset} on); a 416 if unsatisfiable.
    """
    head = entry.head
    if isinstance(wanted, ranges.Unsatisfiable):
        store.touch(entry)
        return UpstreamResponse(
            416,
            b"Range Not Satisfiable",
            [(b"Content-Range", b"bytes */%d" % wanted.length), (b"Content-Length", b"0")],
            noBody,
            status + "; detail=range",
        )
    body = store.openBody(entry)
    if body is None:
        return None
    store.touch(entry)
    start, stop = wanted
    headers = [
        *head.headers,
        (b"Content-Range", b"bytes %d-%d/%d" % (start, stop - 1, complete)),
        (b"Content-Length", b"%d" % (stop - start)),
        age,
    ]

    def deliver(sink: IBodySink) -> None:
        body.deliver(SliceSink(sink, start - offset, stop - offset))

    return UpstreamResponse(206, b"Partial Content", headers, deliver, status + "; detail=range")
