"""
Content codings (RFC 9110 §8.4.1) decoded for a text filter: C{gzip}, C{deflate} and
C{br}, as the body streams.

Decoding never inflates one input piece into unbounded memory: each decoder yields the
output in pieces of at most L{PIECE} bytes, lazily, so a compression bomb is paced by the
client's back-pressure like any body.  A filtered body is sent on as C{identity}: see
L{caplab.proxy.filters.chain} for why.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Protocol

import brotli

#: The most bytes a decoder hands on at once.
PIECE = 65536

#: The codings this module decodes.
KNOWN_CODINGS = frozenset({"gzip", "deflate", "br"})

#: The most content codings decoded for one body: each costs a decoder and its buffers, and
#: an origin may stack any number (C{gzip, gzip, ...}); no real server applies more than two.
MAX_CODINGS = 2


class DecodeError(Exception):
    """
    The body is not validly encoded (corrupt, or cut short).
    """


class IDecoder(Protocol):
    def decode(self, data: bytes) -> Iterator[bytes]:
        """
        The decoded pieces of C{data}, the next part of the encoded body.
        """

    def flush(self) -> Iterator[bytes]:
        """
        The body ended: the last decoded pieces.

        @raise DecodeError: the encoded stream was not complete.
        """


class ZlibDecoder:
    """
    C{gzip} (several members allowed, as C{gzip -c a b} writes) or C{deflate} (the zlib
    format RFC 9110 names, or the raw deflate some servers send instead).
    """

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._decompressor: zlib._Decompress | None = None
        self._started = False
        self._ended = False
        self._head = b""  # deflate: the first byte, until the second tells the format

    def _new(self, first: bytes) -> zlib._Decompress:
        if self._coding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # deflate: a zlib header (CM 8, header checksum) or raw deflate data
        if len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0:
            return zlib.decompressobj(zlib.MAX_WBITS)
        return zlib.decompressobj(-zlib.MAX_WBITS)

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._coding == "deflate" and not self._started:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._head = b""
        while data:
            if self._decompressor is None:
                if self._ended and self._coding != "gzip":
                    return  # trailing bytes after a deflate stream: ignored, like browsers
                if self._ended and data[:1] != b"\x1f":
                    return  # padding or garbage after the last gzip member: ignored, too
                self._decompressor = self._new(data)
                self._started = True
                self._ended = False
            decompressor = self._decompressor
            try:
                out = decompressor.decompress(data, PIECE)
            except zlib.error as e:
                raise DecodeError(f"{self._coding} data is corrupt ({e})") from None
            if out:
                yield out
            data = decompressor.unconsumed_tail
            if decompressor.eof:
                self._ended = True
                self._decompressor = None
                data = decompressor.unused_data + data

    def flush(self) -> Iterator[bytes]:
        if self._head:
            raise DecodeError(f"the {self._coding} stream was cut short")
        decompressor = self._decompressor
        if decompressor is not None:
            try:
                out = decompressor.flush()
            except zlib.error as e:  # pragma: no cover - flush() raises only on bugs
                raise DecodeError(f"{self._coding} data is corrupt ({e})") from None
            if out:
                yield out
            if not decompressor.eof:
                raise DecodeError(f"the {self._coding} stream was cut short")
        elif not self._started:
            return  # an empty body: nothing was encoded


class BrotliDecoder:
    """
    C{br} (RFC 7932).  Bytes after the end of the stream make it corrupt, wherever the
    pieces are cut.
    """

    def __init__(self) -> None:
        self._decompressor = brotli.Decompressor()
        self._started = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        self._started = True
        decompressor = self._decompressor
        try:
            if decompressor.is_finished():
                # as when they come in the piece the stream ends in (brotli refuses them)
                raise DecodeError("br data is corrupt (bytes after the end of the stream)")
            out = decompressor.process(data, output_buffer_limit=PIECE)
            while True:
                if out:
                    yield out
                if decompressor.can_accept_more_data():
                    return
                out = decompressor.process(b"", output_buffer_limit=PIECE)
        except brotli.error as e:
            raise DecodeError(f"br data is corrupt ({e})") from None

    def flush(self) -> Iterator[bytes]:
        if self._started and not self._decompressor.is_finished():
            raise DecodeError("the br stream was cut short")
        return iter(())


def decoderFor(coding: str) -> IDecoder:
    """
    A decoder of C{coding} (one of L{KNOWN_CODINGS}).
    """
    if coding == "br":
        return BrotliDecoder()
    return ZlibDecoder(coding)


class Decoding:
    """
    The decoders of a body's content codings, chained: the last coding applied is undone
    first (C{Content-Encoding: deflate, gzip} is gzip of deflate).
    """

    def __init__(self, codings: list[str]) -> None:
        self._decoders = [decoderFor(c) for c in reversed(codings)]

    def decode(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, iter((data,)))

    def flush(self) -> Iterator[bytes]:
        for index, decoder in enumerate(self._decoders):
            yield from self._through(index + 1, decoder.flush())

    def _through(self, index: int, pieces: Iterator[bytes]) -> Iterator[bytes]:
        if index >= len(self._decoders):
            yield from pieces
            return
        decoder = self._decoders[index]
        for piece in pieces:
            yield from self._through(index + 1, decoder.decode(piece))
