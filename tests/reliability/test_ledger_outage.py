"""Gap ledger writes during a PostgreSQL outage (cut through a proxy) are not lost: a disconnect
while the database is away still ends with its gap in the ledger and the gap backfilled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from bitty.pipeline import CollectOptions, collect
from bitty.storage import ledger as journal
from bitty.storage.ledger import Ledger
from bitty.storage.store import Store
from tests.continuity.test_gapkeeper import SPEC, Exchange, run
from tests.reliability.proxy import Proxy
from tests.wsserver import serve


class CutBeforeDrop(Exchange):
    """The first connection sends its trades, waits until they are stored, takes PostgreSQL away
    and drops: the gap opens while the database is away."""

    def __init__(self, connections: list[list[int]], total: int, proxy: Proxy, db: str,
                 away: float | None = None) -> None:
        super().__init__(connections, total)
        self.proxy, self.db, self.away = proxy, db, away
        self.cut = False

    def _stored(self, n: int) -> None:
        store = Store(self.db)  # straight to PostgreSQL, not through the proxy
        try:
            for _ in range(200):
                if store.count() >= n:
                    return
                time.sleep(0.05)
        finally:
            store.close()

    async def handle(self, request: web.Request, count: int) -> web.StreamResponse:
        if request.path.startswith("/trades/") or self.cut:
            return await super().handle(request, count)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive(timeout=5)
        await ws.send_json({"type": "subscribed"})
        for n in self.connections.pop(0):
            await ws.send_json({**self.trades[n - 1]})
        await asyncio.to_thread(self._stored, 3)
        await self.proxy.cut()
        self.cut = True
        if self.away is not None:  # back after a while
            asyncio.get_running_loop().call_later(self.away, lambda: asyncio.ensure_future(self.proxy.restore()))
        await ws.close()
        return ws


async def collect_through(proxy: Proxy, exchange: Exchange, spec: Path, pg_url: str, max_trades: int,
                          close_timeout: float = 1.0) -> None:
    port = await proxy.start()
    db = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{port}/")
    async with serve(exchange.handle) as server:
        origin = server.url.replace("ws://", "http://")
        options = CollectOptions(exchanges=[str(spec)], db=db, url=server.url + "/ws", rest_urls={"localx": origin},
                                 max_trades=max_trades, duration=20, backoff_initial=0.01, progress_interval=60,
                                 spill_dir=str(spec.parent / "spill"), close_timeout=close_timeout)
        await asyncio.wait_for(collect(options), 30)
    await proxy.cut()


def test_gap_opened_during_a_short_outage_is_written_when_the_database_is_back(tmp_path: Path, pg_url: str) -> None:
    """The gap's ledger writes wait for PostgreSQL and are made, in order, once it is back: the gap is
    in the ledger and backfilled in the same run."""
    spec = tmp_path / "localx.yaml"
    spec.write_text(SPEC)
    proxy = Proxy("127.0.0.1", 5432)
    exchange = CutBeforeDrop([[1, 2, 3], [7, 8, 9]], total=9, proxy=proxy, db=pg_url, away=1.0)
    asyncio.run(collect_through(proxy, exchange, spec, pg_url, max_trades=6, close_timeout=15))
    assert exchange.cut
    store = Store(pg_url)
    assert sorted(int(t.trade_id) for t in store.read_trades("localx")) == list(range(1, 10))
    [gap] = Ledger(store.engine).gaps("localx")
    assert (gap.from_id, gap.to_id, gap.cause, gap.status, gap.backfilled) == ("3", "7", "disconnect", "closed", 3)
    assert not (tmp_path / "spill" / journal.JOURNAL).exists()
    store.close()


def test_gap_opened_during_an_outage_is_journaled_and_backfilled(tmp_path: Path, pg_url: str) -> None:
    """A disconnect while PostgreSQL is away: the run stops before it is back, its gap goes to the
    ledger journal, and the next run writes the gap first and backfills it."""
    spec = tmp_path / "localx.yaml"
    spec.write_text(SPEC)

    proxy = Proxy("127.0.0.1", 5432)
    exchange = CutBeforeDrop([[1, 2, 3], [7, 8, 9]], total=9, proxy=proxy, db=pg_url)
    asyncio.run(collect_through(proxy, exchange, spec, pg_url, max_trades=6))  # stops with the database away
    assert exchange.cut
    store = Store(pg_url)
    assert Ledger(store.engine).gaps("localx") == []  # the database never saw the gap...
    records = journal.load_journal(tmp_path / "spill")
    [opened] = [r for r in records if r["op"] == "open_gap"]  # ...the journal holds it
    assert (opened["from_id"], opened["cause"]) == ("3", "disconnect")

    # The next run, the database back: the journal is written first, then the gap backfilled.
    asyncio.run(run(Exchange([[10]], total=10), spec, pg_url, max_trades=1))
    assert not (tmp_path / "spill" / journal.JOURNAL).exists()
    assert sorted(int(t.trade_id) for t in store.read_trades("localx")) == list(range(1, 11))
    gaps = Ledger(store.engine).gaps("localx")
    disconnect = [g for g in gaps if g.cause == "disconnect"]
    assert [(g.from_id, g.to_id, g.status) for g in disconnect] == [("3", "7", "closed")]
    store.close()
