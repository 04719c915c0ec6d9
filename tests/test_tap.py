"""
Tests of C{twist caplab}'s options and service tree, L{caplab.tap}.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import FakeDatagramTransport, MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage

from caplab import __version__
from caplab.listening import DatagramListener, Listening, StreamListener
from caplab.tap import (
    Options,
    freezeStartupObjects,
    makeService,
    reachableFromElsewhere,
    serviceTree,
)
from caplab.tcp import UppercaseFactory
from caplab.trace import TracerService, TracingFactory
from caplab.udp import UppercaseDatagramProtocol
from caplab.wiring import build as buildParts
from caplab.workers import WORKER_ENVIRONMENT, WORKER_READY
from tests.test_listening import FakePort, UDPReactor

#: The parsed defaults of the uppercase services and of where services listen.  (Other
#: options, such as the proxy's, are checked by their own tests; tests/test_readme.py checks
#: that every option is documented.)
DEFAULTS = {
    "interface": "127.0.0.1",
    "tcp-port": 12000,
    "tcp-endpoint": "tcp:12000:interface=127.0.0.1",
    "udp-port": 12005,
    "proxy-port": 8080,
    "proxy-endpoint": "tcp:8080:interface=127.0.0.1",
    "idle-timeout": 300.0,
    "max-connections": 1000,
    "trace": None,
    "no-tcp": 0,
    "no-udp": 0,
    "no-proxy": 0,
    "unicode": 0,
}


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def build(*args: str) -> tuple[Any, UDPReactor]:
    """
    Parse C{args}, build the service tree on a memory reactor and start it.
    """
    reactor = UDPReactor()
    service = makeService(parse(*args), reactor=reactor, onListenFailure=None)
    service.privilegedStartService()
    service.startService()
    return service, reactor


def test_defaults() -> None:
    """
    Without arguments every service listens on loopback on the lab's ports.
    """
    config = parse()
    assert {key: config[key] for key in DEFAULTS} == DEFAULTS


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """
    C{--version} prints caplab's version and exits 0.
    """
    with pytest.raises(SystemExit) as exited:
        parse("--version")
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"caplab {__version__}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--tcp-port", "65536"],
        ["--tcp-port", "-1"],
        ["--udp-port", "http"],
        ["--proxy-port", "1.5"],
        ["--interface", "localhost"],
        ["--interface", "127.0.0.256"],
        ["--tcp-endpoint", "nosuchtype:12000"],
        ["--tcp-endpoint", "tcp:notaport"],
        ["--tcp-endpoint", "ssl:0:privateKey=/nonexistent/key.pem"],
        ["--proxy-endpoint", "tcp6:8080:interface=::1"],  # unescaped colons
        ["--idle-timeout", "-1"],
        ["--idle-timeout", "nan"],
        ["--idle-timeout", "inf"],
        ["--idle-timeout", "soon"],
        ["--max-connections", "0"],
        ["--max-connections", "many"],
        ["--no-tcp", "--no-udp", "--no-proxy"],
        ["--no-such-option"],
        ["--trace", "/nonexistent/directory/trace.txt"],
        ["--trace", "/"],
    ],
)
def test_usageErrors(args: list[str]) -> None:
    """
    A bad value is a L{usage.UsageError} with a one-line message (C{twist} prints it
    without a traceback).
    """
    with pytest.raises(usage.UsageError) as raised:
        parse(*args)
    assert "\n" not in str(raised.value)


def test_endpointErrorNamesOption() -> None:
    """
    A bad endpoint description is reported with the option and the description.
    """
    with pytest.raises(usage.UsageError, match=r"^--tcp-endpoint 'nosuchtype:1': "):
        parse("--tcp-endpoint", "nosuchtype:1")


def test_traceFileCheckedEarly(tmp_path: Path) -> None:
    """
    A C{--trace} file that cannot be written is a usage error naming the file, found while
    parsing rather than as a traceback when the services start; a good one is created.
    """
    with pytest.raises(
        usage.UsageError, match="--trace '/nonexistent/t': cannot write to it: No such"
    ):
        parse("--trace", "/nonexistent/t")
    path = tmp_path / "trace.txt"
    assert parse("--trace", str(path))["trace"] == str(path)
    assert path.exists()


def test_systemdWithoutSocket(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A C{systemd:} endpoint in a process that was handed no socket says so.
    """
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    with pytest.raises(usage.UsageError, match="no such socket was passed to this process"):
        parse("--tcp-endpoint", "systemd:domain=INET:index=0")


def test_nothingToRun() -> None:
    """
    Switching every service off is refused with a message that says so.
    """
    with pytest.raises(usage.UsageError, match="leave nothing to run"):
        parse("--no-tcp", "--no-udp", "--no-proxy")


def test_endpointOnlyCheckedWhenUsed() -> None:
    """
    With C{--no-tcp}, C{--tcp-endpoint} is not looked at.
    """
    assert parse("--no-tcp", "--tcp-endpoint", "nosuchtype:1")["tcp-endpoint"] == "nosuchtype:1"


def test_ipv6Interface() -> None:
    """
    An IPv6 C{--interface} becomes a C{tcp6:} description with escaped colons, and both
    services listen on it.
    """
    config = parse("--interface", "::1", "--no-proxy")
    assert config["tcp-endpoint"] == "tcp6:12000:interface=\\:\\:1"
    service, reactor = build("--interface", "::1", "--no-proxy")
    [(port, factory, backlog, interface)] = reactor.tcpServers
    assert (port, interface) == (12000, "::1")
    assert [(p, i) for p, _, i, _ in reactor.udp] == [(12005, "::1")]


def test_interfaceNormalised() -> None:
    """
    Addresses are accepted in any form Python knows and normalised.
    """
    assert parse("--interface", "0:0::0:1")["interface"] == "::1"


def test_defaultServiceTree() -> None:
    """
    By default the uppercase TCP service listens on 127.0.0.1:12000 and the UDP service on
    127.0.0.1:12005, with the default behaviour, clocked by the given reactor.
    """
    service, reactor = build("--no-proxy")
    listening = service.getServiceNamed("listening")
    assert isinstance(listening, Listening)
    assert [type(each) for each in listening.listeners] == [StreamListener, DatagramListener]
    assert sorted(listening.ports) == ["tcp", "udp"]
    [(port, factory, backlog, interface)] = reactor.tcpServers
    assert (port, interface) == (12000, "127.0.0.1")
    assert isinstance(factory, UppercaseFactory)
    assert (factory.unicode, factory.idleTimeout, factory.maxConnections) == (0, 300.0, 1000)
    assert factory.clock is reactor
    [(udpPort, protocol, udpInterface, size)] = reactor.udp
    assert (udpPort, udpInterface, size) == (12005, "127.0.0.1", 65535)
    assert isinstance(protocol, UppercaseDatagramProtocol)
    assert (protocol.unicode, protocol.tracer, protocol.clock) == (0, None, reactor)


def test_options() -> None:
    """
    The uppercase options reach the services.
    """
    service, reactor = build(
        "--no-proxy",
        "--tcp-port=4000",
        "--udp-port=4001",
        "--interface=127.0.0.2",
        "--unicode",
        "--idle-timeout=0",
        "--max-connections=7",
    )
    [(port, factory, _, interface)] = reactor.tcpServers
    assert (port, interface) == (4000, "127.0.0.2")
    assert isinstance(factory, UppercaseFactory)
    assert (factory.unicode, factory.idleTimeout, factory.maxConnections) == (1, None, 7)
    [(udpPort, protocol, udpInterface, _)] = reactor.udp
    assert (udpPort, udpInterface, protocol.unicode) == (4001, "127.0.0.2", 1)


def test_tcpEndpoint() -> None:
    """
    C{--tcp-endpoint} overrides C{--interface}/C{--tcp-port} for TCP only.
    """
    service, reactor = build("--no-proxy", "--tcp-endpoint", "tcp:4100:interface=127.0.0.3")
    [(port, _, _, interface)] = reactor.tcpServers
    assert (port, interface) == (4100, "127.0.0.3")
    assert [(p, i) for p, _, i, _ in reactor.udp] == [(12005, "127.0.0.1")]


def test_unixEndpoint(tmp_path: Path) -> None:
    """
    A UNIX socket endpoint works for the TCP service.
    """
    path = str(tmp_path / "caplab.sock")
    service, reactor = build("--no-proxy", "--no-udp", "--tcp-endpoint", f"unix:{path}")
    assert [address for address, *_ in reactor.unixServers] == [path]
    assert reactor.udp == []


def test_switchedOff() -> None:
    """
    C{--no-tcp} and C{--no-udp} leave those services out.
    """
    service, reactor = build("--no-proxy", "--no-tcp")
    assert reactor.tcpServers == [] and len(reactor.udp) == 1
    service, reactor = build("--no-proxy", "--no-udp")
    assert len(reactor.tcpServers) == 1 and reactor.udp == []


def test_traceWrapsServices(tmp_path: Path) -> None:
    """
    C{--trace} wraps the TCP factory in a tracing factory, gives the UDP protocol the same
    tracer, and closes the file when the services stop.
    """
    path = tmp_path / "trace.txt"
    service, reactor = build("--no-proxy", "--trace", str(path))
    [(_, factory, _, _)] = reactor.tcpServers
    assert isinstance(factory, TracingFactory)
    assert isinstance(factory.wrappedFactory, UppercaseFactory)
    [(_, protocol, _, _)] = reactor.udp
    assert protocol.tracer is factory.tracer
    [closer] = [s for s in service if isinstance(s, TracerService)]
    protocol.makeConnection(FakeDatagramTransport())
    protocol.datagramReceived(b"x", ("127.0.0.1", 1))
    service.stopService()
    assert closer.tracer._output.closed
    assert path.read_text().endswith("udp#1 127.0.0.1:1 send 1 b'X'\n")


def test_noTrace() -> None:
    """
    Without C{--trace} the factory is not wrapped and nothing is written.
    """
    service, reactor = build("--no-proxy")
    assert not [s for s in service if isinstance(s, TracerService)]
    assert isinstance(reactor.tcpServers[0][1], UppercaseFactory)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tcp-port", "70000"], "--tcp-port '70000': not a port number (0-65535)"),
        (["--tcp-port=x"], "--tcp-port 'x': not a port number (0-65535)"),
        (["--cache-size", "lots"], "--cache-size 'lots': not a size (e.g. 64M"),
        (["--idle-timeout", "-1"], "--idle-timeout '-1': not a number of seconds (0 or more)"),
        (["--workers", "0"], "--workers '0': not a number of workers from 1 to 256"),
        (["--allow", "nonsense"], "--allow 'nonsense': not a network (CIDR)"),
    ],
)
def test_usageErrorNamesOptionAndValue(args: list[str], message: str) -> None:
    """
    A bad value is reported with the option and the value, in one line, and afterwards the
    usage text is a one-line pointer to C{--help}, not the whole help.
    """
    options = Options()
    with pytest.raises(usage.UsageError) as raised:
        options.parseOptions(args)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
    assert options.getUsage() == "Run 'twist caplab --help' for the options.\n"


def helpText() -> str:
    return Options().getUsage(width=80)


def test_helpGrouped() -> None:
    """
    C{--help} lists the options under their groups, in order, each group's options together,
    every option exactly once.
    """
    text = helpText()
    titles = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert [t for t in titles if t.endswith(":")] == [
        "Services:", "Proxy:", "Policy:", "Cache:", "Filters:", "Operations:", "Workers:",
    ]  # fmt: skip
    sections = dict(
        (block.split(":", 1)[0], block) for block in text.split("\n\n") if block.strip()
    )
    assert "--tcp-port=PORT" in sections["Services"]
    assert "--connect-ports=PORTS" in sections["Proxy"]
    assert "--block-list=FILE" in sections["Policy"]
    assert "--cache-size=SIZE" in sections["Cache"]
    assert "--access-log=FILE" in sections["Operations"]
    assert "--config=FILE" in sections["Operations"]
    assert "--workers=N" in sections["Workers"]
    options = Options()
    for name in (opt.rstrip("=") for opt in options.longOpt):
        assert len(re.findall(rf"^  --{name}(?:=|$)", text, re.MULTILINE)) == 1, name


def test_helpReadable() -> None:
    """
    No runs of spaces inside a description; sizes in human units; lines fit the width.
    """
    text = helpText()
    for line in text.splitlines():
        assert "  " not in line.strip(), line
        assert len(line) <= 80, line
    assert "[default: 64M]" in text and "Default: 8M, or --cache-size" in text
    assert "67108864" not in text


def test_configFile(tmp_path: Path) -> None:
    """
    C{--config FILE}: TOML with the options' own names; the command line wins, for a
    repeatable option too (its list replaces the file's).
    """
    block = tmp_path / "block.txt"
    block.write_text("a.example\n")
    config = tmp_path / "caplab.toml"
    config.write_text(
        f'tcp-port = 4000\nudp-port = "4001"\nno-proxy = true\nunicode = false\n'
        f'block-list = ["{block}", "{block}"]\ncache-size = "1G"\nidle-timeout = 1.5\n'
    )
    options = parse("--config", str(config), "--udp-port", "5001")
    assert (options["tcp-port"], options["udp-port"]) == (4000, 5001)
    assert (options["no-proxy"], options["unicode"]) == (1, 0)
    assert options["block-list"] == [str(block), str(block)]
    assert options["cache-size"] == 1 << 30 and options["idle-timeout"] == 1.5
    assert options["tcp-endpoint"] == "tcp:4000:interface=127.0.0.1"
    assert parse("--config", str(config), "--block-list", "/x")["block-list"] == ["/x"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("nonsense = 1\n", "{path}: nonsense: no such option"),
        ("tcp-port = 70000\n", "{path}: tcp-port = 70000: not a port number (0-65535)"),
        ("no-udp = 1\n", "{path}: no-udp = 1: true or false"),
        ("tcp-port = [1, 2]\n", "{path}: tcp-port = [1, 2]: one value, not a list"),
        ("tcp-port = \n", "--config '{path}': not TOML: "),
        ('upstream-ca = "/nonexistent"\n', '{path}: upstream-ca = "/nonexistent": No such'),
        ('config = "other.toml"\n', "{path}: config: not an option a file can set"),
    ],
)
def test_configFileErrors(tmp_path: Path, text: str, message: str) -> None:
    """
    An unknown key or a bad value in the file is one line naming the file and the key.
    """
    config = tmp_path / "caplab.toml"
    config.write_text(text)
    with pytest.raises(usage.UsageError) as raised:
        parse("--config", str(config))
    assert str(raised.value).startswith(message.format(path=config)), str(raised.value)
    assert "\n" not in str(raised.value)


def test_configFileMissing() -> None:
    """
    A config file that cannot be read is a usage error naming it.
    """
    with pytest.raises(usage.UsageError, match="--config '/nonexistent.toml': No such file"):
        parse("--config", "/nonexistent.toml")


def test_cacheMaxObjectFollowsASmallCache() -> None:
    """
    Without C{--cache-max-object}, the largest object stored is 8M, or the cache's size when
    that is smaller (C{--cache-size 4M} alone is a valid configuration); given, it may not
    exceed the cache's size.
    """
    assert parse("--cache-size", "4M")["cache-max-object"] == 4 << 20
    assert parse("--cache-size", "64M")["cache-max-object"] == 8 << 20
    assert parse("--cache-size", "64M", "--cache-max-object", "1M")["cache-max-object"] == 1 << 20
    with pytest.raises(usage.UsageError):
        parse("--cache-size", "4M", "--cache-max-object", "8M")


def test_startupObjectsFrozen() -> None:
    """
    L{freezeStartupObjects} hides what is alive from the garbage collector's full
    collections (C{gc.freeze}).
    """
    try:
        freezeStartupObjects()
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


def test_whenReadyOnceListening() -> None:
    """
    C{whenReady} callbacks run once every listener listens, once; C{makeService} given a
    reactor of the caller's (a test's) freezes nothing.
    """
    reactor = UDPReactor()
    called: list[int] = []
    top = serviceTree(
        buildParts(parse("--no-proxy"), reactor),
        onListenFailure=None,
        whenReady=[lambda: called.append(1)],
    )
    assert called == []
    top.privilegedStartService()
    top.startService()
    assert called == []
    for running, args in reactor.whenRunning:
        running(*args)
    assert called == [1]
    top.stopService()
    before = gc.get_freeze_count()
    build("--no-proxy")
    assert gc.get_freeze_count() == before == 0


class BindingReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose TCP ports report the interface they were asked to bind (a
    L{MemoryReactor}'s all say C{0.0.0.0}), and which records C{callWhenRunning} calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.whenRunning: list[Any] = []

    def callWhenRunning(self, callable: Any, *args: Any, **kw: Any) -> None:
        self.whenRunning.append((callable, args))

    def adoptStreamPort(self, fd: int, family: int, factory: Any) -> Any:
        return FakePort(IPv4Address("TCP", "127.0.0.1", 8080))

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        super().listenTCP(port, factory, backlog, interface)
        if ":" in interface:
            return FakePort(IPv6Address("TCP", interface, port))
        return FakePort(IPv4Address("TCP", interface or "0.0.0.0", port))


def reachableWarnings(*args: str) -> list[str]:
    """
    The warnings about the proxy being reachable, logged once a service tree made of
    C{args} listens.
    """
    reactor = BindingReactor()
    with capturedLogs() as events:
        top = serviceTree(buildParts(parse("--no-tcp", "--no-udp", *args), reactor))
        top.privilegedStartService()
        top.startService()
        for running, arguments in reactor.whenRunning:
            running(*arguments)
        top.stopService()
    return [formatEvent(e) for e in events if "reachable" in (e.get("log_format") or "")]


@pytest.mark.parametrize(
    "args",
    [
        ["--interface", "0.0.0.0"],
        ["--proxy-endpoint", "tcp:8080:interface=0.0.0.0"],
        ["--proxy-endpoint", "tcp:8080"],
        ["--proxy-endpoint", "tcp6:8080:interface=\\:\\:"],
        ["--interface", "::", "--proxy-endpoint", "tcp:8080:interface=192.0.2.1"],
    ],
)
def test_reachableWarning(args: list[str]) -> None:
    """
    The proxy bound to an address other machines may reach is warned about, whether
    C{--interface} or an endpoint description named it: the bound address is what counts.
    """
    [warning] = reachableWarnings(*args)
    assert "may be reachable from other machines" in warning
    assert "serves only clients from loopback" in warning
    assert "without authentication" in warning


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--interface", "0.0.0.0", "--proxy-endpoint", "tcp:8080:interface=127.0.0.1"],
        ["--proxy-endpoint", "tcp6:8080:interface=\\:\\:1"],
    ],
)
def test_loopbackNoWarning(args: list[str]) -> None:
    """
    A proxy on a loopback address is not warned about, whatever C{--interface} says.
    """
    assert reachableWarnings(*args) == []


def test_unixSocketNotReachable() -> None:
    """
    A UNIX socket is not reachable from other machines; an unspecified address is, and an
    IPv4-mapped loopback address is not.
    """
    assert not reachableFromElsewhere(UNIXAddress(b"/run/caplab.sock"))
    assert reachableFromElsewhere(IPv6Address("TCP", "::", 8080))
    assert reachableFromElsewhere(IPv4Address("TCP", "0.0.0.0", 8080))
    assert not reachableFromElsewhere(IPv6Address("TCP", "::ffff:127.0.0.1", 8080))


def test_reachableWarningSaysWhoIsServed() -> None:
    """
    The warning names the C{--allow} networks in force.
    """
    [warning] = reachableWarnings("--interface", "0.0.0.0", "--allow", "192.0.2.0/24")
    assert "serves only clients from 192.0.2.0/24" in warning


def test_workerSaysItIsReady(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A worker's configuration line, logged once it listens with its signal handlers in
    place, carries L{WORKER_READY}: the parent holds C{SIGHUP} for it until then.  A single
    process's line does not.
    """
    reactor = BindingReactor()
    args = ("--no-tcp", "--no-udp")
    with capturedLogs() as events:
        top = serviceTree(buildParts(parse(*args), reactor))
        top.startService()
        monkeypatch.setenv(
            WORKER_ENVIRONMENT,
            '{"index": 1, "sockets": [{"label": "proxy", "fd": 3, "family": 2, "kind": 1}]}',
        )
        worker = serviceTree(buildParts(parse(*args), reactor))
        worker.startService()
        assert not [e for e in events if WORKER_READY in e]
        for running, arguments in reactor.whenRunning:
            running(*arguments)
        top.stopService()
        worker.stopService()
    summaries = [e for e in events if e.get("log_format") == "{summary}"]
    assert [e.get(WORKER_READY) for e in summaries] == [None, True]
