"""A real websocket server on 127.0.0.1:0 whose behaviour each test writes as a coroutine."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from bitty.engine.consumer import BaseConsumer
from bitty.spec.load import Spec
from bitty.trade import Quarantined, Trade

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


async def feed_while_draining(ws: web.WebSocketResponse, feed: Callable[[], Awaitable[None]]) -> web.WebSocketResponse:
    """Run ``feed`` (frames sent on a schedule) while reading, as a real server does, until the client leaves."""
    task = asyncio.create_task(feed())
    await drain(ws)
    task.cancel()
    return ws


@dataclasses.dataclass
class Run:
    consumer: BaseConsumer
    connections: int = 0
    trades: list[Trade] = dataclasses.field(default_factory=list)
    quarantined: list[Quarantined] = dataclasses.field(default_factory=list)


async def run_for(consumer: BaseConsumer, seconds: float) -> None:
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(seconds)
    await consumer.stop()
    await asyncio.wait_for(task, 5)


def drive(handler: Handler, seconds: float, spec: Spec, symbols: list[str] | None = None,
          setup: Callable[[BaseConsumer], None] | None = None, **kwargs: Any) -> Run:
    """Serve ``handler``, run a consumer of ``spec`` against it for ``seconds``, and report."""
    async def main() -> Run:
        async with serve(handler) as server:
            consumer = BaseConsumer(symbols or ["BTC-USD", "ETH-USD"], url=server.url, spec=spec,
                                    backoff_initial=0.01, **kwargs)
            run = Run(consumer)
            consumer.on_trade(run.trades.append)
            consumer.on_quarantine(run.quarantined.append)
            if setup is not None:
                setup(consumer)
            await run_for(consumer, seconds)
            run.connections = server.connections
            return run

    return asyncio.run(main())
