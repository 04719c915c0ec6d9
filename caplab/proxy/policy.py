"""
Destination block and allow lists: which hosts the proxy may reach.

The lists' syntax (domains, C{*.} wildcards, hosts-file lines, addresses and networks,
Adblock filter-list rules) is read by L{caplab.proxy.listfile}; this module keeps the rules
for lookup and decides.

Host names are matched case-insensitively and IDNA-normalised (C{bücher.example} and
C{xn--bcher-kva.example} are the same rule), looking up each suffix of the host in a dict:
O(labels) whatever the size of the lists.  Addresses are matched in every spelling a
resolver accepts (C{127.1}, C{0x7f000001}, C{[::ffff:127.0.0.1]}: see
L{caplab.proxy.addresses}); the unspecified addresses (C{0.0.0.0}, C{[::]}), which reach the
proxy's own machine, are held to the rules of the loopback address they count as; and
L{HostPolicy.checkAddress} checks the addresses a name resolves to, before the proxy
connects (L{caplab.proxy.connect}).  An allow rule wins over every block rule; with
C{--default-deny} a host that no allow rule names is blocked.

This module is pure: no I/O besides reading the list files, no reactor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from caplab.proxy import listfile
from caplab.proxy.addresses import IPAddress, NetworkTable, loopbackFor, parseAddress
from caplab.proxy.hooks import Verdict
from caplab.proxy.hostnames import normaliseHost, normaliseName
from caplab.proxy.listfile import PolicyFileError, readRules

__all__ = [
    "DEFAULT_DENY",
    "FileSummary",
    "HostList",
    "HostPolicy",
    "PolicyFileError",
    "ReloadableHostPolicy",
    "normaliseHost",
    "normaliseName",
]

#: The rule and source of the verdict for a host no allow rule names under --default-deny.
DEFAULT_DENY = Verdict(rule="--default-deny", source="not in any --allow-list")


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
        Add the rules in C{lines} (see L{caplab.proxy.listfile}), which come from C{source}
        (a file name, for messages).

        @raise PolicyFileError: a line is not a rule; C{self} is then partly filled and
            should be thrown away.
        """
        index = len(self._sources)
        self._sources.append(source)
        summary = FileSummary(source)
        self.files.append(summary)
        tables = {
            listfile.DOMAIN: self._domains,
            listfile.WILDCARD: self._wildcards,
            listfile.EXEMPT: self._exceptions,
        }
        networks = {
            listfile.NETWORK: self._networks,
            listfile.EXEMPT_NETWORK: self._exemptNetworks,
        }
        skipped = summary.skipped
        rules = 0
        for kind, value, number in readRules(lines, source):
            table = tables.get(kind)
            if table is not None:
                table.setdefault(value, (index, number))
            elif kind == listfile.SKIP:
                skipped[value] += 1
                continue
            else:
                networks[kind].add(value, (index, number))
            rules += 1
        summary.rules = rules

    def addFile(self, path: str) -> None:
        """
        Add the rules in the file at C{path}, UTF-8 text (a byte order mark at its start,
        which Windows editors write, is not part of the first line).

        @raise PolicyFileError: it cannot be read or has a line that is not a rule.
        """
        try:
            with open(path, encoding="utf-8-sig") as f:
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
        if not (self._domains or self._wildcards or self._networks):
            return None  # no rules (most allow lists): the common case, answered at once
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

        An unspecified address (C{0.0.0.0}, C{::}), which a connection delivers to the
        machine itself, is held to the rules of the loopback address it counts as
        (L{loopbackFor}) when no rule names it; the verdict's source says so.
        """
        if not self._networks:
            return None
        if self._exemptNetworks.lookup(address) is not None:
            return None
        found = self._networks.lookup(address)
        if found is not None:
            return self._verdict(*found)
        loopback = loopbackFor(address)
        if loopback is None:
            return None
        verdict = self.matchAddress(loopback)
        if verdict is None:
            return None
        return Verdict(
            rule=verdict.rule,
            source=f"{verdict.source}; {address} reaches this machine, so the rules for "
            f"{loopback} hold for it",
        )

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
