"""`bitty record` keeps the HTTP answers a session needs (listing, bootstrap), so `bitty replay`
runs a KuCoin-style exchange offline from the one recorded file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson

from bitty.cli import main
from bitty.commands.record import record
from bitty.commands.replay import ReplayServer, load_session
from bitty.markets.instruments import read_instruments
from bitty.storage.store import Store
from tests.commands.test_collect import serve_in_thread
from tests.conftest import EXCHANGES

KUCOIN = EXCHANGES / "fixtures" / "kucoin"


def record_kucoin(out: Path) -> int:
    """Record from a local KuCoin: its bootstrap (pointing at itself) and listing served over HTTP."""

    async def run() -> int:
        server = ReplayServer(load_session(KUCOIN / "session.jsonl"), hold=True)
        url = await server.start()
        boot = json.loads((KUCOIN / "bootstrap.json").read_text())
        boot["data"]["instanceServers"][0]["endpoint"] = url
        server.http["/api/v1/bullet-public"] = orjson.dumps(boot)
        server.http["/api/v2/symbols"] = (KUCOIN / "symbols.json").read_bytes()
        try:
            return await record("kucoin", out, None, None, 0.5, [], url.replace("ws://", "http://"))
        finally:
            await server.close()
            assert server.mismatches == []
            assert sorted(server.http_requests) == ["GET /api/v2/symbols", "POST /api/v1/bullet-public"]

    return asyncio.run(run())


def test_record_writes_the_listing_and_bootstrap_answers(tmp_path: Path) -> None:
    """The session starts with the listing and bootstrap answers, at the paths the spec asks."""
    out = tmp_path / "kucoin.jsonl"
    assert record_kucoin(out) == 0
    events = load_session(out)
    http = {e.expected: e.data for e in events if e.kind == "http"}
    assert set(http) == {"/api/v2/symbols", "/api/v1/bullet-public"}
    status, body = http["/api/v1/bullet-public"]
    assert status == 200 and orjson.loads(body)["data"]["token"].startswith("2neAiuYvAU61")
    listing = orjson.loads(http["/api/v2/symbols"][1])
    assert listing == json.loads((KUCOIN / "symbols.json").read_text())
    assert [e.kind for e in events].count("recv") >= 6


def test_a_recorded_exchange_runs_offline_from_its_session(tmp_path: Path) -> None:
    """Replayed with --url and --rest-url at the replay, a recorded KuCoin session gives its
    trades, the bootstrap answered from the file and the instruments named from its listing."""
    out = tmp_path / "kucoin.jsonl"
    assert record_kucoin(out) == 0
    db = f"sqlite:///{tmp_path}/offline.db"
    url, stop = serve_in_thread(out, hold=True)
    try:
        assert main(["collect", "kucoin", "--url", url, "--rest-url", f"kucoin={url.replace('ws://', 'http://')}",
                     "--symbols", "BTC-USDT,ETH-USDT", "--db", db, "--max-trades", "6", "--duration", "10",
                     "--no-backfill"]) == 0
    finally:
        stop()  # type: ignore[operator]
    store = Store(db)
    try:
        golden = [json.loads(line) for line in (KUCOIN / "golden.jsonl").read_text().splitlines()]
        assert sorted(t.trade_id for t in store.read_trades("kucoin")) == sorted(g["trade_id"] for g in golden)
        listed = {i.native: i for i in read_instruments(store.engine, "kucoin")}
    finally:
        store.close()
    assert listed["BTC-USDT"].source == "listing" and listed["ETH-USDT"].normalized == "ETH-USDT"
