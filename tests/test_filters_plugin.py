"""
Tests for filter plugins: the example package in C{examples/caplab-filter-example} installed
with pip into a temporary directory and used by a fresh Python; and loading errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from caplab.proxy.filters.config import buildChain, parseFilterConfig
from caplab.proxy.filters.hosts import FilterConfigError
from caplab.proxy.filters.plugins import GROUP, loadPlugin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "caplab-filter-example"

#: Run by a fresh Python that has the installed plugin on its path.
USE_PLUGIN = textwrap.dedent(
    """
    import json
    from importlib.metadata import entry_points
    from caplab.proxy.filters.config import buildChain, parseFilterConfig
    from caplab.proxy.hooks import Target, UpstreamRequest, UpstreamResponse

    found = sorted(e.name for e in entry_points(group="caplab.filters"))
    chain = buildChain(parseFilterConfig(
        {"filter": ["* upper", "example.com lab-tag value=lab3"]}))
    request = UpstreamRequest(b"GET", Target("http", "example.com", 80, b"/"), [])
    request = chain.filterRequest(request, "127.0.0.1")
    got = []
    class Sink:
        def bodyStarted(self, producer): pass
        def bodyData(self, data): got.append(data)
        def bodyDone(self, complete): got.append(complete)
    class Producer:
        def pauseProducing(self): pass
        def resumeProducing(self): pass
        def stopProducing(self): pass
    def deliver(sink):
        sink.bodyStarted(Producer())
        sink.bodyData(b"welcome to cn lab, ")
        sink.bodyData(b"hi this is nitish")
        sink.bodyDone(True)
    response = UpstreamResponse(200, b"OK", [(b"Content-Type", b"text/plain")], deliver)
    response = chain.filterResponse(request, response)
    response.deliverBody(Sink())
    print(json.dumps({
        "found": found,
        "summary": chain.describe(),
        "request": [[n.decode(), v.decode()] for n, v in request.headers],
        "body": b"".join(g for g in got if isinstance(g, bytes)).decode(),
        "complete": got[-1],
    }))
    """
)


class InstalledPluginTests(SynchronousTestCase):
    def test_installAndUse(self) -> None:
        """
        C{pip install} puts the example's entry points where caplab finds them; a
        configuration naming them loads them and they work: the request filter adds its
        field, the response filter uppercases the text as it streams.
        """
        work = Path(tempfile.mkdtemp(prefix="caplab-plugin-"))
        self.addCleanup(shutil.rmtree, work, True)
        source = work / "source"
        shutil.copytree(EXAMPLE, source)  # pip builds in the source tree: not in ours
        target = work / "site"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--disable-pip-version-check", "--target", str(target), str(source)],
            check=True, timeout=300, capture_output=True,
        )  # fmt: skip
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join([str(target), str(ROOT)])
        done = subprocess.run(
            [sys.executable, "-c", USE_PLUGIN],
            check=True, timeout=60, capture_output=True, env=environment, text=True,
        )  # fmt: skip
        result = json.loads(done.stdout)
        self.assertEqual(result["found"], ["lab-tag", "upper"])
        self.assertEqual(result["summary"], "plugin upper; plugin lab-tag")
        self.assertEqual(result["request"], [["X-Lab", "lab3"]])
        self.assertEqual(result["body"], "WELCOME TO CN LAB, HI THIS IS NITISH")
        self.assertIs(result["complete"], True)


def notAFilter(options: dict[str, str]) -> object:
    return object()


def refuses(options: dict[str, str]) -> object:
    raise ValueError(f"unknown option {sorted(options)[0]!r}")


def crashes(options: dict[str, str]) -> object:
    raise RuntimeError("bug")


class RequestTagger:
    name = "tagger"

    def __init__(self, options: dict[str, str]) -> None:
        self.options = options

    def filterRequest(self, request: Any, client: str) -> Any:
        return request


def entryPoints(**values: str) -> Any:
    return lambda: [EntryPoint(name, value, GROUP) for name, value in values.items()]


class LoadingTests(SynchronousTestCase):
    def test_loads(self) -> None:
        made = loadPlugin(
            "t", {"a": "1"}, find=entryPoints(t="tests.test_filters_plugin:RequestTagger")
        )
        self.assertIsInstance(made, RequestTagger)
        self.assertEqual(made.options, {"a": "1"})  # type: ignore[attr-defined]
        chain = buildChain(
            parseFilterConfig({"filter": ["example.com t"]}),
            findPlugins=entryPoints(t="tests.test_filters_plugin:RequestTagger"),
        )
        self.assertEqual(len(chain.requestFilters), 1)
        self.assertEqual(chain.responseFilters, [])

    def test_errors(self) -> None:
        """
        A missing plugin, one that cannot be imported, refuses its options, crashes or makes
        no filter: each is a configuration error naming the plugin.
        """
        find = entryPoints(
            missing="no_such_module_here:x",
            refuses="tests.test_filters_plugin:refuses",
            crashes="tests.test_filters_plugin:crashes",
            nothing="tests.test_filters_plugin:notAFilter",
        )
        for name, message in [
            (
                "absent",
                "no filter plugin named 'absent' is installed "
                "(installed: crashes, missing, nothing, refuses)",
            ),
            (
                "missing",
                "filter plugin 'missing' (no_such_module_here:x) cannot be loaded: "
                "ModuleNotFoundError",
            ),
            ("refuses", "filter plugin 'refuses': unknown option 'k'"),
            ("crashes", "filter plugin 'crashes' failed to start: RuntimeError: bug"),
            ("nothing", "which has neither filterRequest nor filterHead and transformBody"),
        ]:
            with self.assertRaises(FilterConfigError) as caught:
                loadPlugin(name, {"k": "v"}, "--filter", find)
            self.assertIn(message, str(caught.exception))
        with self.assertRaises(FilterConfigError) as caught:
            loadPlugin("x", {}, find=lambda: [])
        self.assertIn("(installed: none)", str(caught.exception))
