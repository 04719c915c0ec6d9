"""
Reading the configuration again on C{SIGHUP} (C{--config} and the command line): what can
change without a restart is put in force, the rest is logged as needing one and the old value
stays; a bad file keeps the whole old configuration.

Everything that can fail is done by L{ConfigReload.load}, in a thread: parsing the options,
reading the lists and the auth file they newly name, building the filters they newly ask
for.  L{ConfigReload.use} only swaps in what was loaded, so a reload is all or nothing: a
missing auth file, say, keeps the old options, networks and authentication alike, and the
next reload compares against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from caplab.config import changedOptions
from caplab.proxy.auth import HtpasswdAuthenticator, PasswordHash, loadHtpasswd
from caplab.proxy.filters import FilterChain
from caplab.proxy.filters.options import FILTER_OPTIONS, anyFilter
from caplab.proxy.policy import HostPolicy, PolicyFileError
from caplab.wiring import Parts, hasLists

log = Logger(namespace="caplab.reconfigure")


#: Options a reload puts in force; any other change needs a restart.
RELOADABLE = (
    "block-list",
    "allow-list",
    "default-deny",
    "auth-file",
    "allow",
    "connect-ports",
    "x-forwarded-for",
    "pac-bypass",
    "access-log",
    "trace",
    *FILTER_OPTIONS,
)

#: The options of the block/allow lists.
LIST_OPTIONS = frozenset({"block-list", "allow-list", "default-deny"})


@dataclass
class LoadedConfig:
    """
    What L{ConfigReload.load} read, for L{ConfigReload.use} to put in force.

    @ivar options: the new options.
    @ivar reloadable: the changed options a reload puts in force.
    @ivar restart: the changed options that need a restart (their old values stay).
    @ivar lists: the new block/allow lists, if their options changed.
    @ivar authenticator: a new authenticator, if there was none and an auth file is named.
    @ivar users: the users of a newly named auth file, for the authenticator in force.
    @ivar filters: the new filter chain, if the filters' options changed.
    """

    options: Any
    reloadable: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    lists: HostPolicy | None = None
    authenticator: HtpasswdAuthenticator | None = None
    users: dict[str, PasswordHash] | None = None
    filters: FilterChain | None = None


class ConfigReload:
    """
    Reads the C{--config} file and the command line again, with every file the new options
    name (L{load}, in a thread), and puts what may change without a restart in force
    (L{use}); the log says which changed options need a restart.  A bad file keeps the
    whole old configuration.
    """

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def load(self) -> LoadedConfig:
        """
        Parse the options again and read what they newly name; change nothing.

        @raise UsageError: the options are bad.
        @raise PolicyFileError: a new list cannot be used.
        @raise AuthFileError: a new auth file cannot be used.
        @raise FilterConfigError: the new filters cannot be built.
        """
        parts = self.parts
        old = parts.options
        fresh = type(old)()
        fresh.parseOptions(list(old.argv))
        changed = changedOptions(old, fresh, sorted(set(old) | set(fresh)))
        loaded = LoadedConfig(fresh)
        loaded.reloadable = [name for name in changed if name in RELOADABLE]
        loaded.restart = [name for name in changed if name not in RELOADABLE]
        # Adding or removing a log file needs the service that writes it: a restart.
        for name, current in (("access-log", parts.accessLog), ("trace", parts.tracer)):
            if name in loaded.reloadable and (
                current is None or not fresh[name] or fresh[name] == "-"
            ):
                loaded.reloadable.remove(name)
                loaded.restart.append(name)
        proxy = parts.proxy
        if proxy is None:
            return loaded
        reloadable = set(loaded.reloadable)
        if reloadable & LIST_OPTIONS:
            loaded.lists = loadLists(fresh)
        if "auth-file" in reloadable and fresh["auth-file"]:
            if parts.policy.authenticator is None:
                # It reads its file when it is made.
                loaded.authenticator = HtpasswdAuthenticator(
                    fresh["auth-file"], reactor=parts.reactor
                )
            else:
                loaded.users = loadHtpasswd(fresh["auth-file"])
        if reloadable & set(FILTER_OPTIONS) and anyFilter(fresh) and proxy.chainFor is not None:
            loaded.filters = proxy.chainFor(fresh)
        return loaded

    def use(self, loaded: LoadedConfig) -> str:
        """
        Put what L{load} read in force: nothing here reads a file or can fail.
        """
        parts = self.parts
        old, fresh = parts.options, loaded.options
        for name in loaded.restart:
            fresh[name] = old.get(name)  # keep what is in force until the restart
        policy = parts.policy
        if loaded.lists is not None:
            hostPolicy = policy.hostPolicy  # the one of the process, changed in place
            lists = hasLists(fresh)
            hostPolicy.blockFiles = list(fresh["block-list"]) if lists else []
            hostPolicy.allowFiles = list(fresh["allow-list"]) if lists else []
            hostPolicy.defaultDeny = bool(fresh["default-deny"]) if lists else False
            hostPolicy.use(loaded.lists)
        if "auth-file" in loaded.reloadable and parts.proxy is not None:
            if not fresh["auth-file"]:
                policy.authenticator = None
            elif loaded.authenticator is not None:
                policy.authenticator = loaded.authenticator
            else:
                assert policy.authenticator is not None and loaded.users is not None
                policy.authenticator.path = fresh["auth-file"]
                policy.authenticator.use(loaded.users)
        if "pac-bypass" in loaded.reloadable:
            policy.pac.bypass = list(fresh["pac-bypass"])
        if "access-log" in loaded.reloadable and parts.accessLog is not None:
            parts.accessLog.path = fresh["access-log"]
        if "trace" in loaded.reloadable and parts.tracer is not None:
            parts.tracer.path = fresh["trace"]
        parts.options = fresh
        proxy = parts.proxy
        if proxy is not None:
            if loaded.filters is not None and proxy.filters is not None:
                proxy.filters.use(loaded.filters)
            proxy.reconfigure(fresh, policy)
        if loaded.restart:
            log.warn(
                "caplab configuration: changing {options} needs a restart; the old values "
                "stay in force until then",
                options=", ".join(f"--{name}" for name in sorted(loaded.restart)),
            )
        if not loaded.reloadable:
            return "no change to put in force"
        return "changed " + ", ".join(f"--{name}" for name in loaded.reloadable)


def loadLists(options: Mapping[str, Any]) -> HostPolicy:
    """
    The block/allow lists C{options} name (none: empty lists).

    @raise PolicyFileError: a list cannot be used.
    """
    if not hasLists(options):
        return HostPolicy.fromFiles([], [])
    try:
        return HostPolicy.fromFiles(
            options["block-list"], options["allow-list"], bool(options["default-deny"])
        )
    except PolicyFileError as e:
        raise PolicyFileError(f"--block-list/--allow-list: {e}") from None


def watchConfig(parts: Parts) -> Parts:
    """
    Make C{SIGHUP} read the C{--config} file of C{parts} again (if there is one).
    """
    if parts.options.get("config"):
        parts.configReload = ConfigReload(parts)
    return parts
