"""Prometheus metrics, computed from a ``Snapshot`` when scraped (nothing is counted twice).

Each status server has its own ``CollectorRegistry`` (not prometheus_client's global one), so
several servers can live in one process, as tests run them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bitty.ops.status import CONNECTED, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        per_exchange = [
            ("bitty_trades_received", "Trades received from the exchange", "received"),
            ("bitty_trades_stored", "Trades newly stored in the database", "stored"),
            ("bitty_trades_duplicates", "Trades received that the database already held", "duplicates"),
            ("bitty_trades_quarantined", "Frames or records that could not be mapped to a trade", "quarantined"),
            ("bitty_reconnects", "Reconnects of the exchange's streams", "reconnects"),
        ]
        for name, text, attr in per_exchange:
            family = CounterMetricFamily(name, text, labels=["exchange"])
            for exchange in snap.exchanges.values():
                family.add_metric([exchange.name], getattr(exchange, attr))
            yield family
        connected = GaugeMetricFamily("bitty_stream_connected", "1 while the symbol's stream is connected",
                                      labels=["exchange", "symbol"])
        age = GaugeMetricFamily("bitty_last_trade_age_seconds", "Seconds since the symbol's last stored trade was received",
                                labels=["exchange", "symbol"])
        stored = CounterMetricFamily("bitty_symbol_trades_stored", "Trades of the symbol newly stored",
                                     labels=["exchange", "symbol"])
        gap_open = GaugeMetricFamily("bitty_gap_open", "1 while the symbol is in a gap (blind since a disconnect)",
                                     labels=["exchange", "symbol"])
        for s in snap.symbols:
            connected.add_metric([s.exchange, s.symbol], 1.0 if s.connected else 0.0)
            stored.add_metric([s.exchange, s.symbol], s.stored)
            gap_open.add_metric([s.exchange, s.symbol], 1.0 if s.gap_open else 0.0)
            if s.last_received_at is not None:
                age.add_metric([s.exchange, s.symbol], max(0.0, (snap.at - s.last_received_at).total_seconds()))
        yield from (connected, age, stored, gap_open)
        streams = GaugeMetricFamily("bitty_streams", "Streams (connections) by state", labels=["exchange", "state"])
        counts: dict[tuple[str, str], int] = {}
        for stream in snap.streams:
            counts[(stream.exchange, stream.state)] = counts.get((stream.exchange, stream.state), 0) + 1
        for (name, state), n in sorted(counts.items()):
            streams.add_metric([name, state], n)
        yield streams
        gaps = CounterMetricFamily("bitty_gaps", "Gaps this process opened, and how they were settled",
                                   labels=["status"])
        for status in ("opened", "closed", "unrecoverable"):
            gaps.add_metric([status], snap.gaps.get(status, 0))
        yield gaps
        yield GaugeMetricFamily("bitty_writer_queue", "Trades received and not yet written", value=snap.writer_queue)
        yield GaugeMetricFamily("bitty_spilled_trades", "Trades moved to spill files while the database was behind",
                                value=snap.spilled)
        yield GaugeMetricFamily("bitty_database_up", "1 while the database accepts writes",
                                value=1.0 if snap.database_ok else 0.0)
        yield GaugeMetricFamily("bitty_uptime_seconds", "Seconds since the process started collecting",
                                value=(snap.at - snap.started_at).total_seconds())
        if snap.sink is not None:
            yield from _sink(snap)
        yield GaugeMetricFamily("bitty_streams_connected_ratio", "Share of streams connected",
                                value=(sum(s.state == CONNECTED for s in snap.streams) / len(snap.streams))
                                if snap.streams else 0.0)


def _sink(snap: Snapshot) -> Iterator[Metric]:
    """``bitty sink``'s own metrics (its per-exchange trade counters are the ones above)."""
    sink = snap.sink
    assert sink is not None
    labels = ["consumer", "stream"]
    key = [sink.name, sink.stream]
    for name, text, value in [
        ("bitty_sink_messages", "Messages the sink committed and acked", sink.messages),
        ("bitty_sink_quarantined", "Quarantine rows collectors published, stored by the sink", sink.quarantined),
        ("bitty_sink_foreign", "Messages not in bitty's format, kept in the quarantine table", sink.foreign),
        ("bitty_sink_events", "Ledger events (coverage, gaps, runs) applied", sink.events),
        ("bitty_sink_write_errors", "Database writes that failed (the batch is retried, unacked)", sink.write_errors),
    ]:
        counter = CounterMetricFamily(name, text, labels=labels)
        counter.add_metric(key, value)
        yield counter
    for name, text, level in [
        ("bitty_sink_lag", "Messages of the durable consumer not yet acked", float(sink.lag)),
        ("bitty_sink_nats_up", "1 while the sink is connected to NATS", 1.0 if sink.nats_connected else 0.0),
    ]:
        gauge = GaugeMetricFamily(name, text, labels=labels)
        gauge.add_metric(key, level)
        yield gauge
    age = GaugeMetricFamily("bitty_sink_last_commit_age_seconds", "Seconds since the sink last committed a batch",
                            labels=labels)
    if sink.last_commit_at is not None:
        age.add_metric(key, max(0.0, (snap.at - sink.last_commit_at).total_seconds()))
    yield age


def registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry of its own, holding bitty's metrics."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(snapshot))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
