"""
Tests for the encodings a text filter accepts (L{caplab.proxy.filters.text.codecName}): the
labels of the WHATWG Encoding Standard only, never any other Python codec.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.config import buildChain, parseFilterConfig
from caplab.proxy.filters.elements import ElementBlockingFilter
from caplab.proxy.filters.interfaces import ResponseHead
from caplab.proxy.filters.reporting import FilterCounters, filterLog
from caplab.proxy.filters.text import LABELS, TEXT_CODECS, codecName, sniffEncoding
from caplab.proxy.policy import HostList, HostPolicy
from tests.test_filters_support import makeRequest, makeResponse, receive

#: Python codecs that are no WHATWG encoding: bytes-to-bytes and text-to-text ones, and
#: text encodings browsers do not know.
NOT_WHATWG = [
    "rot13",
    "rot_13",
    "uu_codec",
    "uu",
    "base64",
    "hex",
    "zlib",
    "bz2",
    "quopri",
    "idna",
    "punycode",
    "utf-7",
    "raw_unicode_escape",
    "unicode_escape",
    "hz",
    "iso2022_kr",
    "palmos",
    "ptcp154",
    "shift_jisx0213",
    "cp037",
    "latin-1",
    "utf-16",
    "utf-16le",
    "utf-32",
    "replacement",
    "x-user-defined",
    "undefined",
]


class LabelTests(SynchronousTestCase):
    def test_notWhatwg(self) -> None:
        """
        A label that is only a Python codec's name is no encoding: None, never an error.
        """
        for label in NOT_WHATWG:
            self.assertIsNone(codecName(label), label)

    def test_whatwgLabels(self) -> None:
        """
        WHATWG labels, in any case and with surrounding white space, name the codec that
        reads them as browsers do; every one keeps ASCII as ASCII bytes.
        """
        for label, codec in [
            ("utf-8", "utf-8"),
            ("UTF8", "utf-8"),
            (" iso-8859-1 ", "cp1252"),
            ("us-ascii", "cp1252"),
            ("latin1", "cp1252"),
            ("iso-8859-9", "cp1254"),
            ("tis-620", "cp874"),
            ("gbk", "gb18030"),
            ("shift_jis", "cp932"),
            ("euc-kr", "cp949"),
            ("big5", "big5hkscs"),
            ("iso-8859-8-i", "iso8859-8"),
            ("koi8-ru", "koi8-u"),
            ("x-mac-cyrillic", "mac-cyrillic"),
        ]:
            self.assertEqual(codecName(label), codec, label)
        for codec in TEXT_CODECS:
            self.assertEqual("a<\n".encode(codec), b"a<\n", codec)
            self.assertEqual(b"a<\n".decode(codec), "a<\n", codec)
        self.assertEqual(len(set(LABELS)), len(LABELS))

    def test_sniffedLabel(self) -> None:
        """
        A C{<meta charset>} or C{@charset} naming a Python codec that is no WHATWG encoding
        is ignored: UTF-8.
        """
        self.assertEqual(sniffEncoding(b'<meta charset="rot13">', "text/html"), "utf-8")
        self.assertEqual(sniffEncoding(b'<meta charset="utf-7">', "text/html"), "utf-8")
        self.assertEqual(sniffEncoding(b'@charset "base64";', "text/css"), "utf-8")


class UntransformedTests(SynchronousTestCase):
    def test_rewriteLeavesOtherCodecs(self) -> None:
        """
        A body whose charset is a Python codec but no WHATWG encoding passes as it came:
        not transformed, no failure logged.
        """
        filters = buildChain(
            parseFilterConfig({"rewrite": ["* s/hello/HOWDY/g"]}),
            log=filterLog(Clock()),
        )
        body = b"hello +AGg-ello"
        for label in NOT_WHATWG:
            headers = [(b"Content-Type", b"text/plain; charset=" + label.encode())]
            response, _ = makeResponse(headers, [body])
            with capturedLogs() as events:
                filtered = filters.filterResponse(makeRequest(), response)
                got = receive(filtered)
            self.assertIs(filtered, response, label)
            self.assertEqual(got.body, body, label)
            self.assertEqual(list(events), [], label)

    def test_sniffedRewrite(self) -> None:
        """
        A page whose C{<meta charset>} names C{rot13} is read as UTF-8, not cut off.
        """
        filters = buildChain(parseFilterConfig({"rewrite": ["* s/hello/HOWDY/g"]}))
        page = b'<meta charset="rot13"><p>hello</p>'
        response, _ = makeResponse([(b"Content-Type", b"text/html")], [page])
        got = receive(filters.filterResponse(makeRequest(), response))
        self.assertEqual(got.body, page.replace(b"hello", b"HOWDY"))
        self.assertIs(got.done, True)

    def test_elementsNotInIso2022jp(self) -> None:
        """
        The element blocker reads markup from the bytes, so it leaves ISO-2022-JP pages
        alone (their two-byte characters are made of bytes such as C{<}).
        """
        blocked = HostList()
        blocked.addLines(["ads.example"], "blocked")
        blocker = ElementBlockingFilter(HostPolicy(blocked, HostList()), FilterCounters())
        for charset, used in [("iso-2022-jp", False), ("shift_jis", True), ("utf-8", True)]:
            head = ResponseHead(200, b"OK", [], "text/html", charset)
            transform = blocker.transformBody(makeRequest(), head)
            self.assertEqual(transform is not None, used, charset)
