"""
Tests for L{caplab.proxy.policy}: the block/allow list syntax and matcher.
"""

from __future__ import annotations

import os
import tempfile
import time

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.hooks import IHostPolicy, Verdict
from caplab.proxy.policy import (
    DEFAULT_DENY,
    HostList,
    HostPolicy,
    PolicyFileError,
    ReloadableHostPolicy,
    normaliseHost,
    normaliseName,
)

#: Host name labels; each starts with a letter, so no name is an IPv4 address.
labels = st.builds(
    str.__add__,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=9),
)
names = st.lists(labels, min_size=1, max_size=5).map(".".join)


def policyOf(blockText: str = "", allowText: str = "", defaultDeny: bool = False) -> HostPolicy:
    blocked, allowed = HostList(), HostList()
    blocked.addLines(blockText.splitlines(), "block.txt")
    allowed.addLines(allowText.splitlines(), "allow.txt")
    return HostPolicy(blocked, allowed, defaultDeny)


class TempFiles:
    """
    Mixin: write files in a fresh directory removed after the test.
    """

    def writeFile(self, name: str, content: str | bytes) -> str:
        directory = getattr(self, "_directory", None)
        if directory is None:
            directory = self._directory = tempfile.mkdtemp()
            self.addCleanup(_removeTree, directory)  # type: ignore[attr-defined]
        path = os.path.join(directory, name)
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(path, mode) as f:
            f.write(content)
        return path


def _removeTree(directory: str) -> None:
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name))
    os.rmdir(directory)


class DomainRuleTests(SynchronousTestCase):
    """
    A plain domain rule blocks the domain and its subdomains, nothing else.
    """

    @given(rule=names, host=names)
    def test_blocksExactlyDomainAndSubdomains(self, rule: str, host: str) -> None:
        """
        For any rule and host, the host is blocked exactly when it is the rule's domain or
        ends with C{"." + rule}.
        """
        policy = policyOf(rule)
        expected = host == rule or host.endswith("." + rule)
        self.assertEqual(policy.check(host) is not None, expected)

    @given(rule=names, prefix=st.lists(labels, min_size=1, max_size=4).map(".".join))
    def test_subdomainsAlwaysBlocked(self, rule: str, prefix: str) -> None:
        """
        Every subdomain of a blocked domain is blocked, and the verdict names the rule.
        """
        verdict = policyOf(rule).check(f"{prefix}.{rule}")
        self.assertEqual(verdict, Verdict(rule=rule, source="block.txt:1"))

    @given(rule=names, host=names)
    def test_wildcardBlocksExactlySubdomains(self, rule: str, host: str) -> None:
        """
        C{*.rule} blocks a host exactly when it ends with C{"." + rule}.
        """
        policy = policyOf(f"*.{rule}")
        self.assertEqual(policy.check(host) is not None, host.endswith("." + rule))

    @given(
        blocks=st.lists(st.tuples(st.booleans(), names), max_size=6),
        allows=st.lists(st.tuples(st.booleans(), names), max_size=6),
        host=names,
        defaultDeny=st.booleans(),
    )
    def test_sameAsNaiveMatcher(
        self,
        blocks: list[tuple[bool, str]],
        allows: list[tuple[bool, str]],
        host: str,
        defaultDeny: bool,
    ) -> None:
        """
        The suffix-dict matcher decides as a naive scan over every rule would: allowed if
        any allow rule matches, else blocked if any block rule matches or under default
        deny.
        """

        def text(rules: list[tuple[bool, str]]) -> str:
            return "".join(("*." if wild else "") + name + "\n" for wild, name in rules)

        def matches(rules: list[tuple[bool, str]]) -> bool:
            return any(
                host.endswith("." + name) or (not wild and host == name) for wild, name in rules
            )

        policy = policyOf(text(blocks), text(allows), defaultDeny)
        expected = not matches(allows) and (matches(blocks) or defaultDeny)
        self.assertEqual(policy.check(host) is not None, expected)

    def test_notASuffixString(self) -> None:
        """
        C{example.com} does not block C{badexample.com}: matching is by whole labels.
        """
        policy = policyOf("example.com")
        self.assertIsNone(policy.check("badexample.com"))
        self.assertIsNone(policy.check("example.com.evil.net"))
        self.assertIsNotNone(policy.check("example.com"))

    def test_caseAndTrailingDot(self) -> None:
        """
        Rules and hosts are compared case-insensitively, a trailing dot ignored.
        """
        policy = policyOf("Ads.Example.COM.")
        self.assertEqual(policy.check("ADS.example.com"), Verdict("ads.example.com", "block.txt:1"))
        self.assertIsNotNone(policy.check("x.ads.example.com."))

    def test_idna(self) -> None:
        """
        An internationalised rule matches the host in Unicode or A-label form, and the other
        way round.
        """
        policy = policyOf("bücher.example\nxn--mnchen-3ya.example")
        self.assertIsNotNone(policy.check("xn--bcher-kva.example"))
        self.assertIsNotNone(policy.check("www.BÜCHER.example"))
        self.assertIsNotNone(policy.check("münchen.example"))
        self.assertIsNone(policy.check("buecher.example"))

    def test_provides(self) -> None:
        """
        L{HostPolicy} and L{ReloadableHostPolicy} fit the L{IHostPolicy} contract.
        """
        policy: IHostPolicy = policyOf("example.com")
        self.assertIsNotNone(policy.check("example.com"))


class SyntaxTests(SynchronousTestCase):
    """
    The list file syntax: wildcards, hosts-file lines, comments, addresses.
    """

    def test_wildcardSubdomainsOnly(self) -> None:
        """
        C{*.example.com} blocks the subdomains of example.com but not example.com itself.
        """
        policy = policyOf("*.example.com")
        self.assertIsNone(policy.check("example.com"))
        self.assertEqual(policy.check("a.b.example.com"), Verdict("*.example.com", "block.txt:1"))

    def test_hostsFileLines(self) -> None:
        """
        A hosts-file line blocks each name on it; C{localhost} and friends are skipped.
        """
        policy = policyOf(
            "127.0.0.1 localhost\n"
            "::1 ip6-localhost ip6-loopback\n"
            "0.0.0.0 0.0.0.0\n"
            "0.0.0.0 ads.example.com tracker.example.net  # two\n"
        )
        self.assertEqual(policy.check("ads.example.com"), Verdict("ads.example.com", "block.txt:4"))
        self.assertEqual(
            policy.check("tracker.example.net"), Verdict("tracker.example.net", "block.txt:4")
        )
        self.assertIsNone(policy.check("localhost"))
        self.assertIsNone(policy.check("ip6-localhost"))
        self.assertIsNone(policy.check("example.com"))
        self.assertEqual(len(policy.blocked), 2)

    def test_commentsAndBlankLines(self) -> None:
        """
        C{#} starts a comment, on its own line or after a rule; blank lines count for line
        numbers only.
        """
        policy = policyOf("# a list\n\n   \nexample.com # why\n#blocked.example\n")
        self.assertEqual(policy.check("example.com"), Verdict("example.com", "block.txt:4"))
        self.assertIsNone(policy.check("blocked.example"))

    def test_addresses(self) -> None:
        """
        An IP address rule blocks that address exactly, IPv6 in any spelling.
        """
        policy = policyOf("192.0.2.7\n2001:DB8:0::1\n")
        self.assertIsNotNone(policy.check("192.0.2.7"))
        self.assertIsNone(policy.check("192.0.2.70"))
        self.assertIsNone(policy.check("2.7"))
        self.assertIsNotNone(policy.check("2001:db8::1"))
        self.assertIsNotNone(policy.check("[2001:db8::1]"))

    def test_firstRuleForADomainNamesTheVerdict(self) -> None:
        """
        A domain listed twice is reported with its first line.
        """
        policy = policyOf("example.com\nexample.com\n")
        self.assertEqual(policy.check("example.com"), Verdict("example.com", "block.txt:1"))

    def test_mostSpecificRuleNamed(self) -> None:
        """
        When several rules match, the verdict names the most specific one.
        """
        policy = policyOf("example.com\nads.example.com\n")
        self.assertEqual(
            policy.check("x.ads.example.com"), Verdict("ads.example.com", "block.txt:2")
        )

    def test_brokenLines(self) -> None:
        """
        A line that is not a rule is an error naming the file and line.
        """
        for line in [
            "http://example.com/",
            "example.com/path",
            "*example.com",
            "ex ample.com",
            "a..b",
            "x" * 64 + ".com",
            "0.0.0.0 bad/name",
        ]:
            with self.assertRaises(PolicyFileError) as caught:
                policyOf(f"ok.example\n{line}\n")
            self.assertIn("block.txt:2: ", str(caught.exception))

    def test_invalidHostNeverMatchesAllow(self) -> None:
        """
        A host that is not a host name is blocked, even under an allow-all list.
        """
        policy = policyOf(allowText="example.com")
        self.assertEqual(policy.check("bad host"), Verdict("not a valid host name", "caplab"))

    def test_normalise(self) -> None:
        """
        L{normaliseHost} handles names, addresses and bracketed IPv6.
        """
        self.assertEqual(normaliseHost("[::1]"), "::1")
        self.assertEqual(normaliseHost("Example.COM."), "example.com")
        self.assertEqual(normaliseName("ÄÖ.example"), "xn--4ca0b.example")
        self.assertRaises(ValueError, normaliseName, "")
        self.assertRaises(ValueError, normaliseName, "a" * 300)


class PrecedenceTests(SynchronousTestCase):
    """
    Allow rules win over block rules; C{--default-deny} blocks what no allow rule names.
    """

    def test_allowWins(self) -> None:
        """
        An allow rule for a host unblocks it even under a broader or narrower block rule.
        """
        policy = policyOf("example.com\n", "good.example.com\nexample.org\n")
        self.assertIsNone(policy.check("good.example.com"))
        self.assertIsNone(policy.check("x.good.example.com"))
        self.assertIsNotNone(policy.check("bad.example.com"))
        policy = policyOf("ads.example.org", "example.org")
        self.assertIsNone(policy.check("ads.example.org"))

    def test_defaultDeny(self) -> None:
        """
        Under default deny, only allow-listed hosts pass.
        """
        policy = policyOf("", "example.com", defaultDeny=True)
        self.assertIsNone(policy.check("www.example.com"))
        self.assertEqual(policy.check("example.org"), DEFAULT_DENY)

    def test_noListsAllowsAll(self) -> None:
        """
        Without lists every valid host passes.
        """
        self.assertIsNone(policyOf().check("anything.example"))


class FileTests(TempFiles, SynchronousTestCase):
    """
    Loading lists from files, and reloading them.
    """

    def test_fromFiles(self) -> None:
        """
        Rules from several files, each verdict naming its own file and line.
        """
        one = self.writeFile("one.txt", "# first\na.example\n")
        two = self.writeFile("two.txt", "\n\nb.example\n")
        allow = self.writeFile("allow.txt", "ok.a.example\n")
        policy = HostPolicy.fromFiles([one, two], [allow])
        self.assertEqual(policy.check("a.example"), Verdict("a.example", f"{one}:2"))
        self.assertEqual(policy.check("b.example"), Verdict("b.example", f"{two}:3"))
        self.assertIsNone(policy.check("ok.a.example"))

    def test_unreadable(self) -> None:
        """
        A missing file is a L{PolicyFileError} naming it.
        """
        missing = os.path.join(tempfile.gettempdir(), "caplab-no-such-list.txt")
        with self.assertRaises(PolicyFileError) as caught:
            HostPolicy.fromFiles([missing], [])
        self.assertIn(missing, str(caught.exception))
        self.assertIn("cannot read", str(caught.exception))

    def test_notUtf8(self) -> None:
        """
        A file that is not UTF-8 text is a L{PolicyFileError}.
        """
        path = self.writeFile("latin1.txt", "b\xfccher.example\n".encode("latin-1"))
        with self.assertRaises(PolicyFileError) as caught:
            HostPolicy.fromFiles([path], [])
        self.assertIn("not UTF-8", str(caught.exception))

    def test_largeListLoadsFast(self) -> None:
        """
        A 120,000-line list (half hosts-file lines) loads in well under a second of CPU time
        and looks up as fast as a small one.
        """
        lines = []
        for i in range(120_000):
            name = f"host{i}.tracker{i % 977}.example"
            lines.append(f"0.0.0.0 {name}\n" if i % 2 else f"{name}\n")
        path = self.writeFile("big.txt", "".join(lines))
        started = time.process_time()
        policy = HostPolicy.fromFiles([path], [])
        elapsed = time.process_time() - started
        self.assertLess(elapsed, 1.0)
        self.assertEqual(len(policy.blocked), 120_000)
        self.assertEqual(
            policy.check(f"deep.sub.host119999.tracker{119999 % 977}.example"),
            Verdict(f"host119999.tracker{119999 % 977}.example", f"{path}:120000"),
        )
        self.assertIsNone(policy.check("host5.tracker6.example"))

    def test_reload(self) -> None:
        """
        L{ReloadableHostPolicy.reload} reads the files again; when one is broken the old rules
        stay in force.
        """
        path = self.writeFile("list.txt", "a.example\n")
        policy = ReloadableHostPolicy([path], [])
        self.assertIsNotNone(policy.check("a.example"))
        self.writeFile("list.txt", "b.example\n")
        self.assertEqual(policy.reload(), f"block list {path}: 1 rule")
        self.assertIsNone(policy.check("a.example"))
        self.assertIsNotNone(policy.check("b.example"))
        self.writeFile("list.txt", "c.example\nhttp://broken/\n")
        self.assertRaises(PolicyFileError, policy.reload)
        self.assertIsNotNone(policy.check("b.example"))
        self.assertIsNone(policy.check("c.example"))


class AddressSpellingTests(SynchronousTestCase):
    """
    Address rules hold for every spelling of the address a resolver accepts (issue 9).
    """

    def test_blockedInEverySpelling(self) -> None:
        """
        A rule for C{127.0.0.1} blocks C{127.1}, C{2130706433}, C{0x7f000001},
        C{0177.0.0.1}, C{127.000.000.001} and C{[::ffff:127.0.0.1]}, each named canonically.
        """
        from tests.test_policy_addresses import LOOPBACK_SPELLINGS

        policy = policyOf("127.0.0.1\n")
        for spelling in LOOPBACK_SPELLINGS:
            self.assertEqual(normaliseHost(spelling), "127.0.0.1", spelling)
            self.assertEqual(policy.check(spelling), Verdict("127.0.0.1", "block.txt:1"), spelling)

    def test_rulesInAnySpelling(self) -> None:
        """
        A rule may itself be written in any spelling; it is kept canonical.
        """
        policy = policyOf("0x7f000001\n::ffff:10.0.0.1\n")
        self.assertEqual(policy.check("127.0.0.1"), Verdict("127.0.0.1", "block.txt:1"))
        self.assertEqual(policy.check("10.0.0.1"), Verdict("10.0.0.1", "block.txt:2"))

    def test_namesEndingInDigitsStayNames(self) -> None:
        """
        A name whose labels end in digits is still matched as a name.
        """
        policy = policyOf("host1.example\n")
        self.assertIsNotNone(policy.check("www.host1.example"))
        self.assertEqual(normaliseHost("cafe.babe"), "cafe.babe")
        self.assertEqual(normaliseHost("08.0.0.1"), "08.0.0.1")


class NetworkRuleTests(SynchronousTestCase):
    """
    CIDR network rules and the check of resolved addresses.
    """

    def test_networks(self) -> None:
        """
        C{10.0.0.0/8} blocks every address in it, in any spelling; the most specific rule
        names the verdict.
        """
        policy = policyOf("10.0.0.0/8\nfc00::/7\n10.1.0.0/16\n")
        self.assertEqual(policy.check("10.9.9.9"), Verdict("10.0.0.0/8", "block.txt:1"))
        self.assertEqual(policy.check("0x0a010203"), Verdict("10.1.0.0/16", "block.txt:3"))
        self.assertEqual(policy.check("[fd00::1]"), Verdict("fc00::/7", "block.txt:2"))
        self.assertIsNone(policy.check("11.0.0.1"))
        self.assertIsNone(policy.check("10.example"))

    def test_badNetwork(self) -> None:
        """
        A network with host bits set or a bad length is an error naming file and line.
        """
        for line in ["10.0.0.1/8", "10.0.0.0/40", "example.com/8"]:
            with self.assertRaises(PolicyFileError) as caught:
                policyOf(f"ok.example\n{line}\n")
            self.assertIn("block.txt:2: ", str(caught.exception))

    def test_checkAddress(self) -> None:
        """
        L{HostPolicy.checkAddress} applies address and network rules to an address a name
        resolved to, IPv4-mapped IPv6 as IPv4; an address allow rule wins; name rules and
        C{--default-deny} (which the name has passed already) do not apply.
        """
        policy = policyOf(
            "127.0.0.0/8\n10.0.0.0/8\nblocked.example\n",
            "10.1.2.3\nintranet.example\n",
            defaultDeny=True,
        )
        self.assertEqual(policy.checkAddress("127.0.0.1"), Verdict("127.0.0.0/8", "block.txt:1"))
        self.assertEqual(
            policy.checkAddress("::ffff:127.0.0.5"), Verdict("127.0.0.0/8", "block.txt:1")
        )
        self.assertIsNone(policy.checkAddress("10.1.2.3"))
        self.assertIsNotNone(policy.checkAddress("10.1.2.4"))
        self.assertIsNone(policy.checkAddress("192.0.2.1"))
        self.assertEqual(policy.checkAddress("nonsense"), Verdict("not an IP address", "caplab"))

    def test_unspecifiedIsLoopback(self) -> None:
        """
        The unspecified addresses (C{0.0.0.0/8}, C{::}, and their IPv4-mapped forms), which a
        connection delivers to the proxy's own machine, are held to the rules of the loopback
        address they count as, in L{HostPolicy.check} and L{HostPolicy.checkAddress} alike;
        the verdict says so.
        """
        policy = policyOf("127.0.0.0/8\n::1\n")
        v4 = Verdict(
            "127.0.0.0/8",
            "block.txt:1; 0.0.0.0 reaches this machine, so the rules for 127.0.0.1 hold for it",
        )
        v6 = Verdict(
            "::1", "block.txt:2; :: reaches this machine, so the rules for ::1 hold for it"
        )
        for spelling in ["0.0.0.0", "0", "[::ffff:0.0.0.0]"]:
            self.assertEqual(policy.check(spelling), v4, spelling)
            self.assertEqual(policy.checkAddress(spelling), v4, spelling)
        for spelling in ["[::]", "[0:0:0:0:0:0:0:0]"]:
            self.assertEqual(policy.check(spelling), v6, spelling)
            self.assertEqual(policy.checkAddress(spelling), v6, spelling)
        self.assertIsNotNone(policy.checkAddress("0.1.2.3"))

    def test_unspecifiedOwnRulesFirst(self) -> None:
        """
        A rule naming an unspecified address itself is the verdict; an allow rule for the
        loopback address lets the unspecified one through too; without any loopback rule it
        is not blocked.
        """
        self.assertEqual(
            policyOf("127.0.0.1\n0.0.0.0\n").check("0"), Verdict("0.0.0.0", "block.txt:2")
        )
        self.assertIsNone(policyOf("127.0.0.0/8\n", "127.0.0.1\n").checkAddress("0.0.0.0"))
        self.assertIsNone(policyOf("10.0.0.0/8\n").check("0.0.0.0"))

    def test_summary(self) -> None:
        """
        The summary names each file with its rule count, and the default-deny mode.
        """
        self.assertEqual(
            policyOf().summary(), "block list block.txt: 0 rules; allow list allow.txt: 0 rules"
        )
        self.assertEqual(
            policyOf("a.example\nb.example\n", "c.example\n", defaultDeny=True).summary(),
            "block list block.txt: 2 rules; allow list allow.txt: 1 rule; --default-deny: only "
            "allowed hosts",
        )
        self.assertEqual(HostPolicy(HostList(), HostList()).summary(), "no block or allow lists")
