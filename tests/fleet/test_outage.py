"""NATS away for a while: collectors keep what they receive (bounded memory, then spill files) and publish
it once NATS is back; nothing is lost. Runs its own nats-server, never the shared one."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bitty.commands.sink import SinkOptions, drain
from bitty.storage.sinks.nats import StreamSettings
from bitty.storage.store import Store
from tests.conftest import ROOT
from tests.fleet.feed import SPEC, Feed

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
SYMBOLS = ["AAA-USD", "BBB-USD", "CCC-USD", "DDD-USD"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_nats(port: int, store_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir),
                             "-l", str(log)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("nats-server did not start")


@pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed")
def test_nats_away_for_a_while_loses_nothing(tmp_path: Path) -> None:
    """NATS stopped mid-stream and started again: the collector buffers, spills past its bound,
    publishes everything when NATS is back, and the sink stores every trade once."""
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "fleetex.yaml").write_text(SPEC.format(symbols=", ".join(SYMBOLS)))
    ticks, down_at, up_at = 700, 100, 450
    box: dict[str, subprocess.Popen[bytes]] = {}
    events = {down_at: threading.Event(), up_at: threading.Event()}

    def on_tick(k: int) -> None:
        if k in events:
            events[k].set()

    box["nats"] = _start_nats(port, tmp_path / "js", tmp_path / "nats1.log")
    feed = Feed(SYMBOLS, ticks=ticks, start_after=1, interval=0.005, on_tick=on_tick)
    stop_feed = feed.run_in_thread()
    spill = tmp_path / "spill"
    with (tmp_path / "collect.log").open("wb") as err:
        collector = subprocess.Popen(
            [sys.executable, "-m", "bitty", "collect", "fleetex", "--exchanges-dir", str(tmp_path / "specs"),
             "--url", feed.url, "--nats", url, "--buffer", "300", "--spill-dir", str(spill),
             "--progress-interval", "0.5"], cwd=ROOT, stderr=err, env={**os.environ, "LOG_LEVEL": "info"})
    try:
        assert events[down_at].wait(30), (tmp_path / "collect.log").read_text()[-2000:]
        box["nats"].send_signal(signal.SIGTERM)
        box["nats"].wait(10)
        assert events[up_at].wait(30)
        box["nats"] = _start_nats(port, tmp_path / "js", tmp_path / "nats2.log")
        assert feed.done.wait(30)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and (not spill.is_dir() or any(spill.glob("bitty-spill-*"))):
            time.sleep(0.2)
        time.sleep(1.0)
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(40) == 0, (tmp_path / "collect.log").read_text()[-3000:]
        log = (tmp_path / "collect.log").read_text()
        assert "wrote back" in log  # trades went to a spill file while NATS was away, and came back
        assert not list(spill.glob("bitty-spill-*")), "spilled trades were not written back"
        db = f"sqlite:///{tmp_path}/sink.db"
        stats = asyncio.run(drain(SinkOptions(nats=url, db=db, stream=StreamSettings(), idle_exit=1.5,
                                              progress_interval=0.5)))
        assert stats.foreign == 0
        store = Store(db)
        try:
            got = sorted((t.symbol, int(t.trade_id)) for t in store.read_trades())
        finally:
            store.close()
        assert got == sorted((s, k) for s in SYMBOLS for k in range(1, ticks + 1))
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
        stop_feed()
        box["nats"].terminate()
        box["nats"].wait(10)
