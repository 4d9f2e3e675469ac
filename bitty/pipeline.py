"""The collect pipeline: wire engine -> writer and gap keeper, run it, report progress (plans: ``bitty.planning``)."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

import orjson
import sqlalchemy as sa

from bitty.continuity.gapkeeper import GapKeeper
from bitty.engine.consumer import BaseConsumer
from bitty.engine.handover import Slot
from bitty.errors import BittyError
from bitty.markets.instruments import redirect
from bitty.ops import terminal
from bitty.ops.collector import CollectorSource, StoredCounts
from bitty.ops.server import DEFAULT_HEALTH_LIMIT, start_status
from bitty.planning import fetch_listings, load_specs, parse_shard, plan, record_instruments
from bitty.spec.load import Spec
from bitty.storage import runs
from bitty.storage.ledger import Ledger
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
    exchange_symbols: dict[str, list[str]] = field(default_factory=dict)  # --symbols EXCHANGE:A,B
    markets: list[str] | None = None  # --markets perpetual,future: every listed instrument of these kinds
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # -p: exchange ("" = every one) -> choices
    rest_url: str | None = None  # --rest-url URL: every exchange's HTTP endpoints
    # many collectors (docs/deploy.md): db None publishes to NATS only
    nats: str | None = None
    nats_stream: StreamSettings = field(default_factory=StreamSettings)
    shard: str | None = None  # "i/n"
    name: str | None = None
    max_pending: int = 200_000  # trades held in memory while the sink is away, then spilled
    close_timeout: float = 30.0  # how long a stop waits for an away database before spilling
    status_addr: str | None = None  # HOST:PORT of the status server (metrics, health, live page)
    health_limit: float = DEFAULT_HEALTH_LIMIT  # seconds a stream or the database may be away before /healthz fails
    live: bool = False  # a live table on the terminal instead of progress lines


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
    specs = load_specs(options.exchanges, options.exchanges_dirs, options.params)
    if options.rest_url:
        options.rest_urls = {**{s.name: options.rest_url for s in specs}, **options.rest_urls}
    for spec in specs:  # `binance` also names the spec chosen as binance-aggtrade (-p stream=aggTrade)
        stem = spec.path.stem
        for per in (options.urls, options.rest_urls, options.symbol_list_urls):
            if stem in per and spec.name not in per:
                per[spec.name] = per.pop(stem)
        if stem in options.exchange_symbols and spec.name not in options.exchange_symbols:
            options.exchange_symbols[spec.name] = options.exchange_symbols.pop(stem)
    wanted = options.symbols or options.exchange_symbols or options.markets
    listings = await fetch_listings(specs, options.symbol_list_urls, options.rest_urls) if wanted else {}
    shard = parse_shard(options.shard)
    connections = plan(specs, options.symbols, listings, options.exchange_symbols, options.markets, shard)
    if not connections:
        raise BittyError(f"shard {options.shard} holds none of the chosen streams")
    if options.db is None and options.nats is None:
        raise BittyError("nowhere to write: give --db, --nats or both")
    output = parse_output(options.output)
    identity = runs.Identity(name=options.name, shard=options.shard)
    names = [s.name for s in specs]
    status = await start_status(options.status_addr, options.health_limit)
    store: Store | None = None
    events: EventLedger | None = None
    nats_sink: NatsSink | None = None
    try:
        sinks: list[Sink] = []
        if options.db is not None:
            store = Store(options.db)
            await asyncio.to_thread(store.open)
            sinks.append(store)
        if options.nats is not None:
            nats_sink = NatsSink(options.nats, options.nats_stream)
            await nats_sink.aopen()
            sinks.append(nats_sink)
            events = EventLedger(nats_sink, identity.key)
        target = sinks[0] if len(sinks) == 1 else Fanout(sinks)
        stored = StoredCounts()
        # The writer calls ``write(batch, quarantined)`` on any sink as it does on a Store.
        writer = Writer(cast(Store, target), on_stored=_tee(stored.add, output.write if output else None),
                        spill_dir=Path(options.spill_dir), close_timeout=options.close_timeout,
                        max_pending=options.max_pending)
        writer.start()  # a spill folder another collector holds is refused before anything is recorded
    except BaseException:
        if store is not None:
            store.close()
        if nats_sink is not None:
            await nats_sink.aclose()
        if status is not None:
            await status.close()
        raise
    run_id, uncovered = 0, cast(list[runs.Uncovered], [])
    if store is not None:
        await asyncio.to_thread(record_instruments, store, connections, listings)
        run_id, uncovered = await asyncio.to_thread(runs.start, store, names, identity)
    else:
        assert events is not None
        await asyncio.to_thread(events.run, _run_state(identity, names, "running"))
    # A websocket redirected (a replay, a local exchange) is not what the real REST endpoint saw.
    redirected = {s.name for s in specs if options.urls.get(s.name, options.url) and s.name not in options.rest_urls}
    # Without a database, coverage and gaps are published for `bitty sink` to apply.
    ledger: Ledger | EventLedger
    if store is not None:
        ledger = Ledger(store.engine, run_key=identity.key)
    else:
        assert events is not None
        ledger = events
    keeper = GapKeeper(ledger, specs, rest_urls=options.rest_urls, backfill=options.backfill,
                       no_backfill=redirected, quiet_after=options.gap_quiet_after, writer=writer)
    await keeper.start(connections)
    source = CollectorSource([], writer, keeper, stored)
    if status is not None:
        status.attach(source)
    stop = stop or asyncio.Event()

    def count(_trade: Trade) -> None:
        if options.max_trades is not None and writer.stats.received >= options.max_trades:
            stop.set()

    def make(spec: Spec, symbols: list[str], index: int) -> BaseConsumer:
        consumer = BaseConsumer(symbols, url=options.urls.get(spec.name, options.url), spec=spec,
                                reconnect=options.reconnect, backoff_initial=options.backoff_initial,
                                bootstrap_url=options.bootstrap_urls.get(spec.name) or _bootstrap_url(
                                    spec, options.rest_urls.get(spec.name)),
                                handover=spec.max_age is not None, rest_url=options.rest_urls.get(spec.name))
        consumer.on_trade(writer.put)
        consumer.on_quarantine(writer.quarantine)
        keeper.attach(consumer)
        source.watch(index, consumer)
        if options.max_trades is not None:
            consumer.on_trade(count)
        return consumer

    consumers: list[Slot] = []
    for index, (spec, symbols) in enumerate(connections):
        consumers.append(Slot(functools.partial(make, spec, symbols, index), spec.max_age))
        source.slots.append(consumers[-1])
        logger.info("%s: %d symbols on one connection: %s", spec.name, len(symbols), ", ".join(symbols))

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(c.run()) for c in consumers]
    for index, running in enumerate(tasks):
        running.add_done_callback(functools.partial(_finished, source, index))
    all_done = loop.create_task(asyncio.wait(tasks))
    reports = terminal.Progress(source)
    progress = loop.create_task(terminal.run(reports, options.progress_interval, options.live))
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
            await asyncio.gather(progress, return_exceptions=True)  # the live table ends before the last lines
            writer.begin_close()  # a backfill waiting for the database gives up (to a spill file) at its deadline
            await keeper.drain()  # backfills in flight hand their trades to the writer before it closes
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
        if status is not None:
            await status.close()
    reports.log(final=True)
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


def _bootstrap_url(spec: Spec, origin: str | None) -> str | None:
    """The spec's bootstrap URL sent to ``--rest-url``'s origin (None: not redirected)."""
    boot = spec.bootstrap
    if boot is None or not origin:
        return None
    if boot.url.variables():
        raise BittyError(f"{spec.name}: --rest-url cannot redirect a bootstrap URL built from variables")
    return redirect(str(boot.url.render({})), origin)


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



def _finished(source: CollectorSource, index: int, _task: object) -> None:
    source.finished.add(index)


def _tee(*calls: Callable[[list[Trade]], object] | None) -> Callable[[list[Trade]], None]:
    """One ``on_stored`` callback calling each of ``calls`` in turn."""
    chosen = [c for c in calls if c is not None]

    def call(batch: list[Trade]) -> None:
        for each in chosen:
            each(batch)

    return call
