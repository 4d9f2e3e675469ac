"""Batched writes that never block the websocket readers.

Readers call ``put`` (synchronous, O(1)); a background task hands batches to one worker thread
that writes them, so a slow database slows nothing but the writer. Nothing received is dropped
while there is memory or disk to keep it:

- a batch the database does not take goes back to the buffer, and the writer tries again with
  backoff; meanwhile a second task appends what the buffer holds to a journal file in the spill
  folder (``bitty.storage.spill``) every ``sync_interval`` seconds, fsynced, so a kill during an
  outage loses at most that long of trades. The journal is written back once the database
  accepts writes again, by this run or the next;
- a database that is up but behind: past ``max_pending`` trades the oldest half goes to the
  journal;
- trades leave memory only once they are on disk. When the disk refuses them (full), they stay
  in memory, loudly, up to ``max_memory``; past it the oldest are counted as ``lost``, which the
  run reports and exits non-zero on;
- ``close`` flushes everything; if the database is still away after ``close_timeout`` seconds,
  what is left goes to the journal, which the next run writes back;
- a writer task that fails sets ``failed``: the run stops, and ``close`` still spills what it holds.

The writer is the only code that writes trades to the store: trades recovered off the live
stream (a backfill) come in through ``write_now``, which takes the same road and reports which
of them were new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
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
# A database write taking longer than this is treated as an outage by the journal: a database
# that hangs rather than refuses must not keep what arrives meanwhile in memory only.
_HANGING = 1.0


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
    lost: int = 0  # trades neither stored nor on disk: memory full while the disk refused them
    backfilled: int = 0  # trades handed in through write_now (counted in stored/duplicates, not received)


class Writer:
    def __init__(self, store: Store, batch_size: int = 1000, flush_interval: float = 0.2,
                 on_stored: Callable[[list[Trade]], Any] | None = None, max_pending: int = 200_000,
                 spill_dir: Path | None = None, close_timeout: float = 30.0, sync_interval: float = 0.5,
                 max_memory: int | None = None) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_stored = on_stored
        self.max_pending = max_pending
        self.max_memory = max_memory or 2 * max_pending
        self.spill_dir = spill_dir or Path("bitty-spill")
        self.close_timeout = close_timeout
        self.sync_interval = sync_interval
        self._healthy = True
        self.stats = WriterStats()
        self.per_exchange: dict[str, WriterStats] = {}
        self.failure: str | None = None  # why the writer stopped, when it failed
        self.failed = asyncio.Event()
        self._trades: deque[Trade] = deque()
        self._quarantine: deque[Quarantined] = deque()
        self._refused: list[Trade] = []  # refused trades of the batch being written
        self._wake = asyncio.Event()
        self._spill_wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitty-writer")
        # The journal has a thread of its own: a database write that hangs must not hold it up.
        self._spill_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitty-spill")
        self._journal = spill.Journal(self.spill_dir)
        self._task: asyncio.Task[None] | None = None
        self._spill_task: asyncio.Task[None] | None = None
        self._lock: int | None = None
        self._delays = backoff(0.2, cap=5.0)
        self._retry_in = 0.2
        self._writing_since: float | None = None
        self._disk_error: str | None = None
        self._stuck: set[Path] = set()  # spill files that can be neither read nor moved aside
        self._close_by: float | None = None  # loop time at which write_now stops waiting for the database
        self._writing_now: set[asyncio.Future[None]] = set()
        self._closed = False

    def start(self) -> None:
        """Take the spill folder (``SinkError`` when another collector holds it) and start writing."""
        self._lock = spill.lock(self.spill_dir)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._supervised(self._run(), "writing to the database"))
        self._spill_task = loop.create_task(self._supervised(self._spill_loop(), "spilling to disk"))

    def put(self, trade: Trade) -> None:
        trades = self._trades
        trades.append(trade)
        self.stats.received += 1
        per = self.per_exchange.get(trade.exchange) or self._exchange(trade.exchange)
        per.received += 1
        if len(trades) >= self.batch_size:
            self._wake.set()
            if len(trades) >= self.max_pending:
                self._spill_wake.set()

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

    @property
    def healthy(self) -> bool:
        """False from a failed write until one succeeds again (the status page's database state)."""
        return self._healthy

    def _exchange(self, name: str) -> WriterStats:
        stats = self.per_exchange.get(name)
        if stats is None:
            stats = self.per_exchange[name] = WriterStats()
        return stats

    async def _supervised(self, work: Coroutine[Any, Any, None], doing: str) -> None:
        """Run one of the writer's tasks; a failure is recorded and announced (``failed``), never
        left for nobody to see."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = f"{doing} failed: {type(exc).__name__}: {exc}"
            logger.exception("the writer stopped: %s; the run stops, what it holds goes to %s",
                             self.failure, self.spill_dir)
            self.failed.set()

    # --- the journal -----------------------------------------------------------------------

    async def _spill_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spill_wake.wait(), timeout=self.sync_interval)
            self._spill_wake.clear()
            await self._spill(loop)

    def _spill_due(self, loop: asyncio.AbstractEventLoop) -> int:
        """How many of the oldest trades in memory go to disk now: all of them while the database
        is away (or a write hangs), the older half when it is behind, none otherwise."""
        held = len(self._trades)
        hanging = self._writing_since is not None and loop.time() - self._writing_since > _HANGING
        if not self._healthy or hanging:
            return held
        return held // 2 if held >= self.max_pending else 0

    async def _spill(self, loop: asyncio.AbstractEventLoop) -> None:
        count = self._spill_due(loop)
        if not count:
            return
        batch = self._take(count)
        try:
            written = await loop.run_in_executor(self._spill_executor, self._journal.append, batch)
        except OSError as exc:
            self._trades.extendleft(reversed(batch))  # not on disk: it stays in memory
            self._disk_refused(exc)
            return
        except BaseException:
            self._trades.extendleft(reversed(batch))
            raise
        self.stats.spilled += written
        if written < len(batch):  # the disk filled up on the way
            self._trades.extendleft(reversed(batch[written:]))
            assert self._journal.error is not None
            self._disk_refused(self._journal.error)
        elif self._disk_error is not None:
            logger.warning("spill folder %s accepts writes again", self.spill_dir)
            self._disk_error = None
        if self._journal.count == written:  # a new file
            logger.warning("database %s: trades go to %s (fsynced every %.1fs) until it accepts writes",
                           "behind" if self._healthy else "away", self._journal.path, self.sync_interval)

    def _disk_refused(self, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        if reason != self._disk_error:
            logger.error("cannot spill to %s (%s): %d trades kept in memory, up to %d; past that the oldest "
                         "are lost", self.spill_dir, reason, len(self._trades), self.max_memory)
            self._disk_error = reason
        over = len(self._trades) - self.max_memory
        if over > 0:
            lost = Counter(map(_EXCHANGE, (self._trades.popleft() for _ in range(over))))
            for exchange, count in lost.items():
                self._exchange(exchange).lost += count
            self.stats.lost += over
            logger.error("LOST %d trades (%d in all): the database is away, memory is full and %s refuses "
                         "writes (%s)", over, self.stats.lost, self.spill_dir, reason)

    # --- the database ----------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        await self._unspill()  # spill files left by an earlier run
        while True:
            if self._healthy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
                self._wake.clear()
            else:
                await asyncio.sleep(self._retry_in)
            # One attempt a batch: a batch the database does not take goes back to the buffer,
            # where the journal picks it up, rather than waiting in memory through the retries.
            await self._flush(loop.time())
            if self._closing and not self._trades and not self._quarantine:
                # What this run journaled while the database was away goes in now, if it is back
                # (one attempt when it is not: the files stay for the next run).
                await self._unspill()
                return
            if not self._trades:
                await self._unspill()

    async def _flush(self, deadline: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        while self._trades or self._quarantine:
            batch = self._take(self.batch_size * _CATCH_UP)
            items = list(self._quarantine)
            self._quarantine.clear()
            try:
                stored = await self._write(loop, batch, items, deadline)
            except BaseException:
                # Closing gave up (or a bug): the batch may or may not be committed; keep it for
                # the spill (the unique key drops it when written back if it was).
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
        (a loop time, or a function giving the current one; None when it is reached: the caller
        keeps the batch)."""
        while True:
            self._writing_since = loop.time()
            try:
                stored = await loop.run_in_executor(self._executor, self.store.write, batch, items)
            except sa.exc.DataError as exc:
                # The database refuses a value (text PostgreSQL cannot hold, an id longer than
                # its column): retrying cannot help, and the batch must not hold up the others.
                self._writing_since = None
                return await self._write_apart(loop, batch, items, deadline, exc)
            except sa.exc.SQLAlchemyError as exc:
                self._writing_since = None
                self._healthy = False
                self._spill_wake.set()
                self.stats.write_errors += 1
                delay = self._retry_in = next(self._delays)
                logger.error("database write failed (%d trades waiting, retrying in %.1fs): %s",
                             len(batch) + len(self._trades), delay, str(getattr(exc, "orig", exc)).strip())
                limit = deadline() if callable(deadline) else deadline
                if limit is not None and loop.time() + delay > limit:
                    return None
                await asyncio.sleep(delay)
                continue
            finally:
                self._writing_since = None
            if not self._healthy:
                logger.warning("database accepts writes again")
                self._delays = backoff(0.2, cap=5.0)
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
        """Write spill files back to the database, deleting each once all of it is stored. While
        the database is away this is the probe: one attempt on the oldest file."""
        loop = asyncio.get_running_loop()
        files = self._spilled()
        if not files and self._journal.count:
            await loop.run_in_executor(self._spill_executor, self._journal.rotate)
            files = self._spilled()
        for path in files:
            try:
                readback = await loop.run_in_executor(self._executor, spill.read_back, path)
            except FileNotFoundError:
                continue  # gone meanwhile: nothing to write
            except OSError as exc:
                self._unusable(path, f"cannot be read ({exc.strerror or exc})")
                continue
            trades = readback.trades
            size = self.batch_size * _CATCH_UP
            for i in range(0, len(trades), size):
                batch = trades[i:i + size]
                stored = await self._write(loop, batch, [], loop.time() + (5 if self._healthy else 0))
                if stored is None:
                    return  # the database went away again; the file stays
                self.stats.unspilled += len(batch)
                self._count(batch, stored)
            if readback.bad:
                number, _, reason = readback.bad[0]
                self._unusable(path, f"has {len(readback.bad)} lines that cannot be read back (line {number}: "
                                     f"{reason}); " + (f"its {len(trades)} readable trades are stored" if trades
                                                       else "it holds no trade"))
                continue
            path.unlink(missing_ok=True)
            logger.info("wrote back %d spilled trades from %s", len(trades), path)

    def _spilled(self) -> list[Path]:
        """Spill files to write back: all but the journal file being appended to, and those that
        could not be moved aside."""
        files = spill.pending(self.spill_dir)
        return [p for p in files if p != self._journal.path and p not in self._stuck]

    def _unusable(self, path: Path, problem: str) -> None:
        """Move a spill file that cannot be (fully) read back aside, where it is never written back."""
        try:
            aside = spill.set_aside(path)
        except OSError as exc:
            self._stuck.add(path)
            logger.error("spill file %s %s, and cannot be moved aside (%s): skipped until restart", path, problem,
                         exc.strerror or exc)
            return
        logger.error("spill file %s %s; the file is kept as %s and not written back", path, problem, aside.name)

    async def close(self) -> None:
        """Write everything received, then stop. If the database does not take it within
        ``close_timeout`` seconds, what is left goes to a spill file; only a disk that refuses it
        loses it (counted in ``stats.lost``)."""
        self._closing = True
        self.begin_close()
        self._wake.set()
        try:
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
        finally:
            await self._spill_everything()

    async def abort(self) -> None:
        """Stop at once, without waiting for the database: what is in memory goes to the journal."""
        self._closing = True
        self._close_by = asyncio.get_running_loop().time()  # write_now calls give up at their next failure
        await self._spill_everything()

    async def _spill_everything(self) -> None:
        """What is still in memory goes to the journal, which is closed for the next run."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._spill_task is not None:
            self._spill_task.cancel()
            await asyncio.gather(self._spill_task, return_exceptions=True)
        self._spill_executor.shutdown(wait=True)
        if self._trades:
            left = list(self._trades)
            self._trades.clear()
            try:
                written = self._journal.append(left)
            except OSError:
                written = 0
            self.stats.spilled += written
            if written < len(left):
                for exchange, lost in Counter(map(_EXCHANGE, left[written:])).items():
                    self._exchange(exchange).lost += lost
                self.stats.lost += len(left) - written
                error = self._journal.error
                logger.error("LOST %d trades: the database is away and %s refuses writes (%s)", len(left) - written,
                             self.spill_dir, error.strerror if error is not None else "unknown error")
        path, count = self._journal.path, self._journal.count
        self._journal.rotate()
        if path is not None:
            logger.warning("%d trades kept in %s, to be written when the database accepts writes", count, path)
        if self._quarantine:
            logger.error("%d quarantined frames could not be stored: the database is away", len(self._quarantine))
        if self._writing_now:  # they give up at the close deadline
            await asyncio.wait(self._writing_now)
        self._closed = True
        self._executor.shutdown(wait=True)
        if self._lock is not None:
            spill.unlock(self._lock)
            self._lock = None
