"""The writer is the one road to the database: write_now (backfilled trades) retries, mirrors and
counts like live writes, spills when the database stays away past the close deadline, and no
other module writes trades to the store."""

from __future__ import annotations

import ast
import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from bitty.storage import spill
from bitty.storage.store import Store
from bitty.storage.writer import Writer
from bitty.trade import Trade
from tests.reliability.proxy import Proxy

T0 = datetime(2024, 5, 1, tzinfo=UTC)
BITTY = Path(__file__).resolve().parents[2] / "bitty"


def trade(n: int) -> Trade:
    return Trade("testex", "BTC-USD", str(n), Decimal("100.25"), Decimal("0.5"), "buy", T0 + timedelta(seconds=n), T0)


def test_write_now_stores_mirrors_and_counts(sqlite_url: str, tmp_path: Path) -> None:
    """write_now returns the new trades, hands them to the mirror, and counts new and duplicates."""

    async def main() -> tuple[Writer, list[Trade], list[Trade] | None, list[Trade] | None]:
        store = Store(sqlite_url)
        store.open()
        mirrored: list[Trade] = []
        writer = Writer(store, flush_interval=0.05, on_stored=mirrored.extend, spill_dir=tmp_path / "spill")
        writer.start()
        writer.put(trade(1))
        first = await writer.write_now([trade(1), trade(2), trade(3)])  # 1 may be stored already, or not
        again = await writer.write_now([trade(2), trade(3), trade(4)])
        await writer.close()
        store.close()
        return writer, mirrored, first, again

    writer, mirrored, first, again = asyncio.run(main())
    assert first is not None and {t.trade_id for t in first} >= {"2", "3"}
    assert again == [trade(4)]
    assert sorted(t.trade_id for t in mirrored) == ["1", "2", "3", "4"]
    assert (writer.stats.received, writer.stats.stored, writer.stats.backfilled) == (1, 4, 6)
    assert writer.stats.duplicates == 3
    assert writer.per_exchange["testex"].backfilled == 6


def test_write_now_spills_when_the_database_stays_away_past_the_close_deadline(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL cut and closing begun: write_now gives up at the deadline and spills the trades,
    which the next writer writes back: nothing lost."""
    spill_dir = tmp_path / "spill"

    async def main() -> tuple[list[Trade] | None, int]:
        proxy = Proxy("127.0.0.1", 5432)
        port = await proxy.start()
        store = Store(pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{port}/"))
        await asyncio.to_thread(store.open)
        writer = Writer(store, flush_interval=0.05, spill_dir=spill_dir, close_timeout=1.0)
        writer.start()
        await proxy.cut()
        writer.begin_close()
        result = await writer.write_now([trade(n) for n in range(5)])
        await writer.close()
        await proxy.restore()
        await proxy.cut()
        store.close()
        return result, writer.stats.spilled

    result, spilled = asyncio.run(main())
    assert result is None and spilled == 5
    assert len(spill.pending(spill_dir)) == 1

    async def write_back() -> int:
        store = Store(pg_url)
        await asyncio.to_thread(store.open)
        writer = Writer(store, flush_interval=0.05, spill_dir=spill_dir)
        writer.start()
        await writer.close()
        count = await asyncio.to_thread(store.count)
        store.close()
        return count

    assert asyncio.run(write_back()) == 5
    assert spill.pending(spill_dir) == []


def test_only_the_writer_writes_trades_to_the_store() -> None:
    """No module but storage/writer.py (and `bitty sink`, draining JetStream) reaches a store's write: one road."""
    users = set()
    for path in BITTY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "write" and "store" in ast.unparse(node.value).lower():
                users.add(str(path.relative_to(BITTY)))
    # `bitty sink` commits what it drained from JetStream itself: there the stream is the buffer
    # (a batch is acked only after its commit, redelivered otherwise), not the writer's spill.
    assert users == {"storage/writer.py", "commands/sink.py"}


def test_a_stop_after_an_outage_writes_this_runs_journal_in(tmp_path: Path) -> None:
    """Trades journaled while SQLite was locked are stored by the stop once it is free again,
    not left in spill files for the next run."""
    db = tmp_path / "w.db"
    store = Store(f"sqlite:///{db}?timeout=0.05")
    store.open()
    spill_dir = tmp_path / "spill"

    async def main() -> Writer:
        writer = Writer(store, flush_interval=0.05, spill_dir=spill_dir, sync_interval=0.1)
        writer.start()
        holder = sqlite3.connect(db, timeout=5)
        holder.execute("BEGIN EXCLUSIVE")
        for n in range(1, 51):
            writer.put(trade(n))
        for _ in range(100):  # until the journal holds them
            await asyncio.sleep(0.05)
            if writer.stats.spilled >= 50:
                break
        assert writer.stats.spilled >= 50 and writer.pending == 0
        holder.rollback()
        holder.close()
        await writer.close()
        return writer

    writer = asyncio.run(main())
    assert store.count() == 50
    assert spill.pending(spill_dir) == []
    assert writer.stats.stored == 50
    store.close()
