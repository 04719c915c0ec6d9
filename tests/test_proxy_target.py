"""
Tests for L{caplab.proxy.target} and L{caplab.proxy.headers}: request targets and the RFC 9110
header rules, pure functions.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.headers import (
    endToEnd,
    loops,
    maxForwards,
    upstreamRequestHeaders,
    viaValue,
    withMaxForwards,
)
from caplab.proxy.target import TargetError, parseAuthority, parseTarget


class ParseTargetTests(SynchronousTestCase):
    """
    L{parseTarget}: absolute-form request targets.
    """

    def test_http(self) -> None:
        """
        Scheme and host are lower-cased, the default port filled in, the path kept with its
        query and the fragment dropped.
        """
        target = parseTarget(b"HTTP://Example.COM/a/b?c=d#frag")
        self.assertEqual(
            (target.scheme, target.host, target.port, target.path),
            ("http", "example.com", 80, b"/a/b?c=d"),
        )
        self.assertEqual(target.uri, "http://example.com/a/b?c=d")

    def test_portAndEmptyPath(self) -> None:
        """
        An explicit port is kept; an empty path becomes C{/}; a query without path works.
        """
        self.assertEqual(parseTarget(b"http://h:8080").path, b"/")
        self.assertEqual(parseTarget(b"http://h:8080").port, 8080)
        self.assertEqual(parseTarget(b"http://h?x=1").path, b"/?x=1")

    def test_https(self) -> None:
        """
        https targets default to port 443.
        """
        target = parseTarget(b"https://h/")
        self.assertEqual((target.scheme, target.port, target.authority), ("https", 443, "h"))

    def test_ipv6(self) -> None:
        """
        IPv6 literals lose their brackets in the host and get them back in the authority.
        """
        target = parseTarget(b"http://[::1]:8000/x")
        self.assertEqual((target.host, target.port), ("::1", 8000))
        self.assertEqual(target.authority, "[::1]:8000")
        self.assertEqual(parseTarget(b"http://[2001:DB8::1]/").host, "2001:db8::1")

    def test_idna(self) -> None:
        """
        International host names are IDNA-encoded (A-labels), as DNS needs them.
        """
        self.assertEqual(
            parseTarget("http://bücher.example/".encode()).host, "xn--bcher-kva.example"
        )

    def test_unsupportedScheme501(self) -> None:
        """
        Schemes other than http and https are 501.
        """
        for uri in (b"ftp://h/f", b"file:///etc/passwd", b"ws://h/"):
            with self.assertRaises(TargetError) as caught:
                parseTarget(uri)
            self.assertEqual(caught.exception.code, 501)

    def test_malformed400(self) -> None:
        """
        Targets without a host, with a bad port, with user information, or not absolute are
        400.
        """
        for uri in (
            b"http:///x",
            b"http://h:99999/",
            b"http://h:x/",
            b"http://user:pw@h/",
            b"/relative",
            b"http://[::1/",
            b"http://exa mple/",
        ):
            with self.assertRaises(TargetError) as caught:
                parseTarget(uri)
            self.assertEqual(caught.exception.code, 400, uri)

    def test_readAgain(self) -> None:
        """
        A target read again (from the bounded cache of recent targets) reads the same; a
        websocket target with the same bytes still gets its http scheme, and a refused target
        is refused every time, never remembered as good.
        """
        first = parseTarget(b"http://again.example/x")
        self.assertEqual(parseTarget(b"http://again.example/x"), first)
        self.assertEqual(parseTarget(b"ws://again.example/x", websocket=True).scheme, "http")
        long = b"http://again.example/" + b"a" * 1000
        self.assertEqual(parseTarget(long).path, b"/" + b"a" * 1000)
        for _ in range(2):
            with self.assertRaises(TargetError):
                parseTarget(b"http://user@again.example/")


class ParseAuthorityTests(SynchronousTestCase):
    """
    L{parseAuthority}: CONNECT targets.
    """

    def test_hostPort(self) -> None:
        """
        C{host:port}, IPv6 bracketed, with the port required.
        """
        self.assertEqual(parseAuthority(b"Example.com:443"), ("example.com", 443))
        self.assertEqual(parseAuthority(b"[::1]:8443"), ("::1", 8443))
        for bad in (b"example.com", b"[::1]", b"example.com:", b":443"):
            self.assertRaises(TargetError, parseAuthority, bad)


class HeaderRuleTests(SynchronousTestCase):
    """
    L{caplab.proxy.headers}.
    """

    def test_endToEnd(self) -> None:
        """
        Every hop-by-hop field and every field C{Connection} names is dropped; the rest keep
        their order and repetitions.
        """
        fields = [
            (b"Connection", b"close, X-Secret"),
            (b"X-Secret", b"1"),
            (b"Keep-Alive", b"5"),
            (b"Set-Cookie", b"a"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Set-Cookie", b"b"),
            (b"Upgrade", b"h2c"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Proxy-Authentication-Info", b'nextnonce="n"'),
            (b"Trailer", b"X"),
        ]
        self.assertEqual(endToEnd(fields), [(b"Set-Cookie", b"a"), (b"Set-Cookie", b"b")])
        # Options that name only hop-by-hop fields, and fields of their names' lengths.
        fields = [
            (b"Connection", b"keep-alive, TE"),
            (b"KEEP-ALIVE", b"timeout=5"),
            (b"X-Ten-Char", b"kept"),
            (b"te", b"trailers"),
            (b"X-A", b"kept"),
        ]
        kept = [(b"X-Ten-Char", b"kept"), (b"X-A", b"kept")]
        self.assertEqual(endToEnd(fields), kept)
        self.assertEqual(endToEnd(fields, [b"keep-alive", b"te"]), kept)
        self.assertEqual(endToEnd(fields, [b"keep-alive", b"x-a"]), kept[:1])

    def test_upstreamRequestHeaders(self) -> None:
        """
        Host is replaced by the target's authority, framing and Expect are left to the
        forwarder, C{Via} extends an existing one, credentials for the proxy are dropped.
        """
        fields = [
            (b"Host", b"wrong"),
            (b"Accept", b"a"),
            (b"Via", b"1.0 other"),
            (b"Proxy-Authorization", b"Basic x"),
            (b"Content-Length", b"5"),
            (b"Expect", b"100-continue"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"Accept", b"b"),
        ]
        self.assertEqual(
            upstreamRequestHeaders(fields, b"h:81", b"1.1 me"),
            [
                (b"Host", b"h:81"),
                (b"Accept", b"a"),
                (b"Accept", b"b"),
                (b"Via", b"1.0 other, 1.1 me"),
            ],
        )

    def test_xForwardedFor(self) -> None:
        """
        With a client address, C{X-Forwarded-For} is extended with it.
        """
        headers = upstreamRequestHeaders(
            [(b"X-Forwarded-For", b"10.0.0.1")], b"h", b"1.1 me", forwardedFor=b"127.0.0.1"
        )
        self.assertIn((b"X-Forwarded-For", b"10.0.0.1, 127.0.0.1"), headers)
        self.assertNotIn(
            b"X-Forwarded-For", [n for n, _ in upstreamRequestHeaders([], b"h", b"1.1 me")]
        )

    def test_via(self) -> None:
        """
        C{Via} entries name the protocol version received and this proxy.
        """
        self.assertEqual(viaValue(b"HTTP/1.0", b"caplab-1"), b"1.0 caplab-1")

    def test_maxForwards(self) -> None:
        """
        C{Max-Forwards} is read as a number (absent or garbage: None) and replaced.
        """
        self.assertEqual(maxForwards([(b"max-forwards", b" 3 ")]), 3)
        self.assertIsNone(maxForwards([(b"Max-Forwards", b"x")]))
        self.assertIsNone(maxForwards([]))
        self.assertEqual(maxForwards([(b"Max-Forwards", b"0" * 5000 + b"7")]), 7)
        self.assertEqual(maxForwards([(b"Max-Forwards", b"9" * 5000)]), 2**31 - 1)
        self.assertEqual(maxForwards([(b"Max-Forwards", b"99999999999")]), 2**31 - 1)
        self.assertEqual(
            withMaxForwards([(b"Max-Forwards", b"3"), (b"A", b"b")], 2),
            [(b"A", b"b"), (b"Max-Forwards", b"2")],
        )

    def test_loops(self) -> None:
        """
        A C{Via} value naming this proxy's pseudonym is a loop (in any of the fields); a
        longer name containing it is not.
        """
        self.assertTrue(loops([b"1.0 a, 1.1 caplab-7"], b"caplab-7"))
        self.assertTrue(loops([b"1.0 a", b"1.1 caplab-7"], b"caplab-7"))
        self.assertFalse(loops([b"1.1 caplab-77"], b"caplab-7"))
        self.assertFalse(loops([], b"caplab-7"))
