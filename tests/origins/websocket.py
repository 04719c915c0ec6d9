"""
A WebSocket origin for the proxy's tests: an aiohttp server (a real WebSocket implementation
nobody here wrote) on loopback, in a thread of its own.

Routes: C{/echo} upper-cases text messages and echoes binary ones; C{/refuse} answers the
handshake with a plain 403; C{/page} is an HTML page whose script opens C{ws://HOST/echo}
(the host it was loaded from), sends C{hello} and writes the answer into C{#result}.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests.origins import WAIT

#: What the page writes into C{#result} once the echo came back.
PAGE_OK = "websocket says HELLO"

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>websocket</title></head>
<body><p id="result">waiting</p>
<script>
var socket = new WebSocket("ws://" + location.host + "/echo");
socket.onopen = function () { socket.send("hello"); };
socket.onmessage = function (event) {
  document.getElementById("result").textContent = "websocket says " + event.data;
  socket.close();
};
socket.onerror = function () {
  document.getElementById("result").textContent = "websocket failed";
};
</script></body></html>
"""


class EchoServer:
    """
    The WebSocket origin (see the module docstring); C{handshakes} records the fields of
    every upgrade request C{/echo} accepted.
    """

    def __init__(self) -> None:
        from aiohttp import web

        self.port = 0
        self.handshakes: list[dict[str, str]] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/echo", self._echo)
        app.router.add_get("/refuse", self._refuse)
        app.router.add_get("/page", self._page)
        self._runner = web.AppRunner(app)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(WAIT), "the echo server did not start"

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    async def _echo(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        self.handshakes.append(dict(request.headers))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data.upper())
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    async def _refuse(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(status=403, text="no websockets here")

    async def _page(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text=PAGE, content_type="text/html")

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(WAIT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT)
        self._loop.close()
