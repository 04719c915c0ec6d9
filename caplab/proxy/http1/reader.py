"""
The part of reading an HTTP/1.1 message that requests and responses share: a buffer, the
reader's explicit state, and the body framings of RFC 9112 section 6 and 7 (a length,
chunked with extensions and trailers, or until the connection closes).

L{MessageReader} is sans-I/O: C{receive(data)} and C{receiveEOF()} take bytes (or the end of
them) and return events (L{caplab.proxy.http1.events}); nothing here touches a socket or a
clock.

Reading costs time in proportion to the bytes read however they are split: a head (or a
trailer section, or pipelined messages read ahead) that arrives in many small pieces grows
in place in one C{bytearray}, is searched for its end only where new bytes came, and is
checked byte by byte only in its new bytes; it becomes C{bytes} once, when it is whole.

After a message ends the reader pauses (state C{DONE}) with any further bytes kept, until
C{nextMessage()}: the next message can only be read once the caller knows how (a response to
HEAD has no body; after CONNECT the bytes are a tunnel's).
"""

from __future__ import annotations

import enum
import re

from caplab.proxy.http1.events import END, Event, MessageError
from caplab.proxy.http1.fields import FieldError, parseFields

#: The longest chunk-size line (size, extensions) accepted.
MAX_CHUNK_LINE = 4096

_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*((?:;[^\x00-\x08\x0a-\x1f\x7f]*)?)")


def _appendData(events: list[Event], data: list[bytes]) -> None:
    """
    Append the body data pieces C{data} to C{events} as one event (none if there are none).
    """
    if data:
        events.append(data[0] if len(data) == 1 else b"".join(data))


class ReaderState(enum.Enum):
    """
    Where a reader is in the stream of messages.
    """

    HEAD = "reading a head"
    LENGTH = "reading a body of known length"
    CHUNKED = "reading a chunked body"
    CLOSE = "reading a body that ends with the connection"
    DONE = "a message is complete (paused until nextMessage)"
    SWITCHED = "the connection now speaks another protocol"
    FAILED = "the stream is not HTTP/1.1"


class ChunkState(enum.Enum):
    """
    Where a chunked body's reader is (RFC 9112 section 7.1).
    """

    SIZE = "chunk size line"
    DATA = "chunk data"
    DATA_END = "CRLF after chunk data"
    TRAILER = "trailer section"


HEAD = ReaderState.HEAD
LENGTH = ReaderState.LENGTH
CHUNKED = ReaderState.CHUNKED
CLOSE = ReaderState.CLOSE
DONE = ReaderState.DONE
SWITCHED = ReaderState.SWITCHED
FAILED = ReaderState.FAILED


class MessageReader:
    """
    Reads a stream of HTTP/1.1 messages; subclasses read the heads.

    @ivar state: the L{ReaderState}.
    @ivar maxHead: the longest head (start line and fields) accepted, in bytes; also the
        longest trailer section.
    """

    #: The status of a framing error: 400 for requests, 502 for responses.
    errorCode = 400
    #: Whether field values with control bytes are mended (responses) or refused (requests).
    lenient = False

    def __init__(self, maxHead: int = 65536) -> None:
        self.maxHead = maxHead
        self.state = HEAD
        # The bytes received and not read yet: in _buffer, or, while a head, a trailer
        # section or read-ahead grows piece by piece, in _grown (and _buffer is empty).
        self._buffer = b""
        self._grown: bytearray | None = None
        # How many bytes of the head (or trailer section) being read were searched already.
        self._searched = 0
        self._remaining = 0
        self._chunk = ChunkState.SIZE

    # Feeding

    def receive(self, data: bytes) -> list[Event]:
        """
        Take C{data}; return the events it completes, in order.
        """
        if data:
            grown = self._grown
            if grown is not None:
                grown += data
            elif not self._buffer:
                self._buffer = data
            elif self.state is DONE:
                grown = self._grow()  # read ahead: grown in place until it is read
                grown += data
            else:
                self._buffer += data
        events: list[Event] = []
        while True:
            state = self.state
            if state is LENGTH:
                if not self._readLength(events):
                    break
            elif state is HEAD:
                if not (self._buffer or self._grown) or not self._readHead(events):
                    break
            elif state is CHUNKED:
                if not self._readChunked(events):
                    break
            elif state is CLOSE:
                if self._buffer:
                    events.append(self._buffer)
                    self._buffer = b""
                break
            else:
                break
        return events

    def receiveEOF(self) -> list[Event]:
        """
        The peer closed its side in good order (a FIN, no error): end a body that lasts until
        the connection closes, or say what the close cut short.
        """
        state = self.state
        if state is CLOSE:
            self.state = DONE
            return [END]
        if state is LENGTH or state is CHUNKED:
            return [self._fail("the connection closed before the end of the body", True)]
        if state is HEAD and self.buffered:
            return [self._fail("the connection closed in the middle of a head", True)]
        return []

    def nextMessage(self) -> None:
        """
        Read the next message: the caller knows now how the stream goes on.
        """
        if self.state is DONE:
            self.state = HEAD

    def switch(self) -> bytes:
        """
        The connection carries another protocol from here on (a tunnel): return the bytes
        already received past the last message, and read no more.
        """
        self.state = SWITCHED
        grown, self._grown = self._grown, None
        leftover, self._buffer = self._buffer, b""
        return leftover if grown is None else bytes(grown)

    @property
    def buffered(self) -> int:
        """
        How many received bytes wait to be read (a paused reader's next messages).
        """
        grown = self._grown
        return len(self._buffer) if grown is None else len(grown)

    # For subclasses

    def _grow(self) -> bytearray:
        """
        The unread bytes, moved to a C{bytearray} that further bytes are added to in place
        (a head, trailer section or read-ahead arriving piece by piece: copying the whole
        buffer for each piece would cost time in the square of its length).
        """
        grown = self._grown
        if grown is None:
            grown = self._grown = bytearray(self._buffer)
            self._buffer = b""
        return grown

    def _unread(self) -> bytes | bytearray:
        """
        The unread bytes, wherever they are (for a head's reader).
        """
        grown = self._grown
        return self._buffer if grown is None else grown

    def _whole(self) -> bytes:
        """
        The unread bytes as C{bytes} (once a head in them is whole): a grown buffer becomes
        C{bytes} again, once.
        """
        grown = self._grown
        if grown is not None:
            self._buffer = bytes(grown)
            self._grown = None
        return self._buffer

    def _readHead(self, events: list[Event]) -> bool:
        """
        Read a head from the buffer, appending its event(s); return whether to go on.
        """
        raise NotImplementedError

    def _startBody(self, length: int | None, closeDelimited: bool, events: list[Event]) -> None:
        """
        The head just read announced a body of C{length} bytes (None: chunked, or until the
        connection closes if C{closeDelimited}).
        """
        if closeDelimited:
            self.state = CLOSE
        elif length is None:
            self.state = CHUNKED
            self._chunk = ChunkState.SIZE
        elif length:
            self.state = LENGTH
            self._remaining = length
        else:
            events.append(END)
            self.state = DONE

    def _fail(self, detail: str, incomplete: bool = False, code: int | None = None) -> MessageError:
        self.state = FAILED
        self._buffer = b""
        self._grown = None
        self._searched = 0
        return MessageError(code or self.errorCode, detail, incomplete)

    # Bodies

    def _readLength(self, events: list[Event]) -> bool:
        buffer = self._buffer
        if not buffer:
            return False
        remaining = self._remaining
        if len(buffer) < remaining:
            events.append(buffer)
            self._buffer = b""
            self._remaining = remaining - len(buffer)
            return False
        if len(buffer) == remaining:
            events.append(buffer)
            self._buffer = b""
        else:
            events.append(buffer[:remaining])
            self._buffer = buffer[remaining:]
        self._remaining = 0
        events.append(END)
        self.state = DONE
        return False

    def _readChunked(self, events: list[Event]) -> bool:
        grown = self._grown
        if grown is not None:
            self._readTrailer(grown, 0, events)  # a trailer section arriving in pieces
            return False
        buffer = self._buffer
        position = 0
        size = len(buffer)
        chunk = self._chunk
        # The data of the chunks in this buffer, handed out as one event: a body of tiny
        # chunks must not cost an event (and a write downstream) per chunk.
        data: list[bytes] = []
        while position < size:
            if chunk is ChunkState.DATA:
                take = min(self._remaining, size - position)
                data.append(buffer[position : position + take] if take < size else buffer)
                position += take
                self._remaining -= take
                if not self._remaining:
                    chunk = ChunkState.DATA_END
                continue
            if chunk is ChunkState.TRAILER:
                _appendData(events, data)
                self._readTrailer(buffer, position, events)
                return False
            end = buffer.find(b"\r\n", position)
            if end < 0:
                if size - position > MAX_CHUNK_LINE:
                    _appendData(events, data)
                    events.append(self._fail("an over-long chunk size line"))
                    return False
                break
            if chunk is ChunkState.DATA_END:
                if end != position:
                    _appendData(events, data)
                    events.append(self._fail("chunk data longer than its size"))
                    return False
                position = end + 2
                chunk = ChunkState.SIZE
                continue
            match = _CHUNK_LINE.fullmatch(buffer, position, end)
            if match is None:
                _appendData(events, data)
                events.append(self._fail("a malformed chunk size line"))
                return False
            position = end + 2
            self._remaining = int(match.group(1), 16)
            chunk = ChunkState.DATA if self._remaining else ChunkState.TRAILER
        _appendData(events, data)
        self._chunk = chunk
        self._buffer = buffer[position:] if position < size else b""
        return False

    def _readTrailer(self, buffer: bytes | bytearray, position: int, events: list[Event]) -> None:
        """
        Read the trailer section that starts at C{position} of C{buffer} (the unread bytes),
        and so the end of a chunked body; or keep it to grow, if it is not whole yet.
        """
        self._chunk = ChunkState.TRAILER
        if buffer.startswith(b"\r\n", position):
            after = position + 2
        else:
            searched = self._searched
            end = buffer.find(b"\r\n\r\n", position + searched - 3 if searched > 3 else position)
            if end < 0:
                size = len(buffer)
                if size - position > self.maxHead:
                    events.append(self._fail("an over-long trailer section"))
                elif self._grown is None:
                    self._grown = bytearray(buffer[position:])
                    self._buffer = b""
                self._searched = size - position
                return
            try:
                parseFields(bytes(buffer[position : end + 2]), self.lenient)
            except FieldError as e:
                events.append(self._fail(f"a malformed trailer section: {e}"))
                return
            after = end + 4
        self._buffer = bytes(buffer[after:])
        self._grown = None
        self._searched = 0
        self._chunk = ChunkState.SIZE
        events.append(END)
        self.state = DONE
