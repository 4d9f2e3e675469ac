"""``bitty sink``: drain the JetStream stream into a database.

A durable pull consumer (shared by every sink of the same ``--name``: they split the messages)
fetches batches; each batch is written in the database and acked only after the commit. A crash
before the ack gets the batch redelivered, and the database's unique key stores each trade
once: at-least-once delivery plus idempotent writes. A message that is not bitty's is kept in
the quarantine table with the reason and never redelivered; a database that fails is retried
with backoff while the batch stays unacked.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
import sqlalchemy as sa
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from bitty.backoff import backoff
from bitty.errors import SinkError
from bitty.ops.collector import StoredCounts
from bitty.ops.server import DEFAULT_HEALTH_LIMIT, StatusServer, start_status
from bitty.ops.sink import SinkSource
from bitty.storage import runs
from bitty.storage.sinks import message as fmt
from bitty.storage.sinks.events import apply
from bitty.storage.sinks.nats import StreamSettings, connect, ensure_stream
from bitty.storage.store import Store
from bitty.trade import Quarantined, Trade

logger = logging.getLogger("bitty.sink")


@dataclass
class SinkOptions:
    nats: str
    db: str
    name: str = "bitty-sink"  # the durable consumer: sinks of one name share the work
    stream: StreamSettings = field(default_factory=StreamSettings)
    batch: int = 1000
    ack_wait: float = 30.0
    progress_interval: float = 10.0
    backoff_initial: float = 0.5
    idle_exit: float | None = None  # stop after this many seconds without a message (tests, catch-up jobs)
    status_addr: str | None = None  # HOST:PORT of the status server (metrics, health, live page)
    health_limit: float = DEFAULT_HEALTH_LIMIT
    lag_interval: float = 2.0  # seconds between reads of the consumer's lag


@dataclass
class SinkStats:
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    foreign: int = 0
    events: int = 0
    write_errors: int = 0
    lag: int = 0
    # read by the status page (bitty.ops.sink)
    received: Counter[str] = field(default_factory=Counter)
    quarantined_by: Counter[str] = field(default_factory=Counter)
    stored_trades: StoredCounts = field(default_factory=StoredCounts)
    last_commit_at: datetime | None = None
    database_ok: bool = True
    database_down_since: datetime | None = None
    nats_error: str = ""
    stopped: bool = False


@dataclass
class _Batch:
    trades: list[Trade] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    events: list[tuple[Msg, dict[str, Any]]] = field(default_factory=list)
    done: list[Msg] = field(default_factory=list)  # acked after the commit
    foreign: list[Msg] = field(default_factory=list)  # termed after the commit


def sort(msgs: list[Msg]) -> tuple[_Batch, int]:
    """Decode a fetched batch; foreign messages become quarantine rows with the reason."""
    out, foreign = _Batch(), 0
    now = datetime.now(UTC)
    for msg in msgs:
        try:
            decoded = fmt.decode(msg.headers, msg.data)
        except fmt.Foreign as exc:
            foreign += 1
            logger.warning("not a bitty message on %s (kept in the quarantine table, not redelivered): %s",
                           msg.subject, exc)
            out.quarantined.append(Quarantined("nats", 0, f"not a bitty message on {msg.subject}: {exc}",
                                               msg.data.decode("utf-8", "replace"), now))
            out.foreign.append(msg)
            continue
        if decoded.trade is not None:
            out.trades.append(decoded.trade)
        elif decoded.quarantined is not None:
            out.quarantined.append(decoded.quarantined)
        else:
            assert decoded.event is not None
            out.events.append((msg, decoded.event))
            continue
        out.done.append(msg)
    return out, foreign


def _write(store: Store, batch: _Batch) -> tuple[list[Trade], list[Msg]]:
    """Commit a batch - trades, quarantined frames and ledger events - in one transaction, so a
    crash leaves all of it or none of it to redeliver; the new trades and the event messages to
    retry later."""
    later: list[Msg] = []

    def events(conn: sa.Connection) -> None:
        later.clear()  # a retried transaction starts again
        for msg, event in batch.events:
            if not apply(conn, event):
                later.append(msg)

    stored = store.write(batch.trades, batch.quarantined, events if batch.events else None)
    return stored, later


async def drain(options: SinkOptions, stop: asyncio.Event | None = None) -> SinkStats:
    """Drain until ``stop`` is set (or ``idle_exit`` seconds pass without a message)."""
    stop = stop or asyncio.Event()
    stats = SinkStats()
    status = await start_status(options.status_addr, options.health_limit)
    try:
        return await _drain(options, stop, stats, status)
    finally:
        if status is not None:
            await status.close()



async def _drain(options: SinkOptions, stop: asyncio.Event, stats: SinkStats, status: StatusServer | None) -> SinkStats:
    settings = options.stream
    store = Store(options.db)
    await asyncio.to_thread(store.open)
    nc = await connect(options.nats, name=f"bitty-sink {options.name}")
    if status is not None:
        status.attach(SinkSource(options.name, settings.name, stats, lambda: nc.is_connected))
    try:
        js = nc.jetstream()
        await ensure_stream(js, settings)
        config = ConsumerConfig(durable_name=options.name, ack_policy=AckPolicy.EXPLICIT, ack_wait=options.ack_wait,
                                max_ack_pending=options.batch * 20, filter_subject=f"{settings.prefix}.>")
        sub = await js.pull_subscribe(f"{settings.prefix}.>", durable=options.name, stream=settings.name, config=config)
        logger.info("sink %s: draining stream %s (%s.>) from %s into %s", options.name, settings.name, settings.prefix,
                    options.nats, store.engine.url.render_as_string(hide_password=True))
        done = asyncio.Event()
        progress = asyncio.get_running_loop().create_task(_progress(js, options, store, stats, done))
        lag = asyncio.get_running_loop().create_task(_lag(js, options, stats))
        idle_since = time.monotonic()
        delays = backoff(options.backoff_initial, cap=10.0)
        try:
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(options.batch, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    if options.idle_exit is not None and time.monotonic() - idle_since > options.idle_exit:
                        break
                    continue
                except (nats.errors.Error, nats.js.errors.Error) as exc:
                    stats.nats_error = f"cannot fetch: {exc}"
                    delay = next(delays)
                    logger.error("sink %s: cannot fetch from NATS (retrying in %.1fs): %s", options.name, delay, exc)
                    await asyncio.sleep(delay)
                    continue
                delays = backoff(options.backoff_initial, cap=10.0)
                idle_since = time.monotonic()
                await _handle(store, msgs, stats, options, stop)
        finally:
            stats.stopped = True
            # not cancelled: a lease check in its thread would outlive the engine's dispose and
            # leave its connection open; it stops between checks
            done.set()
            await asyncio.gather(progress, return_exceptions=True)
            lag.cancel()
            _report(options, stats, final=True)
    finally:
        await nc.close()
        store.close()
    return stats


async def _handle(store: Store, msgs: list[Msg], stats: SinkStats, options: SinkOptions, stop: asyncio.Event) -> None:
    batch, foreign = sort(msgs)
    delays = backoff(options.backoff_initial, cap=10.0)
    while True:
        try:
            stored, later = await asyncio.to_thread(_write, store, batch)
            break
        except sa.exc.SQLAlchemyError as exc:
            stats.write_errors += 1
            if stats.database_ok:
                stats.database_ok, stats.database_down_since = False, datetime.now(UTC)
            if stop.is_set():  # leave them to the next sink (redelivered at once, nothing lost)
                for msg in msgs:
                    await _quietly(msg.nak())
                raise SinkError(f"stopped while the database fails: {str(getattr(exc, 'orig', exc)).strip()}") from None
            delay = next(delays)
            logger.error("sink %s: database write failed (%d messages unacked, retrying in %.1fs): %s", options.name,
                         len(msgs), delay, str(getattr(exc, "orig", exc)).strip())
            for msg in msgs:  # keep them ours while we retry
                await _quietly(msg.in_progress())
            await asyncio.sleep(delay)
    for msg in batch.done:
        await _quietly(msg.ack())
    for msg in batch.foreign:
        await _quietly(msg.term())
    retry = {id(m) for m in later}
    for msg, _event in batch.events:
        await _quietly(msg.nak(delay=1.0) if id(msg) in retry else msg.ack())
    stats.database_ok, stats.database_down_since = True, None
    stats.last_commit_at = datetime.now(UTC)
    stats.received.update(t.exchange for t in batch.trades)
    stats.quarantined_by.update(q.exchange for q in batch.quarantined)
    if stored:
        stats.stored_trades.add(stored)
    stats.messages += len(msgs)
    stats.stored += len(stored)
    stats.duplicates += len(batch.trades) - len(stored)
    stats.quarantined += len(batch.quarantined) - foreign
    stats.foreign += foreign
    stats.events += len(batch.events) - len(later)


async def _quietly(coro: Any) -> None:
    """An ack that cannot reach NATS: the message is redelivered, and stored once anyway."""
    try:
        await coro
    except (nats.errors.Error, OSError) as exc:
        logger.debug("ack not sent: %s", exc)


async def _progress(js: Any, options: SinkOptions, store: Store, stats: SinkStats, done: asyncio.Event) -> None:
    while True:
        try:
            await asyncio.wait_for(done.wait(), options.progress_interval)
            return
        except TimeoutError:
            pass
        # Collectors that publish only to NATS: crashed once their lease expired. Judged only
        # once the stream is drained: a run's renewals and its clean stop may still be queued.
        if await _drained(js, options):
            try:
                expired = await asyncio.to_thread(_expire, store)
            except sa.exc.SQLAlchemyError as exc:
                logger.debug("cannot check run leases: %s", exc)
            else:
                for gone in expired:
                    logger.warning("%s", gone)
        _report(options, stats)


async def _drained(js: Any, options: SinkOptions) -> bool:
    """Nothing pending for the consumer, read now (False when NATS cannot say)."""
    try:
        info = await js.consumer_info(options.stream.name, options.name)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return False
    return int(info.num_pending) + int(info.num_ack_pending) == 0


def _expire(store: Store) -> list[runs.Uncovered]:
    with store.engine.begin() as conn:
        return runs.expire(conn, datetime.now(UTC))


async def _lag(js: Any, options: SinkOptions, stats: SinkStats) -> None:
    """The consumer's lag (messages pending, and taken but not acked), read every ``lag_interval``."""
    warned = False
    while True:
        try:
            info = await js.consumer_info(options.stream.name, options.name)
            stats.lag = int(info.num_pending) + int(info.num_ack_pending)
            warned = False
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            if not warned:  # said once per outage, not every interval
                logger.warning("sink %s: cannot read the consumer's lag: %s", options.name, exc)
                warned = True
        await asyncio.sleep(options.lag_interval)


def _report(options: SinkOptions, stats: SinkStats, final: bool = False) -> None:
    logger.info("sink %s: %d messages, %d trades stored, %d duplicates, %d quarantined, %d foreign, %d ledger events, "
                "%d write errors, lag %d%s", options.name, stats.messages, stats.stored, stats.duplicates,
                stats.quarantined, stats.foreign, stats.events, stats.write_errors, stats.lag,
                " (final)" if final else "")


def run(options: SinkOptions) -> int:
    """Run ``drain`` until SIGTERM or Ctrl-C (exit 0 and 130): the batch in hand is committed and acked first."""
    signals: list[int] = []

    async def main() -> SinkStats:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            signals.append(signum)
            logger.warning("received %s: committing the batch in hand and stopping", signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        return await drain(options, stop)

    stats = asyncio.run(main())
    print(f"sank {stats.messages} messages: {stats.stored} trades stored, {stats.duplicates} duplicates, "
          f"{stats.quarantined} quarantined, {stats.foreign} foreign", file=sys.stderr)
    return 130 if signals and signals[0] == signal.SIGINT else 0
