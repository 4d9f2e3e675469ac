"""The collect pipeline: plan the connections, wire engine -> writer and gap keeper, report progress."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson
import sqlalchemy as sa

from bitty.continuity.gapkeeper import GapKeeper
from bitty.engine.consumer import BaseConsumer
from bitty.engine.handover import Slot
from bitty.errors import BittyError
from bitty.markets.instruments import Instrument, fetch_listing
from bitty.spec import files as paths
from bitty.spec.load import Spec, load_spec, spec_paths
from bitty.spec.symbols import resolve
from bitty.storage import runs
from bitty.storage.store import Store
from bitty.storage.writer import Writer
from bitty.trade import Trade

logger = logging.getLogger("bitty.collect")

DEFAULT_DB = "sqlite:///bitty.db"


@dataclass
class CollectOptions:
    exchanges: list[str] = field(default_factory=list)
    symbols: list[str] | None = None
    url: str | None = None
    urls: dict[str, str] = field(default_factory=dict)  # per exchange, beats ``url``
    bootstrap_urls: dict[str, str] = field(default_factory=dict)  # per exchange
    rest_urls: dict[str, str] = field(default_factory=dict)  # per exchange: origin replacing rest.trades URLs
    backfill: bool = True  # fetch the trades of gaps through the spec's rest.trades
    symbol_list_urls: dict[str, str] = field(default_factory=dict)  # per exchange
    db: str = DEFAULT_DB
    output: str | None = None
    duration: float | None = None
    max_trades: int | None = None
    exchanges_dirs: list[str] = field(default_factory=list)
    progress_interval: float = 10.0
    spill_dir: str = "bitty-spill"
    reconnect: bool = True
    backoff_initial: float = 1.0


@dataclass
class CollectResult:
    received: int
    stored: int
    duplicates: int
    quarantined: int
    reconnects: int
    failures: list[str]
    per_exchange: dict[str, dict[str, int]]
    uncovered: list[runs.Uncovered] = field(default_factory=list)


def load_specs(targets: Sequence[str], dirs: list[str]) -> list[Spec]:
    return [load_spec(path) for path in spec_paths(targets, paths.spec_dirs(dirs))]


def plan(specs: list[Spec], symbols: list[str] | None,
         listings: dict[str, list[Instrument]] | None = None) -> list[tuple[Spec, list[str]]]:
    """(spec, symbols of one connection) for every connection to open. With an exchange's
    listing, unknown symbols are rejected with a suggestion."""
    out = []
    for spec in specs:
        listing = (listings or {}).get(spec.name)
        known = [i.normalized for i in listing if i.normalized] if listing else None
        chosen = resolve(spec.symbols, symbols, known) if symbols else list(spec.default_symbols)
        size = spec.max_symbols or len(chosen) or 1
        for i in range(0, len(chosen), size):
            out.append((spec, chosen[i:i + size]))
    return out


async def fetch_listings(specs: list[Spec], urls: dict[str, str]) -> dict[str, list[Instrument]]:
    """Symbol lists of the exchanges that declare one; an unreachable list is a warning, not an
    error (symbols are then taken as given)."""
    out: dict[str, list[Instrument]] = {}
    for spec in specs:
        if spec.symbol_list is None:
            continue
        try:
            listing = await fetch_listing(spec, urls.get(spec.name))
        except BittyError as exc:
            logger.warning("%s: cannot check symbols against the exchange's list: %s", spec.name, exc)
            continue
        for instrument in listing:
            if instrument.normalized:
                spec.symbols.learn(instrument.native, instrument.normalized)
        out[spec.name] = listing
    return out


class JsonLines:
    """``--output jsonl:PATH`` (or ``-`` for stdout): one JSON object per stored trade."""

    def __init__(self, target: str) -> None:
        self._own = target != "-"
        self._file: IO[bytes] = open(target, "ab") if self._own else sys.stdout.buffer  # noqa: SIM115

    def write(self, trades: list[Trade]) -> None:
        self._file.write(b"".join(orjson.dumps(t.as_json()) + b"\n" for t in trades))
        self._file.flush()

    def close(self) -> None:
        if self._own:
            self._file.close()


def parse_output(value: str | None) -> JsonLines | None:
    if value is None:
        return None
    if value == "-":
        return JsonLines("-")
    if not value.startswith("jsonl:") or value == "jsonl:":
        raise BittyError(f"--output {value!r}: expected jsonl:PATH or -")
    return JsonLines(value[len("jsonl:"):])


async def collect(options: CollectOptions, stop: asyncio.Event | None = None) -> CollectResult:
    """Collect until ``stop`` is set, the duration passes, max_trades arrive, or every stream ends."""
    specs = load_specs(options.exchanges, options.exchanges_dirs)
    listings = await fetch_listings(specs, options.symbol_list_urls) if options.symbols else {}
    connections = plan(specs, options.symbols, listings)
    output = parse_output(options.output)
    store = Store(options.db)
    await asyncio.to_thread(store.open)
    run_id, uncovered = await asyncio.to_thread(runs.start, store, [s.name for s in specs])
    writer = Writer(store, on_stored=output.write if output else None, spill_dir=Path(options.spill_dir))
    writer.start()
    # A websocket redirected (a replay, a local exchange) is not what the real REST endpoint saw.
    redirected = {s.name for s in specs if options.urls.get(s.name, options.url) and s.name not in options.rest_urls}
    keeper = GapKeeper(store, specs, rest_urls=options.rest_urls, backfill=options.backfill, no_backfill=redirected,
                       writer=writer)
    await keeper.start(connections)
    stop = stop or asyncio.Event()

    def count(_trade: Trade) -> None:
        if options.max_trades is not None and writer.stats.received >= options.max_trades:
            stop.set()

    def make(spec: Spec, symbols: list[str]) -> BaseConsumer:
        consumer = BaseConsumer(symbols, url=options.urls.get(spec.name, options.url), spec=spec,
                                reconnect=options.reconnect, backoff_initial=options.backoff_initial,
                                bootstrap_url=options.bootstrap_urls.get(spec.name),
                                handover=spec.max_age is not None)
        consumer.on_trade(writer.put)
        consumer.on_quarantine(writer.quarantine)
        keeper.attach(consumer)
        if options.max_trades is not None:
            consumer.on_trade(count)
        return consumer

    consumers: list[Slot] = []
    for spec, symbols in connections:
        consumers.append(Slot(functools.partial(make, spec, symbols), spec.max_age))
        logger.info("%s: %d symbols on one connection: %s", spec.name, len(symbols), ", ".join(symbols))

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(c.run()) for c in consumers]
    all_done = loop.create_task(asyncio.wait(tasks))
    progress = loop.create_task(_progress(consumers, writer, options.progress_interval))
    heartbeat = loop.create_task(_alive(store, run_id))
    waiters = [all_done, loop.create_task(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=options.duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Concurrently: a server slow to answer the close handshake holds up only its own stream.
        await asyncio.gather(*(consumer.stop() for consumer in consumers), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in (progress, heartbeat, *waiters):
            task.cancel()
        writer.begin_close()  # a backfill waiting for the database gives up (to a spill file) at its deadline
        await keeper.drain()  # backfills in flight hand their trades to the writer before it closes
        await writer.close()
        await keeper.close({name: vars(s) for name, s in writer.per_exchange.items()})
        try:
            await asyncio.to_thread(runs.stop, store, run_id)
        except sa.exc.SQLAlchemyError as exc:
            logger.error("cannot record the end of this run: %s", exc)
        store.close()
        if output:
            output.close()
    _log_progress(consumers, writer, None)
    failures = [f"{c.consumer_id}: {c.failed}" for c in consumers if c.failed]
    return CollectResult(
        received=writer.stats.received,
        stored=writer.stats.stored,
        duplicates=writer.stats.duplicates,
        quarantined=writer.stats.quarantined,
        reconnects=sum(c.stats.reconnects for c in consumers),
        failures=failures,
        per_exchange={name: vars(s).copy() for name, s in writer.per_exchange.items()},
        uncovered=uncovered,
    )


async def _alive(store: Store, run_id: int, interval: float = 5.0) -> None:
    """Record that this run is alive, so a crash can be dated by the next run."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(runs.alive, store, run_id)
        except sa.exc.SQLAlchemyError as exc:
            logger.debug("cannot record run liveness: %s", exc)


async def _progress(consumers: list[Slot], writer: Writer, interval: float) -> None:
    last: dict[str, tuple[float, int]] = {}
    while True:
        await asyncio.sleep(interval)
        last = _log_progress(consumers, writer, last)


def _log_progress(consumers: list[Slot], writer: Writer,
                  last: dict[str, tuple[float, int]] | None) -> dict[str, tuple[float, int]]:
    now = time.monotonic()
    out: dict[str, tuple[float, int]] = {}
    names = sorted({c.exchange_name for c in consumers})
    for name in names:
        mine = [c for c in consumers if c.exchange_name == name]
        stats = writer.per_exchange.get(name)
        received = stats.received if stats else 0
        before = (last or {}).get(name)
        rate = (received - before[1]) / (now - before[0]) if before and now > before[0] else 0.0
        out[name] = (now, received)
        connected = sum(1 for c in mine if c.is_connected())
        logger.info(
            "%s: %d trades received (%.1f/s), %d stored, %d duplicates, %d quarantined, "
            "%d/%d connected, %d reconnects%s",
            name, received, rate, stats.stored if stats else 0, stats.duplicates if stats else 0,
            sum(c.stats.quarantined for c in mine), connected, len(mine),
            sum(c.stats.reconnects for c in mine),
            "" if last is not None else " (final)",
        )
    return out
