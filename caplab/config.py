"""
The option machinery of C{twist caplab}, on top of L{twisted.python.usage.Options}:

  - C{--config FILE}: a TOML file of the options' own names (C{tcp-port = 12000},
    C{block-list = ["/etc/caplab/ads.txt"]}, C{no-udp = true}); an option given on the command
    line wins over the file's (a repeatable one replaces the file's list);
  - errors in one short line naming the option (or the file and key) and the bad value,
    with the full help only on request (C{--help});
  - C{--help} grouped (services, proxy, policy, cache, operations, workers), one
    description per option without runs of spaces, sizes in human units.

Each option set (a mixin of L{caplab.tap.Options}) declares its options the usual way
(C{optParameters}, C{optFlags}, C{opt_} methods) and its help group in C{helpGroup}; a new
option needs nothing else here.  A coerce function may carry C{coerceDoc} (what it takes)
and C{formatDefault} (how its default is shown, e.g. C{64M}).
"""

from __future__ import annotations

import getopt
import os
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.python import reflect, usage

#: The help groups, in the order C{--help} shows them.
GROUPS = ("services", "proxy", "policy", "cache", "filters", "operations", "workers")


class OptionError(usage.UsageError):
    """
    A bad option value or combination, in one line that names the option.

    @ivar option: the option's long name (no dashes), or None for a combination.
    """

    def __init__(self, option: str | None, message: str) -> None:
        super().__init__(message)
        self.option = option


def _oneLine(text: str | None) -> str:
    return " ".join((text or "").split())


class ConfigurableOptions(usage.Options):
    """
    L{usage.Options} with a configuration file, short errors and grouped help.

    @ivar argv: the command-line arguments parsed (so a worker or a reload can parse the
        same again).
    @ivar configFile: the C{--config} file, or None.
    @ivar fromFile: option name -> value, for the options that the file set.
    """

    helpGroup = "services"
    #: option name -> help group, where it differs from its option set's C{helpGroup}.
    helpGroupOf: dict[str, str] = {}
    #: the name of the command in messages.
    command = "twist caplab"

    argv: list[str] = []
    configFile: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.fromFile: dict[str, Any] = {}
        self._failed = False
        self["config"] = None

    # -- what the options are ---------------------------------------------------------------

    def parameters(self) -> dict[str, Callable[[str], Any] | None]:
        """
        Options that take a value (C{optParameters}): name -> coerce function (or None).
        """
        found: list[list[Any]] = []
        reflect.accumulateClassList(self.__class__, "optParameters", found)
        return {entry[0]: (entry[4] if len(entry) > 4 else None) for entry in found}

    def flags(self) -> set[str]:
        found: list[list[Any]] = []
        reflect.accumulateClassList(self.__class__, "optFlags", found)
        return {entry[0] for entry in found}

    def handlers(self) -> dict[str, Callable[..., Any]]:
        """
        Options with an C{opt_} method (repeatable ones such as C{--block-list}): name ->
        bound method.
        """
        names: dict[str, Any] = {}
        reflect.addMethodNamesToDict(self.__class__, names, "opt_")
        return {name.replace("_", "-"): getattr(self, "opt_" + name) for name in names}

    def group(self, name: str) -> str:
        """
        The help group of option C{name}: its override, else that of the option set (the
        class in the MRO) that declares it.
        """
        for cls in type(self).__mro__:
            overrides = cls.__dict__.get("helpGroupOf", {})
            if name in overrides:
                return str(overrides[name])
        method = "opt_" + name.replace("-", "_")
        for cls in type(self).__mro__:
            declared = [entry[0] for entry in cls.__dict__.get("optParameters", [])]
            declared += [entry[0] for entry in cls.__dict__.get("optFlags", [])]
            if name in declared or method in cls.__dict__:
                return str(cls.__dict__.get("helpGroup", getattr(cls, "helpGroup", "services")))
        return self.helpGroup

    def displayDefault(self, name: str) -> str | None:
        """
        The default of option C{name} as C{--help} and README.rst show it, or None.
        """
        default = self.defaults.get(name)
        if default is None or name in self.flags():
            return None
        coerce = self.parameters().get(name)
        show = getattr(coerce, "formatDefault", None)
        if show is not None:
            return str(show(default))
        if isinstance(default, set | frozenset | list | tuple):
            return ",".join(sorted(str(value) for value in default))
        return str(default)

    # -- parsing ----------------------------------------------------------------------------

    def opt_config(self, path: str) -> None:
        """
        Read options from this TOML file (the options' own names, e.g. tcp-port = 12000,
        block-list = ["/etc/caplab/ads.txt"], no-udp = true); options on the command line win.
        """
        # Read by parseOptions before the rest of the command line.
        self["config"] = path

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        args = list(sys.argv[1:] if options is None else options)
        self.argv = args
        try:
            given = self._check(args)
            if self.configFile is not None:
                self._applyFile(self.configFile, given)
            super().parseOptions(args)
        except OptionError as e:
            self._failed = True
            raise usage.UsageError(self._describe(e)) from None
        except usage.UsageError:
            self._failed = True
            raise

    def _check(self, args: list[str]) -> set[str]:
        """
        Check every value on the command line with its coerce function, so that an error
        names the option and the value; find C{--config}; return the options given.
        """
        try:
            pairs, _ = getopt.getopt(args, self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        parameters = self.parameters()
        given: set[str] = set()
        for opt, value in pairs:
            name = self.synonyms.get(opt.lstrip("-"), opt.lstrip("-").replace("_", "-"))
            name = name.replace("_", "-")
            given.add(name)
            if name == "config":
                self.configFile = value
            coerce = parameters.get(name)
            if coerce is not None:
                self._coerce(name, coerce, value)
        return given

    @staticmethod
    def _coerce(name: str, coerce: Callable[[str], Any], value: str) -> Any:
        try:
            return coerce(value)
        except ValueError as e:
            raise OptionError(name, f"--{name} {value!r}: {e}") from None

    def _applyFile(self, path: str, given: set[str]) -> None:
        """
        Set the options of file C{path}, except those in C{given} (the command line's).
        """
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except OSError as e:
            raise usage.UsageError(f"--config {path!r}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise usage.UsageError(f"--config {path!r}: not TOML: {e}") from None
        parameters, flags, handlers = self.parameters(), self.flags(), self.handlers()
        for key, value in table.items():
            where = f"{path}: {key}"
            if key == "config" or key in ("help", "version"):
                raise usage.UsageError(f"{where}: not an option a file can set")
            if key not in parameters and key not in flags and key not in handlers:
                raise usage.UsageError(f"{where}: no such option")
            if key in given:
                continue
            self.fromFile[key] = value
            try:
                self._setFromFile(key, value, parameters, flags, handlers)
            except OptionError as e:
                raise usage.UsageError(f"{where} = {_toml(value)}: {_reason(e)}") from None
            except usage.UsageError as e:
                raise usage.UsageError(f"{where} = {_toml(value)}: {e}") from None

    def _setFromFile(
        self,
        key: str,
        value: Any,
        parameters: dict[str, Any],
        flags: set[str],
        handlers: dict[str, Any],
    ) -> None:
        if key in flags:
            if not isinstance(value, bool):
                raise usage.UsageError("true or false")
            self[key] = 1 if value else 0
            return
        if isinstance(value, bool) or isinstance(value, dict):
            raise usage.UsageError("a value (a string or a number), not this")
        if key in handlers:
            for each in value if isinstance(value, list) else [value]:
                if isinstance(each, bool | dict | list):
                    raise usage.UsageError("a string or a list of strings")
                handlers[key](str(each))
            return
        if isinstance(value, list):
            raise usage.UsageError("one value, not a list")
        coerce = parameters.get(key)
        text = str(value)
        self[key] = self._coerce(key, coerce, text) if coerce is not None else text

    def _describe(self, error: OptionError) -> str:
        """
        The error's message, naming the config file and key when the file set the option.
        """
        if error.option is not None and error.option in self.fromFile:
            value = self.fromFile[error.option]
            return f"{self.configFile}: {error.option} = {_toml(value)}: {_reason(error)}"
        return str(error)

    # -- help -------------------------------------------------------------------------------

    def getUsage(self, width: int | None = None) -> str:
        if self._failed:
            program = os.path.basename(sys.argv[0]) if sys.argv else ""
            command = f"{program} caplab" if program in ("twist", "twistd") else self.command
            return f"Run '{command} --help' for the options.\n"
        width = width or int(os.environ.get("COLUMNS", "80"))
        width = max(60, min(width, 100))
        grouped: dict[str, list[str]] = {group: [] for group in GROUPS}
        for name in sorted(opt.rstrip("=") for opt in self.longOpt):
            grouped.setdefault(self.group(name), []).append(name)
        out: list[str] = []
        longdesc = _oneLine(getattr(self, "longdesc", ""))
        if longdesc:
            out += textwrap.wrap(longdesc, width) + [""]
        for group, names in grouped.items():
            if not names:
                continue
            out.append(f"{group.capitalize()}:")
            for name in names:
                out += self._helpEntry(name, width)
            out.append("")
        return "\n".join(out)

    def _helpEntry(self, name: str, width: int) -> list[str]:
        takesValue = f"{name}=" in self.longOpt
        described = self.parameters().get(name) or self.handlers().get(name)
        label = f"  --{name}" + (f"={_metavar(name, described)}" if takesValue else "")
        doc = _oneLine(self.docs.get(name))
        coerce = self.parameters().get(name)
        coerceDoc = _oneLine(getattr(coerce, "coerceDoc", ""))
        if coerceDoc and coerceDoc not in doc:
            doc = f"{doc} {coerceDoc}".strip()
        default = self.displayDefault(name)
        if default is not None:
            doc += f" [default: {default}]"
        indent = " " * 6
        lines = [label]
        lines += textwrap.wrap(
            doc,
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )
        return lines


def _metavar(name: str, described: Any) -> str:
    """
    The placeholder of an option's value in C{--help}: the C{metavar} of its coerce function
    or C{opt_} method, else a word its name suggests.
    """
    metavar = getattr(described, "metavar", None)
    if metavar:
        return str(metavar)
    for suffix, word in (
        ("port", "PORT"),
        ("ports", "PORTS"),
        ("timeout", "SECONDS"),
        ("grace", "SECONDS"),
        ("size", "SIZE"),
        ("object", "SIZE"),
        ("endpoint", "ENDPOINT"),
        ("dir", "DIR"),
        ("list", "FILE"),
        ("file", "FILE"),
        ("log", "FILE"),
        ("config", "FILE"),
        ("trace", "FILE"),
        ("-proxy", "URL"),
        ("redis", "URL"),
        ("ca", "FILE"),
    ):
        if name.endswith(suffix):
            return word
    return "VALUE"


def _reason(error: OptionError) -> str:
    """
    The reason part of an L{OptionError}'s message (after C{--name 'value': }).
    """
    text = str(error)
    head, sep, rest = text.partition(": ")
    return rest if sep and head.startswith("--") else text


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(each) for each in value) + "]"
    return str(value)


def humanSize(size: int) -> str:
    """
    C{67108864} as C{64M}: the largest binary unit that divides it exactly.
    """
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def changedOptions(
    old: Mapping[str, Any], new: Mapping[str, Any], names: Iterable[str]
) -> list[str]:
    """
    The options among C{names} whose values differ between C{old} and C{new} (lists,
    networks and sets compared by their text, in any order for sets).
    """
    return [name for name in names if _comparable(old.get(name)) != _comparable(new.get(name))]


def _comparable(value: Any) -> Any:
    if isinstance(value, list):
        return [str(each) for each in value]
    if isinstance(value, dict):
        return sorted((str(k), str(v)) for k, v in value.items())
    if isinstance(value, set | frozenset):
        return sorted(value)
    return value
