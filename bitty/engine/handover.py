"""Keeping a stream open across the exchange's forced disconnects (``connection.max_age``).

Exchanges such as Binance close every connection after 24 hours. A ``Slot`` holds one
connection's worth of symbols; shortly before the deadline it opens a second connection, waits
until that one delivers frames, and only then closes the old one. The two overlap for a moment,
so no trade falls between them; trades received twice are dropped by the unique key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bitty.engine.consumer import BaseConsumer, Stats
from bitty.engine.watchdog import max_age_margin
from bitty.errors import ExchangeError

logger = logging.getLogger(__name__)

# How long a new connection may take to deliver its first frame before the handover is
# abandoned (the old connection then runs until the exchange closes it, and reconnects).
TAKEOVER_TIMEOUT = 30.0


class Slot:
    """One connection's symbols, run by a succession of consumers."""

    def __init__(self, make: Callable[[], BaseConsumer], max_age: float | None,
                 takeover_timeout: float = TAKEOVER_TIMEOUT) -> None:
        self._make = make
        self.max_age = max_age
        self.takeover_timeout = takeover_timeout
        self.current = make()
        self.retired: list[BaseConsumer] = []
        self.handovers = 0
        self._stopping = asyncio.Event()

    # what progress lines and results read, summed over every consumer of the slot
    @property
    def exchange_name(self) -> str:
        return self.current.exchange_name

    @property
    def consumer_id(self) -> str:
        return self.current.consumer_id

    @property
    def failed(self) -> ExchangeError | None:
        return self.current.failed

    @property
    def stats(self) -> Stats:
        total = Stats()
        for consumer in (*self.retired, self.current):
            for name, value in vars(consumer.stats).items():
                if isinstance(value, int):
                    setattr(total, name, getattr(total, name) + value)
        total.last_error = self.current.stats.last_error
        return total

    @property
    def symbols(self) -> list[str]:
        """The symbols of the slot's connection."""
        return list(self.current.product_ids)

    @property
    def heartbeat_at(self) -> float | None:
        """When (``time.monotonic()``) the current connection last saw a heartbeat; None before the first."""
        beat = self.current.last_heartbeat.get("heartbeat")
        return float(beat) if beat else None

    def is_connected(self) -> bool:
        return self.current.is_connected()

    async def stop(self) -> None:
        self._stopping.set()
        await self.current.stop()

    async def run(self) -> None:
        task = asyncio.create_task(self.current.run())
        if not self.max_age:
            await task
            return
        margin = max_age_margin(self.max_age)
        while True:
            old = self.current
            opened = await self._wait_connected(old, task)
            if opened is None:
                break
            due = opened + self.max_age - margin
            if await self._sleep_until(due, task):
                break
            new = self._make()
            new_task = asyncio.create_task(new.run())
            if await self._delivers(new, new_task):
                logger.info("%s : handing over to a new connection before the exchange's %gs limit",
                            old.consumer_id, self.max_age)
                self.current, self.handovers = new, self.handovers + 1
                self.retired.append(old)
                await old.stop()
                await task
                task = new_task
            else:
                logger.warning("%s : the new connection delivered nothing in %gs; keeping the old one",
                               old.consumer_id, self.takeover_timeout)
                await new.stop()
                await new_task
                self.retired.append(new)
                await self._sleep_until(opened + self.max_age + margin, task)
                if task.done():
                    break
        await task

    async def _wait_connected(self, consumer: BaseConsumer, task: asyncio.Task[None]) -> float | None:
        """Monotonic time at which the consumer's current connection opened (None: it ended)."""
        while not consumer.is_connected():
            if task.done() or self._stopping.is_set():
                return None
            await asyncio.sleep(0.05)
        return time.monotonic()

    async def _sleep_until(self, moment: float, task: asyncio.Task[None]) -> bool:
        """Sleep until ``moment``; True when the slot ends first."""
        delay = moment - time.monotonic()
        if delay > 0:
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait([task, stop], timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
        return task.done() or self._stopping.is_set()

    async def _delivers(self, consumer: BaseConsumer, task: asyncio.Task[None]) -> bool:
        deadline = time.monotonic() + self.takeover_timeout
        while time.monotonic() < deadline and not task.done() and not self._stopping.is_set():
            if consumer.is_connected() and consumer.stats.frames > 0:
                return True
            await asyncio.sleep(0.02)
        return False
