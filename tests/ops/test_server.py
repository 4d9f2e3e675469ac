"""The status server of a real collector: /metrics, /healthz, /status, bad requests, a port in use."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bitty.pipeline import CollectOptions
from bitty.storage.store import Store
from tests.conftest import ROOT
from tests.ops.helpers import collector, exchange, free_port, get, wait_for


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(url + "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_scrape_a_running_collector(tmp_path: Path) -> None:
    """bitty collect --status-addr serves Prometheus metrics, health, JSON status; a request storm
    and bad queries get answers (4xx for the bad ones) and every trade is still stored."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    db = tmp_path / "ops.db"
    with exchange(tmp_path, seconds=6, per_second=50) as (url, count):
        proc = subprocess.Popen([sys.executable, "-m", "bitty", "collect", "coinbase", "--url", url, "--db",
                                 f"sqlite:///{db}", "--status-addr", f"127.0.0.1:{port}", "--spill-dir",
                                 str(tmp_path / "spill"), "--max-trades", str(count), "--duration", "30"],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "LOG_LEVEL": "info"})
        try:
            wait_for(lambda: get(base + "/healthz")[0] == 200)
            wait_for(lambda: metrics(base)[("bitty_trades_stored_total", (("exchange", "coinbase"),))] > 0)
            seen = metrics(base)
            assert seen[("bitty_stream_connected", (("exchange", "coinbase"), ("symbol", "BTC-USD")))] == 1
            assert seen[("bitty_trades_received_total", (("exchange", "coinbase"),))] > 0
            for name in ("bitty_trades_duplicates_total", "bitty_trades_quarantined_total", "bitty_reconnects_total"):
                assert (name, (("exchange", "coinbase"),)) in seen
            assert ("bitty_last_trade_age_seconds", (("exchange", "coinbase"), ("symbol", "ETH-USD"))) in seen
            assert ("bitty_gaps_total", (("status", "opened"),)) in seen
            assert ("bitty_writer_queue", ()) in seen and ("bitty_spilled_trades", ()) in seen

            status, body = get(base + "/status")
            data = json.loads(body)
            assert status == 200 and data["healthy"] is True
            assert data["streams"][0]["state"] == "connected" and data["streams"][0]["symbols"] == ["BTC-USD", "ETH-USD"]
            btc = next(s for s in data["symbols"] if s["symbol"] == "BTC-USD")
            assert btc["connected"] is True and btc["last_trade_id"] and btc["last_trade_time"].startswith("2024-05-14T09:00")
            assert data["streams"][0]["last_heartbeat"].endswith("Z")
            wait_for(lambda: json.loads(get(base + "/status?exchange=coinbase")[1])["exchanges"]["coinbase"]["rate"] > 0)
            only = json.loads(get(base + "/status?exchange=coinbase&symbol=ETH-USD")[1])
            assert [s["symbol"] for s in only["symbols"]] == ["ETH-USD"]

            assert get(base + "/status?exchnage=coinbase") == (
                400, "/status: unknown query parameter 'exchnage' (known: exchange, symbol)\n")
            assert get(base + "/status?exchange=nowhere")[0] == 404
            assert get(base + "/metrics?%zz=%%")[0] == 400
            assert get(base + "/nope")[0] == 404

            async def storm() -> list[int]:
                async with aiohttp.ClientSession() as session:
                    async def one(path: str) -> int:
                        async with session.get(base + path) as response:
                            await response.read()
                            return response.status
                    return await asyncio.gather(*(one(p) for _ in range(100) for p in ("/status", "/metrics", "/")))

            assert set(asyncio.run(storm())) == {200}
            _, rest = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, rest
    store = Store(f"sqlite:///{db}")
    assert store.count() == count
    store.close()


def test_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    """A status port already taken stops collect at start with one line and exit 1, before any database file."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "bitty", "collect", "coinbase", "--url", "ws://127.0.0.1:9",
                               "--db", f"sqlite:///{tmp_path}/x.db", "--status-addr", f"127.0.0.1:{port}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --status-addr 127.0.0.1:{port}: cannot listen: address already in use"] or \
        errors[0].startswith(f"error: --status-addr 127.0.0.1:{port}: cannot listen:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_malformed_status_addr_is_a_usage_error() -> None:
    """--status-addr without a port is rejected by the argument parser (exit 2) with an example."""
    proc = subprocess.run([sys.executable, "-m", "bitty", "collect", "--status-addr", "localhost"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "expected HOST:PORT, e.g. 127.0.0.1:9108" in proc.stderr


def test_healthz_fails_when_a_stream_stays_down(tmp_path: Path) -> None:
    """A stream that cannot connect past the health limit turns /healthz into 503 with the reason."""
    options = CollectOptions(exchanges=["coinbase"], url=f"ws://127.0.0.1:{free_port()}", db=f"sqlite:///{tmp_path}/h.db",
                             spill_dir=str(tmp_path / "spill"), health_limit=0.5, backoff_initial=0.05, backfill=False)
    with collector(options) as running:
        wait_for(lambda: get(running.status_url + "/healthz")[1].startswith("unhealthy"))
        status, body = get(running.status_url + "/healthz")
        assert status == 503
        assert body.startswith("unhealthy\ncoinbase BTC-USD,ETH-USD: not connected for ")
        assert "(limit 0.5s)" in body and "connection failed" in body
        data = json.loads(get(running.status_url + "/status")[1])
        assert data["streams"][0]["state"] == "reconnecting" and data["healthy"] is False
        assert data["streams"][0]["reconnects"] >= 1


def test_scrape_during_a_database_outage(tmp_path: Path) -> None:
    """While the database refuses writes, /metrics and /status still answer from memory, /healthz
    says why after the limit, and collection goes on: every trade is stored once it is back."""
    db = tmp_path / "busy.db"
    with exchange(tmp_path, seconds=4, per_second=50) as (url, count):
        options = CollectOptions(exchanges=["coinbase"], url=url, db=f"sqlite:///{db}?timeout=0.05",
                                 spill_dir=str(tmp_path / "spill"), health_limit=0.3, backfill=False)
        with collector(options) as running:
            wait_for(lambda: json.loads(get(running.status_url + "/status")[1])["exchanges"].get("coinbase", {})
                     .get("stored", 0) > 0)
            holder = sqlite3.connect(db, timeout=5)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                wait_for(lambda: get(running.status_url + "/healthz")[1].startswith("unhealthy"))
                assert "database refuses writes for" in get(running.status_url + "/healthz")[1]
                seen = metrics(running.status_url)
                assert seen[("bitty_database_up", ())] == 0
                before = seen[("bitty_trades_received_total", (("exchange", "coinbase"),))]
                wait_for(lambda: metrics(running.status_url)[
                    ("bitty_trades_received_total", (("exchange", "coinbase"),))] > before)
                # The trades waiting: in memory, or (the journal moves them every 0.5 s) on disk.
                seen = metrics(running.status_url)
                assert seen[("bitty_writer_queue", ())] + seen[("bitty_spilled_trades", ())] > 0
            finally:
                holder.rollback()
                holder.close()
            wait_for(lambda: get(running.status_url + "/healthz")[0] == 200)
            wait_for(lambda: json.loads(get(running.status_url + "/status")[1])["exchanges"]["coinbase"]["received"]
                     == count, 15)
    assert running.result is not None and running.result.stored == count
    store = Store(f"sqlite:///{db}")
    assert store.count() == count
    store.close()


def test_sigterm_with_status_server_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM stops a collector serving status with exit 0, the port free again."""
    port = free_port()
    with exchange(tmp_path, seconds=5, per_second=20) as (url, _count):
        proc = subprocess.Popen([sys.executable, "-m", "bitty", "collect", "coinbase", "--url", url, "--db",
                                 f"sqlite:///{tmp_path}/t.db", "--status-addr", f"127.0.0.1:{port}"],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    with socket.socket() as again:  # as a restarted collector binds it (TIME_WAIT allowed, a listener not)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
