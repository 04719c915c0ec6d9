"""
Reading the configuration again on C{SIGHUP} (C{--config} and the command line): what can
change without a restart is put in force, the rest is logged as needing one and the old value
stays; a bad file keeps the whole old configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.logger import Logger

from caplab.proxy.filters.options import FILTER_OPTIONS
from caplab.wiring import ConfigError, Parts, buildAuthenticator, hasLists

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


class ConfigReload:
    """
    Reads the C{--config} file and the command line again (L{load}, in a thread) and puts
    what may change without a restart in force (L{use}); the log says which changed options
    need a restart.  A bad file keeps the whole old configuration.
    """

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def load(self) -> Any:
        current = self.parts.options
        fresh = type(current)()
        fresh.parseOptions(list(current.argv))
        return fresh

    def use(self, fresh: Any) -> str:
        parts = self.parts
        old = parts.options
        names = sorted(set(old) | set(fresh))
        changed = [
            name for name in names if _comparable(old.get(name)) != _comparable(fresh.get(name))
        ]
        reloadable = [name for name in changed if name in RELOADABLE]
        restart = [name for name in changed if name not in RELOADABLE]
        # Adding or removing a log file needs the service that writes it: a restart.
        for name, current in (("access-log", parts.accessLog), ("trace", parts.tracer)):
            if name in reloadable and (current is None or not fresh[name] or fresh[name] == "-"):
                reloadable.remove(name)
                restart.append(name)
        if reloadable:
            self._apply(fresh, reloadable)
        for name in restart:
            fresh[name] = old.get(name)  # keep what is in force until the restart
        parts.options = fresh
        if restart:
            log.warn(
                "caplab configuration: changing {options} needs a restart; the old values "
                "stay in force until then",
                options=", ".join(f"--{name}" for name in sorted(restart)),
            )
        if not reloadable:
            return "no change to put in force"
        return "changed " + ", ".join(f"--{name}" for name in reloadable)

    def _apply(self, fresh: Any, changed: list[str]) -> None:
        parts = self.parts
        policy = parts.policy
        reactor = parts.reactor
        if {"block-list", "allow-list", "default-deny"} & set(changed):
            # The one host policy of the process changes in place; the lists step after
            # this one reads the new files (in a thread).
            hostPolicy = policy.hostPolicy
            lists = hasLists(fresh)
            hostPolicy.blockFiles = list(fresh["block-list"]) if lists else []
            hostPolicy.allowFiles = list(fresh["allow-list"]) if lists else []
            hostPolicy.defaultDeny = bool(fresh["default-deny"]) if lists else False
            if not lists:
                hostPolicy.use(hostPolicy.load())  # no files: nothing to read
        if "auth-file" in changed:
            if not fresh["auth-file"]:
                policy.authenticator = None
            elif policy.authenticator is None:
                policy.authenticator = buildAuthenticatorOrKeep(fresh, reactor)
            else:
                policy.authenticator.path = fresh["auth-file"]
        if "pac-bypass" in changed:
            policy.pac.bypass = list(fresh["pac-bypass"])
        if "access-log" in changed and parts.accessLog is not None:
            parts.accessLog.path = fresh["access-log"]
        if "trace" in changed and parts.tracer is not None:
            parts.tracer.path = fresh["trace"]
        if parts.proxy is not None:
            parts.proxy.reconfigure(fresh, policy)


def buildAuthenticatorOrKeep(options: Mapping[str, Any], reactor: Any) -> Any:
    """
    A new authenticator for a reload (none on failure: the error is logged).
    """
    try:
        return buildAuthenticator(options["auth-file"], reactor)
    except ConfigError as e:
        log.error("caplab reload: {reason}; proxy authentication stays off", reason=str(e))
        return None


def _comparable(value: Any) -> Any:
    if isinstance(value, list):
        return [str(each) for each in value]
    if isinstance(value, dict):
        return sorted((str(k), str(v)) for k, v in value.items())
    if isinstance(value, set | frozenset):
        return sorted(value)
    return value


def watchConfig(parts: Parts) -> Parts:
    """
    Make C{SIGHUP} read the C{--config} file of C{parts} again (if there is one).
    """
    if parts.options.get("config"):
        parts.configReload = ConfigReload(parts)
    return parts
