"""REST pages whose prices and sizes are JSON numbers: backfilled rows keep the digits the
exchange wrote (no float between the HTTP body and the row), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from bitty.continuity.backfill import Backfiller, Window
from bitty.lang.functions import iso_time
from bitty.spec.load import load_spec
from bitty.storage.store import Store
from bitty.trade import Trade
from tests.conftest import EXCHANGES
from tests.wsserver import serve

# Coinbase's /products/{id}/trades page (newest first), its prices and sizes written as JSON
# numbers with more digits than a float holds and with trailing zeros.
PAGE = b"""[
 {"trade_id": 103, "side": "buy", "size": 100473000.00000000, "price": 61103.030000000000000000001,
  "time": "2024-05-14T09:31:43.111000Z"},
 {"trade_id": 102, "side": "sell", "size": 0.1234567890123456789, "price": 61102.02000000,
  "time": "2024-05-14T09:31:42.974000Z"},
 {"trade_id": 101, "side": "buy", "size": 0.0010, "price": 1E-8,
  "time": "2024-05-14T09:31:41.837000Z"}
]"""
EXPECTED = {
    "101": ("1E-8", "0.0010"),
    "102": ("61102.02000000", "0.1234567890123456789"),
    "103": ("61103.030000000000000000001", "100473000.00000000"),
}


async def _backfill() -> list[Trade]:
    spec = load_spec(EXCHANGES / "coinbase.yaml")

    async def handle(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(body=PAGE, content_type="application/json", headers={"CB-BEFORE": "104"})

    window = Window("BTC-USD", iso_time("2024-05-14T09:31:40.700000Z"),  # type: ignore[arg-type]
                    iso_time("2024-05-14T09:31:48.796000Z"), "100", "104")
    async with serve(handle) as local, aiohttp.ClientSession() as session:
        result = await Backfiller(spec, session, local.url.replace("ws://", "http://")).fill(window)
    assert result.trades, result.reason
    return result.trades


def test_rest_numbers_keep_their_digits_through_backfill(db_url: str) -> None:
    """Prices and sizes sent as JSON numbers are backfilled and stored digit for digit."""
    found = asyncio.run(_backfill())
    assert {t.trade_id: (str(t.price), str(t.size)) for t in found} == EXPECTED
    store = Store(db_url)
    store.open()
    try:
        store.write(found)
        rows = {t.trade_id: (str(t.price), str(t.size)) for t in store.read_trades("coinbase")}
    finally:
        store.close()
    assert rows == EXPECTED
