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

#: The text encodings of the WHATWG Encoding Standard (https://encoding.spec.whatwg.org/,
#: "Encodings" table), each with its labels and the Python codec that reads it.  Only these
#: labels name an encoding: a Python codec name that is not one (C{rot13}, C{base64},
#: C{uu_codec}, C{idna} ...) would decode a body into something else, and is unknown here.
#: Left out: UTF-16BE/LE (ASCII is not ASCII bytes), C{replacement} and C{x-user-defined}
#: (no text to transform); their bodies pass untransformed.
_ENCODINGS: tuple[tuple[str, str], ...] = (
    ("utf-8", "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8"),
    ("cp866", "866 cp866 csibm866 ibm866"),
    (
        "iso8859-2",
        "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 latin2",
    ),
    (
        "iso8859-3",
        "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 latin3",
    ),
    (
        "iso8859-4",
        "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 latin4",
    ),
    (
        "iso8859-5",
        "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 "
        "iso_8859-5:1988",
    ),
    (
        "iso8859-6",
        "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 "
        "iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987",
    ),
    (
        "iso8859-7",
        "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 "
        "iso88597 iso_8859-7 iso_8859-7:1987 sun_eu_greek",
    ),
    (
        "iso8859-8",
        "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 "
        "iso88598 iso_8859-8 iso_8859-8:1988 visual csiso88598i iso-8859-8-i logical",
    ),
    ("iso8859-10", "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6"),
    ("iso8859-13", "iso-8859-13 iso8859-13 iso885913"),
    ("iso8859-14", "iso-8859-14 iso8859-14 iso885914"),
    ("iso8859-15", "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9"),
    ("iso8859-16", "iso-8859-16"),
    ("koi8-r", "cskoi8r koi koi8 koi8-r koi8_r"),
    ("koi8-u", "koi8-ru koi8-u"),
    ("mac-roman", "csmacintosh mac macintosh x-mac-roman"),
    ("cp874", "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874"),
    ("cp1250", "cp1250 windows-1250 x-cp1250"),
    ("cp1251", "cp1251 windows-1251 x-cp1251"),
    (
        "cp1252",
        "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 "
        "iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252",
    ),
    ("cp1253", "cp1253 windows-1253 x-cp1253"),
    (
        "cp1254",
        "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 "
        "iso_8859-9:1989 l5 latin5 windows-1254 x-cp1254",
    ),
    ("cp1255", "cp1255 windows-1255 x-cp1255"),
    ("cp1256", "cp1256 windows-1256 x-cp1256"),
    ("cp1257", "cp1257 windows-1257 x-cp1257"),
    ("cp1258", "cp1258 windows-1258 x-cp1258"),
    ("mac-cyrillic", "x-mac-cyrillic x-mac-ukrainian"),
    # GBK is decoded as gb18030, its superset, as the standard's decoder does
    (
        "gb18030",
        "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk gb18030",
    ),
    ("big5hkscs", "big5 big5-hkscs cn-big5 csbig5 x-x-big5"),
    ("euc_jp", "cseucpkdfmtjapanese euc-jp x-euc-jp"),
    ("iso2022_jp", "csiso2022jp iso-2022-jp"),
    ("cp932", "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis"),
    (
        "cp949",
        "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 "
        "ksc5601 ksc_5601 windows-949",
    ),
)

#: Each WHATWG label's Python codec (by its canonical name, C{codecs.lookup(...).name}).
LABELS: dict[str, str] = {
    label: codecs.lookup(codec).name for codec, labels in _ENCODINGS for label in labels.split()
}

#: The Python codecs a text filter works in: those of L{LABELS}.
TEXT_CODECS = frozenset(LABELS.values())

#: The codecs of L{TEXT_CODECS} in which a byte that looks like markup (C{<}, C{>}, quotes,
#: C{=}, space) is always that character, so markup can be read from the bytes: all but
#: ISO-2022-JP, whose two-byte characters are pairs of bytes from C{!} to C{~}.
MARKUP_CODECS = TEXT_CODECS - {"iso2022_jp"}

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
    The Python codec of the WHATWG encoding label C{label} (L{LABELS}: what browsers
    accept in a C{charset}), or None if it names none a text filter can work in.
    """
    if not label:
        return None
    return LABELS.get(label.strip("\t\n\f\r ").lower())


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
        if encoding not in TEXT_CODECS:
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
