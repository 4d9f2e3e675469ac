"""A local websocket server flooding frames: one port per exchange, run in its own process so
its CPU is not counted against the client. Each connection learns its symbols the way the
exchange does (Binance: the URL's streams; Coinbase and Kraken: the subscribe message)."""

from __future__ import annotations

import asyncio
import itertools
from multiprocessing.connection import Connection
from typing import Any

import orjson
from aiohttp import web

from bench.frames import EXCHANGES, generate

_ids = itertools.count(1, 1_000_000)


async def _handler(request: web.Request) -> web.WebSocketResponse:
    exchange, per_connection = request.app["exchange"], request.app["frames"]
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    if exchange == "binance":
        natives = [s.split("@")[0].upper() for s in request.query.get("streams", "").split("/") if s]
    else:
        first: Any = orjson.loads((await ws.receive()).data)
        natives = first.get("product_ids") or first.get("pair") or []
    for text in generate(exchange, natives, per_connection, start_id=next(_ids)):
        await ws.send_str(text)
    async for _ in ws:  # keepalive requests: ignored until the client closes
        pass
    return ws


async def _serve(frames: int, pipe: Connection) -> None:
    ports = {}
    for exchange in EXCHANGES:
        app = web.Application()
        app["exchange"], app["frames"] = exchange, frames
        app.router.add_get("/{tail:.*}", _handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports[exchange] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    pipe.send(ports)
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # until told to stop


def serve(frames: int, pipe: Connection) -> None:
    """Process entry point: send {exchange: port} through ``pipe``, serve until it gets a message."""
    asyncio.run(_serve(frames, pipe))
