"""``bitty sink``'s status ``Source``: reads the counters the sink keeps per committed batch.

The sink's one "stream" is its durable consumer on the JetStream stream (state connected or
reconnecting with NATS); the exchanges and symbols are those of the trades it stored, so
``/metrics``, ``/status`` and the live page show the same per-exchange counters as ``collect``,
plus the sink's own (lag, last commit, foreign messages, write errors).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from bitty.ops.collector import StoredCounts
from bitty.ops.status import CONNECTED, RECONNECTING, STOPPED, ExchangeStatus, SinkStatus, Snapshot, StreamStatus, SymbolStatus


class SinkCounters(Protocol):
    """What ``bitty.commands.sink.SinkStats`` keeps (plain reads, no lock: one event loop)."""

    messages: int
    stored: int
    duplicates: int
    quarantined: int
    foreign: int
    events: int
    write_errors: int
    lag: int
    received: Counter[str]  # per exchange: trades in committed batches
    quarantined_by: Counter[str]  # per exchange
    stored_trades: StoredCounts
    last_commit_at: datetime | None
    database_ok: bool
    database_down_since: datetime | None
    nats_error: str
    stopped: bool


class SinkSource:
    def __init__(self, name: str, stream: str, stats: SinkCounters, nats_connected: Callable[[], bool]) -> None:
        self.name, self.stream = name, stream
        self.stats = stats
        self.nats_connected = nats_connected
        self.started_at = datetime.now(UTC)
        self._nats_since: datetime | None = None  # when NATS was last seen to change state
        self._nats_was: bool | None = None

    def snapshot(self) -> Snapshot:
        now = datetime.now(UTC)
        stats = self.stats
        up = self.nats_connected()
        if up != self._nats_was:
            self._nats_was, self._nats_since = up, now
        counts = stats.stored_trades
        exchanges: dict[str, ExchangeStatus] = {}
        symbols: list[SymbolStatus] = []
        for name in sorted(set(stats.received) | set(stats.quarantined_by)):
            stored = sum(counts.counts.get(name, Counter()).values())
            exchanges[name] = ExchangeStatus(name, received=stats.received[name], stored=stored,
                                             duplicates=stats.received[name] - stored,
                                             quarantined=stats.quarantined_by[name])
            for symbol in sorted(counts.counts.get(name, ())):
                last = counts.latest(name, symbol)
                symbols.append(SymbolStatus(
                    exchange=name, symbol=symbol, connected=up, stored=counts.count(name, symbol),
                    last_trade_time=last.time if last else None, last_trade_id=last.trade_id if last else None,
                    last_received_at=last.received_at if last else None))
        state = STOPPED if stats.stopped else CONNECTED if up else RECONNECTING
        stream = StreamStatus(exchange="nats", symbols=[f"{self.stream} (consumer {self.name})"], state=state,
                              # a stream down past the health limit is a 503: here NATS away
                              since=self._nats_since, trades=stats.stored,
                              last_error="" if up else stats.nats_error or "disconnected from NATS, reconnecting")
        return Snapshot(
            at=now, started_at=self.started_at, exchanges=exchanges, streams=[stream], symbols=symbols,
            database_ok=stats.database_ok, database_down_since=stats.database_down_since,
            sink=SinkStatus(name=self.name, stream=self.stream, nats_connected=up,
                            nats_down_since=None if up else self._nats_since, messages=stats.messages,
                            stored=stats.stored, duplicates=stats.duplicates, quarantined=stats.quarantined,
                            foreign=stats.foreign, events=stats.events, write_errors=stats.write_errors,
                            lag=stats.lag, last_commit_at=stats.last_commit_at))
