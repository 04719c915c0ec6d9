"""
caplab's HTTP/1.1 message layer, apart from I/O (the h11 way): readers that turn bytes into
events (L{RequestReader} for clients, L{ResponseReader} for origins), and the writer that
turns heads, chunks and the proxy's own responses into bytes.

Framing follows RFC 9112 section 6.3 in one place per direction (L{frameRequest},
L{frameResponse}); field syntax and the control-byte rules of RFC 9110 section 5.5 in
L{caplab.proxy.http1.fields}; the readers' states are explicit (L{ReaderState}).
"""

from caplab.proxy.http1.events import (
    END,
    EndOfMessage,
    Event,
    InterimResponse,
    MessageError,
    RequestHead,
    ResponseHead,
)
from caplab.proxy.http1.fields import FieldError, parseFields, tokens
from caplab.proxy.http1.reader import ReaderState
from caplab.proxy.http1.requests import FramingError, RequestReader, contentLength, frameRequest
from caplab.proxy.http1.responses import BODILESS_STATUSES, ResponseReader, frameResponse
from caplab.proxy.http1.writer import (
    LAST_CHUNK,
    UnsafeHead,
    chunk,
    completeResponse,
    requestHead,
    responseHead,
)

__all__ = [
    "BODILESS_STATUSES",
    "END",
    "LAST_CHUNK",
    "EndOfMessage",
    "Event",
    "FieldError",
    "FramingError",
    "InterimResponse",
    "MessageError",
    "ReaderState",
    "RequestHead",
    "RequestReader",
    "ResponseHead",
    "ResponseReader",
    "UnsafeHead",
    "chunk",
    "completeResponse",
    "contentLength",
    "frameRequest",
    "frameResponse",
    "parseFields",
    "requestHead",
    "responseHead",
    "tokens",
]
