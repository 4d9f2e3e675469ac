"""The status model: health verdicts and rates from snapshots (pure, no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bitty.ops.metrics import registry, render
from bitty.ops.status import ExchangeStatus, History, Snapshot, StreamStatus, SymbolStatus, health

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def snapshot(seconds: float, received: int, state: str = "connected", since: float = 0.0, db_ok: bool = True,
             db_since: float | None = None) -> Snapshot:
    at = T0 + timedelta(seconds=seconds)
    return Snapshot(
        at=at, started_at=T0, exchanges={"acme": ExchangeStatus("acme", received=received, stored=received)},
        streams=[StreamStatus("acme", ["BTC-USD"], state, T0 + timedelta(seconds=since), last_error="refused")],
        symbols=[SymbolStatus("acme", "BTC-USD", state == "connected", stored=received, gap_open=state != "connected",
                              last_received_at=at - timedelta(seconds=2))],
        database_ok=db_ok, database_down_since=None if db_since is None else T0 + timedelta(seconds=db_since))


def test_health_allows_reconnecting_within_the_limit() -> None:
    """A stream reconnecting for less than the limit is healthy; past it, the reason names the stream."""
    assert health(snapshot(10, 0, "reconnecting", since=5), limit=60) == []
    assert health(snapshot(100, 0, "reconnecting", since=5), limit=60) == [
        "acme BTC-USD: not connected for 95s (limit 60s): refused"]
    assert health(snapshot(1, 0, "failed"), limit=60) == ["acme BTC-USD: failed: refused"]
    assert health(snapshot(100, 5), limit=60) == []


def test_health_database_away_past_the_limit() -> None:
    """The database refusing writes counts only past the limit."""
    assert health(snapshot(30, 5, db_ok=False, db_since=0), limit=60) == []
    assert health(snapshot(90, 5, db_ok=False, db_since=0), limit=60) == [
        "database refuses writes for 90s (limit 60s), 0 trades waiting"]


def test_history_rates_and_series() -> None:
    """Rates are counted between the last two samples; the series marks uncovered symbols."""
    history = History()
    history.add(snapshot(0, 0))
    history.add(snapshot(2, 100))
    history.add(snapshot(3, 100, "reconnecting"))
    assert history.rate("acme") == 0.0
    series = history.series()["acme"]
    assert series == [[(T0 + timedelta(seconds=2)).timestamp(), 50.0, 0], [(T0 + timedelta(seconds=3)).timestamp(), 0.0, 1]]
    marked = history.annotate(snapshot(3, 100))
    assert marked.exchanges["acme"].rate == 0.0


def test_metrics_of_a_snapshot() -> None:
    """Metric names follow Prometheus conventions, with exchange and symbol labels."""
    text = render(registry(lambda: snapshot(5, 42))).decode()
    assert 'bitty_trades_received_total{exchange="acme"} 42.0' in text
    assert 'bitty_stream_connected{exchange="acme",symbol="BTC-USD"} 1.0' in text
    assert 'bitty_last_trade_age_seconds{exchange="acme",symbol="BTC-USD"} 2.0' in text
    assert 'bitty_streams{exchange="acme",state="connected"} 1.0' in text
    assert "bitty_database_up 1.0" in text and "bitty_writer_queue 0.0" in text
    # two registries in one process do not collide
    assert render(registry(lambda: snapshot(5, 7))).decode().count("bitty_trades_received_total{") == 1
