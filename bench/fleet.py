"""The fleet path: collector -> NATS JetStream -> ``bitty sink`` -> PostgreSQL, against the direct
path (collector -> PostgreSQL) in the same run. The collector runs in this process (the real
BaseConsumer + Writer, its sink a ``NatsSink``); the sink is a ``bitty sink`` subprocess. The
time is until PostgreSQL holds every trade."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

from bench.endtoend import url
from bench.frames import load, trades_in
from bitty.engine.consumer import BaseConsumer
from bitty.pipeline import plan
from bitty.storage.sinks.nats import NatsSink, StreamSettings
from bitty.storage.store import Store
from bitty.storage.writer import Writer

ROOT = Path(__file__).resolve().parent.parent


async def nats_run(exchange: str, ports: dict[str, int], pg_url: str, frames: int, nats_url: str,
                   timeout: float = 120) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    settings = StreamSettings(name=f"BENCH_{tag}", prefix=f"bench{tag}")
    publisher = NatsSink(nats_url, settings)
    await publisher.aopen()
    store = Store(pg_url)
    await asyncio.to_thread(store.open)
    spill_dir = Path(tempfile.mkdtemp(prefix="bitty-bench-spill-"))
    sink = subprocess.Popen([sys.executable, "-m", "bitty", "sink", "--nats", nats_url, "--db", pg_url,
                             "--nats-stream", settings.name, "--nats-prefix", settings.prefix,
                             "--progress-interval", "3600"], cwd=ROOT, stderr=subprocess.DEVNULL,
                            env={**os.environ, "LOG_LEVEL": "warning"})
    try:
        return await _measure(exchange, ports, frames, publisher, store, spill_dir, timeout)
    finally:
        sink.terminate()
        sink.wait(30)
        assert publisher._js is not None
        await publisher._js.delete_stream(settings.name)
        await publisher.aclose()
        store.close()
        shutil.rmtree(spill_dir, ignore_errors=True)


async def _measure(exchange: str, ports: dict[str, int], frames: int, publisher: NatsSink, store: Store,
                   spill_dir: Path, timeout: float) -> dict[str, Any]:
    writer = Writer(cast(Store, publisher), spill_dir=spill_dir)
    writer.start()
    spec = load(exchange)
    consumers, expected = [], 0
    for chosen_spec, chosen in plan([spec], None):
        consumer = BaseConsumer(chosen, url=url(ports[exchange], exchange), spec=chosen_spec, backoff_initial=0.1)
        consumer.on_trade(writer.put)
        consumers.append(consumer)
        expected += trades_in(exchange, frames)
    started = time.perf_counter()
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    stored = 0
    while stored < expected and time.perf_counter() < started + timeout:
        await asyncio.sleep(0.2)
        stored = await asyncio.to_thread(store.count)
    elapsed = time.perf_counter() - started
    for c in consumers:
        await c.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    await writer.close()
    return {"trades": stored, "expected": expected, "seconds": elapsed,
            "published_duplicates": writer.stats.duplicates}


def run_nats(exchange: str, ports: dict[str, int], pg_url: str, frames: int, nats_url: str) -> dict[str, Any]:
    """Process entry point for ``nats_run``."""
    return asyncio.run(nats_run(exchange, ports, pg_url, frames, nats_url))
