"""Storage faults: the database away, locked, or the process killed. Nothing received is lost."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from bitty.storage import runs, spill, tables
from bitty.storage.store import Store
from bitty.storage.writer import Writer
from bitty.trade import Trade
from tests.commands.test_collect import serve_in_thread, signal_when, start_collector
from tests.conftest import EXCHANGES, SPECS
from tests.reliability.proxy import Proxy

UTC = UTC
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def trade(n: int) -> Trade:
    return Trade("faulty", "BTC-USD", str(n), Decimal("100.25"), Decimal("0.5"), "buy",
                 T0 + timedelta(milliseconds=n), T0)


async def wait_for(condition, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def outage(url: str, spill_dir: Path, take_away: Callable[[], Awaitable[None]],
                 bring_back: Callable[[], Awaitable[None]], while_away: int, errors: int = 1) -> tuple[Writer, int]:
    """300 trades stored, the database taken away, ``while_away`` more trades put (readers keep
    going: put() never blocks), the database brought back; returns the writer and the row count."""
    store = Store(url)
    await asyncio.to_thread(store.open)
    writer = Writer(store, batch_size=100, flush_interval=0.05, max_pending=400, spill_dir=spill_dir)
    writer.start()
    for n in range(300):
        writer.put(trade(n))
    await wait_for(lambda: writer.stats.stored == 300)
    await take_away()
    try:
        for n in range(300, 300 + while_away):
            writer.put(trade(n))
            if n % 100 == 0:
                await asyncio.sleep(0.01)
        await wait_for(lambda: writer.stats.write_errors >= errors)
        assert writer.pending <= 400
    finally:
        await bring_back()
    await wait_for(lambda: writer.stats.stored == 300 + while_away, timeout=60)
    await writer.close()
    count = await asyncio.to_thread(store.count)  # a proxy may run on this loop: never block it
    await asyncio.to_thread(store.close)
    return writer, count


def test_postgresql_away_then_back_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL unreachable mid-run: trades wait, overflow spills to disk, all are stored on return."""
    async def main() -> tuple[Writer, int]:
        proxy = Proxy("127.0.0.1", 5432)
        port = await proxy.start()
        try:
            return await outage(pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}"), tmp_path / "spill",
                                proxy.cut, proxy.restore, 2000, errors=2)
        finally:
            await proxy.cut()

    writer, count = asyncio.run(main())
    assert count == 2300 and writer.stats.duplicates == 0 and writer.stats.spilled > 0
    assert spill.pending(tmp_path / "spill") == []


def test_values_postgresql_refuses_are_kept_apart_and_the_rest_is_stored(pg_url: str, tmp_path: Path) -> None:
    """A trade id PostgreSQL cannot hold (a NUL character; longer than its column) and a garbage
    frame with a NUL byte: retrying cannot store them, so they go to a refused file with the
    reason, and every other trade of the batch and after it is stored."""
    from bitty.trade import Quarantined

    async def main() -> tuple[Writer, int]:
        store = Store(pg_url)
        await asyncio.to_thread(store.open)
        writer = Writer(store, batch_size=100, flush_interval=0.05, spill_dir=tmp_path / "spill")
        writer.start()
        for n in range(20):
            writer.put(trade(n))
        writer.put(Trade("faulty", "BTC-USD", "a\x00b", Decimal(1), Decimal(1), "buy", T0, T0))
        writer.put(Trade("faulty", "BTC-USD", "x" * 200, Decimal(1), Decimal(1), "buy", T0, T0))
        writer.quarantine(Quarantined("faulty", 1, "not JSON", "garbage \x00 frame", T0))
        await wait_for(lambda: writer.stats.stored == 20)
        for n in range(20, 30):
            writer.put(trade(n))
        await writer.close()
        count = await asyncio.to_thread(store.count)
        await asyncio.to_thread(store.close)
        return writer, count

    writer, count = asyncio.run(main())
    assert count == 30 and writer.stats.stored == 30
    assert (writer.stats.refused, writer.stats.duplicates) == (3, 0)
    files = list((tmp_path / "spill").glob("bitty-refused-*.jsonl"))
    rows = [orjson.loads(line) for path in files for line in path.read_bytes().splitlines()]
    assert sorted(r["trade"]["trade_id"] for r in rows if "trade" in r) == ["a\x00b", "x" * 200]
    assert [r["quarantined"]["frame"] for r in rows if "quarantined" in r] == ["garbage \x00 frame"]
    assert all(r["reason"] for r in rows)
    assert spill.pending(tmp_path / "spill") == []


def test_close_while_database_away_spills_and_next_run_writes_back(tmp_path: Path) -> None:
    """Stopping while the database is down puts what is left in a spill file; the next writer stores it."""
    db = tmp_path / "locked.db"
    url = f"sqlite:///{db}"
    setup = Store(url)
    setup.open()
    setup.close()
    holder = sqlite3.connect(db, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the database: writes fail

    async def first() -> Writer:
        store = Store(url + "?timeout=0.05")
        writer = Writer(store, flush_interval=0.05, spill_dir=tmp_path / "spill", close_timeout=0.5)
        writer.start()
        for n in range(50):
            writer.put(trade(n))
        await writer.close()
        store.close()
        return writer

    try:
        writer = asyncio.run(first())
    finally:
        holder.rollback()
        holder.close()
    assert writer.stats.stored == 0 and writer.stats.spilled == 50
    assert len(spill.pending(tmp_path / "spill")) == 1

    async def second() -> int:
        store = Store(url)
        writer = Writer(store, flush_interval=0.05, spill_dir=tmp_path / "spill")
        writer.start()
        await writer.close()
        count = store.count()
        store.close()
        return count

    assert asyncio.run(second()) == 50
    assert spill.pending(tmp_path / "spill") == []


def test_locked_sqlite_delays_writes_but_not_readers(tmp_path: Path) -> None:
    """A lock held by another process delays the writer; put() keeps accepting; all is written after."""
    db = tmp_path / "busy.db"
    store = Store(f"sqlite:///{db}?timeout=0.05")
    store.open()

    async def main() -> tuple[int, int]:
        writer = Writer(store, batch_size=50, flush_interval=0.02, spill_dir=tmp_path / "spill")
        writer.start()
        holder = sqlite3.connect(db, timeout=0)
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        for n in range(500):
            writer.put(trade(n))
        put_time = time.monotonic() - started
        await wait_for(lambda: writer.stats.write_errors >= 1)
        holder.rollback()
        holder.close()
        await wait_for(lambda: writer.stats.stored == 500)
        await writer.close()
        return store.count(), int(put_time < 1.0)

    count, fast = asyncio.run(main())
    store.close()
    assert count == 500 and fast


def test_sigkill_is_reported_by_the_next_run(tmp_path: Path) -> None:
    """A killed collector leaves its run open; the next run reports the uncovered interval."""
    url, stop = serve_in_thread(EXCHANGES / "fixtures" / "coinbase" / "session.jsonl", hold=True)
    db = tmp_path / "kill.db"
    proc = start_collector("coinbase", "--url", url, "--db", f"sqlite:///{db}", "--progress-interval", "0.2",
                           "--spill-dir", str(tmp_path / "spill"))
    signal_when(proc, lambda line: "6 stored" in line, signal.SIGKILL, stop, timeout=10)  # type: ignore[arg-type]
    store = Store(f"sqlite:///{db}")
    assert store.count() == 6  # what reached the database before the kill is there
    run_id, uncovered = runs.start(store, ["coinbase"])
    with store.engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(tables.runs.c.id, tables.runs.c.status)).all())
    store.close()
    assert len(uncovered) == 1 and "stopped without a clean shutdown" in str(uncovered[0])
    assert statuses[uncovered[0].run_id] == "crashed" and statuses[run_id] == "running"


def test_sigterm_under_load_flushes_everything_once(tmp_path: Path) -> None:
    """SIGTERM while trades pour in: every trade received is stored, none twice."""
    import json

    session = tmp_path / "flood.jsonl"
    lines = [json.dumps({"send": {"type": "subscribe", "product_ids": ["BTC-USD"], "id": 1}})]
    lines += [json.dumps({"recv": {"type": "match", "trade_id": n, "product_id": "BTC-USD", "price": "100.5",
                                   "size": "0.25", "side": "buy", "time": "2024-01-02T03:04:05.123456Z"}})
              for n in range(60_000)]
    session.write_text("\n".join(lines) + "\n")
    specs = SPECS / "positive"
    url, stop = serve_in_thread(session, hold=True)
    db = tmp_path / "load.db"
    proc = start_collector("testex", "--exchanges-dir", str(specs), "--symbols", "BTC-USD", "--url", url,
                           "--db", f"sqlite:///{db}", "--progress-interval", "0.1", "--spill-dir", str(tmp_path / "spill"))
    _, rest = signal_when(proc, lambda line: "trades received" in line and " 0 trades received" not in line,
                          signal.SIGTERM, stop, timeout=30)  # type: ignore[arg-type]
    assert proc.returncode == 0, rest
    summary = [line for line in rest.splitlines() if line.startswith("collected ")][-1]
    received = int(summary.split()[1])
    stored = int(summary.split(":")[1].split()[0])
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        count, distinct = conn.execute(sa.text("select count(*), count(distinct trade_id) from trades")).one()
    engine.dispose()
    assert received > 0 and count == distinct == stored == received


def _cluster() -> list[str] | None:
    """The pg_ctlcluster command for this machine's PostgreSQL, when this process may run it."""

    root = Path("/etc/postgresql")
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None or not root.is_dir():
        return None
    versions = sorted(p.name for p in root.iterdir() if (p / "main").is_dir())
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"] if versions else None


def test_postgresql_stopped_and_started_for_real(pg_url: str, tmp_path: Path) -> None:
    """The real PostgreSQL server is stopped mid-run and started again: nothing is lost."""

    cluster = _cluster()
    if cluster is None:
        pytest.skip("needs root and pg_ctlcluster to stop and start the local PostgreSQL server")

    def pg(action: str) -> None:
        done = subprocess.run([*cluster, action, *(["-m", "fast"] if action == "stop" else [])],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0 and "already running" not in done.stdout + done.stderr:
            raise AssertionError(f"pg_ctlcluster {action}: {done.stdout}{done.stderr}")

    async def main() -> tuple[Writer, int]:
        return await outage(pg_url, tmp_path / "spill", functools.partial(asyncio.to_thread, pg, "stop"),
                            functools.partial(asyncio.to_thread, pg, "start"), 1000)

    try:
        writer, count = asyncio.run(main())
    finally:
        pg("start")  # whatever happened, leave the server running
    assert count == 1300 and writer.stats.duplicates == 0 and writer.stats.spilled > 0
    assert spill.pending(tmp_path / "spill") == []
