"""``bitty collect``'s status ``Source``: reads the counters the engine, writer and gap keeper keep.

Nothing here runs per trade. Per-symbol counts come from the writer's batches of stored trades
(``StoredCounts.add``, C-level counting once per batch); stream states from the consumers'
connect / disconnect events; everything else is read when a snapshot is taken.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from bitty.continuity.gapkeeper import GapKeeper
from bitty.engine.consumer import BaseConsumer, StreamEvent
from bitty.engine.handover import Slot
from bitty.ops.status import (
    CONNECTED,
    CONNECTING,
    FAILED,
    RECONNECTING,
    STOPPED,
    ExchangeStatus,
    Snapshot,
    StreamStatus,
    SymbolStatus,
)
from bitty.storage.writer import Writer
from bitty.trade import Trade

_EXCHANGE = attrgetter("exchange")
_SYMBOL = attrgetter("symbol")


class StoredCounts:
    """Per exchange and symbol: trades stored and the last one, from the writer's stored batches.
    C-level counting once per batch (a batch is nearly always of one exchange; keys are plain
    symbol strings, no tuple built per trade)."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}
        self.last: dict[str, dict[str, Trade]] = {}

    def add(self, stored: list[Trade]) -> None:
        exchanges = set(map(_EXCHANGE, stored))
        if len(exchanges) == 1:
            self._add(exchanges.pop(), stored)
            return
        for name in exchanges:
            self._add(name, [t for t in stored if t.exchange == name])

    def _add(self, exchange: str, trades: list[Trade]) -> None:
        counts = self.counts.get(exchange)
        if counts is None:
            counts = self.counts[exchange] = Counter()
            self.last[exchange] = {}
        symbols = list(map(_SYMBOL, trades))
        counts.update(symbols)
        self.last[exchange].update(zip(symbols, trades, strict=True))

    def count(self, exchange: str, symbol: str) -> int:
        counts = self.counts.get(exchange)
        return counts.get(symbol, 0) if counts else 0

    def latest(self, exchange: str, symbol: str) -> Trade | None:
        return self.last.get(exchange, {}).get(symbol)


class CollectorSource:
    def __init__(self, slots: Sequence[Slot], writer: Writer, keeper: GapKeeper, stored: StoredCounts,
                 symbols: dict[str, list[str]] | None = None) -> None:
        self.slots = list(slots)
        self.writer = writer
        self.keeper = keeper
        self.stored = stored
        self.started_at = datetime.now(UTC)
        self.finished: set[int] = set()  # index of slots whose run() returned
        self._events: dict[int, StreamEvent] = {}  # per slot: its last connect / disconnect
        self._db_down_since: datetime | None = None

    def watch(self, index: int, consumer: BaseConsumer) -> None:
        """Follow a slot's consumer (every consumer a slot makes, handovers included)."""
        consumer.on_event(lambda event: self._events.__setitem__(index, event))

    def snapshot(self) -> Snapshot:
        now = datetime.now(UTC)
        mono = time.monotonic()
        writer, keeper = self.writer, self.keeper
        exchanges = {name: ExchangeStatus(name, s.received, s.stored, s.duplicates, s.quarantined)
                     for name, s in writer.per_exchange.items()}
        streams: list[StreamStatus] = []
        symbols: list[SymbolStatus] = []
        for index, slot in enumerate(self.slots):
            stats = slot.stats
            name = slot.exchange_name
            event = self._events.get(index)
            if slot.is_connected():
                state = CONNECTED
            elif slot.failed is not None:
                state = FAILED
            elif index in self.finished:
                state = STOPPED
            else:
                state = RECONNECTING if event is not None or stats.reconnects else CONNECTING
            beat = slot.heartbeat_at
            slot_symbols = slot.symbols
            streams.append(StreamStatus(
                exchange=name, symbols=slot_symbols, state=state,
                since=event.at if event is not None else None, reconnects=stats.reconnects, trades=stats.trades,
                last_heartbeat=now - timedelta(seconds=mono - beat) if beat else None,
                last_error="" if state == CONNECTED else (str(slot.failed) if slot.failed else stats.last_error)))
            exchange = exchanges.get(name) or exchanges.setdefault(name, ExchangeStatus(name))
            exchange.reconnects += stats.reconnects
            for symbol in slot_symbols:
                last = self.stored.latest(name, symbol)
                symbols.append(SymbolStatus(
                    exchange=name, symbol=symbol, connected=state == CONNECTED, stored=self.stored.count(name, symbol),
                    last_trade_time=last.time if last else None, last_trade_id=last.trade_id if last else None,
                    last_received_at=last.received_at if last else None,
                    gap_open=keeper.blind(name, symbol)))
        healthy = writer.healthy  # False from a failed write until one succeeds again
        if healthy:
            self._db_down_since = None
        elif self._db_down_since is None:
            self._db_down_since = now
        return Snapshot(
            at=now, started_at=self.started_at, exchanges=dict(sorted(exchanges.items())), streams=streams,
            symbols=symbols, writer_queue=writer.pending,
            spilled=max(0, writer.stats.spilled - writer.stats.unspilled), database_ok=healthy,
            database_down_since=self._db_down_since,
            gaps={"opened": keeper.stats.gaps, "closed": keeper.stats.closed,
                  "unrecoverable": keeper.stats.unrecoverable})
