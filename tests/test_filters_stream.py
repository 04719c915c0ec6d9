"""
Tests for L{caplab.proxy.filters.stream.TransformSink} and L{caplab.proxy.filters.coding}:
back-pressure through the chain, bounded memory on endless and compressed bodies, content
codings, failures.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import brotli
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.coding import PIECE, DecodeError, Decoding
from caplab.proxy.filters.elements import ElementBlocker
from caplab.proxy.filters.interfaces import ResponseHead
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.filters.rewrite import RewriteFilter, parseRewrite
from caplab.proxy.filters.stream import TransformSink
from tests.test_filters_support import (
    BodySource,
    CollectingSink,
    SlowClientSink,
    makeRequest,
    splitAt,
)


class Upper:
    window = 0

    def feed(self, data: bytes) -> bytes:
        return data.upper()

    def finish(self) -> bytes:
        return b""


class HoldLast:
    """
    Holds back the last byte of every piece until the next one: a transform with a window.
    """

    window = 1

    def __init__(self) -> None:
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        data = self.held + data
        self.held = data[-1:]
        return data[:-1]

    def finish(self) -> bytes:
        return self.held + b"!"


class Failing:
    window = 0

    def feed(self, data: bytes) -> bytes:
        raise RuntimeError("the filter broke")

    def finish(self) -> bytes:
        return b""


class Swallow:
    """
    Passes nothing on (a dropped element, a rewrite that deletes), noting what it is fed;
    C{onFeed} is called at each piece.
    """

    window = 0

    def __init__(self) -> None:
        self.fed: list[int] = []
        self.onFeed = lambda: None

    def feed(self, data: bytes) -> bytes:
        self.fed.append(len(data))
        self.onFeed()
        return b""

    def finish(self) -> bytes:
        return b""


class Turns:
    """
    A C{callLater} whose calls run one reactor turn at a time, on L{run} (a L{Clock} runs
    the calls made while it advances in the same advance).
    """

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def callLater(self, delay: float, function: Callable[..., Any], *args: Any) -> Any:
        clock = Clock()
        call = clock.callLater(delay, function, *args)
        self.pending.append(clock)
        return call

    def run(self) -> None:
        pending, self.pending = self.pending, []
        for clock in pending:
            clock.advance(0)


def endless(pieceSize: int, total: int) -> Iterator[bytes]:
    line = b'<p class="x">hello world, <a href="/next">next</a> <img src="/i.png"> ' + b"." * 940
    piece = (line * (pieceSize // len(line) + 1))[:pieceSize]
    for _ in range(total // pieceSize):
        yield piece


class TransformSinkTests(SynchronousTestCase):
    def test_transformsAndEnds(self) -> None:
        """
        Every piece goes through the transforms in order, what they held back comes at the
        end, and the body ends complete.
        """
        sink = CollectingSink()
        source = BodySource([b"ab", b"cd", b"ef"])
        source.deliverBody(TransformSink(sink, [Upper(), HoldLast()]))
        self.assertEqual(sink.body, b"ABCDEF!")
        self.assertIs(sink.done, True)

    def test_isTheClientsProducer(self) -> None:
        """
        The client's sink gets the transform sink as its producer, not the origin's.
        """
        sink = CollectingSink()
        source = BodySource([b"x"])
        transformSink = TransformSink(sink, [Upper()])
        source.deliverBody(transformSink)
        self.assertIs(sink.producer, transformSink)

    def test_pausePassesToTheProducer(self) -> None:
        """
        A paused client pauses the body's producer at once; a resumed one resumes it only
        after what was held is passed on.
        """
        sink = SlowClientSink(limit=10, keep=True)
        source = BodySource([b"a" * 8, b"b" * 8, b"c" * 8, b"d" * 8])
        source.deliverBody(TransformSink(sink, [Upper()]))
        self.assertTrue(source.paused)
        self.assertEqual(sink.body, b"A" * 8 + b"B" * 8)
        self.assertIsNone(sink.done)
        sink.drain()
        self.assertEqual(sink.body, b"A" * 8 + b"B" * 8 + b"C" * 8 + b"D" * 8)
        sink.drain()
        self.assertIs(sink.done, True)
        self.assertGreaterEqual(source.pauses, 2)

    def test_pausedDecodingKeepsItsPlace(self) -> None:
        """
        A client that pauses in the middle of one piece's decoded output gets the rest of it
        when it resumes, and the producer stays paused until then.
        """
        plain = bytes(range(256)) * 4096  # 1 MiB
        sink = SlowClientSink(limit=PIECE, keep=True)
        source = BodySource([gzip.compress(plain)])
        source.deliverBody(TransformSink(sink, [Upper()], Decoding(["gzip"])))
        self.assertLessEqual(sink.received, 2 * PIECE)
        self.assertTrue(source.paused)
        for _ in range(100):
            if sink.done is not None:
                break
            sink.drain()
        self.assertEqual(sink.body, plain.upper())
        self.assertIs(sink.done, True)

    def test_stopReachesTheProducer(self) -> None:
        """
        A client that goes away stops the body's producer; nothing more is passed on.
        """
        sink = SlowClientSink(limit=1)
        source = BodySource([b"a", b"b", b"c"])
        transformSink = TransformSink(sink, [Upper()])
        source.deliverBody(transformSink)
        transformSink.stopProducing()
        self.assertTrue(source.stopped)
        received = sink.received
        source.resumeProducing()
        self.assertEqual(sink.received, received)

    def test_cutOffBodyIsNotCompleted(self) -> None:
        """
        A body cut off at the origin ends incomplete at the client, without what the
        transforms held back (nothing may make it look whole).
        """
        sink = CollectingSink()
        BodySource([b"ab"], complete=False).deliverBody(TransformSink(sink, [HoldLast()]))
        self.assertIs(sink.done, False)
        self.assertEqual(sink.body, b"a")

    def test_failingTransform(self) -> None:
        """
        A transform that raises ends the client's body incomplete, stops the producer and
        reports why.
        """
        errors: list[str] = []
        sink = CollectingSink()
        source = BodySource([b"a", b"b"])
        source.deliverBody(TransformSink(sink, [Failing()], onError=errors.append))
        self.assertIs(sink.done, False)
        self.assertTrue(source.stopped)
        self.assertEqual(errors, ["the filter broke"])

    def test_corruptEncoding(self) -> None:
        """
        A body that is not the gzip it claims to be ends incomplete, with the reason.
        """
        errors: list[str] = []
        sink = CollectingSink()
        BodySource([b"\x1f\x8b\x08\x00garbage, not gzip"]).deliverBody(
            TransformSink(sink, [Upper()], Decoding(["gzip"]), onError=errors.append)
        )
        self.assertIs(sink.done, False)
        self.assertEqual(len(errors), 1)
        self.assertIn("gzip", errors[0])

    def test_truncatedEncoding(self) -> None:
        """
        A gzip stream cut short, in a body the origin called complete, ends incomplete.
        """
        errors: list[str] = []
        sink = CollectingSink()
        data = gzip.compress(b"x" * 10000)
        BodySource([data[:-20]]).deliverBody(
            TransformSink(sink, [Upper()], Decoding(["gzip"]), onError=errors.append)
        )
        self.assertIs(sink.done, False)
        self.assertIn("cut short", errors[0])

    def test_givesTheReactorBack(self) -> None:
        """
        With a C{callLater}, the sink yields after C{turn} bytes of output, pausing the
        producer meanwhile, and goes on at the next turn.
        """
        clock = Clock()
        sink = CollectingSink(keep=False)
        source = BodySource([gzip.compress(b"z" * (8 * PIECE))])
        source.deliverBody(
            TransformSink(
                sink, [Upper()], Decoding(["gzip"]), callLater=clock.callLater, turn=PIECE
            )
        )
        self.assertLess(sink.received, 8 * PIECE)
        self.assertIsNone(sink.done)
        for _ in range(20):
            clock.advance(0)
        self.assertEqual(sink.received, 8 * PIECE)
        self.assertIs(sink.done, True)

    def test_givesTheReactorBackWhenNothingComesOut(self) -> None:
        """
        The budget counts decoded bytes, not output: a compression bomb whose every byte
        the transforms drop still gives the reactor back after C{turn} bytes, and decodes
        no further until the next turn.
        """
        turns = Turns()
        swallow = Swallow()
        sink = CollectingSink()
        source = BodySource([gzip.compress(b"z" * (16 * PIECE))])
        source.deliverBody(
            TransformSink(
                sink, [swallow], Decoding(["gzip"]), callLater=turns.callLater, turn=2 * PIECE
            )
        )
        self.assertEqual(sum(swallow.fed), 2 * PIECE)
        self.assertIsNone(sink.done)
        for _ in range(30):
            fed = sum(swallow.fed)
            turns.run()
            self.assertLessEqual(sum(swallow.fed) - fed, 2 * PIECE)
        self.assertEqual(sum(swallow.fed), 16 * PIECE)
        self.assertIs(sink.done, True)
        self.assertEqual(sink.body, b"")

    def test_pauseStopsDecodingWhenNothingComesOut(self) -> None:
        """
        A client that pauses while the transforms pass nothing on stops the decoding after
        the piece in hand; it goes on when the client resumes.
        """
        swallow = Swallow()
        sink = CollectingSink()
        source = BodySource([gzip.compress(b"z" * (16 * PIECE))])
        transformSink = TransformSink(sink, [swallow], Decoding(["gzip"]))
        swallow.onFeed = transformSink.pauseProducing
        source.deliverBody(transformSink)
        self.assertEqual(swallow.fed, [PIECE])
        self.assertTrue(source.paused)
        swallow.onFeed = lambda: None
        transformSink.resumeProducing()
        self.assertEqual(sum(swallow.fed), 16 * PIECE)
        self.assertIs(sink.done, True)

    def test_boundedMemoryOnAnEndlessBody(self) -> None:
        """
        Memory stays bounded however long the body: 32 MiB through a rewrite and the
        element blocker, read by a slow client, holds at most a few pieces at a time.
        """

        class Nothing:
            def check(self, host: str) -> None:
                return None

        head = ResponseHead(200, b"OK", [], "text/html", "utf-8")
        counters = FilterCounters()
        rewrite = RewriteFilter(parseRewrite("* s/hello/HOWDY/g"), counters)
        blocker = ElementBlocker(Nothing(), "http", "utf-8")
        rewriting = rewrite.transformBody(makeRequest(), head)
        assert rewriting is not None
        transforms = [blocker, rewriting]
        sink = SlowClientSink(limit=4 * PIECE)
        source = BodySource(endless(PIECE, 32 << 20))
        tracemalloc.start()
        try:
            source.deliverBody(TransformSink(sink, transforms))
            while sink.done is None:
                sink.drain()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertIs(sink.done, True)
        self.assertEqual(sink.received, 32 << 20)
        self.assertEqual(counters["rewrites"], 1)
        self.assertLess(peak, 2 << 20)

    def test_boundedMemoryOnACompressionBomb(self) -> None:
        """
        A small gzip body that decodes to 64 MiB is decoded piece by piece as the client
        takes it: never more than a few pieces held.
        """
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        zero = b"\0" * (1 << 20)
        bomb = b"".join(compressor.compress(zero) for _ in range(64)) + compressor.flush()
        self.assertLess(len(bomb), 128 * 1024)
        sink = SlowClientSink(limit=PIECE)
        source = BodySource(splitAt(bomb, range(0, len(bomb), 16384)))
        tracemalloc.start()
        try:
            source.deliverBody(TransformSink(sink, [Upper()], Decoding(["gzip"])))
            while sink.done is None:
                sink.drain()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertEqual(sink.received, 64 << 20)
        self.assertLessEqual(sink.mostBuffered, 2 * PIECE)
        self.assertLess(peak, 2 << 20)


PLAIN = st.binary(max_size=3000) | st.text(alphabet="ab <>\n", max_size=3000).map(str.encode)


class DecodingTests(SynchronousTestCase):
    def decode(self, codings: list[str], pieces: list[bytes]) -> bytes:
        decoding = Decoding(codings)
        out = [b"".join(decoding.decode(piece)) for piece in pieces]
        out.append(b"".join(decoding.flush()))
        return b"".join(out)

    @settings(max_examples=60, deadline=None)
    @given(PLAIN, st.lists(st.integers(0, 4000), max_size=6))
    def test_gzipRoundTrip(self, plain: bytes, cuts: list[int]) -> None:
        """
        gzip decodes to the original however the encoded body is cut.
        """
        self.assertEqual(self.decode(["gzip"], splitAt(gzip.compress(plain), cuts)), plain)

    @settings(max_examples=60, deadline=None)
    @given(PLAIN, st.lists(st.integers(0, 4000), max_size=6), st.booleans())
    def test_deflateRoundTrip(self, plain: bytes, cuts: list[int], raw: bool) -> None:
        """
        deflate decodes, in the zlib format RFC 9110 names and in raw deflate alike.
        """
        if raw:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            encoded = compressor.compress(plain) + compressor.flush()
        else:
            encoded = zlib.compress(plain)
        self.assertEqual(self.decode(["deflate"], splitAt(encoded, cuts)), plain)

    @settings(max_examples=60, deadline=None)
    @given(PLAIN, st.lists(st.integers(0, 4000), max_size=6))
    def test_brotliRoundTrip(self, plain: bytes, cuts: list[int]) -> None:
        """
        br decodes however the encoded body is cut.
        """
        self.assertEqual(self.decode(["br"], splitAt(brotli.compress(plain), cuts)), plain)

    def test_stackedCodings(self) -> None:
        """
        C{Content-Encoding: deflate, gzip} is undone last first.
        """
        plain = b"stacked " * 1000
        self.assertEqual(
            self.decode(["deflate", "gzip"], [gzip.compress(zlib.compress(plain))]), plain
        )

    def test_gzipMembers(self) -> None:
        """
        Several gzip members (C{cat a.gz b.gz}) are one body; padding after them is ignored.
        """
        data = gzip.compress(b"one ") + gzip.compress(b"two") + b"\0\0\0"
        self.assertEqual(self.decode(["gzip"], splitAt(data, [5, 30])), b"one two")

    def test_truncatedBrotli(self) -> None:
        """
        A br stream cut short is an error at the end.
        """
        with self.assertRaises(DecodeError):
            self.decode(["br"], [brotli.compress(bytes(range(256)) * 100)[:-10]])

    def test_deflateFormatFromTwoBytes(self) -> None:
        """
        Whether deflate is the zlib format or raw is told by the first two bytes, however
        the body is cut.
        """
        plain = b"deflate " * 100
        for cut in range(4):
            self.assertEqual(
                self.decode(["deflate"], splitAt(zlib.compress(plain), [cut, cut])), plain
            )
        with self.assertRaises(DecodeError):
            self.decode(["deflate"], [b"x"])

    def test_emptyBody(self) -> None:
        """
        An empty body is no error, whatever its announced coding.
        """
        for coding in ("gzip", "deflate", "br"):
            self.assertEqual(self.decode([coding], []), b"")
