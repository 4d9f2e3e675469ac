"""What a running bitty process reports about itself: one ``Snapshot`` model, read by every view.

A process that wants the status endpoints (``bitty collect``, ``bitty sink``) implements
``Source``: one method, ``snapshot()``, that reads its counters (plain ints, kept by the hot path
anyway) and returns a ``Snapshot``. Everything else - rates, health, Prometheus metrics, the
JSON, the live page, the terminal table - is computed here from snapshots, on demand, so
nothing is added per trade.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

# stream states
CONNECTING, CONNECTED, RECONNECTING, FAILED, STOPPED = "connecting", "connected", "reconnecting", "failed", "stopped"


@dataclass
class SymbolStatus:
    exchange: str
    symbol: str
    connected: bool
    stored: int = 0  # trades of this symbol this process stored
    last_trade_time: datetime | None = None  # exchange time of the last trade stored
    last_trade_id: str | None = None
    last_received_at: datetime | None = None  # when bitty received it
    gap_open: bool = False  # the stream is blind: a gap waits for its first trade after it
    rate: float = 0.0  # trades stored per second over the last interval (set by History)


@dataclass
class StreamStatus:
    """One connection carrying one or more symbols."""

    exchange: str
    symbols: list[str]
    state: str  # CONNECTING (never connected yet), CONNECTED, RECONNECTING, FAILED or STOPPED
    since: datetime | None  # when the stream entered its state (None: never connected yet)
    reconnects: int = 0
    trades: int = 0
    last_heartbeat: datetime | None = None
    last_error: str = ""


@dataclass
class ExchangeStatus:
    name: str
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reconnects: int = 0
    rate: float = 0.0  # trades received per second over the last interval (set by History)


@dataclass
class SinkStatus:
    """``bitty sink``: its durable consumer on the stream and what it committed."""

    name: str  # the durable consumer
    stream: str
    nats_connected: bool
    nats_down_since: datetime | None = None
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0  # quarantine rows collectors published
    foreign: int = 0  # messages not in bitty's format, kept in the quarantine table
    events: int = 0  # ledger events applied
    write_errors: int = 0
    lag: int = 0  # messages of the consumer not yet acked (pending + taken, not acked)
    last_commit_at: datetime | None = None


@dataclass
class Snapshot:
    at: datetime
    started_at: datetime
    exchanges: dict[str, ExchangeStatus]
    streams: list[StreamStatus]
    symbols: list[SymbolStatus]
    writer_queue: int = 0  # trades received, not yet written
    spilled: int = 0  # trades waiting in spill files on local disk
    database_ok: bool = True
    database_down_since: datetime | None = None
    gaps: dict[str, int] = field(default_factory=dict)  # opened, closed, unrecoverable (this process)
    uptime_seconds: float = 0.0
    sink: SinkStatus | None = None  # set by ``bitty sink``
    healthy: bool = True  # set by whoever judges it (``health``)
    unhealthy_reasons: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.uptime_seconds = (self.at - self.started_at).total_seconds()

    def to_json(self) -> bytes:
        """The snapshot as JSON, times ISO-8601 UTC with a Z (orjson serializes dataclasses in C:
        a thousand symbols take a few milliseconds)."""
        return orjson.dumps(self, option=orjson.OPT_UTC_Z)

    def as_json(self) -> dict[str, Any]:
        return dict(orjson.loads(self.to_json()))


class Source(Protocol):
    """What a process gives the status server: its state, read without blocking."""

    def snapshot(self) -> Snapshot: ...


def health(snapshot: Snapshot, limit: float) -> list[str]:
    """Why the process is unhealthy (empty: healthy). A stream may be reconnecting and the
    database may refuse writes for ``limit`` seconds before it counts."""
    reasons = []
    for stream in snapshot.streams:
        name = f"{stream.exchange} {','.join(stream.symbols)}"
        if stream.state == FAILED:
            reasons.append(f"{name}: failed: {stream.last_error}")
        elif stream.state in (CONNECTING, RECONNECTING):
            since = stream.since or snapshot.started_at
            down = (snapshot.at - since).total_seconds()
            if down > limit:
                reasons.append(f"{name}: not connected for {down:.0f}s (limit {limit:g}s): {stream.last_error}")
    if not snapshot.database_ok and snapshot.database_down_since is not None:
        down = (snapshot.at - snapshot.database_down_since).total_seconds()
        if down > limit:
            reasons.append(f"database refuses writes for {down:.0f}s (limit {limit:g}s), "
                           f"{snapshot.writer_queue} trades waiting")
    return reasons


@dataclass
class Sample:
    at: float  # seconds since the epoch
    received: dict[str, int]  # per exchange
    blind: dict[str, int]  # per exchange: symbols not covered (stream down, or a gap waiting to close)


class History:
    """Counts sampled at an interval: rates over the last interval, and a few minutes of
    trades per second per exchange for the live page's charts."""

    def __init__(self, keep: int = 300) -> None:
        self.samples: deque[Sample] = deque(maxlen=keep)
        self._symbols: tuple[float, dict[tuple[str, str], int]] | None = None
        self._symbol_rates: dict[tuple[str, str], float] = {}

    def add(self, snapshot: Snapshot) -> None:
        at = snapshot.at.timestamp()
        blind: dict[str, int] = {}
        for s in snapshot.symbols:
            if s.gap_open or not s.connected:
                blind[s.exchange] = blind.get(s.exchange, 0) + 1
        self.samples.append(Sample(at, {n: e.received for n, e in snapshot.exchanges.items()}, blind))
        stored = {(s.exchange, s.symbol): s.stored for s in snapshot.symbols}
        if self._symbols is not None and at > self._symbols[0]:
            then, before = self._symbols
            self._symbol_rates = {k: (v - before.get(k, 0)) / (at - then) for k, v in stored.items()}
        self._symbols = (at, stored)

    def rate(self, exchange: str) -> float:
        """Trades received per second between the last two samples."""
        if len(self.samples) < 2:
            return 0.0
        a, b = self.samples[-2], self.samples[-1]
        return (b.received.get(exchange, 0) - a.received.get(exchange, 0)) / max(b.at - a.at, 1e-9)

    def annotate(self, snapshot: Snapshot) -> Snapshot:
        """Fill the snapshot's rates from the samples."""
        for name, exchange in snapshot.exchanges.items():
            exchange.rate = round(self.rate(name), 3)
        for s in snapshot.symbols:
            s.rate = round(self._symbol_rates.get((s.exchange, s.symbol), 0.0), 3)
        return snapshot

    def series(self) -> dict[str, list[list[float]]]:
        """Per exchange, [time, trades/s, symbols not covered] for every sampled interval."""
        out: dict[str, list[list[float]]] = {}
        samples = list(self.samples)
        for a, b in itertools.pairwise(samples):
            span = max(b.at - a.at, 1e-9)
            for name, count in b.received.items():
                rate = (count - a.received.get(name, 0)) / span
                out.setdefault(name, []).append([round(b.at, 3), round(rate, 3), b.blind.get(name, 0)])
        return out
