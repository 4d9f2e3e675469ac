"""End to end: the real BaseConsumer + Writer + Store against the flooding server, and the
floor (aiohttp client, orjson, hand-written field access, sqlite3 executemany of 1000)."""

from __future__ import annotations

import asyncio
import gc
import resource
import shutil
import sqlite3
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.frames import load, native, symbols, trades_in
from bitty.engine.consumer import BaseConsumer
from bitty.pipeline import plan
from bitty.storage.store import Store
from bitty.storage.writer import Writer


def _usage() -> tuple[float, float]:
    """CPU seconds so far (all threads) and peak RSS in MB (Linux reports it in KB)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024


def _rss_now() -> float:
    """Resident memory now, in MB: unlike the peak, it can be compared before and after."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # not Linux
        return _usage()[1]


def url(port: int, exchange: str) -> str:
    """The URL a consumer gets: Binance keeps its spec's path and query (the streams name the
    symbols); the others get a template naming their natives for the server."""
    origin = f"ws://127.0.0.1:{port}"
    return origin if exchange == "binance" else origin + "/bench?natives=${join(',', symbols)}"


async def bitty_run(exchanges: list[str], port: dict[str, int], store_url: str, n_symbols: int, frames: int,
                    timeout: float, per_symbol: bool = False) -> dict[str, Any]:
    """Collect until every expected trade is written; CPU, wall time and RSS of this process.
    ``n_symbols`` 0: each spec's default symbols on one connection, else that many symbols per
    exchange split over the connections its ``max_symbols`` requires. ``frames`` per connection,
    or per symbol if ``per_symbol``."""
    store = Store(store_url)
    await asyncio.to_thread(store.open)
    spill_dir = Path(tempfile.mkdtemp(prefix="bitty-bench-spill-"))  # not ./bitty-spill, shared by all runs
    writer = Writer(store, spill_dir=spill_dir)
    writer.start()
    specs = {name: load(name) for name in exchanges}
    gc.collect()
    idle_rss = _rss_now()  # the idle process: specs loaded, no symbol yet
    consumers, expected = [], 0
    for name, spec in specs.items():
        for chosen_spec, chosen in plan([spec], None) if n_symbols == 0 else _chunks(spec, name, n_symbols):
            consumer = BaseConsumer(chosen, url=url(port[name], name), spec=chosen_spec, backoff_initial=0.1)
            consumer.on_trade(writer.put)
            consumers.append(consumer)
            expected += trades_in(name, frames * len(chosen) if per_symbol else frames)
    base_cpu, _ = _usage()
    started = time.perf_counter()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    deadline = started + timeout
    run_rss = idle_rss
    while writer.stats.stored + writer.stats.duplicates < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
        run_rss = max(run_rss, _rss_now())  # the run's own peak: the process's may predate it
    elapsed = time.perf_counter() - started
    cpu, rss = _usage()
    for c in consumers:
        await c.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    await writer.close()
    store.close()
    shutil.rmtree(spill_dir, ignore_errors=True)
    return {"frames": sum(c.stats.frames for c in consumers), "trades": writer.stats.stored, "seconds": elapsed,
            "cpu": cpu - base_cpu, "rss_mb": rss, "run_rss_mb": run_rss, "idle_rss_mb": idle_rss, "expected": expected,
            "symbols": n_symbols * len(exchanges), "connections": len(consumers),
            "reconnects": sum(c.stats.reconnects for c in consumers),
            "quarantined": sum(c.stats.quarantined for c in consumers), "spilled": writer.stats.spilled}


def _chunks(spec: Any, name: str, count: int) -> list[tuple[Any, list[str]]]:
    chosen = symbols(name, count)
    size = spec.max_symbols or len(chosen)
    return [(spec, chosen[i:i + size]) for i in range(0, len(chosen), size)]


def largest_connection(exchange: str, count: int) -> int:
    """Symbols on the fullest connection when ``count`` symbols of ``exchange`` are collected."""
    return max(len(chosen) for _, chosen in _chunks(load(exchange), exchange, count))


FLOOR_FIELDS = {
    "binance": lambda f: [(f["data"]["s"], str(f["data"]["t"]), f["data"]["p"], f["data"]["q"],
                           "sell" if f["data"]["m"] else "buy", f["data"]["T"])],
    "coinbase": lambda f: [(f["product_id"], str(f["trade_id"]), f["price"], f["size"], f["side"], f["time"])]
    if f["type"] == "match" else [],  # heartbeats
    "kraken": lambda f: [(f[3], f"{r[2]}{r[0]}{r[1]}", r[0], r[1], r[3], r[2]) for r in f[1]],
}


class _SqliteFloor:
    """INSERT OR IGNORE of 1000 rows at a time, as executemany, into a table with the unique key."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS t (exchange, symbol, trade_id, price, size, side, time, "
                        "UNIQUE (exchange, symbol, trade_id))")

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class _PostgresFloor:
    """COPY of 1000 rows at a time, straight into a table of text columns with the unique key:
    the least a PostgreSQL writer can do (it is not idempotent, which bitty is)."""

    def __init__(self, conninfo: str) -> None:
        import psycopg
        self.db = psycopg.connect(conninfo)
        self.db.execute("CREATE TABLE IF NOT EXISTS floor_trades (exchange text, symbol text, trade_id text, "
                        "price text, size text, side text, time text, UNIQUE (exchange, symbol, trade_id))")
        self.db.execute("TRUNCATE floor_trades")
        self.db.commit()

    def write(self, batch: list[tuple[Any, ...]]) -> None:
        with self.db.cursor() as cursor, cursor.copy("COPY floor_trades FROM STDIN") as copy:
            copy.write("".join(["\t".join(map(str, row)) + "\n" for row in batch]))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


async def floor_run(exchange: str, port: int, target: str, frames: int, timeout: float) -> dict[str, Any]:
    """The least a collector can do: read, decode, pick fields, write batches of 1000. ``target``
    is a SQLite file, or a PostgreSQL conninfo (``host=...``)."""
    sink = _PostgresFloor(target) if target.startswith("host=") else _SqliteFloor(target)
    pick = FLOOR_FIELDS[exchange]
    natives = [native(exchange, s) for s in symbols(exchange, 10)]
    base_cpu, _ = _usage()
    expected, stored, seen = trades_in(exchange, frames), 0, 0
    batch: list[tuple[Any, ...]] = []
    address = f"ws://127.0.0.1:{port}/bench?natives=" + ",".join(natives)
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session, session.ws_connect(address, max_msg_size=0) as ws:
        while stored < expected and time.perf_counter() - started < timeout:
            msg = await ws.receive()
            seen += 1
            for row in pick(orjson.loads(msg.data)):
                batch.append((exchange, *row[:2], str(Decimal(row[2])), str(Decimal(row[3])), *row[4:]))
            if len(batch) >= 1000 or stored + len(batch) >= expected:
                sink.write(batch)
                stored += len(batch)
                batch = []
    elapsed = time.perf_counter() - started
    cpu, rss = _usage()
    sink.close()
    return {"frames": seen, "trades": stored, "seconds": elapsed, "cpu": cpu - base_cpu, "rss_mb": rss}


def run_bitty(exchanges: list[str], ports: dict[str, int], store_url: str, n_symbols: int, frames: int,
              per_symbol: bool = False) -> dict[str, Any]:
    """Process entry point for ``bitty_run``."""
    return asyncio.run(bitty_run(exchanges, ports, store_url, n_symbols, frames, timeout=120, per_symbol=per_symbol))


def run_floor(exchange: str, port: int, target: str, frames: int) -> dict[str, Any]:
    """Process entry point for ``floor_run``."""
    return asyncio.run(floor_run(exchange, port, target, frames, timeout=120))
