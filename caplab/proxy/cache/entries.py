"""
What the cache keeps of one response: its head (L{EntryHead}), the index's entry
(L{StoredEntry}), the checked record format heads are kept in (disk, Redis), and what an
entry really costs in memory.

Entries are many and small (a 100-byte object with its header fields is the common case),
so they are compact: classes with C{__slots__} (no per-entry C{dict}), a small body held as
one C{bytes} object, and header lines that many entries share (C{Server: nginx},
C{Content-Type: text/html}, C{Cache-Control: max-age=600} ...) held once (L{Interner}).
L{entryCost} counts what an entry costs against C{--cache-size}: its bytes I{and} the Python
objects around them, measured with C{sys.getsizeof}, so that the bound is a bound on memory.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from caplab.proxy.cache.bodies import CorruptEntry
from caplab.proxy.cache.rules import RECOMPUTED, EntryRules, ageValue
from caplab.proxy.hooks import Headers

#: The longest header record read (disk, Redis): far above what any response head makes
#: (the origin's head is bounded by the response reader), far below what a damaged or forged
#: length could ask for.
MAX_RECORD = 1 << 20

#: Characters never allowed in a stored field name or value (a damaged or forged record).
_CONTROL = frozenset(b"\r\n\x00")


@dataclass(slots=True)
class EntryHead:
    """
    A stored response apart from its body: which request it answers and its head.

    @ivar uri: the primary cache key (absolute URI).
    @ivar varyNames: the request fields the response varies on (lower-case).
    @ivar variant: the request's normalized values of those fields (the secondary key).
    @ivar headers: the stored fields as they are sent on a hit, without C{Age} and the
        framing fields (C{Content-Length} is added from the stored body's length).
    @ivar age: the origin's C{Age} when the response arrived (RFC 9111 section 4.2.3).
    @ivar partial: for a stored part of a response (a 206): C{(first, stop, complete)}:
        the byte positions it holds (stop exclusive) and the complete length.
    """

    uri: str
    varyNames: tuple[bytes, ...]
    variant: tuple[bytes | None, ...]
    code: int
    phrase: bytes
    headers: Headers
    requestTime: float
    responseTime: float
    age: float = 0.0
    partial: tuple[int, int, int] | None = None

    @property
    def key(self) -> str:
        """
        The entry's key: URI, secondary key and, for a part, its range.
        """
        key = self.uri
        if self.varyNames:
            parts = [
                f"{n.decode('latin-1')}={'' if v is None else v.decode('latin-1')!r}"
                for n, v in zip(self.varyNames, self.variant, strict=True)
            ]
            key += "\n" + "\n".join(parts)
        if self.partial is not None:
            first, stop, complete = self.partial
            key += f"\nbytes={first}-{stop}/{complete}"
        return key

    def rules(self) -> EntryRules:
        """
        The rules of this stored response (computed, not kept: see L{StoredEntry.rules}).
        """
        return EntryRules.compute(
            self.code, self.headers, self.requestTime, self.responseTime, self.age
        )

    def toJSON(self, bodyLength: int) -> bytes:
        def text(b: bytes | None) -> str | None:
            return None if b is None else b.decode("latin-1")

        return json.dumps(
            {
                "uri": self.uri,
                "varyNames": [text(n) for n in self.varyNames],
                "variant": [text(v) for v in self.variant],
                "code": self.code,
                "phrase": text(self.phrase),
                "headers": [[text(n), text(v)] for n, v in self.headers],
                "requestTime": self.requestTime,
                "responseTime": self.responseTime,
                "age": self.age,
                "partial": None if self.partial is None else list(self.partial),
                "bodyLength": bodyLength,
            }
        ).encode("utf-8")

    @classmethod
    def fromJSON(cls, data: bytes) -> tuple[EntryHead, int]:
        """
        The head and body length of a record; L{CorruptEntry} saying which field is wrong
        if it is not exactly what L{toJSON} writes (every field is checked by type before
        it is used: a record can be damaged or forged even when its checksum holds).
        """
        try:
            record = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise CorruptEntry(f"record is not JSON: {e}") from None
        if not isinstance(record, dict):
            raise CorruptEntry("record is not an object")
        bodyLength = _integer(record, "bodyLength", 0, 1 << 62)
        varyNames = tuple(_raw(n, "varyNames") for n in _list(record, "varyNames"))
        variant = tuple(None if v is None else _raw(v, "variant") for v in _list(record, "variant"))
        if len(variant) != len(varyNames):
            raise CorruptEntry("field 'variant' does not match 'varyNames'")
        headers: Headers = []
        for line in _list(record, "headers"):
            if not isinstance(line, list) or len(line) != 2:
                raise CorruptEntry("field 'headers' has a line that is not a [name, value] pair")
            name, value = _raw(line[0], "headers"), _raw(line[1], "headers")
            if not name or _CONTROL.intersection(name) or _CONTROL.intersection(value):
                raise CorruptEntry("field 'headers' has a bad name or a control character")
            headers.append((name, value))
        lowered = {name.lower() for name, _ in headers}
        age = _number(record, "age", 0.0) if "age" in record else 0.0
        if b"age" in lowered or b"content-length" in lowered or b"transfer-encoding" in lowered:
            # a record of an older caplab: Age and framing were stored with the fields
            age = max(age, ageValue(headers))
            headers = [(n, v) for n, v in headers if n.lower() not in RECOMPUTED]
        partial = record.get("partial")
        if partial is not None:
            if (
                not isinstance(partial, list)
                or len(partial) != 3
                or not all(type(p) is int for p in partial)
                or not 0 <= partial[0] < partial[1] <= partial[2]
                or partial[1] - partial[0] != bodyLength
            ):
                raise CorruptEntry("field 'partial' is not a byte range of the body")
        head = cls(
            uri=_string(record, "uri"),
            varyNames=varyNames,
            variant=variant,
            code=_integer(record, "code", 100, 999),
            phrase=_raw(_string(record, "phrase", empty=True), "phrase"),
            headers=headers,
            requestTime=_number(record, "requestTime"),
            responseTime=_number(record, "responseTime"),
            age=age,
            partial=None if partial is None else (partial[0], partial[1], partial[2]),
        )
        return head, bodyLength


def _field(record: dict[str, Any], name: str) -> Any:
    if name not in record:
        raise CorruptEntry(f"field {name!r} is missing")
    return record[name]


def _string(record: dict[str, Any], name: str, empty: bool = False) -> str:
    value = _field(record, name)
    if not isinstance(value, str) or (not value and not empty):
        raise CorruptEntry(f"field {name!r} is {type(value).__name__}, not a string")
    return value


def _raw(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise CorruptEntry(f"field {name!r} holds {type(value).__name__}, not a string")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise CorruptEntry(f"field {name!r} holds characters beyond latin-1") from None


def _list(record: dict[str, Any], name: str) -> list[Any]:
    value = _field(record, name)
    if not isinstance(value, list):
        raise CorruptEntry(f"field {name!r} is {type(value).__name__}, not a list")
    return value


def _integer(record: dict[str, Any], name: str, low: int, high: int) -> int:
    value = _field(record, name)
    if type(value) is not int or not low <= value <= high:
        raise CorruptEntry(f"field {name!r} is {value!r}, not an integer in {low}..{high}")
    return value


def _number(record: dict[str, Any], name: str, low: float = -math.inf) -> float:
    value = _field(record, name)
    if type(value) not in (int, float) or not math.isfinite(value) or value < low:
        raise CorruptEntry(f"field {name!r} is {value!r}, not a number")
    return float(value)


@dataclass(slots=True, eq=False)
class StoredEntry:
    """
    One stored response as the index knows it.

    @ivar size: the bytes it counts against the store's bound (L{entryCost}).
    @ivar body: the body, ready to send: one C{bytes} object, or a tuple of blocks of up to
        L{caplab.proxy.cache.bodies.BLOCK} bytes (memory store only).
    @ivar rules: the rules of the stored response, computed when it is stored or refreshed.
    @ivar lengthField: its C{Content-Length} line, ready to send.
    @ivar notModified: the fields of a 304 made from it (computed when first needed).
    """

    head: EntryHead
    bodyLength: int
    size: int = 0
    body: bytes | tuple[bytes, ...] = b""
    rules: EntryRules | None = None
    lengthField: tuple[bytes, bytes] = (b"Content-Length", b"0")
    notModified: Headers | None = None
    #: False once removed, evicted or replaced.
    live: bool = True
    #: Neighbours in the store's least-recently-used list.
    newer: StoredEntry | None = None
    older: StoredEntry | None = None

    def refreshed(self) -> None:
        """
        Recompute what depends on the head (after it is stored or replaced).
        """
        self.rules = self.head.rules()
        self.lengthField = (b"Content-Length", b"%d" % self.bodyLength)
        self.notModified = None

    @property
    def chunks(self) -> tuple[bytes, ...]:
        """
        The body as a sequence of pieces.
        """
        body = self.body
        if isinstance(body, bytes):
            return (body,) if body else ()
        return body


@dataclass(slots=True, eq=False)
class DiskEntry(StoredEntry):
    """
    A stored response whose body is in a file.

    @ivar path: its file.
    @ivar fileSize: the size of its file, checked when it is opened.
    @ivar persisted: the response time of the head its file holds.
    @ivar rewriting: whether its file is being rewritten.
    """

    path: str = ""
    fileSize: int = 0
    persisted: float = 0.0
    rewriting: bool = False


class Interner:
    """
    Shares equal header lines (and names, phrases, Vary name tuples) between entries.

    Most lines of stored responses repeat across entries (C{Server}, C{Content-Type},
    C{Cache-Control}, C{Accept-Ranges}, often C{Date}); holding each once is the largest
    saving on small objects.  Bounded: when a table is full it is cleared (entries keep
    what they hold; later entries share anew), so unique values cannot grow it.
    """

    def __init__(self, limit: int = 4096, longest: int = 128) -> None:
        self.limit = limit
        self.longest = longest
        self._pairs: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
        self._values: dict[Any, Any] = {}

    def line(self, pair: tuple[bytes, bytes]) -> tuple[tuple[bytes, bytes], bool]:
        """
        The shared copy of a header line, and whether another entry already held it.
        """
        if len(pair[1]) > self.longest:
            name = self.value(pair[0])
            return (pair if name is pair[0] else (name, pair[1])), False
        shared = self._pairs.get(pair)
        if shared is not None:
            return shared, True
        if len(self._pairs) >= self.limit:
            self._pairs.clear()
        pair = (self.value(pair[0]), pair[1])
        self._pairs[pair] = pair
        return pair, False

    def value(self, value: Any) -> Any:
        """
        The shared copy of a small immutable value (a name, a phrase, a tuple of names).
        """
        shared = self._values.get(value)
        if shared is not None:
            return shared
        if len(self._values) >= self.limit:
            self._values.clear()
        self._values[value] = value
        return value


#: The one interner of the process (entries of every store share lines).
INTERNER = Interner()

_POINTER = 8


def _fixedCost() -> int:
    """
    What every entry costs besides its variable parts: the entry, head and rules objects,
    their floats, the C{Content-Length} line, and its slots in the index's dict.
    """
    head = EntryHead("", (), (), 200, b"OK", [], 1.5, 2.5)
    entry = DiskEntry(head, 0)
    entry.refreshed()
    rules = entry.rules
    assert rules is not None
    floats = 4 * sys.getsizeof(1.5)  # request and response time, lifetime, initial age
    line = sys.getsizeof(entry.lengthField) + sys.getsizeof(b"12345")
    dictSlot = 3 * _POINTER * 3 // 2 + _POINTER  # key, value, hash; a third free; index
    size = sys.getsizeof(1 << 40)
    return (
        sys.getsizeof(StoredEntry(head, 0))
        + sys.getsizeof(head)
        + sys.getsizeof(rules)
        + sys.getsizeof(rules.freshness)
        + floats
        + line
        + dictSlot
        + size
    )


#: See L{_fixedCost}.
FIXED_COST = _fixedCost()


def compactHead(head: EntryHead) -> int:
    """
    Make C{head} share what other entries hold (L{INTERNER}); the bytes it costs.
    """
    cost = 0
    headers: Headers = []
    for pair in head.headers:
        shared, held = INTERNER.line(pair)
        headers.append(shared)
        if not held:
            cost += sys.getsizeof(shared) + sys.getsizeof(shared[1])
    head.headers = headers
    cost += sys.getsizeof(headers)
    head.phrase = INTERNER.value(head.phrase)
    if head.varyNames:
        head.varyNames = INTERNER.value(head.varyNames)
        cost += sys.getsizeof(head.variant) + sum(
            sys.getsizeof(v) for v in head.variant if v is not None
        )
    return cost + sys.getsizeof(head.uri)


def bodyCost(body: bytes | tuple[bytes, ...]) -> int:
    if isinstance(body, bytes):
        return sys.getsizeof(body)
    return sys.getsizeof(body) + sum(sys.getsizeof(chunk) for chunk in body)
