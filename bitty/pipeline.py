"""The collect pipeline: plan the connections, wire engine -> writer and gap keeper, report progress."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any, cast

import orjson
import sqlalchemy as sa

from bitty.continuity.gapkeeper import GapKeeper
from bitty.engine.consumer import BaseConsumer
from bitty.engine.handover import Slot
from bitty.errors import BittyError
from bitty.markets.instruments import Instrument, fetch_listing
from bitty.spec import files as paths
from bitty.spec.load import Spec, check_unique_names, load_spec, spec_paths
from bitty.spec.symbols import resolve
from bitty.storage import runs
from bitty.storage.sinks import Fanout, Sink
from bitty.storage.sinks.events import EventLedger
from bitty.storage.sinks.nats import NatsSink, StreamSettings
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
    gap_quiet_after: float = 10.0  # no trade this long after reconnecting: backfill the gap from REST alone
    symbol_list_urls: dict[str, str] = field(default_factory=dict)  # per exchange
    db: str | None = DEFAULT_DB  # None: no database (publish to NATS only)
    output: str | None = None
    duration: float | None = None
    max_trades: int | None = None
    exchanges_dirs: list[str] = field(default_factory=list)
    progress_interval: float = 10.0
    spill_dir: str = "bitty-spill"
    reconnect: bool = True
    backoff_initial: float = 1.0
    # many collectors (docs/deploy.md): db None publishes to NATS only
    nats: str | None = None
    nats_stream: StreamSettings = field(default_factory=StreamSettings)
    shard: str | None = None  # "i/n"
    name: str | None = None
    max_pending: int = 200_000  # trades held in memory while the sink is away, then spilled
    symbols_per_exchange: dict[str, list[str]] = field(default_factory=dict)  # beats ``symbols`` (deploy files)
    close_timeout: float = 30.0  # how long a stop waits for an away database before spilling


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
    lost: int = 0  # trades neither stored nor spilled (see Writer)


def load_specs(targets: Sequence[str], dirs: list[str]) -> list[Spec]:
    specs = [load_spec(path) for path in spec_paths(targets, paths.spec_dirs(dirs))]
    check_unique_names(specs)  # two files with one exchange name: refuse, never collect both
    return specs


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 <= i < n) as (i, n)."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise BittyError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return int(index), int(count)


def shard_of(exchange: str, symbol: str, count: int) -> int:
    """The shard of an (exchange, symbol) stream: a stable hash (SHA-256, not Python's salted
    hash()), so every collector on every machine agrees."""
    digest = hashlib.sha256(f"{exchange}\0{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def plan(specs: list[Spec], symbols: list[str] | None,
         listings: dict[str, list[Instrument]] | None = None,
         shard: tuple[int, int] | None = None,
         per_exchange: dict[str, list[str]] | None = None) -> list[tuple[Spec, list[str]]]:
    """(spec, symbols of one connection) for every connection to open. With an exchange's
    listing, unknown symbols are rejected with a suggestion; with a shard, only its streams."""
    out = []
    for spec in specs:
        listing = (listings or {}).get(spec.name)
        known = [i.normalized for i in listing if i.normalized] if listing else None
        wanted = (per_exchange or {}).get(spec.name) or symbols
        chosen = resolve(spec.symbols, wanted, known) if wanted else list(spec.default_symbols)
        if shard is not None:
            chosen = [s for s in chosen if shard_of(spec.name, s, shard[1]) == shard[0]]
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
    wanted = options.symbols or any(options.symbols_per_exchange.values())
    listings = await fetch_listings(specs, options.symbol_list_urls) if wanted else {}
    shard = parse_shard(options.shard)
    connections = plan(specs, options.symbols, listings, shard, options.symbols_per_exchange)
    if not connections:
        raise BittyError(f"shard {options.shard} holds none of the chosen streams")
    if options.db is None and options.nats is None:
        raise BittyError("nowhere to write: give --db, --nats or both")
    output = parse_output(options.output)
    identity = runs.Identity(name=options.name, shard=options.shard)
    names = [s.name for s in specs]
    sinks: list[Sink] = []
    store: Store | None = None
    if options.db is not None:
        store = Store(options.db)
        await asyncio.to_thread(store.open)
        sinks.append(store)
    events: EventLedger | None = None
    nats_sink: NatsSink | None = None
    if options.nats is not None:
        nats_sink = NatsSink(options.nats, options.nats_stream)
        await nats_sink.aopen()
        sinks.append(nats_sink)
        events = EventLedger(nats_sink, identity.key)
    target = sinks[0] if len(sinks) == 1 else Fanout(sinks)
    # The writer calls ``write(batch, quarantined)`` on any sink as it does on a Store.
    writer = Writer(cast(Store, target), on_stored=output.write if output else None, spill_dir=Path(options.spill_dir),
                    close_timeout=options.close_timeout, max_pending=options.max_pending)
    writer.start()  # first: a spill folder another collector holds is refused before anything starts
    run_id, uncovered = 0, cast(list[runs.Uncovered], [])
    if store is not None:
        run_id, uncovered = await asyncio.to_thread(runs.start, store, names, identity)
    else:
        assert events is not None
        await asyncio.to_thread(events.run, _run_state(identity, names, "running"))
    # A websocket redirected (a replay, a local exchange) is not what the real REST endpoint saw.
    redirected = {s.name for s in specs if options.urls.get(s.name, options.url) and s.name not in options.rest_urls}
    keeper = GapKeeper(store or cast(Store, SimpleNamespace(engine=None)), specs, rest_urls=options.rest_urls,
                       backfill=options.backfill, no_backfill=redirected, quiet_after=options.gap_quiet_after)
    keeper.store = cast(Store, target)  # backfilled trades go where live ones go
    if store is None:
        keeper.ledger = cast(Any, events)  # coverage and gaps published for `bitty sink` to apply
    else:
        keeper.ledger.run_key = identity.key
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
    heartbeat = loop.create_task(_alive(store, run_id, events, identity, names))
    # The writer is watched: if it fails, the run stops rather than go on collecting into nothing.
    waiters = [all_done, loop.create_task(stop.wait()), loop.create_task(writer.failed.wait())]
    try:
        await asyncio.wait(waiters, timeout=options.duration, return_when=asyncio.FIRST_COMPLETED)
    finally:
        try:
            # Concurrently: a server slow to answer the close handshake holds up only its own stream.
            await asyncio.gather(*(consumer.stop() for consumer in consumers), return_exceptions=True)
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in (progress, heartbeat, *waiters):
                task.cancel()
            await writer.close()
        except asyncio.CancelledError:
            await writer.abort()  # a second signal: no more waiting, what the writer holds goes to disk
            raise
        try:
            await keeper.close({name: vars(s) for name, s in writer.per_exchange.items()})
        except sa.exc.SQLAlchemyError as exc:
            logger.error("cannot record this run's coverage, the database is away: %s", _reason(exc))
        try:
            if store is not None:
                await asyncio.to_thread(runs.stop, store, run_id)
            elif events is not None:
                await asyncio.to_thread(events.run, _run_state(identity, names, "stopped"))
        except sa.exc.SQLAlchemyError as exc:
            logger.error("cannot record the end of this run, the database is away (the next run will report "
                         "it as stopped without a clean shutdown): %s", _reason(exc))
        if store is not None:
            store.close()
        if nats_sink is not None:
            await nats_sink.aclose()
        if output:
            output.close()
    _log_progress(consumers, writer, None)
    failures = [f"{c.consumer_id}: {c.failed}" for c in consumers if c.failed]
    if writer.failure:
        failures.append(f"writer: {writer.failure}")
    if writer.stats.lost:
        failures.append(f"{writer.stats.lost} trades LOST: the database was away and {options.spill_dir} refused "
                        "writes (see the log)")
    return CollectResult(
        received=writer.stats.received,
        stored=writer.stats.stored,
        duplicates=writer.stats.duplicates,
        quarantined=writer.stats.quarantined,
        reconnects=sum(c.stats.reconnects for c in consumers),
        failures=failures,
        per_exchange={name: vars(s).copy() for name, s in writer.per_exchange.items()},
        uncovered=uncovered,
        lost=writer.stats.lost,
    )


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def _run_state(identity: runs.Identity, names: list[str], status: str) -> dict[str, Any]:
    """A run's row as published over NATS (``bitty sink`` writes it to the runs table)."""
    now = datetime.now(UTC)
    state: dict[str, Any] = {"host": identity.host, "pid": identity.pid, "name": identity.name,
                             "shard": identity.shard, "exchanges": ",".join(names), "alive_at": now,
                             "status": status, "lease_until": now + timedelta(seconds=runs.LEASE)}
    if status == "running":
        state["started_at"] = now
    else:
        state.update(stopped_at=now, lease_until=now)
    return state


async def _alive(store: Store | None, run_id: int, events: EventLedger | None = None,
                 identity: runs.Identity | None = None, names: list[str] | None = None,
                 interval: float = runs.LEASE / 6) -> None:
    """Renew this run's lease, so that others know it is alive and a crash is dated by its last renewal."""
    while True:
        await asyncio.sleep(interval)
        try:
            if store is not None:
                await asyncio.to_thread(runs.alive, store, run_id)
            elif events is not None and identity is not None:
                state = _run_state(identity, names or [], "running")
                del state["started_at"]
                await asyncio.to_thread(events.run, state)
        except sa.exc.SQLAlchemyError as exc:
            logger.debug("cannot renew this run's lease: %s", exc)


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
