"""
Property tests of the uppercase transforms in L{caplab.upper}: the output equals the
specification for any bytes and any chunking.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from caplab.upper import (
    ASCIIStream,
    UnicodeStream,
    streamTransform,
    upperASCII,
    upperDatagram,
    upperUnicode,
)

#: Bytes that are mostly text, with UTF-8 multibyte characters and invalid bytes mixed in.
textBytes = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda s: s.encode("utf-8")),
    st.lists(
        st.one_of(
            st.text(max_size=8).map(lambda s: s.encode("utf-8")),
            st.binary(max_size=3),
        ),
        max_size=20,
    ).map(b"".join),
)


#: No per-example deadline: on a shared, busy CI machine one slow example is not a failure.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    C{data} split at the positions in C{cuts} (taken modulo the length, in order).
    """
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def streamed(transform: ASCIIStream | UnicodeStream, chunks: list[bytes]) -> bytes:
    return b"".join(transform.feed(c) for c in chunks) + transform.flush()


@relaxed
@given(st.binary(max_size=2000))
def test_asciiIsBytesUpper(data: bytes) -> None:
    """
    L{upperASCII} is C{bytes.upper}: same length, only C{a}-C{z} changed, to C{A}-C{Z}.
    """
    out = upperASCII(data)
    assert out == data.upper()
    assert len(out) == len(data)
    lower = string.ascii_lowercase.encode()
    for before, after in zip(data, out, strict=True):
        if before in lower:
            assert after == before - 32
        else:
            assert after == before


def test_asciiLeavesEverythingButLettersAlone() -> None:
    """
    Punctuation, NUL, high bytes and UTF-8 multibyte sequences are returned unchanged.
    """
    data = b"welcome to cn lab, &*! \x00\xff caf\xc3\xa9 stra\xc3\x9fe"
    assert upperASCII(data) == b"WELCOME TO CN LAB, &*! \x00\xff CAF\xc3\xa9 STRA\xc3\x9fE"


@relaxed
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=30))
def test_asciiStreamAnyChunking(data: bytes, cuts: list[int]) -> None:
    """
    The ASCII stream transform gives C{data.upper()} for any chunking, chunk by chunk.
    """
    chunks = chunked(data, cuts)
    transform = ASCIIStream()
    outputs = [transform.feed(c) for c in chunks]
    assert [len(o) for o in outputs] == [len(c) for c in chunks]
    assert b"".join(outputs) + transform.flush() == data.upper()


def test_unicodeFullRules() -> None:
    """
    Unicode mode applies C{str.upper}: C{ß} becomes C{SS}, accented letters are uppercased.
    """
    assert upperUnicode("straße café ŉ".encode()) == "STRASSE CAFÉ ʼN".encode()


def test_unicodeInvalidBytesPassUnchanged() -> None:
    """
    Bytes that are not valid UTF-8 are returned unchanged around the uppercased text.
    """
    assert upperUnicode(b"ab\xff\xfecd\xc3") == b"AB\xff\xfeCD\xc3"


@relaxed
@given(textBytes, st.lists(st.integers(min_value=0), max_size=30))
@example("straße".encode(), [5])  # the two bytes of ß in different chunks
@example(b"\xe2\x82", [1])  # an incomplete character at the very end of the stream
@example(b"\xe2\x82a", [1, 2])  # an invalid sequence split across chunks
def test_unicodeStreamAnyChunking(data: bytes, cuts: list[int]) -> None:
    """
    The Unicode stream transform gives the same bytes as transforming the whole stream at
    once, for any chunking, characters split across chunks included.
    """
    assert streamed(UnicodeStream(), chunked(data, cuts)) == upperUnicode(data)


def test_unicodeSplitCharacterHeldBack() -> None:
    """
    The first byte of a two-byte character is held back until its second byte arrives.
    """
    transform = UnicodeStream()
    assert transform.feed(b"a\xc3") == b"A"
    assert transform.feed(b"\x9f") == b"SS"
    assert transform.flush() == b""


def test_unicodeIncompleteTailFlushedUnchanged() -> None:
    """
    An incomplete character at the end of the stream is returned unchanged by C{flush}.
    """
    transform = UnicodeStream()
    assert transform.feed(b"x\xe2\x82") == b"X"
    assert transform.flush() == b"\xe2\x82"


@relaxed
@given(textBytes, st.booleans())
@example("ßßß".encode(), True)
@example("ŉ".encode(), True)
def test_datagramNeverLonger(data: bytes, unicode: bool) -> None:
    """
    L{upperDatagram} never returns more bytes than it was given, in either mode.
    """
    assert len(upperDatagram(data, unicode)) <= len(data)


@relaxed
@given(textBytes)
def test_datagramUnicodeOrASCII(data: bytes) -> None:
    """
    In Unicode mode a datagram gets the Unicode uppercase when it is no longer than the
    request, and the ASCII uppercase otherwise.
    """
    unicode = upperUnicode(data)
    expected = unicode if len(unicode) <= len(data) else data.upper()
    assert upperDatagram(data, True) == expected


def test_datagramGrowthFallsBackToASCII() -> None:
    """
    C{ŉ} (two bytes) would grow to C{ʼN} (three bytes): the reply is the ASCII uppercase,
    which leaves it alone; C{ß} -> C{SS} keeps the length and is answered in full.
    """
    assert upperDatagram("ŉ aŉ".encode(), True) == "ŉ Aŉ".encode()
    assert upperDatagram("straße".encode(), True) == b"STRASSE"
    assert upperDatagram("café".encode(), True) == "CAFÉ".encode()
    assert upperDatagram("café".encode(), False) == "CAFé".encode()


def test_streamTransformPicksMode() -> None:
    """
    L{streamTransform} gives a transform of the asked-for kind: a fresh Unicode one per
    call (it holds a split character), the one stateless ASCII one.
    """
    assert isinstance(streamTransform(False), ASCIIStream)
    assert streamTransform(False).feed(b"a\xc3") == b"A\xc3"
    assert streamTransform(False).flush() == b""
    first, second = streamTransform(True), streamTransform(True)
    assert isinstance(first, UnicodeStream)
    assert first is not second
