"""
Tests for Adblock / EasyList filter lists read as block and allow lists
(L{caplab.proxy.adblock} through L{caplab.proxy.policy.HostList}).
"""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy import adblock
from caplab.proxy.hooks import Verdict
from caplab.proxy.hostnames import normaliseHost
from caplab.proxy.listfile import readRules
from caplab.proxy.policy import HostList, HostPolicy, PolicyFileError
from tests.test_policy import TempFiles, policyOf

#: A small filter list in the style of EasyList, with one line of each kind.
EASYLIST = """\
[Adblock Plus 2.0]
! Title: test list
! Expires: 4 days
||ads.example.com^
||tracker.example.net^$third-party
||cdn.example.org^$script,domain=site.example
||*.metrics.example^
||PIXEL.Example.COM^|
||plain.example
||192.0.2.9^
@@||good.ads.example.com^
@@||partner.example.net^$document
||redirected.example^$redirect=noopjs
||cancelled.example^$badfilter
||images.example/banner/
||port.example:8080^
|https://anchored.example/
/banner/*/img^
-ad-banner.
ad.
&ad_type=
example.com##.ad-banner
##.sponsored
example.org#@#.ad
example.net#?#div:has(> .ad)
example.net##+js(nowebrtc)
example.org$$script[data-ad]
bare.example
"""


class FilterListTests(SynchronousTestCase):
    """
    The domain rules of a filter list are kept, everything else skipped and counted.
    """

    def setUp(self) -> None:
        self.blocked = HostList()
        self.blocked.addLines(EASYLIST.splitlines(), "easylist.txt")
        self.policy = HostPolicy(self.blocked, HostList())

    def test_domainRules(self) -> None:
        """
        C{||name^} (with or without C{^}, C{^|}, options) blocks the domain and its
        subdomains; C{||*.name^} the subdomains only; an address rule that address.
        """
        for host, rule, line in [
            ("ads.example.com", "ads.example.com", 4),
            ("x.ads.example.com", "ads.example.com", 4),
            ("tracker.example.net", "tracker.example.net", 5),
            ("cdn.example.org", "cdn.example.org", 6),
            ("a.metrics.example", "*.metrics.example", 7),
            ("pixel.example.com", "pixel.example.com", 8),
            ("plain.example", "plain.example", 9),
            ("192.0.2.9", "192.0.2.9", 10),
            ("bare.example", "bare.example", 28),
        ]:
            self.assertEqual(self.policy.check(host), Verdict(rule, f"easylist.txt:{line}"))
        self.assertIsNone(self.policy.check("metrics.example"))
        self.assertIsNone(self.policy.check("example.com"))

    def test_exceptions(self) -> None:
        """
        C{@@||name^} exempts the name and its subdomains from the list's rules; an exception
        with options is skipped (its options would narrow it), so its host stays blocked.
        """
        self.assertIsNone(self.policy.check("good.ads.example.com"))
        self.assertIsNone(self.policy.check("a.good.ads.example.com"))
        self.assertIsNotNone(self.policy.check("bad.ads.example.com"))

    def test_skipped(self) -> None:
        """
        Non-blocking options, path rules, URL patterns and cosmetic rules are skipped, never
        made into domain rules.
        """
        for host in [
            "redirected.example",
            "cancelled.example",
            "images.example",
            "port.example",
            "anchored.example",
            "ad",
            "ad-banner",
            "example.org",
            "example.net",
        ]:
            self.assertIsNone(self.policy.check(host), host)

    def test_counted(self) -> None:
        """
        The summary says how many rules were read and how many lines skipped, by why.
        """
        [summary] = self.blocked.files
        self.assertEqual(summary.rules, 9)
        self.assertEqual(
            dict(summary.skipped),
            {
                adblock.COSMETIC: 6,
                adblock.PATH: 7,
                adblock.EXCEPTION: 1,
                adblock.MODIFIER: 2,
            },
        )
        self.assertEqual(
            self.policy.summary(),
            "block list easylist.txt: 9 rules, 16 skipped (6 cosmetic, 1 exception with "
            "options, 2 non-blocking, 7 path or pattern)",
        )

    def test_exceptionAcrossFiles(self) -> None:
        """
        An exception in one block list exempts its domain from the rules of every block
        list (as an ad blocker applies it to all of its lists), not from allow lists.
        """
        policy = policyOf("example.com\n! own exceptions\n@@||www.example.com^\n")
        self.assertIsNone(policy.check("www.example.com"))
        self.assertIsNotNone(policy.check("ads.example.com"))
        allowed = policyOf("", "! a\n||example.com^\n@@||www.example.com^\n", defaultDeny=True)
        self.assertIsNone(allowed.check("ads.example.com"))
        self.assertIsNotNone(allowed.check("www.example.com"))

    def test_addressException(self) -> None:
        """
        C{@@||address^} exempts that address.
        """
        policy = policyOf("10.0.0.0/8\n! x\n@@||10.1.2.3^\n")
        self.assertIsNone(policy.checkAddress("10.1.2.3"))
        self.assertIsNotNone(policy.checkAddress("10.1.2.4"))

    def test_hostsLinesStillErrorsOutsideFilterLists(self) -> None:
        """
        Before a file shows it is a filter list, a line that is no rule is still an error;
        in a filter list, such a line is a URL pattern and skipped.
        """
        with self.assertRaises(PolicyFileError):
            policyOf("example.com\n&ad_type=\n")
        policy = policyOf("! list\n&ad_type=\nexample.com\n")
        self.assertEqual(policy.check("example.com"), Verdict("example.com", "block.txt:3"))

    def test_commentsNotCosmetic(self) -> None:
        """
        Hosts-file comments (C{# x}, C{## Section}, C{#####}) are comments, not cosmetic
        rules, and do not make a file a filter list.
        """
        blocked = HostList()
        blocked.addLines(["## Ads", "#####", "# x", "#@ not", "0.0.0.0 a.example # c"], "h")
        [summary] = blocked.files
        self.assertEqual((summary.rules, sum(summary.skipped.values())), (1, 0))
        with self.assertRaises(PolicyFileError):
            blocked.addLines(["## Ads", "&x="], "h2")

    def test_hashLinesNeverMakeAFilterList(self) -> None:
        """
        A line starting with C{#} is a comment, whatever follows (C{##Ads}, C{##.ad},
        C{#@#x}, C{#?#x}): it never makes a plain list a filter list, whose broken lines
        would then be skipped unseen.  In a filter list, such a line is counted as the
        generic cosmetic rule it is.
        """
        for comment in ["##Ads", "##----", "##.ad", "#@#.x", "#?#.x", "#$#x", "#%#x"]:
            blocked = HostList()
            blocked.addLines([comment, "a.example"], "plain")
            [summary] = blocked.files
            self.assertEqual((summary.rules, dict(summary.skipped)), (1, {}), comment)
            with self.assertRaises(PolicyFileError) as caught:
                HostList().addLines([comment, "a.example", "&x="], "plain")
            self.assertIn("plain:3: ", str(caught.exception))
        blocked = HostList()
        blocked.addLines(["! list", "##.ad", "||a.example^"], "filters")
        self.assertEqual(dict(blocked.files[0].skipped), {adblock.COSMETIC: 1})

    def test_evidenceOfAFilterList(self) -> None:
        """
        What makes a file a filter list: an C{[Adblock ...]} header, a C{!} comment, a
        C{||} or C{@@} rule, or a cosmetic rule with a domain before its C{##}; a line
        that merely holds C{^}, C{$} or a C{|} does not (it is skipped as a pattern, and
        the file stays a plain list).
        """
        for evidence in [
            "[Adblock Plus 2.0]",
            "! Title",
            "||a.example^",
            "@@||a.example^",
            "a.example##.ad",
            "a.example#@#.ad",
            "a.example$$script",
        ]:
            rules = list(readRules([evidence, "&x="], "f"))
            self.assertEqual(rules[-1], ("skip", adblock.PATH, 2), evidence)
        for notEvidence in ["example.com^", "|https://a.example/", "/ads/*^", "a$b"]:
            with self.assertRaises(PolicyFileError, msg=notEvidence) as caught:
                list(readRules([notEvidence, "&x="], "f"))
            self.assertIn("f:2: ", str(caught.exception))


class ParseTests(SynchronousTestCase):
    """
    L{adblock.parseNetworkRule} and L{adblock.isCosmetic} on their own.
    """

    def test_parse(self) -> None:
        for line, expected in [
            ("||a.example^", ("domain", "a.example", False)),
            ("||a.example", ("domain", "a.example", False)),
            ("||a.example|", ("domain", "a.example", False)),
            ("||a.example^$important", ("domain", "a.example", False)),
            ("||a.example^$~third-party", ("domain", "a.example", False)),
            ("@@||a.example^", ("domain", "a.example", True)),
            ("||*.a.example^", ("wildcard", "a.example", False)),
            ("@@||a.example^$image", adblock.EXCEPTION),
            ("||a.example^$removeparam=utm", adblock.MODIFIER),
            ("||a.example^$BadFilter", adblock.MODIFIER),
            ("||a.example/x", adblock.PATH),
            ("||a.example^*.js", adblock.PATH),
            ("||a*.example^", adblock.PATH),
            ("|http://a.example", adblock.PATH),
            ("/ads/", adblock.PATH),
        ]:
            self.assertEqual(adblock.parseNetworkRule(line), expected, line)

    def test_cosmetic(self) -> None:
        for line in ["##.ad", "a.example##.ad", "a,b.example#@#.ad", "a.example#$#x", "#?#.x"]:
            self.assertTrue(adblock.isCosmetic(line), line)
        for line in ["## Heading", "#####", "# comment", "a.example # c", "||a.example^$x"]:
            self.assertFalse(adblock.isCosmetic(line), line)


class AnyInputTests(SynchronousTestCase):
    """
    Whatever a list file holds, reading it gives rules, skipped lines or a
    L{PolicyFileError} naming the file and line: never another exception.
    """

    @given(
        lines=st.lists(st.text(alphabet="|@$^#!*./:-_=,~[] abcAB019\t", max_size=30), max_size=8),
        filterList=st.booleans(),
    )
    def test_neverCrashes(self, lines: list[str], filterList: bool) -> None:
        if filterList:
            lines = ["! a filter list", *lines]
        try:
            rules = list(readRules(lines, "list.txt"))
        except PolicyFileError as e:
            self.assertFalse(filterList)
            self.assertRegex(str(e), r"^list\.txt:\d+: ")
            return
        kinds = {kind for kind, _, _ in rules}
        self.assertLessEqual(
            kinds, {"domain", "wildcard", "exempt", "network", "exempt network", "skip"}
        )
        blocked = HostList()
        blocked.addLines(lines, "list.txt")
        policy = HostPolicy(blocked, HostList())
        if not kinds & {"exempt", "exempt network"}:
            for kind, value, number in rules:
                if kind == "domain":
                    self.assertIsNotNone(policy.check(value), (value, number))


class LargeFilterListTests(TempFiles, SynchronousTestCase):
    """
    A published list's size loads fast.
    """

    def test_loadsFast(self) -> None:
        """
        A 100,000-line filter list (domain rules with and without options, exceptions,
        cosmetic rules) loads in well under a second of CPU time.
        """
        lines = ["[Adblock Plus 2.0]\n", "! big\n"]
        for i in range(100_000):
            kind = i % 10
            name = f"host{i}.tracker{i % 977}.example"
            if kind < 6:
                lines.append(f"||{name}^\n")
            elif kind < 8:
                lines.append(f"||{name}^$third-party\n")
            elif kind == 8:
                lines.append(f"{name}##.ad-{i}\n")
            else:
                lines.append(f"@@||ok.{name}^\n")
        path = self.writeFile("big.txt", "".join(lines))
        started = time.process_time()
        policy = HostPolicy.fromFiles([path], [])
        elapsed = time.process_time() - started
        self.assertLess(elapsed, 1.0)
        [summary] = policy.blocked.files
        self.assertEqual(summary.rules, 90_000)
        self.assertEqual(summary.skipped[adblock.COSMETIC], 10_000)
        self.assertIsNotNone(policy.check("deep.host7.tracker7.example"))
        self.assertIsNone(policy.check("ok.host9.tracker9.example"))


class NormalisedAddressTests(SynchronousTestCase):
    """
    A name that is an address once normalised (C{0..} is C{0}, which resolvers read as
    0.0.0.0) is that address, in lists and in requests alike.
    """

    def test_listLineIsAnAddress(self) -> None:
        self.assertEqual(
            [kind for kind, _, _ in readRules(["0..", "127.0.0.1.", "ads.example."], "l")],
            ["network", "network", "domain"],
        )
        blocked = HostList()
        blocked.addLines(["0.."], "l")
        policy = HostPolicy(blocked, HostList())
        for host in ["0..", "0", "0.0.0.0"]:
            self.assertIsNotNone(policy.check(host), host)

    def test_normaliseHostIsIdempotent(self) -> None:
        for host in ["0..", "127.1.", "0x7f.1", "Ads.Example.", "[::ffff:127.0.0.1]"]:
            once = normaliseHost(host)
            self.assertEqual(normaliseHost(once), once, host)
        self.assertEqual(normaliseHost("0.."), "0.0.0.0")
