"""End to end: the real BaseConsumer + Writer + Store against the flooding server, and the
floor (aiohttp client, orjson, hand-written field access, sqlite3 executemany of 1000)."""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import time
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from bench.frames import native, symbols, trades_in
from bench.mapping import load
from bitty.collect import plan
from bitty.consumer import BaseConsumer
from bitty.store import Store
from bitty.writer import Writer


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1024


async def bitty_run(exchanges: list[str], port: dict[str, int], url: str, n_symbols: int, frames: int,
                    timeout: float) -> dict[str, Any]:
    """Collect until every expected trade is written; CPU, wall time and RSS of this process."""
    store = Store(url)
    await asyncio.to_thread(store.open)
    writer = Writer(store)
    writer.start()
    consumers, expected = [], 0
    base_cpu, base_rss = _usage()
    for name in exchanges:
        spec = load(name)
        for chosen_spec, chosen in plan([spec], None) if n_symbols == 0 else _chunks(spec, name, n_symbols):
            consumer = BaseConsumer(chosen, url=f"ws://127.0.0.1:{port[name]}", spec=chosen_spec, reconnect=False)
            consumer.on_trade(writer.put)
            consumers.append(consumer)
            expected += trades_in(name, frames)
    started = time.perf_counter()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    deadline = started + timeout
    while writer.stats.stored + writer.stats.duplicates < expected and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    cpu, rss = _usage()
    for c in consumers:
        await c.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    await writer.close()
    store.close()
    frames_seen = sum(c.stats.frames for c in consumers)
    return {"frames": frames_seen, "trades": writer.stats.stored, "seconds": elapsed, "cpu": cpu - base_cpu,
            "rss_mb": rss, "rss_before_mb": base_rss, "expected": expected, "symbols": n_symbols * len(exchanges)}


def _chunks(spec: Any, name: str, count: int) -> list[tuple[Any, list[str]]]:
    chosen = symbols(name, count)
    size = spec.max_symbols or len(chosen)
    return [(spec, chosen[i:i + size]) for i in range(0, len(chosen), size)]


FLOOR_FIELDS = {
    "binance": lambda f: [(f["data"]["s"], str(f["data"]["t"]), f["data"]["p"], f["data"]["q"],
                           "sell" if f["data"]["m"] else "buy", f["data"]["T"])],
    "coinbase": lambda f: [(f["product_id"], str(f["trade_id"]), f["price"], f["size"], f["side"], f["time"])],
    "kraken": lambda f: [(f[3], f"{r[2]}{r[0]}{r[1]}", r[0], r[1], r[3], r[2]) for r in f[1]],
}


async def floor_run(exchange: str, port: int, path: str, frames: int, timeout: float) -> dict[str, Any]:
    """The least a collector can do: read, decode, pick fields, insert batches of 1000."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (exchange, symbol, trade_id, price, size, side, time, "
               "UNIQUE (exchange, symbol, trade_id))")
    pick = FLOOR_FIELDS[exchange]
    natives = [native(exchange, s) for s in symbols(exchange, 10)]
    base_cpu, _ = _usage()
    expected, stored, seen = trades_in(exchange, frames), 0, 0
    batch: list[tuple[Any, ...]] = []
    url = f"ws://127.0.0.1:{port}/" + ("stream?streams=" + "/".join(n.lower() + "@trade" for n in natives)
                                         if exchange == "binance" else "")
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
        if exchange != "binance":
            await ws.send_str(orjson.dumps({"product_ids": natives, "pair": natives}).decode())
        while stored < expected and time.perf_counter() - started < timeout:
            msg = await ws.receive()
            seen += 1
            for row in pick(orjson.loads(msg.data)):
                batch.append((exchange, *row[:2], str(Decimal(row[2])), str(Decimal(row[3])), *row[4:]))
            if len(batch) >= 1000 or stored + len(batch) >= expected:
                db.executemany("INSERT OR IGNORE INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
                db.commit()
                stored += len(batch)
                batch = []
    elapsed = time.perf_counter() - started
    cpu, rss = _usage()
    db.close()
    return {"frames": seen, "trades": stored, "seconds": elapsed, "cpu": cpu - base_cpu, "rss_mb": rss}


def run_bitty(exchanges: list[str], ports: dict[str, int], url: str, n_symbols: int, frames: int) -> dict[str, Any]:
    """Process entry point for ``bitty_run``."""
    return asyncio.run(bitty_run(exchanges, ports, url, n_symbols, frames, timeout=120))


def run_floor(exchange: str, port: int, path: str, frames: int) -> dict[str, Any]:
    """Process entry point for ``floor_run``."""
    return asyncio.run(floor_run(exchange, port, path, frames, timeout=120))
