"""What a connection tells the world: callbacks for trades, heartbeats, quarantined frames,
stream events and raw frames, and its counters."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bitty.trade import Quarantined, Trade

logger = logging.getLogger(__name__)


@dataclass
class Stats:
    frames: int = 0
    trades: int = 0
    heartbeats: int = 0
    quarantined: int = 0
    exchange_errors: int = 0
    connects: int = 0
    reconnects: int = 0
    callback_errors: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class StreamEvent:
    """A change in what a connection covers: ``connected`` once subscribed, ``disconnected``
    when that connection ends. ``cause``: disconnect, watchdog (bitty restarted the stream) or
    stop."""

    kind: str
    exchange: str
    symbols: tuple[str, ...]
    at: datetime
    reason: str = ""
    cause: str = ""
    since: datetime | None = None  # disconnected: when this connection had connected


class Listeners:
    """The callbacks registered on a connection, and how they are called: sync ones inline (a
    failure is logged and counted, never stops the stream), async ones as tasks."""

    exchange_name: str = ""
    product_ids: list[str]
    stats: Stats

    def _init_listeners(self) -> None:
        self.on_trade_callbacks: list[Callable[[Trade], Any]] = []
        self._sync_callback: Callable[[Trade], Any] | None = None  # the only callback, when it is sync
        self.on_heartbeat_callbacks: list[Callable[[dict[str, Any]], Any]] = []
        self.on_quarantine_callbacks: list[Callable[[Quarantined], Any]] = []
        self.on_raw_callbacks: list[Callable[[str, Any], Any]] = []
        self.on_event_callbacks: list[Callable[[StreamEvent], Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connected_at: datetime | None = None

    @property
    def consumer_id(self) -> str:
        symbols = self.product_ids[0] if len(self.product_ids) == 1 else ",".join(self.product_ids)
        return f"{self.exchange_name} | {symbols}"

    def on_trade(self, callback: Callable[[Trade], Any]) -> None:
        """Register a sync or async callback called with every trade."""
        self.on_trade_callbacks.append(callback)
        callbacks = self.on_trade_callbacks
        # Whether a coroutine function is asked here, not per frame (it costs more than a trade's mapping).
        self._sync_callback = callbacks[0] if len(callbacks) == 1 and not _is_async(callbacks[0]) else None

    def on_heartbeat(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Register a sync or async callback called with every heartbeat."""
        self.on_heartbeat_callbacks.append(callback)

    def on_quarantine(self, callback: Callable[[Quarantined], Any]) -> None:
        """Register a callback for frames (or records) that could not be mapped."""
        self.on_quarantine_callbacks.append(callback)

    def on_event(self, callback: Callable[[StreamEvent], Any]) -> None:
        """Register a callback for ``StreamEvent``s: connected (subscribed) and disconnected."""
        self.on_event_callbacks.append(callback)

    def on_raw(self, callback: Callable[[str, Any], Any]) -> None:
        """Register a callback seeing every frame sent ('send') and received ('recv'), and
        connection events ('open', 'close')."""
        self.on_raw_callbacks.append(callback)

    def _emit_event(self, kind: str, reason: str = "", cause: str = "") -> None:
        now = datetime.now(UTC)
        since = self.connected_at if kind == "disconnected" else None
        if kind == "connected":
            self.connected_at = now
        event = StreamEvent(kind, self.exchange_name, tuple(self.product_ids), now, reason, cause, since)
        for callback in self.on_event_callbacks:
            self._call(callback, event)

    def _emit_raw(self, event: str, data: Any) -> None:
        for callback in self.on_raw_callbacks:
            callback(event, data)

    def _emit_trades(self, trades: list[Trade]) -> None:
        """Every trade to every callback (the connection calls a lone sync callback itself)."""
        callbacks = self.on_trade_callbacks
        for trade in trades:
            for callback in callbacks:
                self._call(callback, trade)

    def _emit_heartbeat(self, msg: dict[str, Any]) -> None:
        for callback in self.on_heartbeat_callbacks:
            self._call(callback, msg)

    def _emit_quarantined(self, item: Quarantined) -> None:
        self.stats.quarantined += 1
        logger.debug("%s : quarantined frame: %s", self.consumer_id, item.reason)
        for callback in self.on_quarantine_callbacks:
            callback(item)

    def _call(self, callback: Callable[[Any], Any], arg: Any) -> None:
        if _is_async(callback):
            task = asyncio.get_running_loop().create_task(callback(arg))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
            return
        try:
            callback(arg)
        except Exception:  # a failing callback must not stop the stream
            self._callback_failed(callback)

    def _callback_failed(self, callback: Callable[[Any], Any]) -> None:
        self.stats.callback_errors += 1
        logger.exception("%s : callback %r failed", self.consumer_id, callback)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s : callback failed", self.consumer_id, exc_info=task.exception())


@functools.lru_cache(maxsize=1024)
def _is_async(callback: Callable[[Any], Any]) -> bool:
    """Whether a callback is a coroutine function (asked once per callback, not per trade)."""
    return inspect.iscoroutinefunction(callback)
