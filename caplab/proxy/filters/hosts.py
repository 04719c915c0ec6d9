"""
Which hosts a filter applies to: host patterns in the block-list syntax.

A pattern is C{example.com} (that domain and its subdomains), C{*.example.com} (the
subdomains only), an IP address, or C{*} (every host).  Several are separated by commas:
C{example.com,*.example.org}.  Matching reuses L{caplab.proxy.policy.HostList}: one dict
lookup per label of the host, whatever the number of patterns.
"""

from __future__ import annotations

from collections.abc import Iterable

from caplab.proxy.policy import HostList, PolicyFileError, normaliseHost, normaliseName


class FilterConfigError(ValueError):
    """
    A filter's configuration cannot be used; the message says what and where (the option
    or key and the text), in one line.
    """


class HostSelector:
    """
    The hosts one filter applies to.

    @ivar everything: True if the filter applies to every host (C{*}).
    @ivar patterns: the patterns as given, for messages.
    """

    def __init__(self, patterns: Iterable[str], source: str = "filter") -> None:
        """
        @raise FilterConfigError: a pattern is not one.
        """
        self.patterns = list(patterns)
        if not self.patterns:
            raise FilterConfigError(f"{source}: no host pattern given")
        self.everything = False
        self._hosts = HostList()
        rules = []
        for pattern in self.patterns:
            if pattern == "*":
                self.everything = True
                continue
            try:
                if pattern.startswith("*."):
                    normaliseName(pattern[2:])
                else:
                    normaliseHost(pattern)
            except ValueError as e:
                raise FilterConfigError(
                    f"{source}: {pattern!r} is not a host pattern (write example.com, "
                    f"*.example.com, an IP address, or * for every host): {e}"
                ) from None
            rules.append(pattern)
        try:
            self._hosts.addLines(rules, source)
        except PolicyFileError as e:  # pragma: no cover - the checks above catch it first
            raise FilterConfigError(str(e)) from None

    @classmethod
    def parse(cls, text: str, source: str = "filter") -> HostSelector:
        """
        The selector of C{text}: patterns separated by commas (C{example.com,*.example.org}).

        @raise FilterConfigError: C{text} holds no pattern or one that is not.
        """
        patterns = [p.strip() for p in text.split(",")]
        if any(not p for p in patterns):
            raise FilterConfigError(f"{source}: empty host pattern in {text!r}")
        return cls(patterns, source)

    def matches(self, host: str) -> bool:
        """
        Whether the filter applies to C{host} (as in a L{Target}: lower-case, IDNA).
        """
        if self.everything:
            return True
        if not host:
            return False
        return self._hosts.match(host) is not None

    def __repr__(self) -> str:
        return f"HostSelector({','.join(self.patterns)!r})"
