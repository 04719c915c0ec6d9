"""
Destination block and allow lists: which hosts the proxy may reach.

One rule a line, in files given with C{--block-list} and C{--allow-list}:

    - C{example.com}: that domain and every subdomain of it;
    - C{*.example.com}: the subdomains only, not C{example.com} itself;
    - C{0.0.0.0 ads.example.com tracker.example.net}: a hosts-file line, as published block
      lists use; each name is a rule like C{example.com} (C{localhost} and friends, which such
      lists carry for the machine's own sake, are skipped);
    - C{192.0.2.7} or C{2001:db8::1}: that address exactly;
    - C{#} starts a comment, blank lines are ignored.

Matching is by host name, case-insensitive and IDNA-normalised (C{bücher.example} and
C{xn--bcher-kva.example} are the same rule), and looks up each suffix of the host in a dict:
O(labels) whatever the size of the lists.  An allow rule wins over every block rule; with
C{--default-deny} a host that no allow rule names is blocked.

This module is pure: no I/O besides reading the list files, no reactor.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import idna

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
_IPV4_LIKE = re.compile(r"[0-9.]+")

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


def _ipAddress(text: str) -> str | None:
    """
    The canonical text of IP address C{text} (brackets, zone index dropped), or None.
    """
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" not in text and not _IPV4_LIKE.fullmatch(text):
        return None  # the common case, a name: no exception raised and caught
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return None


def normaliseHost(host: str) -> str:
    """
    The canonical form of a request's host: an IP address as L{ipaddress} writes it, a name
    as L{normaliseName} does.

    @raise ValueError: C{host} is neither.
    """
    address = _ipAddress(host)
    return address if address is not None else normaliseName(host)


class HostList:
    """
    The rules of one kind (block or allow) from any number of files, for suffix lookup.

    Each rule remembers the file and line it came from; the text of a file name is stored
    once, a rule costs one dict entry.
    """

    def __init__(self) -> None:
        #: name -> (source index, line number): matches the name and its subdomains.
        self._domains: dict[str, tuple[int, int]] = {}
        #: name -> (source index, line number): matches the subdomains only (C{*.name}).
        self._wildcards: dict[str, tuple[int, int]] = {}
        #: addresses -> (source index, line number): exact match only.
        self._addresses: dict[str, tuple[int, int]] = {}
        self._sources: list[str] = []

    def __len__(self) -> int:
        return len(self._domains) + len(self._wildcards) + len(self._addresses)

    def addLines(self, lines: Iterable[str], source: str) -> None:
        """
        Add the rules in C{lines}, which come from C{source} (a file name, for messages).

        @raise PolicyFileError: a line is not a rule; C{self} is then partly filled and
            should be thrown away.
        """
        index = len(self._sources)
        self._sources.append(source)
        domains, addresses = self._domains, self._addresses
        knownAddresses: set[str] = set()
        for number, line in enumerate(lines, 1):
            if "#" in line:
                line = line.split("#", 1)[0]
            fields = line.split()
            if not fields:
                continue
            where = (index, number)
            try:
                if len(fields) == 1:
                    self._addRule(fields[0], where)
                    continue
                if fields[0] not in knownAddresses and _ipAddress(fields[0]) is None:
                    raise ValueError(
                        f"{line.strip()!r} is neither a rule nor a hosts-file line "
                        "(ADDRESS NAME ...)"
                    )
                for name in fields[1:]:
                    if name.lower() in HOSTS_FILE_SKIP:
                        continue
                    address = _ipAddress(name)
                    if address is not None:
                        addresses.setdefault(address, where)
                    else:
                        domains.setdefault(normaliseName(name), where)
            except ValueError as e:
                raise PolicyFileError(f"{source}:{number}: {e}") from None
            if len(fields) > 1:
                knownAddresses.add(fields[0])

    def _addRule(self, text: str, where: tuple[int, int]) -> None:
        if text.startswith("*."):
            self._wildcards.setdefault(normaliseName(text[2:]), where)
            return
        address = _ipAddress(text)
        if address is not None:
            self._addresses.setdefault(address, where)
        elif "*" in text or "/" in text or ":" in text:
            raise ValueError(
                f"{text!r} is not a rule: write a domain (example.com), *.example.com "
                "or an IP address"
            )
        else:
            self._domains.setdefault(normaliseName(text), where)

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
        if host in self._addresses:
            return self._verdict(host, self._addresses[host])
        if ":" in host or (host[-1:].isdigit() and _ipAddress(host) is not None):
            return None
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

    def _verdict(self, rule: str, where: tuple[int, int]) -> Verdict:
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

    def reload(self) -> str:
        """
        Read the files again and use the new rules.

        @return: a summary for the log (C{"12034 block rules, 3 allow rules"}).
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

        @return: a summary for the log.
        """
        self.current = policy
        return self.describe()

    def describe(self) -> str:
        return f"{len(self.current.blocked)} block rules, {len(self.current.allowed)} allow rules"
