"""
The uppercase transforms, pure and I/O-free.

Two modes:

  - ASCII (the lab's specification): only C{a}-C{z} become C{A}-C{Z}; every other byte,
    including NUL, binary data and UTF-8 multibyte sequences, is returned unchanged.  This
    is exactly C{bytes.upper()}, which touches ASCII letters only, and it maps each input
    byte to one output byte, so output length always equals input length.

  - Unicode: UTF-8 text is decoded, uppercased with C{str.upper} (C{straße} -> C{STRASSE})
    and encoded again.  Bytes that are not valid UTF-8 pass through unchanged
    (C{surrogateescape}).  Output may be longer than input.

A stream transform (L{StreamTransform}) is fed chunks and returns what can be written now;
for Unicode it holds back an incomplete multibyte sequence at the end of a chunk until the
next chunk (or the end of the stream) completes it, so any chunking gives the same output as
transforming the whole stream at once.
"""

from __future__ import annotations

import codecs
from typing import Protocol


def upperASCII(data: bytes) -> bytes:
    """
    Uppercase C{a}-C{z} and leave every other byte alone.
    """
    return data.upper()


def upperUnicode(data: bytes) -> bytes:
    """
    Uppercase a complete UTF-8 text with full Unicode rules; invalid bytes pass unchanged.
    """
    return data.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


def upperDatagram(data: bytes, unicode: bool) -> bytes:
    """
    Uppercase one datagram without ever making the reply larger than the request.

    In Unicode mode some characters grow when uppercased (C{ß} -> C{SS}, C{ŉ} -> C{ʼN}); a
    datagram whose Unicode uppercase would be longer than the request is answered with the
    ASCII uppercase instead, so the service can never be used to amplify traffic.
    """
    if unicode:
        converted = upperUnicode(data)
        if len(converted) <= len(data):
            return converted
    return upperASCII(data)


class StreamTransform(Protocol):
    """
    Uppercases a byte stream chunk by chunk.
    """

    def feed(self, data: bytes) -> bytes:
        """
        Transform C{data} and return the bytes that can be sent now.
        """

    def flush(self) -> bytes:
        """
        The stream has ended: return whatever was held back.
        """


class ASCIIStream:
    """
    The ASCII stream transform: stateless, one byte in, one byte out, so one instance
    (L{ASCII_STREAM}) serves every connection.
    """

    #: C{bytes.upper} itself, called with no Python frame of its own.
    feed = staticmethod(bytes.upper)

    def flush(self) -> bytes:
        return b""


#: The one ASCII stream transform.
ASCII_STREAM = ASCIIStream()


class UnicodeStream:
    """
    The Unicode stream transform: an incremental UTF-8 decoder keeps a character that is
    split across chunks until it is complete.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

    def feed(self, data: bytes) -> bytes:
        return self._decoder.decode(data).upper().encode("utf-8", "surrogateescape")

    def flush(self) -> bytes:
        return self._decoder.decode(b"", final=True).upper().encode("utf-8", "surrogateescape")


def streamTransform(unicode: bool) -> StreamTransform:
    """
    A stream transform for one connection (the ASCII one is shared: it keeps no state).
    """
    return UnicodeStream() if unicode else ASCII_STREAM
