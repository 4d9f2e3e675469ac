"""A fleet on real NATS JetStream and PostgreSQL: a standby pair and a second shard, one sink,
processes killed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from bitty.continuity.audit import audit
from bitty.planning import shard_of
from bitty.storage.store import Store
from bitty.storage.tables import trades
from tests.conftest import ROOT
from tests.fleet.feed import SPEC, Feed

SYMBOLS = ["AAA-USD", "BBB-USD", "CCC-USD", "DDD-USD", "EEE-USD", "FFF-USD"]


def bitty(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """``python -m bitty ARGS`` in a subprocess, its log in ``log``."""
    with log.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "bitty", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=err, env={**os.environ, "LOG_LEVEL": "info"})


def test_standby_pair_and_sink_killed_lose_and_double_nothing(tmp_path: Path, nats_url: str, pg_url: str,
                                                              stream_names: tuple[str, str]) -> None:
    """kill -9 of one of a standby pair and of the sink mid-stream: the database ends with every trade once,
    and audit shows the survivor's shard connected all along."""
    stream, prefix = stream_names
    shard0 = [s for s in SYMBOLS if shard_of("fleetex", s, 2) == 0]
    shard1 = [s for s in SYMBOLS if shard_of("fleetex", s, 2) == 1]
    assert shard0 and shard1
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "fleetex.yaml").write_text(SPEC.format(symbols=", ".join(SYMBOLS)))
    kill_now = threading.Event()
    ticks = 400
    feed = Feed(SYMBOLS, ticks=ticks, start_after=3, on_tick=lambda k: kill_now.set() if k == ticks // 3 else None)
    stop_feed = feed.run_in_thread()
    common = ["--nats", nats_url, "--nats-stream", stream, "--nats-prefix", prefix]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sink = bitty("sink", *common, "--db", pg_url, "--progress-interval", "0.5", "--ack-wait", "2", log=tmp_path / "sink1.log")
        procs.append(sink)
        collectors = {}
        for name, shard in (("a", "0/2"), ("b", "0/2"), ("c", "1/2")):
            collectors[name] = bitty(
                "collect", "fleetex", "--exchanges-dir", str(tmp_path / "specs"), "--url", feed.url, *common,
                "--shard", shard, "--name", name, "--progress-interval", "0.5", "--spill-dir",
                str(tmp_path / f"spill-{name}"), log=tmp_path / f"{name}.log")
            procs.append(collectors[name])
        assert kill_now.wait(30), "the feed never started: " + (tmp_path / "a.log").read_text()[-2000:]
        collectors["b"].send_signal(signal.SIGKILL)
        sink.send_signal(signal.SIGKILL)
        assert feed.done.wait(30)
        time.sleep(0.5)  # the survivors' writers flush (every 0.2 s)
        for name in ("a", "c"):
            collectors[name].send_signal(signal.SIGTERM)
        for name in ("a", "c"):
            assert collectors[name].wait(30) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        again = bitty("sink", *common, "--db", pg_url, "--idle-exit", "4", "--ack-wait", "2", "--progress-interval", "0.5",
                      log=tmp_path / "sink2.log")
        procs.append(again)
        assert again.wait(50) == 0, (tmp_path / "sink2.log").read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stop_feed()
    store = Store(pg_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(trades.c.symbol, trades.c.trade_id)).all()
        assert len(rows) == ticks * len(SYMBOLS)
        assert {(r.symbol, int(r.trade_id)) for r in rows} == {(s, k) for s in SYMBOLS for k in range(1, ticks + 1)}
        assert feed.started_at is not None and feed.ended_at is not None
        report = audit(store, feed.started_at, feed.ended_at)
    finally:
        store.close()
    lines = {line.symbol: line for line in report.lines}
    for symbol in shard0:
        line = lines[symbol]
        assert line.gaps_open == 0 and line.gaps_unrecoverable == 0
        assert line.connected == 1.0, line
        assert line.collectors["a"] == 1.0 and set(line.collectors) == {"a", "b"}
    for symbol in shard1:
        assert lines[symbol].collectors == {"c": 1.0}
    assert timedelta(0) < feed.ended_at - feed.started_at
