"""
The test origin: a C{twisted.web} site with the routes proxy tests need.

Routes (all under one leaf resource, dispatched on the first path segment):

  - C{/} or C{/page.html}: an HTML page with a stylesheet, an image and a script; the script
    writes what it found into C{#result} (so a rendered DOM proves the subresources came
    through) and then loads C{beacon?...} with the same findings (so the origin's log proves
    it too, for browsers whose DOM a test cannot read).  The page's URLs are relative, so
    under C{/run/TOKEN/page.html} every request of one page load carries C{TOKEN}.  The page
    and its subresources are C{no-store}, except under C{/cacheable/TOKEN/}, where they are
    C{public, max-age=600} (the beacon is always C{no-store}, so every page load reports).
  - C{/style.css}, C{/image.png}, C{/script.js}, C{/beacon}: the page's subresources.
  - C{/hello/ID}: C{hello ID}, a small body unique per ID.
  - C{/echo}, C{/upload}: JSON of the request as received: method, URI, every header line
    (repeats kept), body length and SHA-256 (the body is read in chunks, never whole).
  - C{/bytes/N}: N bytes of L{pattern} streamed with a pull producer (never held in memory);
    C{?chunked=1} leaves out Content-Length so HTTP/1.1 sends it chunked.
  - C{/chunked?parts=N}: N lines, each written as its own chunk.
  - C{/drip?parts=N&interval=S}: a line every S seconds (a slow origin).
  - C{/stall}: never answers.
  - C{/die?after=N}: announces 2N bytes, sends N, then closes the connection.
  - C{/cache/DIRECTIVES}: C{Cache-Control: DIRECTIVES} (e.g. C{/cache/max-age=60}); the body
    carries this path's request count, so a test sees whether the origin was asked again.
  - C{/vary/HEADER}: C{Vary: HEADER}, C{max-age=60}, the body echoes that request header.
  - C{/validate}: C{ETag} and C{Last-Modified} with 304 for matching conditional requests.
  - C{/status/CODE}: an empty response with that status.
  - C{/_stats}: JSON of request counts per path (itself not counted).

Every request is logged as a JSON line (L{RequestLog}) when it arrives, and again when its
response ends (C{"complete": false} when the connection was lost before the end).
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

from twisted.internet.interfaces import IPullProducer, IReactorTime
from twisted.web import http, server
from twisted.web.resource import Resource
from zope.interface import implementer

#: Size of one block of the download pattern.
BLOCK = 64 * 1024

_BASE = random.Random(20261124).randbytes(BLOCK)

#: The last-modified time of C{/validate} (a fixed instant, so validators are stable).
VALIDATE_MODIFIED = 1_700_000_000
VALIDATE_ETAG = b'"caplab-v1"'

#: What the page's script writes into C{#result} when every subresource arrived.
PAGE_OK = "caplab page ok: script ran, stylesheet applied, image 16x16"


def patternBlock(index: int) -> bytes:
    """
    Block C{index} of the download pattern: its index in the first 8 bytes, so a proxy that
    drops, repeats or reorders blocks changes the digest.
    """
    return struct.pack(">Q", index) + _BASE[8:]


def pattern(size: int) -> Iterator[bytes]:
    """
    The first C{size} bytes of the download pattern, one block at a time.
    """
    index = 0
    while size > 0:
        block = patternBlock(index)[:size]
        size -= len(block)
        index += 1
        yield block


def patternDigest(size: int) -> str:
    """
    The SHA-256 hex digest of C{pattern(size)}.
    """
    digest = hashlib.sha256()
    for block in pattern(size):
        digest.update(block)
    return digest.hexdigest()


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """
    A solid-colour RGB PNG, made by hand (no imaging library needed).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>caplab test page</title>
<link rel="stylesheet" href="style.css"></head>
<body>
<h1 id="styled">caplab test page</h1>
<img id="picture" src="image.png" alt="a 16x16 square">
<p id="result">script did not run</p>
<script src="script.js"></script>
</body></html>
"""

STYLE = b"#styled { color: rgb(1, 2, 3); }\nbody { background: rgb(250, 250, 250); }\n"

#: The colour of the page's 16x16 image (a screenshot of the page shows 256 such pixels).
IMAGE_RGB = (200, 30, 30)

IMAGE = _png(16, 16, IMAGE_RGB)

BEACON = _png(1, 1, (250, 250, 250))

SCRIPT = """
(function () {
  var picture = document.getElementById("picture");
  function report() {
    var color = getComputedStyle(document.getElementById("styled")).color;
    var style = color === "rgb(1, 2, 3)" ? "applied" : "missing";
    var image = picture.naturalWidth + "x" + picture.naturalHeight;
    var ok = style === "applied" && image === "16x16";
    document.getElementById("result").textContent = ok
      ? "PAGE_OK"
      : "caplab page incomplete: stylesheet " + style + ", image " + image;
    var beacon = new Image();
    beacon.src = "beacon?style=" + style + "&image=" + image;
    document.body.appendChild(beacon);
  }
  if (picture.complete) { report(); }
  else { picture.addEventListener("load", report); picture.addEventListener("error", report); }
})();
""".replace("PAGE_OK", PAGE_OK).encode()

_STATIC: dict[bytes, tuple[bytes, bytes]] = {
    b"": (b"text/html; charset=utf-8", PAGE),
    b"page.html": (b"text/html; charset=utf-8", PAGE),
    b"style.css": (b"text/css", STYLE),
    b"image.png": (b"image/png", IMAGE),
    b"script.js": (b"text/javascript", SCRIPT),
}


class RequestLog:
    """
    Counts requests per path and writes one JSON line per request to C{write}.
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        self.counts: Counter[str] = Counter()
        self._write = write

    def record(self, request: server.Request, scheme: str) -> None:
        path = request.path.decode("latin-1")
        if path != "/_stats":
            self.counts[path] += 1
        self._write(
            json.dumps(
                {
                    "event": "request",
                    "scheme": scheme,
                    "method": request.method.decode("latin-1"),
                    "uri": request.uri.decode("latin-1"),
                    "path": path,
                    "headers": _headerLines(request),
                    "peer": getattr(request.getClientAddress(), "port", None),
                }
            )
        )
        request.notifyFinish().addCallbacks(
            lambda _: self._ended(request, path, True), lambda _: self._ended(request, path, False)
        )

    def _ended(self, request: server.Request, path: str, complete: bool) -> None:
        """
        Log that a response ended: C{complete} False when the connection was lost first (the
        client, here a proxy, went away).
        """
        self._write(
            json.dumps(
                {
                    "event": "ended",
                    "uri": request.uri.decode("latin-1"),
                    "path": path,
                    "complete": complete,
                    "peer": getattr(request.getClientAddress(), "port", None),
                }
            )
        )


def _headerLines(request: server.Request) -> list[list[str]]:
    return [
        [name.decode("latin-1").lower(), value.decode("latin-1")]
        for name, values in request.requestHeaders.getAllRawHeaders()
        for value in values
    ]


def _argument(request: server.Request, name: bytes, default: int) -> int:
    values = (request.args or {}).get(name)
    return int(values[0]) if values else default


def _floatArgument(request: server.Request, name: bytes, default: float) -> float:
    values = (request.args or {}).get(name)
    return float(values[0]) if values else default


@implementer(IPullProducer)
class _PatternProducer:
    """
    Writes the download pattern to a request one block per C{resumeProducing}.
    """

    def __init__(self, request: server.Request, size: int) -> None:
        self._request = request
        self._blocks = pattern(size)
        self._stopped = False

    def resumeProducing(self) -> None:
        if self._stopped:
            return
        block = next(self._blocks, None)
        if block is None:
            self._stopped = True
            self._request.unregisterProducer()
            self._request.finish()
        else:
            self._request.write(block)

    def stopProducing(self) -> None:
        self._stopped = True


class OriginResource(Resource):
    """
    Every route of the test origin (see the module docstring).
    """

    isLeaf = True

    def __init__(self, log: RequestLog, reactor: IReactorTime) -> None:
        super().__init__()
        self._log = log
        self._reactor = reactor

    def render(self, request: server.Request) -> Any:
        segments = request.path.split(b"/")[1:]
        cacheable = segments[0] == b"cacheable"
        if segments[0] in (b"run", b"cacheable") and len(segments) > 2:
            segments = segments[2:]  # /run/TOKEN/...: the same routes, told apart by TOKEN
        first, rest = segments[0], b"/".join(segments[1:])
        if first in _STATIC and not rest:
            contentType, body = _STATIC[first]
            request.setHeader(b"content-type", contentType)
            request.setHeader(
                b"cache-control", b"public, max-age=600" if cacheable else b"no-store"
            )
            return body
        handler = getattr(self, "route_" + first.decode("ascii", "replace").lstrip("_"), None)
        if handler is None:
            request.setResponseCode(http.NOT_FOUND)
            return b"no such route\n"
        return handler(request, rest)

    def route_beacon(self, request: server.Request, rest: bytes) -> bytes:
        request.setHeader(b"content-type", b"image/png")
        request.setHeader(b"cache-control", b"no-store")
        return BEACON

    def route_hello(self, request: server.Request, rest: bytes) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"hello " + rest + b"\n"

    def route_echo(self, request: server.Request, rest: bytes) -> bytes:
        digest, length = hashlib.sha256(), 0
        assert request.content is not None
        request.content.seek(0)
        for data in iter(lambda: request.content.read(BLOCK), b""):  # type: ignore[union-attr]
            digest.update(data)
            length += len(data)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "method": request.method.decode("latin-1"),
                "uri": request.uri.decode("latin-1"),
                "headers": _headerLines(request),
                "bodyLength": length,
                "bodySHA256": digest.hexdigest(),
            }
        ).encode()

    route_upload = route_echo

    def route_bytes(self, request: server.Request, rest: bytes) -> int | bytes:
        size = int(rest)
        request.setHeader(b"content-type", b"application/octet-stream")
        if not _argument(request, b"chunked", 0):
            request.setHeader(b"content-length", b"%d" % size)
        if request.method == b"HEAD":
            return b""
        producer = _PatternProducer(request, size)
        request.notifyFinish().addErrback(lambda _: producer.stopProducing())
        request.registerProducer(producer, False)
        return server.NOT_DONE_YET

    def route_chunked(self, request: server.Request, rest: bytes) -> int:
        request.setHeader(b"content-type", b"text/plain")
        for index in range(_argument(request, b"parts", 3)):
            request.write(b"part %d\n" % index)
        request.finish()
        return server.NOT_DONE_YET

    def route_drip(self, request: server.Request, rest: bytes) -> int:
        parts = _argument(request, b"parts", 3)
        interval = _floatArgument(request, b"interval", 0.2)
        request.setHeader(b"content-type", b"text/plain")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def drip(index: int) -> None:
            if gone:
                return
            if index == parts:
                request.finish()
                return
            request.write(b"drip %d\n" % index)
            self._reactor.callLater(interval, drip, index + 1)

        drip(0)
        return server.NOT_DONE_YET

    def route_stall(self, request: server.Request, rest: bytes) -> int:
        request.notifyFinish().addErrback(lambda _: None)
        return server.NOT_DONE_YET

    def route_die(self, request: server.Request, rest: bytes) -> int:
        half = _argument(request, b"after", 65536)
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % (2 * half))
        request.notifyFinish().addErrback(lambda _: None)
        request.write(b"x" * half)
        assert request.channel is not None
        transport = request.channel.transport
        assert transport is not None
        # The channel is the transport's producer; were it left registered, a close requested
        # while the send buffer is full (a proxy reading slowly) would wait for a write that
        # never comes, and the origin would stall instead of dying.
        transport.unregisterProducer()  # type: ignore[attr-defined]
        transport.loseConnection()
        return server.NOT_DONE_YET

    def route_cache(self, request: server.Request, rest: bytes) -> bytes:
        request.setHeader(b"cache-control", unquote(rest.decode("latin-1")).encode("latin-1"))
        request.setHeader(b"content-type", b"text/plain")
        count = self._log.counts[request.path.decode("latin-1")]
        return b"cache %s request %d\n" % (rest, count)

    def route_vary(self, request: server.Request, rest: bytes) -> bytes:
        request.setHeader(b"vary", rest)
        request.setHeader(b"cache-control", b"max-age=60")
        request.setHeader(b"content-type", b"text/plain")
        value = request.getHeader(rest) or b"(none)"
        count = self._log.counts[request.path.decode("latin-1")]
        return b"%s: %s request %d\n" % (rest, value, count)

    def route_validate(self, request: server.Request, rest: bytes) -> bytes:
        request.setHeader(b"cache-control", b"max-age=0, must-revalidate")
        request.setHeader(b"content-type", b"text/plain")
        modified = request.setLastModified(VALIDATE_MODIFIED)
        tagged = request.setETag(VALIDATE_ETAG)
        if modified == http.CACHED or tagged == http.CACHED:
            return b""
        count = self._log.counts[request.path.decode("latin-1")]
        return b"validated body, request %d\n" % count

    def route_status(self, request: server.Request, rest: bytes) -> bytes:
        request.setResponseCode(int(rest))
        return b""

    def route_stats(self, request: server.Request, rest: bytes) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(dict(self._log.counts)).encode()


class OriginRequest(server.Request):
    """
    A request that is logged as soon as its head and body have arrived.
    """

    def process(self) -> None:
        site = getattr(self.channel, "site", None)
        assert isinstance(site, OriginSite)
        site.requestLog.record(self, site.scheme)
        super().process()


class OriginSite(server.Site):
    """
    The origin's site; C{scheme} is what the log says (C{http} or C{https}).
    """

    requestFactory = OriginRequest

    def __init__(self, log: RequestLog, reactor: IReactorTime, scheme: str) -> None:
        super().__init__(OriginResource(log, reactor))
        self.requestLog = log
        self.scheme = scheme
        self.displayTracebacks = True

    def log(self, request: http.Request) -> None:
        """
        No combined access log: L{RequestLog} already records every request.
        """
