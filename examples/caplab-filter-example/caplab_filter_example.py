"""
An example caplab filter plugin, installed with pip like any package.

Two filters, found by caplab through the C{caplab.filters} entry points in C{setup.cfg}:

    - C{upper}: the lab's uppercase service as a web filter: C{a}-C{z} in C{text/plain}
      bodies (or the media types given as C{types=text/plain,text/csv}) become C{A}-C{Z}
      as the body streams;
    - C{lab-tag}: a request filter that adds C{X-Lab: VALUE} (option C{value}, default
      C{caplab}) to the requests it is selected for.

Use them with::

    twist caplab --filter '* upper' --filter 'example.com lab-tag value=lab3'
"""

from __future__ import annotations

from dataclasses import replace

_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class UpperTransform:
    """
    The body transform: no context needed, so nothing is held back.
    """

    window = 0

    def feed(self, data: bytes) -> bytes:
        return data.translate(_UPPER)

    def finish(self) -> bytes:
        return b""


class UpperFilter:
    """
    A response filter (C{filterHead} and C{transformBody}).
    """

    name = "upper"

    def __init__(self, options: dict[str, str]) -> None:
        unknown = set(options) - {"types"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} (known: types)")
        types = options.get("types", "text/plain")
        self.types = frozenset(t.strip().lower() for t in types.split(",") if t.strip())
        if not self.types:
            raise ValueError("types names no media type")

    def filterHead(self, request, head):
        pass

    def transformBody(self, request, head):
        if head.mediaType in self.types:
            return UpperTransform()
        return None


class LabTagFilter:
    """
    A request filter (C{filterRequest}).
    """

    name = "lab-tag"

    def __init__(self, options: dict[str, str]) -> None:
        self.value = options.get("value", "caplab").encode("ascii")

    def filterRequest(self, request, client):
        return replace(request, headers=[*request.headers, (b"X-Lab", self.value)])
