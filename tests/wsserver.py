"""A real websocket server on 127.0.0.1:0 whose behaviour each test writes as a coroutine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.received: list[str] = []
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.connections += 1
        return await self.handler(request, self.connections)


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"ws://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


async def accept(request: web.Request, server: Server | None = None) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    return ws


async def read_json(ws: web.WebSocketResponse, timeout: float = 5) -> Any:
    msg = await ws.receive(timeout=timeout)
    return msg.json()


async def drain(ws: web.WebSocketResponse) -> web.WebSocketResponse:
    """Keep the connection open, reading (and so answering close frames) until the client leaves."""
    async for _ in ws:
        pass
    return ws
