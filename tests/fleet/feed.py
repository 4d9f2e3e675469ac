"""A local exchange for fleet tests: every connection subscribed to a symbol gets the same
trades (same ids), as two collectors of a real exchange would."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web

SPEC = """\
name: fleetex
url: ws://127.0.0.1:1/
symbols:
  default: [{symbols}]
  native: "{{base}}-{{quote}}"
subscribe:
  per: connection
  messages:
    - {{op: sub, symbols: "${{symbols}}"}}
messages:
  trade:
    type: trade
    match: kind == 'trade'
    fields:
      symbol: record.s
      trade_id: record.id
      price: decimal(record.p)
      size: decimal(record.q)
      side: record.side
      time: iso_time(record.t)
"""
BASE = datetime(2026, 1, 1, tzinfo=UTC)


class Feed:
    """Sends ``ticks`` rounds of one trade per symbol, once ``start_after`` connections subscribed;
    ``on_tick(k)`` runs after each round."""

    def __init__(self, symbols: list[str], ticks: int, start_after: int, interval: float = 0.01,
                 on_tick: Callable[[int], None] | None = None) -> None:
        self.symbols, self.ticks, self.start_after, self.interval = symbols, ticks, start_after, interval
        self.on_tick = on_tick or (lambda k: None)
        self.subscribers: list[tuple[web.WebSocketResponse, set[str]]] = []
        self.done = threading.Event()
        self.started_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        msg = await ws.receive_json()
        entry = (ws, set(msg["symbols"]))
        self.subscribers.append(entry)
        async for _ in ws:
            pass
        self.subscribers.remove(entry)
        return ws

    async def emit(self) -> None:
        while len(self.subscribers) < self.start_after:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the ledger's "connected" rows are written
        self.started_at = datetime.now(UTC)
        for k in range(1, self.ticks + 1):
            for symbol in self.symbols:
                frame = {"kind": "trade", "s": symbol, "id": str(k), "p": f"{100 + k}.25", "q": "0.001",
                         "side": "buy", "t": (BASE + timedelta(milliseconds=k)).isoformat().replace("+00:00", "Z")}
                for ws, wanted in list(self.subscribers):
                    if symbol in wanted and not ws.closed:
                        # a collector killed: the others carry on
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await ws.send_json(frame)
            self.on_tick(k)
            await asyncio.sleep(self.interval)
        self.ended_at = datetime.now(UTC)
        self.done.set()

    def run_in_thread(self) -> Callable[[], None]:
        ready = threading.Event()
        box: dict[str, object] = {}

        def main() -> None:
            async def serve() -> None:
                app = web.Application()
                app.router.add_get("/{tail:.*}", self.handle)
                runner = web.AppRunner(app, handle_signals=False, access_log=None)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                self.url = f"ws://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
                box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
                emitter = asyncio.get_running_loop().create_task(self.emit())
                ready.set()
                await box["stop"].wait()  # type: ignore[attr-defined]
                emitter.cancel()
                for ws, _ in list(self.subscribers):
                    await ws.close()
                await runner.cleanup()

            asyncio.run(serve())

        thread = threading.Thread(target=main, daemon=True)
        thread.start()
        ready.wait(5)

        def stop() -> None:
            box["loop"].call_soon_threadsafe(box["stop"].set)  # type: ignore[attr-defined]
            thread.join(5)

        return stop
