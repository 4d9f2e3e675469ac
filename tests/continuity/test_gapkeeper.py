"""End to end: a local exchange that drops the connection and skips trade ids while its REST
endpoint still has every trade; bitty ends up holding exactly the full trade list, with every
gap in the ledger closed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from bitty.pipeline import CollectOptions, collect
from bitty.storage import spill
from bitty.storage.ledger import Ledger
from bitty.storage.store import Store
from bitty.storage.writer import Writer
from tests.reliability.proxy import Proxy
from tests.wsserver import serve

SPEC = """
name: localx
url: ws://127.0.0.1:9/ws
symbols: {default: [BTC-USD], native: "{base}-{quote}"}
subscribe:
  messages: [{type: subscribe, product_ids: "${symbols}"}]
trade_ids: sequential
messages:
  trade:
    type: trade
    match: type == 'trade'
    fields: &fields
      symbol: record.product_id
      trade_id: str(record.trade_id)
      price: decimal(record.price)
      size: decimal(record.size)
      side: record.side
      time: iso_time(record.time)
  ack: {type: ignore, match: type == 'subscribed'}
rest:
  trades:
    url: http://127.0.0.1:9/trades/${symbol}?after=${after_id}&limit=3
    records: "@"
    fields: *fields
    paginate: {by: id, page_size: 3}
    rate: {per_second: 1000, retries: 3}
"""

START = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def trade(n: int) -> dict[str, Any]:
    return {"type": "trade", "product_id": "BTC-USD", "trade_id": n, "price": f"{100 + n}.5", "size": "0.01",
            "side": "buy" if n % 2 else "sell", "time": (START + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")}


class Exchange:
    """Websocket: each connection sends its script of trade ids then closes (the last one stays
    open). REST: every trade, 3 per page, ascending from ``after``; the first call answers 429."""

    def __init__(self, connections: list[list[int]], total: int) -> None:
        self.connections = connections
        self.trades = [trade(n) for n in range(1, total + 1)]
        self.rest_calls: list[str] = []

    async def handle(self, request: web.Request, _count: int) -> web.StreamResponse:
        if request.path.startswith("/trades/"):
            self.rest_calls.append(request.path_qs)
            if len(self.rest_calls) == 1:
                return web.json_response({"message": "slow down"}, status=429, headers={"Retry-After": "0"})
            after = int(request.query["after"])
            page = [t for t in self.trades if t["trade_id"] > after][: int(request.query["limit"])]
            return web.Response(body=orjson.dumps(page), content_type="application/json")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive(timeout=5)  # the subscribe message
        await ws.send_json({"type": "subscribed"})
        script = self.connections.pop(0) if self.connections else []
        for n in script:
            await ws.send_json(trade(n))
        if self.connections:
            await ws.close()
        else:
            async for _ in ws:
                pass
        return ws


async def run(exchange: Exchange, spec: Path, db: str, max_trades: int, output: str | None = None) -> None:
    async with serve(exchange.handle) as server:
        origin = server.url.replace("ws://", "http://")
        options = CollectOptions(exchanges=[str(spec)], db=db, url=server.url + "/ws", rest_urls={"localx": origin},
                                 max_trades=max_trades, duration=20, backoff_initial=0.01, progress_interval=60,
                                 output=output, spill_dir=str(spec.parent / "spill"))
        await asyncio.wait_for(collect(options), 30)


def test_drops_and_skipped_ids_are_backfilled(tmp_path: Path, db_url: str) -> None:
    """Skipped ids and a dropped connection open gaps; REST backfill fills and closes every one
    (the ledger on SQLite and on PostgreSQL)."""
    spec = tmp_path / "localx.yaml"
    spec.write_text(SPEC)
    db = db_url
    # 6-7 skipped live, 11-13 lost while disconnected, 16 skipped after the reconnect.
    exchange = Exchange([[1, 2, 3, 4, 5, 8, 9, 10], [14, 15, 17, 18, 19, 20]], total=20)
    asyncio.run(run(exchange, spec, db, max_trades=14))

    store = Store(db)
    ids = [int(t.trade_id) for t in store.read_trades("localx")]
    assert sorted(ids) == list(range(1, 21))
    assert len(ids) == len(set(ids))
    gaps = Ledger(store.engine).gaps("localx")
    assert [(g.cause, g.from_id, g.to_id, g.status) for g in gaps] == [
        ("sequence", "5", "8", "closed"),
        ("disconnect", "10", "14", "closed"),
        ("sequence", "15", "17", "closed"),
    ]
    assert sum(g.backfilled for g in gaps) == 6
    assert exchange.rest_calls[0] == exchange.rest_calls[1]  # the 429 was retried

    # A second run starting later: the trades published meanwhile (21-23) are a restart gap.
    exchange = Exchange([[24, 25]], total=25)
    asyncio.run(run(exchange, spec, db, max_trades=2))
    ids = sorted(int(t.trade_id) for t in store.read_trades("localx"))
    assert ids == list(range(1, 26))
    restart = Ledger(store.engine).gaps("localx")[-1]
    assert (restart.cause, restart.from_id, restart.to_id, restart.status) == ("restart", "20", "24", "closed")
    store.close()


def test_audit_reports_coverage_gaps_and_charts(tmp_path: Path, capsys: Any) -> None:
    """bitty audit prints the table and writes a self-contained HTML chart of a collected window."""
    from bitty.cli import main

    spec = tmp_path / "localx.yaml"
    spec.write_text(SPEC)
    db = f"sqlite:///{tmp_path}/bitty.db"
    asyncio.run(run(Exchange([[1, 2, 4], [6, 7]], total=7), spec, db, max_trades=5))
    page = tmp_path / "audit.html"
    code = main(["audit", "localx", "--db", db, "--since", "2024-01-02T03:00:00Z", "--until", "2024-01-02T03:10:00Z",
                 "--html", str(page)])
    assert code == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("localx"))
    assert row[:6] == ["localx", "BTC-USD", "7", "0", "2", "0"]
    assert "0 duplicates ignored, 0 frames quarantined" in out
    text = page.read_text()
    assert text.count("<svg") == 1 and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert text.count("gap closed") == 2


def test_backfilled_trades_reach_the_output_file(tmp_path: Path) -> None:
    """Trades recovered by backfill go through the writer like live ones: the --output jsonl file
    holds every stored trade, backfilled or live, once."""
    spec = tmp_path / "localx.yaml"
    spec.write_text(SPEC)
    db, out = f"sqlite:///{tmp_path}/bitty.db", tmp_path / "trades.jsonl"
    exchange = Exchange([[1, 2, 3, 4, 5, 8, 9, 10], [14, 15, 17, 18, 19, 20]], total=20)
    asyncio.run(run(exchange, spec, db, max_trades=14, output=f"jsonl:{out}"))
    mirrored = [orjson.loads(line)["trade_id"] for line in out.read_bytes().splitlines()]
    assert sorted(map(int, mirrored)) == list(range(1, 21))
    store = Store(db)
    assert sorted(t.trade_id for t in store.read_trades()) == sorted(mirrored)
    assert sum(g.backfilled for g in Ledger(store.engine).gaps("localx")) == 6
    store.close()


class DatabaseCutDuringBackfill(Exchange):
    """The REST endpoint answering a backfill takes PostgreSQL away (through a proxy) as it serves
    the page, once the ledger holds the gap, and brings it back ``away`` seconds later."""

    def __init__(self, connections: list[list[int]], total: int, proxy: Proxy, away: float, db: str) -> None:
        super().__init__(connections, total)
        self.proxy, self.away, self.db = proxy, away, db
        self.cut = False

    def _gap_bounded(self) -> None:
        store = Store(self.db)  # straight to PostgreSQL, not through the proxy
        try:
            for _ in range(200):
                if any(g.to_id for g in Ledger(store.engine).gaps("localx")):
                    return
                time.sleep(0.05)
        finally:
            store.close()

    async def handle(self, request: web.Request, count: int) -> web.StreamResponse:
        if request.path.startswith("/trades/") and self.rest_calls and not self.cut:
            self.cut = True
            await asyncio.to_thread(self._gap_bounded)
            await self.proxy.cut()
            asyncio.get_running_loop().call_later(self.away, lambda: asyncio.ensure_future(self.proxy.restore()))
        return await super().handle(request, count)


def test_database_outage_during_a_backfill_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL cut while a gap is backfilled: the recovered trades wait in the writer's retries
    and are stored once it is back, mirrored to --output, and the gap closes with its counts; live
    trades of the outage that the run stops on are in the spill journal. Nothing is missing."""
    spec = tmp_path / "localx.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "trades.jsonl"

    async def main() -> DatabaseCutDuringBackfill:
        proxy = Proxy("127.0.0.1", 5432)
        port = await proxy.start()
        db = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{port}/")
        exchange = DatabaseCutDuringBackfill([[1, 2, 3], [7, 8, 9]], total=9, proxy=proxy, away=1.5, db=pg_url)
        await run(exchange, spec, db, max_trades=6, output=f"jsonl:{out}")
        await proxy.cut()
        return exchange

    async def write_back() -> None:
        """What the next run does first: write the spill folder back."""
        store = Store(pg_url)
        await asyncio.to_thread(store.open)
        writer = Writer(store, flush_interval=0.05, spill_dir=tmp_path / "spill")
        writer.start()
        await writer.close()
        store.close()

    exchange = asyncio.run(main())
    assert exchange.cut
    store = Store(pg_url)
    stored = [int(t.trade_id) for t in store.read_trades("localx")]
    spilled = [int(t.trade_id) for path in spill.pending(tmp_path / "spill") for t in spill.read(path)]
    assert {4, 5, 6} <= set(stored)  # the backfilled trades, in this run
    assert set(stored) | set(spilled) == set(range(1, 10))
    mirrored = [int(orjson.loads(line)["trade_id"]) for line in out.read_bytes().splitlines()]
    assert sorted(mirrored) == sorted(stored)  # every trade stored by this run is in the --output file, once
    [gap] = Ledger(store.engine).gaps("localx")
    assert (gap.from_id, gap.to_id, gap.status, gap.backfilled, gap.duplicates) == ("3", "7", "closed", 3, 0)
    asyncio.run(write_back())
    assert sorted(int(t.trade_id) for t in store.read_trades("localx")) == list(range(1, 10))
    store.close()
