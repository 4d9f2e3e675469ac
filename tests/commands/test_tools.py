"""Hooks, `bitty record` and `bitty replay`, end to end."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bitty.cli import main
from bitty.commands.replay import ReplayServer, load_session
from bitty.engine.consumer import BaseConsumer
from bitty.spec.load import load_spec
from bitty.trade import Trade
from tests.commands.test_collect import serve_in_thread
from tests.conftest import EXCHANGES, ROOT, SPECS
from tests.engine.test_consumer import run_for

POSITIVE = SPECS / "positive"


def test_hooks_decode_and_rewrite_subscribes(tmp_path: Path) -> None:
    """A spec naming a Hooks class gets its decode and subscribe rewrites; the rest stays YAML."""
    session = tmp_path / "pipes.jsonl"
    session.write_text('{"send_text": "SUB BTC-USD"}\n{"recv_text": "T|BTC-USD|42|100.5|0.25|b|2024-01-02T03:04:05Z"}\n')

    async def main_() -> tuple[list[Trade], ReplayServer]:
        server = ReplayServer(load_session(session), hold=True)
        url = await server.start()
        trades: list[Trade] = []
        consumer = BaseConsumer(["BTC-USD"], url=url, spec=load_spec(POSITIVE / "pipes.yaml"))
        consumer.on_trade(trades.append)
        await run_for(consumer, 0.3)
        await server.close()
        return trades, server

    trades, server = asyncio.run(main_())
    assert server.mismatches == []
    assert [(t.symbol, t.trade_id, str(t.price), t.side) for t in trades] == [("BTC-USD", "42", "100.5", "buy")]


def test_record_then_replay_reproduces_the_session(tmp_path: Path) -> None:
    """`bitty record` writes a session that, replayed, gives the same trades as the original."""
    out = tmp_path / "recorded.jsonl"
    url, stop = serve_in_thread(EXCHANGES / "fixtures" / "coinbase" / "session.jsonl", hold=True)
    try:
        assert main(["record", "coinbase", "--url", url, "--out", str(out), "--duration", "0.5"]) == 0
    finally:
        stop()  # type: ignore[operator]
    events = load_session(out)
    kinds = [e.kind for e in events]
    assert kinds[0] == "open" and kinds[1] == "send" and kinds.count("recv") == 13
    assert all(e.t is not None for e in events)
    # the recording is a fixture: the real engine maps it to the golden rows
    db = f"sqlite:///{tmp_path}/replayed.db"
    url, stop = serve_in_thread(out, hold=True)
    try:
        assert main(["collect", "coinbase", "--url", url, "--db", db, "--max-trades", "6", "--duration", "10"]) == 0
    finally:
        stop()  # type: ignore[operator]
    from bitty.storage.store import Store

    store = Store(db)
    assert store.count() == 6
    store.close()


def test_replay_command_serves_a_session(tmp_path: Path) -> None:
    """`bitty replay FILE --port P` serves the file as a websocket exchange until stopped."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bitty", "replay", str(EXCHANGES / "fixtures" / "coinbase" / "session.jsonl"),
         "--port", str(port)], cwd=ROOT, env=os.environ.copy(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)

        async def main_() -> list[Trade]:
            trades: list[Trade] = []
            consumer = BaseConsumer(["BTC-USD", "ETH-USD"], url=f"ws://127.0.0.1:{port}",
                                    spec=load_spec(EXCHANGES / "coinbase.yaml"))
            consumer.on_trade(trades.append)
            await run_for(consumer, 0.5)
            return trades

        assert len(asyncio.run(main_())) == 6
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
