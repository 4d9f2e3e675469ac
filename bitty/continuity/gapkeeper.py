"""Watching the streams for gaps, writing them to the ledger and having them backfilled.

``GapKeeper`` listens to each consumer's events and trades. A disconnect (or a watchdog restart)
opens a gap from the last trade held; the first newer trade after the stream is back bounds it,
and backfill runs. If the exchange repeats the last trade held (Coinbase's ``last_match`` on
subscribe), nothing was missed and the gap closes. If no trade comes within ``quiet_after``
seconds of the stream being back (a quiet market, a symbol that stopped trading), the gap is
backfilled from REST alone, up to the exchange's latest trade. Where the spec promises
sequential trade ids, a skipped id opens a gap at once. A collect run that starts where an
earlier one left off opens a ``restart`` gap.

Ledger writes go through one worker thread, in the order they were asked for, so the websocket
callbacks stay synchronous and never wait on the database. While the database is away they wait
and are retried in order; those still waiting when the run stops go to a ledger journal in the
spill folder, which the next run writes first (``bitty.storage.ledger.replay``). Backfilled
trades go to the database the way live trades do, through the writer (``Writer.write_now``):
retries, spill, the refused-row file, the ``--output`` mirror and the counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import aiohttp

from bitty.continuity.backfill import Backfiller, Result, Sleep, Window
from bitty.continuity.ledgerworker import LedgerWorker
from bitty.continuity.sequence import Continuity, as_int
from bitty.engine.consumer import BaseConsumer, StreamEvent
from bitty.spec.load import Spec
from bitty.storage import ledger as ledger_journal
from bitty.storage.ledger import Ledger
from bitty.storage.sinks.events import EventLedger
from bitty.storage.writer import Writer
from bitty.trade import Trade

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Gap:
    """A gap waiting for the first trade after it (its ledger id is set by the worker)."""

    from_time: datetime
    from_id: str | None
    cause: str
    id: int | None = None


@dataclass
class _Stream:
    last: tuple[str, datetime] | None = None  # last trade seen: (id, time)
    pending: _Gap | None = None
    connected_at: datetime | None = None


@dataclass
class KeeperStats:
    gaps: int = 0
    backfilled: int = 0
    closed: int = 0
    unrecoverable: int = 0
    results: list[Result] = field(default_factory=list)


class GapKeeper:
    def __init__(self, ledger: Ledger | EventLedger, specs: list[Spec], rest_urls: dict[str, str] | None = None,
                 backfill: bool = True, sleep: Sleep = asyncio.sleep, no_backfill: set[str] | None = None,
                 quiet_after: float = 10.0, *, writer: Writer) -> None:
        """``ledger``: where coverage and gaps go, the database's ``Ledger`` or, for a collector
        without a database, the ``EventLedger`` publishing them for ``bitty sink``."""
        self.writer = writer  # the one road to the database for backfilled trades
        self.ledger = ledger
        self.specs = {s.name: s for s in specs}
        self.rest_urls = rest_urls or {}
        self.backfill_enabled = backfill
        self.no_backfill = no_backfill or set()
        self.sleep = sleep
        self.quiet_after = quiet_after
        self.stats = KeeperStats()
        self.started_at = _now()
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._continuity: dict[str, Continuity] = {s.name: Continuity() for s in specs if s.trade_ids == "sequential"}
        self._worker = LedgerWorker()
        self._tasks: set[asyncio.Task[None]] = set()
        self._quiet: set[asyncio.Task[None]] = set()  # waiting for a first trade; cancelled at close
        self._session: aiohttp.ClientSession | None = None
        self._backfillers: dict[str, Backfiller] = {}

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, connections: list[tuple[Spec, list[str]]]) -> None:
        """Create the ledger tables, and open ``restart`` gaps where an earlier run left off."""
        await self._run(self.ledger.open)
        await self._run(self._replay_journal)
        self._session = aiohttp.ClientSession()
        for spec in self.specs.values():
            if spec.rest_trades is not None and self.backfill_enabled and spec.name not in self.no_backfill:
                self._backfillers[spec.name] = Backfiller(spec, self._session, self.rest_urls.get(spec.name),
                                                          sleep=self.sleep)
        for spec, symbols in connections:
            for symbol in symbols:
                await self._resume(spec, symbol)

    async def _resume(self, spec: Spec, symbol: str) -> None:
        ledger = self.ledger
        stream = self._stream(spec.name, symbol)
        last = await self._run(ledger.last_trade, spec.name, symbol)
        if last is not None:
            stream.last = last
            if spec.name in self._continuity:
                self._continuity[spec.name].seed(symbol, last[0], last[1])
        earlier = await self._run(ledger.gaps, spec.name, symbol, "open")
        for gap in earlier:
            if gap.to_time is None and stream.pending is None:
                stream.pending = _Gap(gap.from_time, gap.from_id, gap.cause, gap.id)
            elif gap.to_time is not None:
                window = Window(symbol, gap.from_time, gap.to_time, gap.from_id, gap.to_id)
                self._spawn(self._backfill(spec.name, _Gap(gap.from_time, gap.from_id, gap.cause, gap.id), window))
        if stream.pending is None:
            ended = await self._run(ledger.last_coverage_end, spec.name, symbol)
            if ended is not None:
                restart = _Gap(last[1] if last else ended, last[0] if last else None, "restart")
                self._open(spec.name, symbol, restart)
                stream.pending = restart

    async def drain(self) -> None:
        """Wait for running backfills (they hand their trades to the writer: call it before
        closing the writer)."""
        for task in list(self._quiet):
            task.cancel()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, counts: dict[str, dict[str, int]] | None = None) -> None:
        """Wait for running backfills, record the run's counts per exchange, and stop."""
        await self.drain()
        if self._session is not None:
            await self._session.close()
        ended = _now()
        for name in self.specs:
            self._submit(self.ledger.record_run, name, self.started_at, ended, (counts or {}).get(name, {}))
        left = await asyncio.to_thread(self._worker.stop)
        if left:
            run = self.started_at.strftime("%Y%m%dT%H%M%S%f")  # keys unique across the runs a journal gathers
            records = [_record(job.fn.__name__, job.args, run) for job in left]
            path = ledger_journal.save_journal(self.writer.spill_dir, records)
            logger.warning("%d ledger writes wait for the database in %s; the next run writes them first",
                           len(records), path)

    def attach(self, consumer: BaseConsumer) -> None:
        consumer.on_event(self.on_event)
        consumer.on_trade(self.on_trade)

    def blind(self, exchange: str, symbol: str) -> bool:
        """Whether the stream has a gap open that no trade after it has bounded yet."""
        stream = self._streams.get((exchange, symbol))
        return stream is not None and stream.pending is not None

    # --- events ----------------------------------------------------------------------------

    def on_event(self, event: StreamEvent) -> None:
        symbols = list(event.symbols)
        if event.kind == "connected":
            for symbol in symbols:
                stream = self._stream(event.exchange, symbol)
                stream.connected_at = event.at
                if stream.pending is not None:
                    self._wait_for_quiet(event.exchange, symbol, stream.pending, event.at)
            self._submit(self.ledger.connected, event.exchange, symbols, event.at)
            return
        self._submit(self.ledger.disconnected, event.exchange, symbols, event.at, event.reason, event.since)
        if event.cause == "stop":
            return
        for symbol in symbols:
            stream = self._stream(event.exchange, symbol)
            if stream.pending is not None:
                continue  # still blind since an earlier disconnect
            start = stream.last[1] if stream.last else stream.connected_at or event.at
            gap = _Gap(start, stream.last[0] if stream.last else None, event.cause or "disconnect")
            self._open(event.exchange, symbol, gap)
            stream.pending = gap
            logger.info("%s %s: gap opened (%s: %s)", event.exchange, symbol, gap.cause, event.reason)

    def on_trade(self, trade: Trade) -> None:
        stream = self._stream(trade.exchange, trade.symbol)
        continuity = self._continuity.get(trade.exchange)
        pending = stream.pending
        previous = stream.last
        hole = continuity.observe(trade.symbol, trade.trade_id, trade.time) if continuity else None
        if pending is not None and pending.from_id is not None and trade.trade_id == pending.from_id:
            # The exchange repeats its latest trade on subscribe, and it is the last one held
            # before the gap: nothing happened while we were away.
            stream.pending = None
            self._submit(self._bound, pending, trade.time, trade.trade_id)
            self._submit(self._settle, pending, "closed",
                         "no trade missed: the exchange's latest trade after reconnecting is the last one held",  0, 0)
        elif pending is not None and not self._older(trade, pending):
            stream.pending = None
            self._submit(self._bound, pending, trade.time, trade.trade_id)
            if continuity is not None and hole is None and _next_id(previous, trade.trade_id):
                self._submit(self._settle, pending, "closed", "no trade missed: trade ids are contiguous", 0, 0)
            else:
                window = Window(trade.symbol, pending.from_time, trade.time, pending.from_id, trade.trade_id)
                self._spawn(self._backfill(trade.exchange, pending, window))
        elif hole is not None and pending is None:
            gap = _Gap(hole.after_time or trade.time, str(hole.after_id), "sequence")
            self._open(trade.exchange, trade.symbol, gap, trade.time, trade.trade_id)
            logger.info("%s %s: %d trade ids skipped (%d..%d)", trade.exchange, trade.symbol, hole.missing,
                        hole.after_id + 1, hole.before_id - 1)
            window = Window(trade.symbol, gap.from_time, trade.time, gap.from_id, trade.trade_id)
            self._spawn(self._backfill(trade.exchange, gap, window))
        if previous is None or trade.time >= previous[1]:
            stream.last = (trade.trade_id, trade.time)

    @staticmethod
    def _older(trade: Trade, gap: _Gap) -> bool:
        """A trade from before the gap (an exchange replaying its last trade on subscribe)."""
        value, start = as_int(trade.trade_id), as_int(gap.from_id)
        if value is not None and start is not None:
            return value <= start
        return trade.time < gap.from_time or trade.trade_id == gap.from_id

    def _wait_for_quiet(self, exchange: str, symbol: str, gap: _Gap, connected_at: datetime) -> None:
        async def wait() -> None:
            await asyncio.sleep(self.quiet_after)
            stream = self._stream(exchange, symbol)
            if stream.pending is not gap:
                return  # a trade after the gap bounded it
            stream.pending = None
            logger.info("%s %s: no trade %.0fs after reconnecting; backfilling the gap from REST alone",
                        exchange, symbol, self.quiet_after)
            # The stream is live again from connected_at: the blind interval ends there. REST is
            # read up to its latest trade; trades also received live are stored once.
            self._submit(self._bound, gap, connected_at, None)
            self._spawn(self._backfill(exchange, gap, Window(symbol, gap.from_time, None, gap.from_id, None)))

        task = asyncio.get_running_loop().create_task(wait())
        self._quiet.add(task)
        task.add_done_callback(self._quiet.discard)

    # --- ledger and backfill ---------------------------------------------------------------

    def _open(self, exchange: str, symbol: str, gap: _Gap, to_time: datetime | None = None,
              to_id: str | None = None) -> None:
        self.stats.gaps += 1

        self._submit(self._open_gap, exchange, symbol, gap, _now(), to_time, to_id)

    def _open_gap(self, exchange: str, symbol: str, gap: _Gap, at: datetime, to_time: datetime | None,
                  to_id: str | None) -> None:
        gap.id = self.ledger.open_gap(exchange, symbol, gap.from_time, gap.cause, gap.from_id, at, to_time, to_id)

    def _bound(self, gap: _Gap, to_time: datetime, to_id: str | None) -> None:
        assert gap.id is not None
        self.ledger.bound_gap(gap.id, to_time, to_id)

    def _settle(self, gap: _Gap, status: str, reason: str, backfilled: int, duplicates: int) -> None:
        assert gap.id is not None
        self.ledger.settle(gap.id, status, reason, _now(), backfilled, duplicates)
        self.stats.backfilled += backfilled
        if status == "closed":
            self.stats.closed += 1
        elif status == "unrecoverable":
            self.stats.unrecoverable += 1

    async def _backfill(self, exchange: str, gap: _Gap, window: Window) -> None:
        backfiller = self._backfillers.get(exchange)
        if backfiller is None:
            why = ("the spec has no rest.trades" if self.specs[exchange].rest_trades is None else
                   "backfill is off for this exchange (off, or its websocket URL is redirected without a REST URL)")
            self._submit(self._settle, gap, "unrecoverable", why, 0, 0)
            return
        result = await backfiller.fill(window)
        self.stats.results.append(result)
        logger.info("%s %s: gap %s: %s", exchange, window.symbol, result.status, result.reason)
        status, reason, found = result.status, result.reason, result.trades
        stored = await self.writer.write_now(found)
        if stored is None:
            # Spilled (the database was away): safe on disk, but which were new is unknown. The
            # gap stays open, bounded, and the next run fetches it again and counts it.
            status, reason = "open", f"{reason}; its {len(found)} trades were spilled: the database was away"
            stored, found = [], []
        # Waits for the database if it is away (journaled at stop if it never comes back).
        self._submit(self._settle, gap, status, reason, len(stored), len(found) - len(stored))

    # --- plumbing --------------------------------------------------------------------------

    def _stream(self, exchange: str, symbol: str) -> _Stream:
        key = (exchange, symbol)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream()
        return stream

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """A ledger write, made in order; retried while the database is away, journaled at stop."""
        future = self._worker.submit(fn, *args)
        future.add_done_callback(_log_failure)
        return future

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """A ledger read (or the start's setup), once, in order behind the writes."""
        return await asyncio.wrap_future(self._worker.submit(fn, *args, durable=False))

    def _replay_journal(self) -> None:
        # The NATS EventLedger takes the same writes as the SQL Ledger the journal was made for.
        done = ledger_journal.replay(cast(Ledger, self.ledger), self.writer.spill_dir)
        if done:
            logger.warning("wrote %d ledger writes an earlier run could not make", done)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _next_id(previous: tuple[str, datetime] | None, trade_id: str) -> bool:
    before, now = as_int(previous[0]) if previous else None, as_int(trade_id)
    return before is not None and now is not None and now == before + 1


def _record(op: str, args: tuple[Any, ...], run: str) -> dict[str, Any]:
    """A waiting ledger write as a journal record (``bitty.storage.ledger.replay`` reads it); a gap
    not yet in the database is named by a key unique to this run and gap."""
    def ref(gap: _Gap) -> dict[str, Any]:
        return {"id": gap.id} if gap.id is not None else {"key": f"{run}-{id(gap)}"}

    if op == "_open_gap":
        exchange, symbol, gap, at, to_time, to_id = args
        return {"op": "open_gap", "key": ref(gap)["key"], "exchange": exchange, "symbol": symbol,
                "from_time": gap.from_time, "cause": gap.cause, "from_id": gap.from_id, "at": at,
                "to_time": to_time, "to_id": to_id}
    if op == "_bound":
        gap, to_time, to_id = args
        return {"op": "bound_gap", "gap": ref(gap), "to_time": to_time, "to_id": to_id}
    if op == "_settle":
        gap, status, reason, backfilled, duplicates = args
        return {"op": "settle", "gap": ref(gap), "status": status, "reason": reason, "at": _now(),
                "backfilled": backfilled, "duplicates": duplicates}
    if op == "connected":
        exchange, symbols, at = args
        return {"op": op, "exchange": exchange, "symbols": symbols, "at": at}
    if op == "disconnected":
        exchange, symbols, at, reason, since = args
        return {"op": op, "exchange": exchange, "symbols": symbols, "at": at, "reason": reason, "since": since}
    if op == "record_run":
        exchange, started_at, ended_at, counts = args
        return {"op": op, "exchange": exchange, "started_at": started_at, "ended_at": ended_at, "counts": counts}
    raise ValueError(f"not a ledger write: {op}")


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("ledger write failed", exc_info=future.exception())


def _now() -> datetime:
    return datetime.now(UTC)
