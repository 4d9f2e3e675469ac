"""bitty sink --status-addr: /metrics, /healthz, /status and the page, scraped while a real sink drains real NATS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from bitty.ops.collector import StoredCounts
from bitty.ops.sink import SinkSource
from bitty.ops.status import health
from bitty.storage.sinks.nats import NatsSink, StreamSettings
from bitty.storage.store import Store
from bitty.trade import Trade
from tests.conftest import ROOT
from tests.fleet.natsfix import nats_url, stream_names
from tests.ops.chromium import chromium, render
from tests.ops.helpers import free_port, get, wait_for
from tests.ops.test_server import metrics

__all__ = ["nats_url", "stream_names"]
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _trades(n: int) -> list[Trade]:
    return [Trade("testex", "BTC-USD" if i % 2 else "ETH-USD", str(i), Decimal("37021.47"), Decimal("0.0015"), "buy",
                  T0 + timedelta(seconds=i), T0) for i in range(n)]


async def _publish(url: str, names: tuple[str, str], trades: list[Trade]) -> None:
    sink = NatsSink(url, StreamSettings(name=names[0], prefix=names[1]))
    await sink.aopen()
    try:
        await sink.publish(trades)
    finally:
        await sink.aclose()


def _sink(args: list[str], nats_url: str, names: tuple[str, str], db: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bitty", "sink", "--nats", nats_url, "--db", db, "--name", "t",
                             "--nats-stream", names[0], "--nats-prefix", names[1], "--status-addr", f"127.0.0.1:{port}",
                             *args], cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "LOG_LEVEL": "info"})


def test_scrape_a_sink_while_it_drains(tmp_path: Path, nats_url: str, stream_names: tuple[str, str]) -> None:
    """A sink whose database is locked shows its lag, write errors and a 503 past the health limit;
    once the lock goes it drains: lag 0, every trade stored, counters per exchange and symbol, 200,
    and the live page (headless Chromium) shows the consumer's row and the sink's lag and last commit."""
    asyncio.run(_publish(nats_url, stream_names, _trades(400)))
    db = tmp_path / "sink.db"
    Store(f"sqlite:///{db}").open()
    lock = sqlite3.connect(db, timeout=0, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _sink(["--health-limit", "1"], nats_url, stream_names, f"sqlite:///{db}", port)
    key = (("consumer", "t"), ("stream", stream_names[0]))
    try:
        wait_for(lambda: get(base + "/metrics")[0] == 200, 20)  # 503 until it is connected and the database opened
        wait_for(lambda: metrics(base)[("bitty_sink_write_errors_total", key)] >= 1, 20)
        wait_for(lambda: metrics(base)[("bitty_sink_lag", key)] == 400, 20)
        wait_for(lambda: get(base + "/healthz")[0] == 503, 20)
        _status, reason = get(base + "/healthz")
        assert "database refuses writes" in reason
        seen = metrics(base)
        assert seen[("bitty_database_up", ())] == 0 and seen[("bitty_sink_messages_total", key)] == 0
        assert seen[("bitty_sink_nats_up", key)] == 1

        lock.rollback()  # the database is back: the sink drains
        wait_for(lambda: metrics(base)[("bitty_sink_messages_total", key)] == 400, 20)
        wait_for(lambda: metrics(base)[("bitty_sink_lag", key)] == 0, 20)
        wait_for(lambda: get(base + "/healthz")[0] == 200, 20)
        seen = metrics(base)
        assert seen[("bitty_trades_stored_total", (("exchange", "testex"),))] == 400
        assert seen[("bitty_trades_received_total", (("exchange", "testex"),))] == 400
        assert seen[("bitty_trades_duplicates_total", (("exchange", "testex"),))] == 0
        assert seen[("bitty_symbol_trades_stored_total", (("exchange", "testex"), ("symbol", "BTC-USD")))] == 200
        assert seen[("bitty_sink_foreign_total", key)] == 0
        assert 0 <= seen[("bitty_sink_last_commit_age_seconds", key)] < 60
        assert seen[("bitty_database_up", ())] == 1

        data = json.loads(get(base + "/status")[1])
        assert data["healthy"] is True and data["sink"]["stored"] == 400 and data["sink"]["lag"] == 0
        assert data["streams"][0]["exchange"] == "nats" and data["streams"][0]["state"] == "connected"
        btc = next(s for s in data["symbols"] if s["symbol"] == "BTC-USD")
        assert btc["last_trade_id"] == "399" and btc["stored"] == 200
        assert get(base + "/status?nope=1")[0] == 400
        chromium()
        dom = render(base + "/", tmp_path, tmp_path / "sink-page.png")
        assert re.search(r'<tr data-exchange="nats" data-state="connected">.*?consumer t\)', dom), dom[:3000]
        assert re.search(r"sink t: 400 messages, 400 trades stored, 0 duplicates, lag 0, last commit \d+\.\d s ago", dom)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        lock.close()
    assert proc.returncode == 0, err
    store = Store(f"sqlite:///{db}")
    assert store.count() == 400
    store.close()


def test_sink_status_port_in_use_is_one_clear_error(tmp_path: Path, nats_url: str, stream_names: tuple[str, str]) -> None:
    """bitty sink --status-addr on a taken port stops at once with one line, before it takes a message."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _sink([], nats_url, stream_names, f"sqlite:///{tmp_path}/sink.db", port)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"--status-addr 127.0.0.1:{port}: cannot listen" in err and "Traceback" not in err


class _Stats:
    """A sink's counters, as ``bitty.commands.sink.SinkStats`` keeps them."""

    messages = stored = duplicates = quarantined = foreign = events = write_errors = lag = 0
    received: Counter[str] = Counter()
    quarantined_by: Counter[str] = Counter()
    stored_trades = StoredCounts()
    last_commit_at: datetime | None = None
    database_ok = True
    database_down_since: datetime | None = None
    nats_error = "cannot fetch: nats: connection closed"
    stopped = False


def test_nats_away_past_the_limit_is_unhealthy() -> None:
    """The sink's NATS connection down longer than the health limit makes /healthz's reason; shorter does not."""
    up = [True]
    source = SinkSource("t", "BITTY", _Stats(), lambda: up[0])
    assert health(source.snapshot(), 1.0) == []
    up[0] = False
    down = source.snapshot()
    assert down.streams[0].state == "reconnecting" and down.sink is not None and not down.sink.nats_connected
    assert health(down, 1.0) == []  # just went away: NATS reconnects by itself
    later = source.snapshot()
    later.at += timedelta(seconds=5)
    assert health(later, 1.0) == ["nats BITTY (consumer t): not connected for 5s (limit 1s): "
                                  "cannot fetch: nats: connection closed"]


def test_scrape_a_sink_draining_into_postgresql(nats_url: str, stream_names: tuple[str, str], pg_url: str) -> None:
    """A sink draining into PostgreSQL while trades keep arriving: its counters follow, and settle at
    every trade stored once, lag 0, healthy."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = (("consumer", "t"), ("stream", stream_names[0]))
    trades = _trades(600)
    asyncio.run(_publish(nats_url, stream_names, trades[:300]))
    proc = _sink([], nats_url, stream_names, pg_url, port)
    try:
        wait_for(lambda: get(base + "/metrics")[0] == 200, 20)
        wait_for(lambda: metrics(base)[("bitty_sink_messages_total", key)] == 300, 20)
        asyncio.run(_publish(nats_url, stream_names, trades))  # the first half again: JetStream drops the copies
        wait_for(lambda: metrics(base)[("bitty_sink_messages_total", key)] == 600, 20)
        wait_for(lambda: metrics(base)[("bitty_sink_lag", key)] == 0, 20)
        seen = metrics(base)
        assert seen[("bitty_trades_stored_total", (("exchange", "testex"),))] == 600
        assert seen[("bitty_sink_write_errors_total", key)] == 0
        assert get(base + "/healthz") == (200, "ok\n")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    store = Store(pg_url)
    assert store.count() == 600
    store.close()
