"""
Text bodies: which media types are text, which character encoding a body is in, and an
adapter that runs a transform of decoded text over a body of bytes as it streams.

The encoding is the C{charset} of C{Content-Type}; without one, a byte order mark, then for
HTML a C{<meta charset>} in the first 1024 bytes (the HTML standard's prescan, simplified),
for CSS an C{@charset} rule; else UTF-8 (JSON is always UTF-8).  Labels follow the WHATWG
Encoding standard where it differs from Python's codecs (C{iso-8859-1} and C{us-ascii} are
windows-1252).  Bytes that are not valid in the encoding survive unchanged (they are
decoded as lone surrogates and encoded back), so text a rule does not match passes byte for
byte.  Encodings in which ASCII text is not ASCII bytes (UTF-16, UTF-32) are not
transformed.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from typing import Protocol

from caplab.proxy.filters.interfaces import ITransform

#: Media types (besides C{text/*}) that the text rewriter treats as text.
TEXT_TYPES = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/json",
        "application/xhtml+xml",
        "application/xml",
    }
)

#: Media types of HTML, for the element blocker and the C{<meta>} prescan.
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})

#: WHATWG labels whose meaning differs from the Python codec of the same name.
_WHATWG = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "x-user-defined": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
}

#: Codecs in which every ASCII character is its own byte, and no multi-byte sequence
#: holds an ASCII byte: a bytes-level rule with an ASCII pattern is exact on them.
ASCII_SAFE = frozenset(
    {"utf-8", "cp1252", "latin-1", "ascii"}
    | {f"iso8859-{n}" for n in range(1, 17)}
    | {f"cp{n}" for n in range(1250, 1259)}
    | {"koi8-r", "koi8-u", "mac-roman", "cp874"}
)

_META = re.compile(rb"<meta\s[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:\-]+)", re.IGNORECASE)
_CSS_CHARSET = re.compile(rb'@charset "([A-Za-z0-9_.:\-]+)";')
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: Bytes of a body's start examined for its encoding.
PRESCAN = 1024


def isText(mediaType: str | None) -> bool:
    """
    Whether bodies of C{mediaType} are text for the rewriter: C{text/*}, JavaScript, JSON
    (and C{+json}), XHTML and XML (and C{+xml}).
    """
    if mediaType is None:
        return False
    return (
        mediaType.startswith("text/")
        or mediaType in TEXT_TYPES
        or mediaType.endswith(("+json", "+xml"))
    )


def codecName(label: str | None) -> str | None:
    """
    The Python codec of encoding label C{label}, or None if Python knows no such codec or
    it is not one a text filter can work in (ASCII must be ASCII bytes).
    """
    if not label:
        return None
    label = label.strip().lower()
    label = _WHATWG.get(label, label)
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    try:
        if "a<\n".encode(name) != b"a<\n" or b"a<\n".decode(name) != "a<\n":
            return None
    except (UnicodeError, ValueError):  # pragma: no cover - every text codec round-trips
        return None
    return name


def sniffEncoding(start: bytes, mediaType: str | None) -> str:
    """
    The encoding of a body without a C{charset} from its first bytes: a byte order mark,
    HTML's C{<meta charset>}, CSS's C{@charset}; else C{utf-8}.
    """
    for bom, name in _BOMS:
        if start.startswith(bom):
            return name
    if mediaType in HTML_TYPES:
        match = _META.search(start, 0, PRESCAN)
        if match:
            declared = codecName(match.group(1).decode("ascii"))
            if declared:
                return declared
    elif mediaType == "text/css":
        match = _CSS_CHARSET.match(start)
        if match:
            declared = codecName(match.group(1).decode("ascii"))
            if declared:
                return declared
    return "utf-8"


class ITextTransform(Protocol):
    window: int

    def feed(self, text: str) -> str: ...

    def finish(self) -> str: ...


class _Unchanged:
    window = 0

    def feed(self, text: str) -> str:
        return text

    def finish(self) -> str:
        return ""


class DecodedTransform:
    """
    An L{ITransform} of bytes that runs an L{ITextTransform} over the text decoded from
    C{encoding}: decoded incrementally (a character cut between two pieces waits for the
    rest) and encoded back in the same encoding.
    """

    def __init__(self, text: ITextTransform, encoding: str) -> None:
        if codecName(encoding) is None:
            # e.g. a UTF-16 byte order mark: a text filter cannot work on it
            text, encoding = _Unchanged(), "latin-1"
        self._text = text
        self._decoder = codecs.getincrementaldecoder(encoding)("surrogateescape")
        self._encoder = codecs.getincrementalencoder(encoding)("surrogateescape")
        # a character is at most 4 bytes in these encodings
        self.window = 4 * text.window + 4

    def feed(self, data: bytes) -> bytes:
        text = self._text.feed(self._decoder.decode(data))
        return self._encoder.encode(text) if text else b""

    def finish(self) -> bytes:
        text = self._decoder.decode(b"", True)
        text = self._text.feed(text) + self._text.finish() if text else self._text.finish()
        return self._encoder.encode(text, True)


class SniffedTransform:
    """
    An L{ITransform} for a body whose encoding C{Content-Type} does not say: the first
    L{PRESCAN} bytes are held until they are all in, L{sniffEncoding} names the encoding,
    and C{build} makes the transform for it.
    """

    def __init__(
        self, build: Callable[[str], ITransform], mediaType: str | None, window: int
    ) -> None:
        """
        @param window: the window of the transforms C{build} makes.
        """
        self._build = build
        self._mediaType = mediaType
        self._pending: bytes | None = b""
        self._inner: ITransform | None = None
        self.window = window + PRESCAN

    def feed(self, data: bytes) -> bytes:
        pending = self._pending
        if pending is None:
            assert self._inner is not None
            return self._inner.feed(data)
        data = pending + data
        if len(data) < PRESCAN:
            self._pending = data
            return b""
        self._pending = None
        self._inner = self._build(sniffEncoding(data, self._mediaType))
        return self._inner.feed(data)

    def finish(self) -> bytes:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._inner = self._build(sniffEncoding(pending, self._mediaType))
            return self._inner.feed(pending) + self._inner.finish()
        assert self._inner is not None
        return self._inner.finish()
