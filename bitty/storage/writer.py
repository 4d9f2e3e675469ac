"""Batched writes that never block the websocket readers.

Readers call ``put`` (synchronous, O(1)); a background task hands batches to one worker thread
that writes them, so a slow database slows nothing but the writer. When the database fails,
the batch is kept and retried with backoff; nothing received is dropped:

- the buffer is bounded (``max_pending`` trades); past it, the oldest half is moved to a spill
  file on local disk (``bitty.storage.spill``), written back once the database accepts writes again;
- ``close`` flushes everything; if the database is still away after ``close_timeout`` seconds,
  what is left goes to a spill file, which the next run writes back.

The writer is the only code that writes trades to the store: trades recovered off the live
stream (a backfill) come in through ``write_now``, which takes the same road and reports which
of them were new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bitty.backoff import backoff
from bitty.storage import spill
from bitty.storage.store import Store
from bitty.trade import Quarantined, Trade

logger = logging.getLogger(__name__)

# A writer that is behind writes up to this many batches in one transaction: what a write costs
# is mostly per transaction and per statement (each one waits for the GIL to come back from the
# readers), so catching up in bigger writes keeps the backlog from growing.
_CATCH_UP = 10
_EXCHANGE = attrgetter("exchange")


@dataclass
class WriterStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    write_errors: int = 0
    spilled: int = 0
    unspilled: int = 0
    refused: int = 0  # rows the database refuses, kept in refused files
    backfilled: int = 0  # trades handed in through write_now (counted in stored/duplicates, not received)


class Writer:
    def __init__(self, store: Store, batch_size: int = 1000, flush_interval: float = 0.2,
                 on_stored: Callable[[list[Trade]], Any] | None = None, max_pending: int = 200_000,
                 spill_dir: Path | None = None, close_timeout: float = 30.0) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_stored = on_stored
        self.max_pending = max_pending
        self.spill_dir = spill_dir or Path("bitty-spill")
        self.close_timeout = close_timeout
        self._healthy = True
        self.stats = WriterStats()
        self.per_exchange: dict[str, WriterStats] = {}
        self._trades: deque[Trade] = deque()
        self._quarantine: deque[Quarantined] = deque()
        self._refused: list[Trade] = []  # refused trades of the batch being written
        self._wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitty-writer")
        self._task: asyncio.Task[None] | None = None
        self._close_by: float | None = None  # loop time at which write_now stops waiting for the database
        self._writing_now: set[asyncio.Future[None]] = set()
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, trade: Trade) -> None:
        trades = self._trades
        trades.append(trade)
        self.stats.received += 1
        per = self.per_exchange.get(trade.exchange) or self._exchange(trade.exchange)
        per.received += 1
        if len(trades) >= self.batch_size:
            self._wake.set()
            if len(self._trades) >= self.max_pending:
                self._spill(len(self._trades) // 2)

    def _spill(self, count: int) -> None:
        """Move the oldest ``count`` trades to a spill file (the buffer is full)."""
        batch = [self._trades.popleft() for _ in range(min(count, len(self._trades)))]
        if not batch:
            return
        path = spill.write(self.spill_dir, batch)
        self.stats.spilled += len(batch)
        logger.warning("database behind: %d trades moved to %s, to be written when it accepts writes",
                       len(batch), path)

    async def write_now(self, trades: Sequence[Trade]) -> list[Trade] | None:
        """Write trades that did not come from the live stream (a backfill) now, on the same road
        as the others: retries, the refused-row file, counts and the ``on_stored`` mirror. Returns
        those that were new. While the database is away it waits for it; once the writer is
        closing (``begin_close``), only until the close deadline: then the trades go to a spill
        file, written back like any other, and it returns None."""
        batch = list(trades)
        if not batch:
            return []
        for trade in batch:
            self._exchange(trade.exchange).backfilled += 1
        self.stats.backfilled += len(batch)
        done = asyncio.get_running_loop().create_future()
        self._writing_now.add(done)
        try:
            stored = None
            if not self._closed:
                stored = await self._write(asyncio.get_running_loop(), batch, [], lambda: self._close_by)
            if stored is None:
                path = spill.write(self.spill_dir, batch)
                self.stats.spilled += len(batch)
                logger.warning("database away: %d recovered trades moved to %s, to be written when it accepts writes",
                               len(batch), path)
                return None
            self._count(batch, stored)
            return stored
        finally:
            self._writing_now.discard(done)
            done.set_result(None)

    def begin_close(self) -> None:
        """Start the close deadline (``close_timeout`` from now): ``write_now`` calls waiting for
        the database give up then. ``close`` calls it; call it earlier to bound what still runs
        before ``close`` (backfills finishing)."""
        if self._close_by is None:
            self._close_by = asyncio.get_running_loop().time() + self.close_timeout

    def quarantine(self, item: Quarantined) -> None:
        self._quarantine.append(item)
        self.stats.quarantined += 1
        self._exchange(item.exchange).quarantined += 1

    @property
    def pending(self) -> int:
        return len(self._trades)

    def _exchange(self, name: str) -> WriterStats:
        stats = self.per_exchange.get(name)
        if stats is None:
            stats = self.per_exchange[name] = WriterStats()
        return stats

    async def _run(self) -> None:
        await self._unspill()  # spill files left by an earlier run
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
            self._wake.clear()
            await self._flush()
            if self._closing and not self._trades and not self._quarantine:
                return
            if self._healthy and not self._trades:
                await self._unspill()

    async def _flush(self, deadline: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        while self._trades or self._quarantine:
            batch = self._take(self.batch_size * _CATCH_UP)
            items = list(self._quarantine)
            self._quarantine.clear()
            try:
                stored = await self._write(loop, batch, items, deadline)
            except asyncio.CancelledError:
                # Closing gave up: the batch may or may not be committed; keep it for the spill
                # (the unique key drops it when written back if it was).
                stored = None
                self._trades.extendleft(reversed(batch))
                self._quarantine.extendleft(reversed(items))
                raise
            if stored is None:  # gave up at the deadline: keep the batch for the spill
                self._trades.extendleft(reversed(batch))
                self._quarantine.extendleft(reversed(items))
                return
            self._count(batch, stored)

    def _take(self, limit: int) -> list[Trade]:
        """The oldest ``limit`` trades, taken off the buffer (on the event loop: a list copy when
        that is all of them, rather than a popleft per trade)."""
        trades = self._trades
        if len(trades) <= limit:
            batch = list(trades)
            trades.clear()
            return batch
        return [trades.popleft() for _ in range(limit)]

    async def _write(self, loop: asyncio.AbstractEventLoop, batch: list[Trade], items: list[Quarantined],
                     deadline: float | Callable[[], float | None] | None) -> list[Trade] | None:
        """Write one batch, retrying with backoff while the database fails, until ``deadline``
        (a loop time, or a function giving the current one) if any."""
        delays = backoff(0.2, cap=5.0)
        while True:
            try:
                stored = await loop.run_in_executor(self._executor, self.store.write, batch, items)
            except sa.exc.DataError as exc:
                # The database refuses a value (text PostgreSQL cannot hold, an id longer than
                # its column): retrying cannot help, and the batch must not hold up the others.
                return await self._write_apart(loop, batch, items, deadline, exc)
            except sa.exc.SQLAlchemyError as exc:
                self._healthy = False
                self.stats.write_errors += 1
                delay = next(delays)
                logger.error("database write failed (%d trades waiting, retrying in %.1fs): %s",
                             len(batch) + len(self._trades), delay, str(getattr(exc, "orig", exc)).strip())
                limit = deadline() if callable(deadline) else deadline
                if limit is not None and loop.time() + delay > limit:
                    return None
                await asyncio.sleep(delay)
                continue
            if not self._healthy:
                logger.warning("database accepts writes again")
            self._healthy = True
            return stored

    async def _write_apart(self, loop: asyncio.AbstractEventLoop, batch: list[Trade], items: list[Quarantined],
                           deadline: float | Callable[[], float | None] | None,
                           error: sa.exc.DataError) -> list[Trade] | None:
        """Write a batch the database refused in halves, until each refused row is alone; those
        go to a refused file in the spill folder, with the database's reason, and the rest is
        stored. None when the database went away meanwhile (as ``_write``)."""
        if len(batch) + len(items) == 1:
            reason = str(getattr(error, "orig", error)).strip()
            rows = [{"reason": reason, "trade": t.as_json()} for t in batch]
            rows += [{"reason": reason, "quarantined": {"exchange": q.exchange, "spec_version": q.spec_version,
                                                        "reason": q.reason, "frame": q.frame}} for q in items]
            path = spill.refused(self.spill_dir, rows)
            self._refused += batch
            self.stats.refused += 1
            logger.error("the database refuses a %s (%s); kept in %s", "trade" if batch else "quarantined frame",
                         reason.splitlines()[0] if reason else "no reason given", path)
            return []
        if batch and items:
            parts = [(batch, []), ([], items)]
        else:
            half = max(len(batch), len(items)) // 2
            parts = [(batch[:half], items[:half]), (batch[half:], items[half:])]
        stored: list[Trade] = []
        for trades, quarantined in parts:
            part = await self._write(loop, trades, quarantined, deadline)
            if part is None:
                return None
            stored += part
        return stored

    def _count(self, batch: list[Trade], stored: list[Trade]) -> None:
        if self._refused:  # neither stored nor duplicates
            refused = {id(t) for t in self._refused}
            kept = [t for t in batch if id(t) not in refused]
            if len(kept) != len(batch):  # only this batch's: a write_now may be under way beside it
                mine = {id(t) for t in batch}
                self._refused = [t for t in self._refused if id(t) not in mine]
                batch = kept
        self.stats.stored += len(stored)
        self.stats.duplicates += len(batch) - len(stored)
        exchanges = Counter(map(_EXCHANGE, batch))
        # ``stored`` holds those of ``batch`` that were new: all of them when the lengths agree
        new = exchanges if len(stored) == len(batch) else Counter(map(_EXCHANGE, stored))
        for exchange, total in exchanges.items():
            per = self._exchange(exchange)
            per.stored += new[exchange]
            per.duplicates += total - new[exchange]
        if self.on_stored is not None and stored:
            try:
                self.on_stored(stored)
            except Exception:  # the trades are stored; a failing mirror must not stop writing
                logger.exception("writing %d stored trades to the output failed", len(stored))

    async def _unspill(self) -> None:
        """Write spill files back to the database, deleting each once all of it is stored."""
        loop = asyncio.get_running_loop()
        for path in spill.pending(self.spill_dir):
            trades = await loop.run_in_executor(self._executor, spill.read, path)
            size = self.batch_size * _CATCH_UP
            for i in range(0, len(trades), size):
                batch = trades[i:i + size]
                stored = await self._write(loop, batch, [], loop.time() + 5)
                if stored is None:
                    return  # the database went away again; the file stays
                self.stats.unspilled += len(batch)
                self._count(batch, stored)
            path.unlink()
            logger.info("wrote back %d spilled trades from %s", len(trades), path)

    async def close(self) -> None:
        """Write everything received, then stop. If the database does not take it within
        ``close_timeout`` seconds, what is left goes to a spill file."""
        self._closing = True
        self.begin_close()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=self.close_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        else:
            loop = asyncio.get_running_loop()
            await self._flush(loop.time() + self.close_timeout)
        if self._trades:
            self._spill(len(self._trades))
        if self._quarantine:
            logger.error("%d quarantined frames could not be stored: the database is away", len(self._quarantine))
        if self._writing_now:  # they give up at the close deadline
            await asyncio.wait(self._writing_now)
        self._closed = True
        self._executor.shutdown(wait=True)
