"""The original subclass API (process_message, make_*_payload, class attributes) on the one engine."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

import bitty
from bitty.engine.consumer import BaseConsumer
from bitty.engine.legacy import LegacyFrames
from bitty.trade import Trade
from tests.engine.test_consumer import SPEC, heartbeat, match
from tests.wsserver import accept, drain, read_json, run_for, serve


class LegacyConsumer(BaseConsumer):
    """The original bitty subclass API, as GdaxConsumer used it."""

    exchange_name = "legacy"
    enable_heartbeat = True
    heartbeat_timeout = 5

    def make_subscribe_payload(self) -> dict[str, Any]:
        return {"type": "subscribe", "product_ids": self.product_ids}

    def make_heartbeat_payload(self) -> dict[str, Any]:
        return {"type": "heartbeat", "on": True}

    def process_message(self, message: str | bytes) -> dict[str, Any] | None:
        data = json.loads(message)
        if data.get("type") in ("match", "heartbeat"):
            return data  # type: ignore[no-any-return]
        return None


def test_original_subclass_api_still_works() -> None:
    """A BaseConsumer subclass with process_message/make_*_payload collects trades and heartbeats."""
    sent: list[Any] = []
    heartbeats: list[Any] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        sent.append(await read_json(ws))
        sent.append(await read_json(ws))
        await ws.send_json(heartbeat("BTC-USD", 0))
        await ws.send_json(match(1))
        return await drain(ws)

    async def main() -> list[Trade]:
        trades: list[Trade] = []
        async with serve(handler) as server:
            consumer = LegacyConsumer(["BTC-USD"], url=server.url)
            consumer.on_trade(trades.append)
            consumer.on_heartbeat(heartbeats.append)
            await run_for(consumer, 0.3)
        return trades

    trades = asyncio.run(main())
    assert sent == [{"type": "subscribe", "product_ids": ["BTC-USD"]}, {"type": "heartbeat", "on": True}]
    assert [(t.exchange, t.product_id, t.trade_id, str(t.price)) for t in trades] == [("legacy", "BTC-USD", "1", "100.5")]
    assert heartbeats and heartbeats[0]["last_trade_id"] == "0"


def test_the_public_name_is_the_engine_adapter() -> None:
    """``from bitty import BaseConsumer`` is the adapter; a subclass reads frames through LegacyFrames."""
    assert bitty.BaseConsumer is BaseConsumer
    assert isinstance(LegacyConsumer(["BTC-USD"], url="ws://127.0.0.1:1").frames, LegacyFrames)


class Broken(LegacyConsumer):
    def process_message(self, message: str | bytes) -> Any:
        data = json.loads(message)
        if isinstance(data, dict) and data.get("boom"):
            raise RuntimeError("bad frame")
        return data


def test_legacy_frames_become_actions_without_a_socket() -> None:
    """Trades, heartbeats, incomplete trades and a raising process_message, as actions."""
    frames = LegacyFrames(Broken(["BTC-USD"], url="ws://127.0.0.1:1"))
    now = datetime.now(UTC)
    actions = frames.handle(json.dumps([match(1), heartbeat("BTC-USD", 1), {"type": "match", "trade_id": 2}]), now)
    assert [t.trade_id for t in actions.trades] == ["1"]
    assert actions.heartbeats == [("BTC-USD", "1")]
    assert len(actions.quarantined) == 1 and "incomplete trade message" in actions.quarantined[0].reason
    raised = frames.handle(json.dumps({"boom": True}), now)
    assert [q.reason for q in raised.quarantined] == ["process_message raised"]


def test_legacy_heartbeats_feed_the_watchdog() -> None:
    """Heartbeats from process_message reporting a trade never received restart the stream."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await read_json(ws)
        await ws.send_json(match(1))
        for _ in range(3):
            await ws.send_json(heartbeat("BTC-USD", 2))  # trade 2 never reaches us
        return await drain(ws)

    async def main() -> LegacyConsumer:
        async with serve(handler) as server:
            consumer = LegacyConsumer(["BTC-USD"], url=server.url, backoff_initial=0.01)
            await run_for(consumer, 0.3)
        return consumer

    consumer = asyncio.run(main())
    assert consumer.stats.reconnects >= 1 and "BTC-USD: heartbeat reports last trade 2" in consumer.stats.last_error


def test_spec_consumer_process_message_maps_with_the_spec() -> None:
    """The spec-driven default process_message returns trades and heartbeats as dicts."""
    consumer = BaseConsumer(["BTC-USD", "ETH-USD"], url="ws://127.0.0.1:1", spec=SPEC)
    trades = consumer.process_message(json.dumps(match(3)))
    assert isinstance(trades, list) and trades[0]["type"] == "trade" and trades[0]["trade_id"] == "3"
    assert consumer.process_message(json.dumps(heartbeat("ETH-USD", 4))) == {
        "type": "heartbeat", "product_id": "ETH-USD", "last_trade_id": "4"}
