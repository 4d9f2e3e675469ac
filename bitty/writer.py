"""Batched writes that never block the websocket readers.

Readers call ``put`` (synchronous, O(1)); a background task hands batches to one worker thread
that writes them, so a slow database slows nothing but the writer. When the database fails,
the batch is kept and retried with backoff; nothing received is dropped. ``close`` flushes all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bitty.backoff import backoff
from bitty.store import Store
from bitty.trade import Quarantined, Trade

logger = logging.getLogger(__name__)


@dataclass
class WriterStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    write_errors: int = 0


class Writer:
    def __init__(self, store: Store, batch_size: int = 1000, flush_interval: float = 0.2,
                 on_stored: Callable[[list[Trade]], Any] | None = None) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.on_stored = on_stored
        self.stats = WriterStats()
        self.per_exchange: dict[str, WriterStats] = {}
        self._trades: deque[Trade] = deque()
        self._quarantine: deque[Quarantined] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitty-writer")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, trade: Trade) -> None:
        self._trades.append(trade)
        self.stats.received += 1
        self._exchange(trade.exchange).received += 1
        if len(self._trades) >= self.batch_size:
            self._wake.set()

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
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval)
            self._wake.clear()
            await self._flush()
            if self._closing and not self._trades and not self._quarantine:
                return

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._trades or self._quarantine:
            batch = [self._trades.popleft() for _ in range(min(self.batch_size, len(self._trades)))]
            items = list(self._quarantine)
            self._quarantine.clear()
            delays = backoff(0.2, cap=5.0)
            while True:
                try:
                    stored = await loop.run_in_executor(self._executor, self.store.write, batch, items)
                    break
                except sa.exc.SQLAlchemyError as exc:
                    self.stats.write_errors += 1
                    delay = next(delays)
                    logger.error("database write failed (%d trades waiting, retrying in %.1fs): %s",
                                 len(batch) + len(self._trades), delay, str(getattr(exc, "orig", exc)).strip())
                    await asyncio.sleep(delay)
            self.stats.stored += len(stored)
            self.stats.duplicates += len(batch) - len(stored)
            for trade in batch:
                self._exchange(trade.exchange).duplicates += 1
            for trade in stored:
                per = self._exchange(trade.exchange)
                per.duplicates -= 1
                per.stored += 1
            if self.on_stored is not None and stored:
                self.on_stored(stored)

    async def close(self) -> None:
        """Write everything received, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        else:
            await self._flush()
        self._executor.shutdown(wait=True)
