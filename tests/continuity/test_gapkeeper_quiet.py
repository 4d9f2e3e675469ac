"""Gaps that must close without a live trade to bound them: a quiet market where the exchange
repeats its last trade on subscribe (Coinbase's ``last_match``), a symbol that stops trading
after a reconnect (closed from REST alone), and a REST endpoint whose pages are smaller than
the spec's ``page_size`` (followed to the end). Local exchanges speak the real wire formats and
the real REST pagination of Coinbase and Binance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from bitty.pipeline import CollectOptions, collect
from bitty.storage.ledger import Ledger
from bitty.storage.store import Store
from tests.wsserver import serve

START = datetime(2024, 5, 14, 9, 30, tzinfo=UTC)


def _iso(n: int) -> str:
    return (START + timedelta(seconds=n)).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Coinbase:
    """The `matches` and `heartbeat` channels (a `last_match` first on every subscription, a
    heartbeat per product every 0.1 s carrying the last trade id) and GET
    /products/{id}/trades: newest first, ``before=X`` pages towards newer trades, CB-BEFORE the
    next cursor. Each connection sends its script of trades then closes, the last stays open."""

    def __init__(self, scripts: list[list[int]], rest_total: int) -> None:
        self.scripts = scripts
        self.rest_total = rest_total
        self.published = 0
        self.rest_calls: list[str] = []

    @staticmethod
    def match(n: int, kind: str = "match") -> dict[str, Any]:
        return {"type": kind, "trade_id": n, "maker_order_id": f"m-{n}", "taker_order_id": f"t-{n}",
                "side": "sell" if n % 2 else "buy", "size": "0.01000000", "price": f"{37000 + n}.00",
                "product_id": "BTC-USD", "sequence": 68946329700 + n, "time": _iso(n)}

    async def handle(self, request: web.Request, _count: int) -> web.StreamResponse:
        if request.path.startswith("/products/"):
            self.rest_calls.append(request.path_qs)
            before = int(request.query["before"])
            ids = [n for n in range(before + 1, self.rest_total + 1)][: int(request.query["limit"])]
            page = [self.match(n) for n in reversed(ids)]
            headers = {"CB-BEFORE": str(ids[-1])} if ids else {}
            return web.Response(body=orjson.dumps(page), content_type="application/json", headers=headers)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive(timeout=5)  # the subscribe message
        await ws.send_json({"type": "subscriptions", "channels": [{"name": "matches", "product_ids": ["BTC-USD"]}]})
        script = self.scripts.pop(0) if self.scripts else []
        # The exchange's latest trade: the one before this connection's first, if any.
        self.published = script[0] - 1 if script else self.published
        if self.published:
            await ws.send_json(self.match(self.published, "last_match"))
        for n in script:
            await ws.send_json(self.match(n))
            self.published = n
        if self.scripts:
            await ws.close()
            return ws
        while not ws.closed:
            try:
                await ws.send_json({"type": "heartbeat", "last_trade_id": self.published, "product_id": "BTC-USD",
                                    "sequence": 68946329700 + self.published, "time": _iso(self.published)})
            except ConnectionError:
                break  # the collector went away
            await asyncio.sleep(0.1)
        return ws


class Binance:
    """A combined `<symbol>@trade` stream and GET /api/v3/historicalTrades: ascending from
    ``fromId`` (inclusive), at most ``cap`` records a page whatever ``limit`` asks for. Each
    connection sends its script then closes; the last stays open and silent."""

    def __init__(self, scripts: list[list[int]], rest_total: int, cap: int) -> None:
        self.scripts = scripts
        self.rest_total = rest_total
        self.cap = cap
        self.rest_calls: list[str] = []

    @staticmethod
    def ms(n: int) -> int:
        return int((START + timedelta(seconds=n)).timestamp() * 1000)

    async def handle(self, request: web.Request, _count: int) -> web.StreamResponse:
        if request.path == "/api/v3/historicalTrades":
            self.rest_calls.append(request.path_qs)
            first = int(request.query["fromId"])
            count = min(int(request.query["limit"]), self.cap)
            page = [{"id": n, "price": f"{91000 + n}.01000000", "qty": "0.00100000", "quoteQty": "91.00000000",
                     "time": self.ms(n), "isBuyerMaker": n % 2 == 0, "isBestMatch": True}
                    for n in range(first, self.rest_total + 1)][:count]
            return web.Response(body=orjson.dumps(page), content_type="application/json")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        script = self.scripts.pop(0) if self.scripts else []
        for n in script:
            await ws.send_json({"stream": "btcusdt@trade", "data": {
                "e": "trade", "E": self.ms(n) + 1, "s": "BTCUSDT", "t": n, "p": f"{91000 + n}.01000000",
                "q": "0.00100000", "T": self.ms(n), "m": n % 2 == 0, "M": True}})
        if self.scripts:
            await ws.close()
        else:
            async for _ in ws:
                pass
        return ws


async def _collect(exchange: Coinbase | Binance, name: str, folder: Path, quiet_after: float) -> str:
    db = f"sqlite:///{folder}/{name}.db"
    async with serve(exchange.handle) as server:
        origin = server.url.replace("ws://", "http://")
        options = CollectOptions(exchanges=[name], symbols=["BTC-USD"] if name == "coinbase" else ["BTC-USDT"],
                                 db=db, url=server.url + "/ws", rest_urls={name: origin}, duration=3,
                                 backoff_initial=0.01, progress_interval=60, gap_quiet_after=quiet_after,
                                 spill_dir=str(folder / "spill"))
        await asyncio.wait_for(collect(options), 30)
    return db


def test_repeated_last_trade_after_reconnect_closes_the_gap(tmp_path: Path) -> None:
    """In a quiet market the first trade after reconnecting is the last one held (Coinbase's
    last_match): nothing was missed, and the gap closes at once, without waiting for a new trade."""
    exchange = Coinbase([[1, 2, 3, 4, 5], []], rest_total=5)
    db = asyncio.run(_collect(exchange, "coinbase", tmp_path, quiet_after=60))
    store = Store(db)
    assert sorted(int(t.trade_id) for t in store.read_trades("coinbase")) == [1, 2, 3, 4, 5]
    [gap] = Ledger(store.engine).gaps("coinbase")
    assert (gap.cause, gap.from_id, gap.to_id, gap.status) == ("disconnect", "5", "5", "closed")
    assert "latest trade after reconnecting is the last one held" in gap.reason
    assert exchange.rest_calls == []
    store.close()


def test_symbol_that_stops_trading_after_a_reconnect_is_backfilled_from_rest(tmp_path: Path) -> None:
    """Trades 11-40 happen while disconnected, then the symbol goes quiet: with no live trade to
    bound the gap, REST alone fills it up to the exchange's latest trade, through pages of 7
    although the spec asks for 1,000 a page."""
    exchange = Binance([list(range(1, 11)), []], rest_total=40, cap=7)
    db = asyncio.run(_collect(exchange, "binance", tmp_path, quiet_after=0.3))
    store = Store(db)
    assert sorted(int(t.trade_id) for t in store.read_trades("binance")) == list(range(1, 41))
    [gap] = Ledger(store.engine).gaps("binance")
    assert (gap.cause, gap.from_id, gap.status, gap.backfilled) == ("disconnect", "10", "closed", 30)
    assert [call.split("fromId=")[1].split("&")[0] for call in exchange.rest_calls] == ["11", "18", "25", "32", "39", "41"]
    store.close()


def test_backfill_follows_pages_smaller_than_the_spec_expects(tmp_path: Path) -> None:
    """A gap bounded by a live trade, on an endpoint that caps pages at 4: every page is walked
    until the gap's end, not only the first."""
    # 6..20 happen while disconnected; the stream is back with last_match 20, then 21..23.
    exchange = Coinbase([[1, 2, 3, 4, 5], [21, 22, 23]], rest_total=23)
    original = exchange.handle

    async def capped(request: web.Request, count: int) -> web.StreamResponse:
        if request.path.startswith("/products/"):
            request = request.clone(rel_url=request.rel_url.update_query(limit="4"))
        return await original(request, count)

    exchange.handle = capped  # type: ignore[method-assign]
    db = asyncio.run(_collect(exchange, "coinbase", tmp_path, quiet_after=60))
    store = Store(db)
    assert sorted(int(t.trade_id) for t in store.read_trades("coinbase")) == list(range(1, 24))
    [gap] = Ledger(store.engine).gaps("coinbase")
    assert (gap.from_id, gap.to_id, gap.status, gap.backfilled) == ("5", "20", "closed", 14)
    assert len(exchange.rest_calls) == 4  # 6-9, 10-13, 14-17, 18-21: the gap's end is on the fourth
    store.close()
