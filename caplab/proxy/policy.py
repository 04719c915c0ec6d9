"""
Destination block and allow lists: which hosts the proxy may reach.

One rule a line, in files given with C{--block-list} and C{--allow-list}:

    - C{example.com}: that domain and every subdomain of it;
    - C{*.example.com}: the subdomains only, not C{example.com} itself;
    - C{0.0.0.0 ads.example.com tracker.example.net}: a hosts-file line, as published block
      lists use; each name is a rule like C{example.com} (C{localhost} and friends, which such
      lists carry for the machine's own sake, are skipped);
    - C{192.0.2.7} or C{2001:db8::1}: that address exactly; C{10.0.0.0/8} or C{fc00::/7}:
      every address of that network;
    - the domain rules of Adblock filter lists (C{||ads.example.com^}, see
      L{caplab.proxy.adblock}), so that EasyList-style lists work as published;
    - C{#} starts a comment, blank lines are ignored.

Host names are matched case-insensitively and IDNA-normalised (C{bücher.example} and
C{xn--bcher-kva.example} are the same rule), looking up each suffix of the host in a dict:
O(labels) whatever the size of the lists.  Addresses are matched in every spelling a
resolver accepts (C{127.1}, C{0x7f000001}, C{[::ffff:127.0.0.1]}: see
L{caplab.proxy.addresses}), and L{HostPolicy.checkAddress} checks the addresses a name
resolves to, before the proxy connects (L{caplab.proxy.connect}).  An allow rule wins over
every block rule; with C{--default-deny} a host that no allow rule names is blocked.

This module is pure: no I/O besides reading the list files, no reactor.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import idna

from caplab.proxy import adblock
from caplab.proxy.adblock import (
    isCosmetic,
    isHeaderOrComment,
    parseNetworkRule,
    startsFilterRule,
)
from caplab.proxy.addresses import (
    IPAddress,
    NetworkTable,
    canonicalAddress,
    parseAddress,
    parseNetwork,
)
from caplab.proxy.hooks import Verdict

#: Host names that hosts-file block lists carry for the machine itself, never as blocks.
HOSTS_FILE_SKIP = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "local",
        "broadcasthost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
        "ip6-allhosts",
        "0.0.0.0",
    }
)

_ASCII_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")

#: A name as resolvers look it up: labels that neither start nor end with C{-}, two or more.
_STRICT_NAME = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
)

#: The rule and source of the verdict for a host no allow rule names under --default-deny.
DEFAULT_DENY = Verdict(rule="--default-deny", source="not in any --allow-list")


class PolicyFileError(Exception):
    """
    A block or allow list cannot be used: unreadable, or a line that is not a rule.

    The message names the file and line, e.g. C{blocked.txt:12: 'http://x/' is not a host
    name}.
    """


def normaliseName(name: str) -> str:
    """
    The canonical form of host name C{name}: lower-case ASCII (IDNA A-labels), without a
    trailing dot.

    @raise ValueError: C{name} is not a host name.
    """
    name = name.strip().rstrip(".")
    if name.isascii():
        name = name.lower()
    else:
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as e:
            raise ValueError(f"{name!r} is not a valid international domain name ({e})") from None
    if len(name) > 253 or not _ASCII_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a host name")
    return name


def normaliseHost(host: str) -> str:
    """
    The canonical form of a request's host: an IP address in its canonical text (whatever
    spelling a resolver accepts: C{127.1}, C{0x7f000001} and C{[::ffff:127.0.0.1]} are all
    C{127.0.0.1}), a name as L{normaliseName} writes it.

    @raise ValueError: C{host} is neither.
    """
    address = canonicalAddress(host)
    return address if address is not None else normaliseName(host)


Where = tuple[int, int]


@dataclass
class FileSummary:
    """
    What was read from one list file: how many rules, and how many lines were skipped, by
    why (see L{caplab.proxy.adblock}).
    """

    source: str
    rules: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        """
        One phrase for the log: C{"ads.txt: 12034 rules, 57 skipped (40 cosmetic, 17 path or
        pattern)"}.
        """
        text = f"{self.source}: {self.rules} rule{'' if self.rules == 1 else 's'}"
        total = sum(self.skipped.values())
        if total:
            kinds = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
            text += f", {total} skipped ({kinds})"
        return text


class HostList:
    """
    The rules of one kind (block or allow) from any number of files, for suffix lookup.

    Each rule remembers the file and line it came from; the text of a file name is stored
    once, a rule costs one dict entry.  Exceptions (C{@@||name^} of filter lists) exempt a
    domain and its subdomains from the list's rules.

    @ivar files: what was read from each file, in order.
    """

    def __init__(self) -> None:
        #: name -> where: matches the name and its subdomains.
        self._domains: dict[str, Where] = {}
        #: name -> where: matches the subdomains only (C{*.name}).
        self._wildcards: dict[str, Where] = {}
        #: name -> where: exempts the name and its subdomains.
        self._exceptions: dict[str, Where] = {}
        #: addresses and networks.
        self._networks: NetworkTable[Where] = NetworkTable()
        self._exemptNetworks: NetworkTable[Where] = NetworkTable()
        self._sources: list[str] = []
        self.files: list[FileSummary] = []

    def __len__(self) -> int:
        return len(self._domains) + len(self._wildcards) + len(self._networks)

    def addLines(self, lines: Iterable[str], source: str) -> None:
        """
        Add the rules in C{lines}, which come from C{source} (a file name, for messages).

        A line may be a rule of caplab's syntax, a hosts-file line, or a line of an Adblock
        filter list; once a file shows it is a filter list (a C{[Adblock ...]} header, a
        C{!} comment, a C{||} rule), lines no rule can be made of are skipped and counted,
        not refused.

        @raise PolicyFileError: a line is not a rule; C{self} is then partly filled and
            should be thrown away.
        """
        index = len(self._sources)
        self._sources.append(source)
        summary = FileSummary(source)
        self.files.append(summary)
        skipped = summary.skipped
        filterList = False
        knownAddresses: set[str] = set()
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line:
                continue
            if isCosmetic(line):
                skipped[adblock.COSMETIC] += 1
                filterList = True
                continue
            first = line[0]
            if first == "#":
                continue
            if first in "![" and isHeaderOrComment(line):
                filterList = True
                continue
            where = (index, number)
            try:
                if startsFilterRule(line):
                    filterList = True
                    why = self._addFilterRule(line, where)
                    if why is not None:
                        skipped[why] += 1
                        continue
                else:
                    if "#" in line:
                        line = line.split("#", 1)[0]
                    fields = line.split()
                    if not fields:
                        continue
                    if len(fields) == 1:
                        self._addRule(fields[0], where, filterList)
                    else:
                        if fields[0] not in knownAddresses:
                            if canonicalAddress(fields[0]) is None:
                                raise ValueError(
                                    f"{line.strip()!r} is neither a rule nor a hosts-file line "
                                    "(ADDRESS NAME ...)"
                                )
                            knownAddresses.add(fields[0])
                        summary.rules += self._addHostsLine(fields[1:], where)
                        continue
            except ValueError as e:
                if filterList:
                    skipped[adblock.PATH] += 1
                    continue
                raise PolicyFileError(f"{source}:{number}: {e}") from None
            summary.rules += 1

    def _addHostsLine(self, names: list[str], where: Where) -> int:
        """
        Add the names of a hosts-file line (C{localhost} and friends skipped).

        @return: how many rules were added.
        """
        added = 0
        for name in names:
            if name.lower() in HOSTS_FILE_SKIP:
                continue
            address = parseAddress(name)
            if address is not None:
                self._networks.add(ipaddress.ip_network(address), where)
            else:
                self._domains.setdefault(normaliseName(name), where)
            added += 1
        return added

    def _addRule(self, text: str, where: Where, strict: bool = False) -> None:
        """
        Add the rule C{text} of caplab's syntax.

        @param strict: accept only host names a resolver would look up (no label starting or
            ending with C{-}, no leading or trailing dot, at least two labels): in a filter
            list a bare word is a URL pattern (C{ad.}, C{-banner-}), not a domain.
        @raise ValueError: not a rule.
        """
        if text.startswith("*."):
            self._wildcards.setdefault(normaliseName(text[2:]), where)
            return
        address = parseAddress(text)
        if address is not None:
            self._networks.add(ipaddress.ip_network(address), where)
            return
        network = parseNetwork(text)
        if network is not None:
            self._networks.add(network, where)
        elif "*" in text or "/" in text or ":" in text:
            raise ValueError(
                f"{text!r} is not a rule: write a domain (example.com), *.example.com, "
                "an IP address or a network (10.0.0.0/8)"
            )
        else:
            name = normaliseName(text)
            if strict and (text[-1:] == "." or not _STRICT_NAME.fullmatch(name)):
                raise ValueError(f"{text!r} is a URL pattern, not a domain")
            self._domains.setdefault(name, where)

    def _addFilterRule(self, line: str, where: Where) -> str | None:
        """
        Add the domain rule of filter-list line C{line}, if it has one.

        @return: None if a rule was added, else why the line is skipped.
        @raise ValueError: the rule's name is not a host name.
        """
        parsed = parseNetworkRule(line)
        if isinstance(parsed, str):
            return parsed
        kind, text, exception = parsed
        address = parseAddress(text)
        if address is not None:
            if kind == "wildcard":
                return adblock.PATH
            table = self._exemptNetworks if exception else self._networks
            table.add(ipaddress.ip_network(address), where)
            return None
        name = normaliseName(text)
        if kind == "wildcard":
            if exception:
                return adblock.EXCEPTION
            self._wildcards.setdefault(name, where)
        elif exception:
            self._exceptions.setdefault(name, where)
        else:
            self._domains.setdefault(name, where)
        return None

    def addFile(self, path: str) -> None:
        """
        Add the rules in the file at C{path}.

        @raise PolicyFileError: it cannot be read or has a line that is not a rule.
        """
        try:
            with open(path, encoding="utf-8") as f:
                self.addLines(f, path)
        except OSError as e:
            raise PolicyFileError(f"{path}: cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise PolicyFileError(f"{path}: not UTF-8 text ({e.reason})") from None

    def match(self, host: str) -> Verdict | None:
        """
        The rule that names C{host} (already normalised with L{normaliseHost}), the most
        specific first, or None.
        """
        if ":" in host or host[-1:].isdigit():
            address = parseAddress(host)
            if address is not None:
                return self.matchAddress(address)
        exceptions = self._exceptions
        if exceptions:
            suffix = host
            while True:
                if suffix in exceptions:
                    return None
                dot = suffix.find(".")
                if dot < 0:
                    break
                suffix = suffix[dot + 1 :]
        domains, wildcards = self._domains, self._wildcards
        suffix = host
        first = True
        while True:
            where = domains.get(suffix)
            if where is not None:
                return self._verdict(suffix, where)
            if not first:
                where = wildcards.get(suffix)
                if where is not None:
                    return self._verdict("*." + suffix, where)
            first = False
            dot = suffix.find(".")
            if dot < 0:
                return None
            suffix = suffix[dot + 1 :]

    def matchAddress(self, address: IPAddress) -> Verdict | None:
        """
        The rule (an address or the most specific network) that names C{address}, or None.
        """
        if self._exemptNetworks.lookup(address) is not None:
            return None
        found = self._networks.lookup(address)
        if found is None:
            return None
        return self._verdict(*found)

    def _verdict(self, rule: str, where: Where) -> Verdict:
        index, line = where
        return Verdict(rule=rule, source=f"{self._sources[index]}:{line}")


@dataclass
class HostPolicy:
    """
    An L{IHostPolicy}: blocked unless an allow rule names the host; blocked if a block rule
    names it or, with C{defaultDeny}, if nothing does.
    """

    blocked: HostList
    allowed: HostList
    defaultDeny: bool = False

    @classmethod
    def fromFiles(
        cls, blockFiles: Sequence[str], allowFiles: Sequence[str], defaultDeny: bool = False
    ) -> HostPolicy:
        """
        Load the lists in C{blockFiles} and C{allowFiles}.

        @raise PolicyFileError: a file cannot be read or has a line that is not a rule.
        """
        blocked, allowed = HostList(), HostList()
        for path in blockFiles:
            blocked.addFile(path)
        for path in allowFiles:
            allowed.addFile(path)
        return cls(blocked, allowed, defaultDeny)

    def check(self, host: str) -> Verdict | None:
        """
        None if C{host} may be reached, else the L{Verdict} that blocks it.
        """
        try:
            host = normaliseHost(host)
        except ValueError:
            return Verdict(rule="not a valid host name", source="caplab")
        if self.allowed.match(host) is not None:
            return None
        verdict = self.blocked.match(host)
        if verdict is not None:
            return verdict
        return DEFAULT_DENY if self.defaultDeny else None

    def checkAddress(self, address: str) -> Verdict | None:
        """
        None if the proxy may connect to C{address} (one a name resolved to, in any
        spelling), else the L{Verdict} of the address or network rule that blocks it.

        The name itself has passed L{check} already (that is where C{--default-deny}
        applies); here an address or network allow rule wins over address and network
        block rules, and a name's allow rule does not: a block rule for C{10.0.0.0/8} holds
        for every name that resolves into it, unless an allow rule names the address.
        """
        parsed = parseAddress(address)
        if parsed is None:
            return Verdict(rule="not an IP address", source="caplab")
        if self.allowed.matchAddress(parsed) is not None:
            return None
        return self.blocked.matchAddress(parsed)

    def summary(self) -> str:
        """
        One line for the log: the rules read and skipped, per file.
        """
        parts = [f"block list {f.describe()}" for f in self.blocked.files]
        parts += [f"allow list {f.describe()}" for f in self.allowed.files]
        if self.defaultDeny:
            parts.append("--default-deny: only allowed hosts")
        return "; ".join(parts) if parts else "no block or allow lists"


class ReloadableHostPolicy:
    """
    An L{IHostPolicy} read from files that L{reload} reads again, atomically: the old rules
    stay in force until the new ones are all loaded, and stay if loading fails.
    """

    def __init__(
        self, blockFiles: Sequence[str], allowFiles: Sequence[str], defaultDeny: bool = False
    ) -> None:
        """
        @raise PolicyFileError: a file cannot be read or has a line that is not a rule.
        """
        self.blockFiles = list(blockFiles)
        self.allowFiles = list(allowFiles)
        self.defaultDeny = defaultDeny
        self.current = HostPolicy.fromFiles(self.blockFiles, self.allowFiles, defaultDeny)

    def check(self, host: str) -> Verdict | None:
        return self.current.check(host)

    def checkAddress(self, address: str) -> Verdict | None:
        return self.current.checkAddress(address)

    def reload(self) -> str:
        """
        Read the files again and use the new rules.

        @return: a summary for the log (L{summary}).
        @raise PolicyFileError: a file is unreadable or broken; the old rules stay.
        """
        return self.use(self.load())

    def load(self) -> HostPolicy:
        """
        Read the files (slow for long lists: may run in a thread); change nothing.

        @raise PolicyFileError: a file is unreadable or broken.
        """
        return HostPolicy.fromFiles(self.blockFiles, self.allowFiles, self.defaultDeny)

    def use(self, policy: HostPolicy) -> str:
        """
        Use C{policy} (from L{load}) from now on.

        @return: a summary for the log (L{summary}).
        """
        self.current = policy
        return self.summary()

    def summary(self) -> str:
        """
        One line for the log, at start-up and after a reload: how many rules were read and
        skipped, per file (C{"block list ads.txt: 12034 rules, 57 skipped (40 cosmetic, 17
        path or pattern); allow list ok.txt: 3 rules"}).
        """
        return self.current.summary()
