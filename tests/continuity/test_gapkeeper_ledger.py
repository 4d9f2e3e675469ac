"""The gap keeper writes to the ledger it is given, and says which streams are blind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from bitty.continuity.gapkeeper import GapKeeper
from bitty.engine.events import StreamEvent
from bitty.spec.load import load_spec
from bitty.storage.ledger import Ledger
from bitty.storage.store import Store
from bitty.storage.tables import coverage, gaps
from bitty.storage.writer import Writer
from bitty.trade import Trade

SPEC = """
name: localx
url: ws://127.0.0.1:9/ws
symbols: {default: [BTC-USD], native: "{base}-{quote}"}
subscribe:
  messages: [{type: subscribe, product_ids: "${symbols}"}]
messages:
  trade:
    type: trade
    match: type == 'trade'
    fields:
      symbol: record.product_id
      trade_id: str(record.trade_id)
      price: decimal(record.price)
      size: decimal(record.size)
      side: record.side
      time: iso_time(record.time)
"""

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def _trade(n: int) -> Trade:
    at = T0 + timedelta(seconds=n)
    return Trade("localx", "BTC-USD", str(n), Decimal("100.5"), Decimal("0.01"), "buy", at, at)


def test_the_ledger_given_records_gaps_and_blind_follows_the_open_gap(tmp_path: Path) -> None:
    """A GapKeeper built with a Ledger writes coverage and gaps through it (under its run key), and
    blind() is true from a disconnect until a newer trade bounds the gap."""
    asyncio.run(_run(tmp_path))


async def _run(tmp_path: Path) -> None:
    path = tmp_path / "localx.yaml"
    path.write_text(SPEC)
    spec = load_spec(path)
    store = Store(f"sqlite:///{tmp_path / 'bitty.db'}")
    store.open()
    keeper = GapKeeper(Ledger(store.engine, run_key="run-1"), [spec], backfill=False, quiet_after=30.0,
                       writer=Writer(store, spill_dir=tmp_path / "spill"))
    try:
        await keeper.start([(spec, ["BTC-USD"])])
        assert not keeper.blind("localx", "BTC-USD")
        keeper.on_event(StreamEvent("connected", "localx", ("BTC-USD",), T0))
        keeper.on_trade(_trade(1))
        keeper.on_event(StreamEvent("disconnected", "localx", ("BTC-USD",), T0 + timedelta(seconds=2),
                                    "server closed", "disconnect", T0))
        assert keeper.blind("localx", "BTC-USD")
        assert not keeper.blind("localx", "ETH-USD")
        keeper.on_event(StreamEvent("connected", "localx", ("BTC-USD",), T0 + timedelta(seconds=3)))
        assert keeper.blind("localx", "BTC-USD")  # back, but nothing yet bounds the gap
        keeper.on_trade(_trade(5))
        assert not keeper.blind("localx", "BTC-USD")
    finally:
        await keeper.close()
    with store.engine.connect() as conn:
        keys = {row.run_key for row in conn.execute(sa.select(coverage.c.run_key))}
        found = conn.execute(sa.select(gaps.c.from_id, gaps.c.to_id, gaps.c.status)).all()
    store.close()
    assert keys == {"run-1"}
    assert [tuple(row) for row in found] == [("1", "5", "unrecoverable")]
