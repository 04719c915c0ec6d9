"""
Third-party filters, found as package entry points in the group C{caplab.filters}.

A plugin package declares, in its C{setup.cfg}::

    [options.entry_points]
    caplab.filters =
        upper = caplab_filter_example:UpperFilter

The entry point names a callable that takes the plugin's options (a dict of strings, from
C{--filter 'HOSTPATTERN upper KEY=VALUE ...'} or the configuration file) and returns the
filter: an object with a C{name} and L{IRequestFilter.filterRequest}, or
L{IResponseFilter.filterHead} and L{IResponseFilter.transformBody}, or all three (see
L{caplab.proxy.filters.interfaces}).  It raises C{ValueError} for options it cannot use.

Why entry points rather than C{twisted.plugin}: they are what C{pip install} sets up for
any package, read from the installed metadata without importing anything, so a plugin that
is not configured is never imported, and they need no write access anywhere.
C{twisted.plugin} imports every module in every C{twisted/plugins} directory to build its
C{dropin.cache}, which it then writes into C{site-packages} (impossible where that is
read-only, as for a system package, so the scan is repeated at every start and a warning
logged), and it misses plugins installed in setuptools' default editable mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from caplab.proxy.filters.hosts import FilterConfigError, HostSelector

#: The entry point group of caplab's filter plugins.
GROUP = "caplab.filters"


@dataclass(frozen=True)
class PluginSpec:
    """
    A configured plugin: the hosts it is for, its name, its options.
    """

    text: str
    hosts: HostSelector
    name: str
    options: Mapping[str, str]


def parsePluginSpec(text: str, source: str = "--filter") -> PluginSpec:
    """
    Parse C{HOSTPATTERN NAME [KEY=VALUE ...]}.

    @raise FilterConfigError: it is not one.
    """
    where = f"{source} {text!r}"
    fields = text.split()
    if len(fields) < 2:
        raise FilterConfigError(
            f"{where}: expected 'HOSTPATTERN NAME [KEY=VALUE ...]' (a host pattern, the "
            "plugin's name, its options)"
        )
    hosts = HostSelector.parse(fields[0], where)
    options = {}
    for field in fields[2:]:
        key, equals, value = field.partition("=")
        if not equals or not key:
            raise FilterConfigError(f"{where}: option {field!r} is not KEY=VALUE")
        options[key] = value
    return PluginSpec(text, hosts, fields[1], options)


def installedPlugins(
    find: Callable[[], list[EntryPoint]] | None = None,
) -> dict[str, EntryPoint]:
    """
    The installed plugins' entry points by name.
    """
    found = find() if find is not None else list(entry_points(group=GROUP))
    return {entryPoint.name: entryPoint for entryPoint in found}


def loadPlugin(
    name: str,
    options: Mapping[str, str],
    source: str = "--filter",
    find: Callable[[], list[EntryPoint]] | None = None,
) -> object:
    """
    Load plugin C{name} and make its filter with C{options}.

    @param find: lists the entry points of L{GROUP} (for tests); the installed ones if None.
    @raise FilterConfigError: no such plugin, it cannot be imported, it refuses the options,
        or what it made is not a filter.
    """
    plugins = installedPlugins(find)
    entryPoint = plugins.get(name)
    if entryPoint is None:
        known = ", ".join(sorted(plugins)) or "none"
        raise FilterConfigError(
            f"{source}: no filter plugin named {name!r} is installed (installed: {known})"
        )
    try:
        factory = entryPoint.load()
    except Exception as e:
        raise FilterConfigError(
            f"{source}: filter plugin {name!r} ({entryPoint.value}) cannot be loaded: "
            f"{e.__class__.__name__}: {e}"
        ) from None
    try:
        made = factory(dict(options))
    except ValueError as e:
        raise FilterConfigError(f"{source}: filter plugin {name!r}: {e}") from None
    except Exception as e:
        raise FilterConfigError(
            f"{source}: filter plugin {name!r} failed to start: {e.__class__.__name__}: {e}"
        ) from None
    if not isRequestFilter(made) and not isResponseFilter(made):
        raise FilterConfigError(
            f"{source}: filter plugin {name!r} made {made!r}, which has neither "
            "filterRequest nor filterHead and transformBody"
        )
    return made


def isRequestFilter(candidate: object) -> bool:
    return callable(getattr(candidate, "filterRequest", None))


def isResponseFilter(candidate: object) -> bool:
    return callable(getattr(candidate, "filterHead", None)) and callable(
        getattr(candidate, "transformBody", None)
    )
