"""
Headless Chromium and Firefox ESR, pointed at a proxy, in fresh throw-away profiles.

The recipes are those of STYLE.md §5:

  - Chromium gets a PAC file as a C{data:} URL that sends only the test host to the proxy
    (its background requests go DIRECT and fail offline instead of reaching the proxy),
    C{--proxy-bypass-list=<-loopback>} (else loopback is never proxied), background
    networking switched off, and a fresh C{--user-data-dir}. C{HOME} is a fresh directory too,
    so that for HTTPS the throw-away CA can be trusted in its own NSS database
    (C{~/.pki/nssdb}) instead of switching certificate checks off.
  - Firefox gets a fresh profile whose C{user.js} sets the proxy by hand for HTTP and HTTPS,
    lets it hijack localhost, and switches background services off; for HTTPS the CA is
    imported into the profile's NSS database with C{certutil}.

Each run is bounded: the browser's whole process group is killed if it has not exited after
L{BROWSER_TIMEOUT} seconds.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from tests.tls import TEST_HOST

#: Seconds a browser may take to load a page and exit.
BROWSER_TIMEOUT = 60.0


@dataclass
class BrowserRun:
    """
    What a finished browser run left: its exit status, output and duration.
    """

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        """
        The run, for assertion messages (stderr trimmed, Chromium's D-Bus noise dropped).
        """
        noise = ("dbus/", "unexpected operator")
        stderr = [line for line in self.stderr.splitlines() if not any(n in line for n in noise)]
        return (
            f"{' '.join(self.argv)}\nexit {self.returncode} after {self.seconds:.1f}s\n"
            f"stdout:\n{self.stdout[-3000:]}\nstderr:\n" + "\n".join(stderr[-40:])
        )


def runBounded(
    argv: list[str], env: dict[str, str], timeout: float = BROWSER_TIMEOUT
) -> BrowserRun:
    """
    Run C{argv} in a process group of its own; kill the whole group if it outlives C{timeout}
    (and afterwards, so that no helper process of the browser is left behind).
    """
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _killGroup(process.pid)
        stdout, stderr = process.communicate(timeout=10)
        run = BrowserRun(argv, -9, stdout, stderr, time.monotonic() - started)
        raise AssertionError(f"browser did not exit within {timeout}s:\n{run.describe()}") from None
    finally:
        _killGroup(process.pid)
    return BrowserRun(argv, process.returncode, stdout, stderr, time.monotonic() - started)


def _killGroup(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _baseEnvironment(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "LANG", "LC_ALL", "TZ", "CI")
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local/share"),
        MOZ_CRASHREPORTER_DISABLE="1",
    )
    return env


def trustInNSS(database: Path, caCert: Path) -> None:
    """
    Create an NSS database in C{database} that trusts C{caCert} to identify servers.
    """
    database.mkdir(parents=True, exist_ok=True)
    target = f"sql:{database}"
    for argv in (
        ["certutil", "-N", "-d", target, "--empty-password"],
        ["certutil", "-A", "-n", "caplab-test", "-t", "C,,", "-i", str(caCert), "-d", target],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{argv} failed: {result.stderr}"


def pacDataURL(proxy: str, host: str = TEST_HOST) -> str:
    """
    A PAC file as a C{data:} URL: C{host} through C{proxy} (C{HOST:PORT}), all else DIRECT.
    """
    script = (
        "function FindProxyForURL(url, host) {"
        f' if (host == "{host}") return "PROXY {proxy}";'
        ' return "DIRECT"; }'
    )
    encoded = base64.b64encode(script.encode()).decode()
    return f"data:application/x-ns-proxy-autoconfig;base64,{encoded}"


def chromium(
    url: str,
    proxy: str | None,
    workdir: Path,
    caCert: Path | None = None,
    extra: list[str] | None = None,
) -> BrowserRun:
    """
    Load C{url} in headless Chromium through C{proxy} (None: no proxy at all); stdout is the
    DOM after load.  C{extra} options go before the URL.
    """
    home = workdir / "chromium-home"
    env = _baseEnvironment(home)
    if caCert is not None:
        trustInNSS(home / ".pki" / "nssdb", caCert)
    argv = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={workdir / 'chromium-profile'}",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        *(
            [f"--proxy-pac-url={pacDataURL(proxy)}", "--proxy-bypass-list=<-loopback>"]
            if proxy is not None
            else ["--no-proxy-server"]
        ),
        *(extra or []),
        "--dump-dom",
        url,
    ]
    return runBounded(argv, env)


#: Firefox preferences of every test profile (besides the proxy's address).
FIREFOX_PREFERENCES: dict[str, object] = {
    "network.proxy.type": 1,
    "network.proxy.allow_hijacking_localhost": True,
    "network.proxy.no_proxies_on": "",
    "app.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
}


def _userJS(preferences: dict[str, object]) -> str:
    """
    A C{user.js} that sets C{preferences} (JSON literals are valid preference values).
    """
    return "".join(
        f"user_pref({json.dumps(name)}, {json.dumps(value)});\n"
        for name, value in preferences.items()
    )


def firefox(
    url: str, proxy: str, workdir: Path, screenshot: Path, caCert: Path | None = None
) -> BrowserRun:
    """
    Load C{url} in headless Firefox ESR through C{proxy} and save a screenshot.
    """
    profile = workdir / "firefox-profile"
    profile.mkdir(parents=True, exist_ok=True)
    host, port = proxy.rsplit(":", 1)
    preferences = dict(FIREFOX_PREFERENCES)
    for scheme in ("http", "ssl"):
        preferences[f"network.proxy.{scheme}"] = host
        preferences[f"network.proxy.{scheme}_port"] = int(port)
    (profile / "user.js").write_text(_userJS(preferences))
    if caCert is not None:
        trustInNSS(profile, caCert)
    env = _baseEnvironment(workdir / "firefox-home")
    argv = [
        "firefox-esr",
        "--headless",
        "--no-remote",
        "--profile",
        str(profile),
        "--screenshot",
        str(screenshot),
        url,
    ]
    return runBounded(argv, env)


def pngSize(path: Path) -> tuple[int, int]:
    """
    Width and height of the PNG at C{path}; fails if it is not a PNG.
    """
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def countPixels(path: Path, rgb: tuple[int, int, int]) -> int:
    """
    How many pixels of the PNG at C{path} (8-bit RGB or RGBA, not interlaced, as browsers
    write screenshots) have exactly colour C{rgb}.
    """
    return sum(pixelsPerRow(path, rgb))


def pixelsPerRow(path: Path, rgb: tuple[int, int, int]) -> list[int]:
    """
    For each row of the PNG at C{path}, top first, how many of its pixels have exactly
    colour C{rgb} (for where on a screenshot something was drawn).
    """
    data = path.read_bytes()
    width, height = pngSize(path)
    depth, colourType, interlace = data[24], data[25], data[28]
    assert depth == 8 and colourType in (2, 6) and interlace == 0, (depth, colourType, interlace)
    channels = 3 if colourType == 2 else 4
    compressed, offset = b"", 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        if data[offset + 4 : offset + 8] == b"IDAT":
            compressed += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    raw = zlib.decompress(compressed)
    stride = width * channels
    previous = bytearray(stride)
    wanted, counts = bytes(rgb), []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            upLeft = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - upLeft
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - upLeft)
                nearest = left if pa <= pb and pa <= pc else up if pb <= pc else upLeft
                line[x] = (line[x] + nearest) & 0xFF
        counts.append(sum(1 for x in range(0, stride, channels) if line[x : x + 3] == wanted))
        previous = line
    return counts
