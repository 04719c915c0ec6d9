"""
Element blocking in HTML: C{<script>}, C{<iframe>}, C{<img>} and C{<link>} elements whose
URL's host a host policy blocks are removed from the page as it streams, so the browser
never starts their requests.

The scanner follows the HTML tokenizer where it matters and nowhere else, for speed (the
standard library's C{html.parser} costs about 155 ms per MiB; this costs a few):

    - one regular expression skips, in C, everything that cannot matter: text, the tags of
      other elements with their attributes in any quoting (so C{<a title="<img ...>">} is
      no element), end tags, comments (C{<!-- <img ...> -->} is none either), doctypes and
      processing instructions;
    - the tags that matter are parsed attribute by attribute as the tokenizer does: names
      are case-insensitive, values double-quoted, single-quoted or bare, the first of
      repeated attributes wins, character references are decoded;
    - the URLs checked: C{src} (C{<script>}, C{<iframe>}, C{<img>}, also C{href} for SVG's
      C{<script>} and C{<image>}, which HTML parses as C{<img>}), C{srcset} (C{<img>}),
      C{href} and C{imagesrcset} (C{<link>}), resolved against C{<base href>};
    - a removed C{<script>} or C{<iframe>} goes with its content and end tag; the content of
      C{<script>}, C{<style>}, C{<textarea>}, C{<title>} and the other raw-text elements is
      passed on without looking for tags in it.

Works on the bytes of any encoding in which ASCII is ASCII (markup is ASCII); attribute
values are decoded with the page's encoding.  A tag, or an element's end tag, cut between
two pieces waits for the rest, up to the window; a tag longer than the window is passed on
as it is.  While a long one waits, pieces much smaller than it wait until they add up
(L{caplab.proxy.filters.interfaces.GATHER}), so that it is not read again per byte.
"""

from __future__ import annotations

import html
import re

from caplab.proxy.filters.interfaces import DEFAULT_WINDOW, GATHER, GATHER_FLOOR, ResponseHead
from caplab.proxy.filters.reporting import FilterCounters
from caplab.proxy.filters.text import HTML_TYPES, MARKUP_CODECS, codecName
from caplab.proxy.filters.urlhost import srcsetURLs, urlHost
from caplab.proxy.hooks import IHostPolicy, UpstreamRequest
from caplab.proxy.policy import normaliseHost


def _anyCase(word: str) -> bytes:
    return b"".join(b"[%s%s]" % (c.lower().encode(), c.upper().encode()) for c in word)


#: Elements whose URLs are checked, with the attributes holding them.
_CHECKED = {
    b"script": (b"src", b"href", b"xlink:href"),
    b"iframe": (b"src",),
    b"img": (b"src", b"srcset"),
    b"image": (b"src", b"srcset", b"href", b"xlink:href"),
    b"link": (b"href", b"imagesrcset"),
}
_SRCSET = frozenset({b"srcset", b"imagesrcset"})
#: Elements whose content is raw text (or escapable raw text) up to their end tag.
_RAW_TEXT = frozenset(
    {b"script", b"iframe", b"style", b"textarea", b"title", b"xmp", b"noembed", b"noframes"}
)
#: Every element the scanner stops at.
_STOPS = sorted(set(_CHECKED) | _RAW_TEXT | {b"base", b"plaintext"}, key=len, reverse=True)
_STOP_NAMES = b"(?:" + b"|".join(_anyCase(n.decode()) for n in _STOPS) + b")"

_WS = rb"[\t\n\f\r ]"
_NAME = rb"(?:=|[^\t\n\f\r />])[^\t\n\f\r /=>]*+"
_VALUE = _WS + rb"*+=" + _WS + rb"*+(?:\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >\"'][^\t\n\f\r >]*+|(?=>))"
_ATTRIBUTES = (
    rb"(?:[ ]?+[a-zA-Z\-]++=\"[^\"]*+\")*+"  # the common case, quickly
    rb"(?:[\t\n\f\r /]++|" + _NAME + rb"(?:" + _VALUE + rb"|(?!" + _WS + rb"*+=)))*+"
)
#: The start of a tag name that no name that matters starts with, told by its first three
#: letters at most.
_OTHER_START = (
    rb"(?:[ac-hj-kmoq-ru-wyzAC-HJ-KMOQ-RU-WYZ]|[pP](?![lL][aA])|[lL](?![iI][nN])"
    rb"|[iI](?![fF][rR]|[mM][aAgG])|[sS](?![cC][rR]|[tT][yY])|[tT](?![eE][xX]|[iI][tT])"
    rb"|[bB](?![aA][sS])|[nN](?![oO][eEfF])|[xX](?![mM][pP]))"
)
#: Everything up to the next tag that matters (or something cut off by the end): runs of
#: text, each followed by a tag that does not matter (one loop step for both, for speed).
_SKIP = (
    rb"(?:[^<]*+(?:"
    rb"</[a-zA-Z][^\t\n\f\r />]*+" + _ATTRIBUTES + rb">"
    # tags whose first two letters start no name that matters (most), then the others
    rb"|<" + _OTHER_START + rb"[^\t\n\f\r />]*+" + _ATTRIBUTES + rb">"
    rb"|<(?!" + _STOP_NAMES + rb"[\t\n\f\r />])[a-zA-Z][^\t\n\f\r />]*+" + _ATTRIBUTES + rb">"
    rb"|<(?=[^a-zA-Z!/?])"
    rb"|<!--(?:>|->|(?:[^\-]++|-(?!-!?>))*+--!?>)"
    rb"|<!(?!--)[^>]*+>"
    rb"|<\?[^>]*+>"
    rb"|</[^a-zA-Z>][^>]*+>"
    rb"|</>"
    rb"))*+[^<]*+"
)
#: What can be passed on as it is, then the whole tag that matters after it, if it is whole:
#: its name is group 1, its attributes run from there to the end.
_NEXT = re.compile(_SKIP + rb"(?:<(" + _STOP_NAMES + rb")(?=[\t\n\f\r />])" + _ATTRIBUTES + rb">)?")
#: One attribute of a whole tag that matters (its name and value), or the tag's end.
_ATTRIBUTE = re.compile(
    rb"[\t\n\f\r /]*+(?:(>)|(" + _NAME + rb")(?:" + _WS + rb"*+=" + _WS + rb"*+"
    rb"(?:\"([^\"]*+)\"|'([^']*+)'|([^\t\n\f\r >\"'][^\t\n\f\r >]*+)|(?=>))"
    rb"|(?!" + _WS + rb"*+=)))"
)
_END_TAGS = {
    name: re.compile(rb"</" + _anyCase(name.decode()) + rb"(?=[\t\n\f\r />])") for name in _RAW_TEXT
}
_END_TAG_REST = re.compile(_ATTRIBUTES + rb">")
#: The common URLs, read without decoding: an absolute one with a plain host name (group 1),
#: and a relative one (no scheme, no character reference, no backslash, no space).
_PLAIN_URL = re.compile(rb"(?:[hH][tT][tT][pP][sS]?:)?//([A-Za-z0-9.\-_]+)(?::[0-9]*)?(?=[/?#]|$)")
_RELATIVE_URL = re.compile(rb"(?![/\\]{2})[^:&\\\x00-\x20]*$")
#: Bytes that may hold the start of an end tag: "</noframes" and what follows the name.
_LONGEST_END_TAG = 2 + max(len(n) for n in _RAW_TEXT) + 1

_DATA, _RAW, _DROP, _PLAINTEXT = range(4)


class ElementBlocker:
    """
    The L{ITransform} of one HTML body (see the module docstring).

    @ivar removed: the elements removed so far.
    """

    def __init__(
        self,
        policy: IHostPolicy,
        pageScheme: str,
        encoding: str,
        xhtml: bool = False,
        counters: FilterCounters | None = None,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self._policy = policy
        self._scheme = pageScheme
        self._encoding = encoding
        self._xhtml = xhtml
        self._counters = counters
        self.window = window
        self._buffer = b""
        self._pending: list[bytes] = []  # small pieces not scanned yet (GATHER)
        self._pendingSize = 0
        self._state = _DATA
        self._endTag: re.Pattern[bytes] | None = None
        self._baseHost: str | None = None
        self._baseSeen = False
        self._verdicts: dict[str, bool] = {}
        self.removed = 0

    def feed(self, data: bytes) -> bytes:
        held = self._buffer
        if not held:
            return self._scan(data, False)
        pending = self._pending
        size = self._pendingSize + len(data)
        if len(held) > GATHER_FLOOR and size * GATHER < len(held):
            # a long tag cut off: too little to read it again for, wait for more (GATHER)
            pending.append(data)
            self._pendingSize = size
            return b""
        if pending:
            buffer = b"".join([held, *pending, data])
            pending.clear()
            self._pendingSize = 0
        else:
            buffer = held + data
        return self._scan(buffer, False)

    def finish(self) -> bytes:
        buffer = b"".join([self._buffer, *self._pending])
        self._buffer = b""
        self._pending.clear()
        self._pendingSize = 0
        return self._scan(buffer, True) if buffer else b""

    def _scan(self, buffer: bytes, final: bool) -> bytes:
        out: list[bytes] = []
        kept = 0  # the start of the bytes passed on as they are, not yet in out
        position = 0
        size = len(buffer)
        while position < size:
            state = self._state
            if state == _DATA:
                found = _NEXT.match(buffer, position)
                assert found is not None  # it matches the empty string
                if found.start(1) < 0:
                    # What is left is no whole tag: something the end of the buffer cuts
                    # off (a tag, a comment ...); each failing match reads to the end.
                    position = found.end()
                    if position >= size:
                        break
                    if final:
                        position = size  # cut off by the end of the body: passed as it is
                        break
                    if size - position > self.window:
                        # too long to wait for: it passes as it is, and only the last
                        # window is searched again (at most two failing matches a piece)
                        position = max(position + 1, size - self.window)
                        continue
                    break  # cut off: wait for the rest
                if not self._tag(buffer, found):
                    out.append(buffer[kept : found.start(1) - 1])
                    kept = found.end()
                position = found.end()
            elif state == _PLAINTEXT:
                position = size
            else:
                assert self._endTag is not None
                match = self._endTag.search(buffer, position)
                if match is None:
                    # No end tag yet: pass on (or drop) all but a "<" that may start one.
                    cut = size
                    if not final:
                        lt = buffer.rfind(b"<", max(position, size - _LONGEST_END_TAG))
                        cut = lt if lt >= 0 else size
                    position = cut
                    if state == _DROP:
                        kept = cut
                    break
                if state == _RAW:
                    position = match.start()  # the end tag is skipped as any other
                    self._state = _DATA
                    continue
                rest = _END_TAG_REST.match(buffer, match.end())
                if rest is not None:
                    position = rest.end()
                elif final:
                    position = size
                elif size - match.start() > self.window:
                    position = match.end()  # an end tag too long to wait for: drop its name
                else:
                    position = match.start()
                    kept = position
                    break
                kept = position
                self._state = _DATA
        self._buffer = buffer[position:] if position < size else b""
        if not out:
            return buffer if kept == 0 and position == size else buffer[kept:position]
        out.append(buffer[kept:position])
        return b"".join(out)

    def _tag(self, buffer: bytes, stop: re.Match[bytes]) -> bool:
        """
        Handle the whole tag that matters found by C{stop} (L{_NEXT}): whether to keep it.
        """
        name = stop.group(1).lower()
        wanted = _CHECKED.get(name)
        if name == b"base" and not self._baseSeen:
            wanted = (b"href",)
        end = stop.end()
        values: dict[bytes, bytes] = {}
        if wanted is not None:
            for _, attribute, double, single, bare in _ATTRIBUTE.findall(buffer, stop.end(1), end):
                if attribute:
                    attribute = attribute.lower()
                    if attribute in wanted and attribute not in values:
                        values[attribute] = double or single or bare
        if name == b"base":
            if b"href" in values:
                self._baseSeen = True
                self._baseHost = urlHost(self._text(values[b"href"]), self._scheme, None)
            return True
        if name == b"plaintext":
            self._state = _PLAINTEXT
            return True
        blocked = bool(values) and self._blocked(values)
        if blocked:
            self.removed += 1
            if self._counters is not None:
                self._counters.add("elements-blocked")
        if name in _RAW_TEXT and not (self._xhtml and buffer[end - 2 : end - 1] == b"/"):
            self._state = _DROP if blocked else _RAW
            self._endTag = _END_TAGS[name]
        return not blocked

    def _text(self, value: bytes) -> str:
        text = value.decode(self._encoding, "surrogateescape")
        return html.unescape(text) if "&" in text else text

    def _blocked(self, values: dict[bytes, bytes]) -> bool:
        for attributeName, value in values.items():
            if attributeName not in _SRCSET:
                plain = _PLAIN_URL.match(value)
                if plain is not None:
                    if self._hostBlocked(plain.group(1).decode("ascii").lower()):
                        return True
                    continue
                if _RELATIVE_URL.match(value) is not None:
                    if self._baseHost is not None and self._hostBlocked(self._baseHost):
                        return True
                    continue
            text = self._text(value)
            urls = srcsetURLs(text) if attributeName in _SRCSET else [text]
            for url in urls:
                host = urlHost(url, self._scheme, self._baseHost)
                if host is not None and self._hostBlocked(host):
                    return True
        return False

    def _hostBlocked(self, host: str) -> bool:
        verdicts = self._verdicts
        verdict = verdicts.get(host)
        if verdict is None:
            if len(verdicts) >= 1024:
                verdicts.clear()
            try:
                name = normaliseHost(host)
            except ValueError:
                verdict = False  # no host a browser could reach: nothing to block
            else:
                verdict = self._policy.check(name) is not None
            verdicts[host] = verdict
        return verdict


class ElementBlockingFilter:
    """
    An L{IResponseFilter} removing blocked elements from the HTML pages of its hosts.
    """

    name = "block-elements"

    def __init__(
        self, policy: IHostPolicy, counters: FilterCounters, window: int = DEFAULT_WINDOW
    ) -> None:
        self.policy = policy
        self.counters = counters
        self.window = window

    def filterHead(self, request: UpstreamRequest, head: ResponseHead) -> None:
        pass

    def transformBody(self, request: UpstreamRequest, head: ResponseHead) -> ElementBlocker | None:
        if head.mediaType not in HTML_TYPES:
            return None
        encoding = codecName(head.charset) if head.charset else "utf-8"
        if encoding not in MARKUP_CODECS:
            return None  # not an encoding in which markup is ASCII
        return ElementBlocker(
            self.policy,
            request.target.scheme,
            encoding,
            head.mediaType == "application/xhtml+xml",
            self.counters,
            self.window,
        )
