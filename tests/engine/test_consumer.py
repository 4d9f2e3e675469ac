"""The websocket engine against real local servers: subscribe, reconnect, watchdog, pings."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from bitty.engine.consumer import BaseConsumer
from bitty.spec.load import load_spec
from bitty.trade import Trade
from tests.conftest import EXCHANGES, SPECS
from tests.wsserver import Run, accept, drain, drive, feed_while_draining, read_json, run_for, serve  # noqa: F401 (run_for: for test_tools)

SPEC = load_spec(SPECS / "positive" / "testex.yaml")




def match(trade_id: int, symbol: str = "BTC-USD", side: str = "buy") -> dict[str, Any]:
    return {"type": "match", "trade_id": trade_id, "product_id": symbol, "price": "100.5",
            "size": "0.25", "side": side, "time": "2024-01-02T03:04:05.123456Z"}


def heartbeat(symbol: str, last: int) -> dict[str, Any]:
    return {"type": "heartbeat", "product_id": symbol, "last_trade_id": last}


def against(handler: Any, seconds: float, **kwargs: Any) -> Run:
    return drive(handler, seconds, SPEC, **kwargs)


def test_subscribes_and_maps_trades() -> None:
    """The rendered subscribe message reaches the server and trades reach sync and async callbacks."""
    got: list[Any] = []
    got_async: list[Trade] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        got.append(await read_json(ws))
        await ws.send_json(match(1))
        await ws.send_json(match(2, "ETH-USD", "sell"))
        return await drain(ws)

    async def on_async(trade: Trade) -> None:
        got_async.append(trade)

    run = against(handler, 0.3, setup=lambda consumer: consumer.on_trade(on_async))
    assert got == [{"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "id": 1}]
    assert [(t.symbol, t.trade_id, t.side) for t in run.trades] == [("BTC-USD", "1", "buy"), ("ETH-USD", "2", "sell")]
    assert len(got_async) == 2


def test_reconnects_and_resubscribes_after_server_drops() -> None:
    """A server close leads to a new connection that subscribes again."""
    subscribes: list[Any] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        subscribes.append(await read_json(ws))
        await ws.send_json(match(n))
        if n < 3:
            await ws.close()
            return ws
        return await drain(ws)

    run = against(handler, 0.3)  # shorter than heartbeat.timeout: only the drops count
    assert run.connections == 3 and run.consumer.stats.reconnects == 2
    assert len(subscribes) == 3
    assert [t.trade_id for t in run.trades] == ["1", "2", "3"]


def test_watchdog_restarts_when_heartbeats_stop() -> None:
    """No heartbeat within heartbeat.timeout restarts the stream, with the reason logged."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        return await drain(ws)  # connected, but silent

    run = against(handler, 1.2)
    assert run.connections >= 2
    assert "no heartbeat" in run.consumer.stats.last_error


def test_quiet_market_is_not_restarted() -> None:
    """Heartbeats that report our last trade id keep a stream without trades alive."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json(match(7))
        await ws.send_json(match(9, "ETH-USD"))

        async def beat() -> None:  # heartbeats, no trades: well past trade_timeout (0.8 s)
            while True:
                await ws.send_json(heartbeat("BTC-USD", 7))
                await ws.send_json(heartbeat("ETH-USD", 9))
                await asyncio.sleep(0.05)

        return await feed_while_draining(ws, beat)

    run = against(handler, 1.5)
    assert run.connections == 1, run.consumer.stats.last_error
    assert run.consumer.stats.reconnects == 0


def test_quiet_symbol_before_any_trade_is_not_restarted() -> None:
    """A symbol with no trade since we subscribed is fine while its heartbeat id does not move."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)

        async def beat() -> None:
            while True:
                await ws.send_json(heartbeat("BTC-USD", 500))
                await ws.send_json(heartbeat("ETH-USD", 900))
                await asyncio.sleep(0.05)

        return await feed_while_draining(ws, beat)

    assert against(handler, 1.2).connections == 1


def test_heartbeat_showing_unseen_trades_restarts_that_symbol() -> None:
    """A heartbeat whose last trade id we never received restarts the stream and names the symbol."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json(match(10))
        await ws.send_json(match(20, "ETH-USD"))

        async def beat() -> None:
            while True:
                await ws.send_json(heartbeat("BTC-USD", 10))
                await ws.send_json(heartbeat("ETH-USD", 21))  # trade 21 never reached us
                await asyncio.sleep(0.05)

        return await feed_while_draining(ws, beat)

    run = against(handler, 0.9)
    assert run.consumer.stats.reconnects >= 1
    assert run.consumer.stats.last_error.startswith("restarting: ETH-USD: heartbeat reports last trade 21")


def test_per_symbol_heartbeats_are_judged_separately() -> None:
    """One symbol losing its heartbeats restarts the stream even while the other's keep coming."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)

        async def beat() -> None:
            while True:
                await ws.send_json(heartbeat("BTC-USD", 1))
                await asyncio.sleep(0.05)

        return await feed_while_draining(ws, beat)

    run = against(handler, 0.8)
    assert "ETH-USD: no heartbeat" in run.consumer.stats.last_error


def test_server_ping_is_answered_with_its_values() -> None:
    """An application-level ping gets the reply template rendered with the ping's fields."""
    replies: list[Any] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json({"type": "ping", "n": 42})
        replies.append(await read_json(ws))
        return await drain(ws)

    against(handler, 0.3)
    assert replies == [{"type": "pong", "echo": 42}]


def test_fatal_exchange_error_stops_without_retrying() -> None:
    """A rejected subscription stops the stream with the exchange's reason; no reconnect loop."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json({"type": "error", "message": "Failed to subscribe", "reason": "FOO-BAR is not a valid product"})
        return await drain(ws)

    async def main() -> tuple[BaseConsumer, int]:
        async with serve(handler) as server:
            consumer = BaseConsumer(["BTC-USD"], url=server.url, spec=SPEC, backoff_initial=0.01)
            await asyncio.wait_for(consumer.run(), 5)  # returns by itself
            return consumer, server.connections

    consumer, connections = asyncio.run(main())
    assert connections == 1
    assert consumer.failed is not None and "FOO-BAR is not a valid product" in str(consumer.failed)


def test_handshake_429_honours_retry_after() -> None:
    """HTTP 429 on the handshake waits at least Retry-After before the next attempt."""
    times: list[float] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        times.append(time.monotonic())
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "0.5"})
        ws = await accept(request)
        await read_json(ws)
        return await drain(ws)

    run = against(handler, 1.0)
    assert len(times) >= 2 and times[1] - times[0] >= 0.5
    assert run.consumer.stats.connects >= 1


def test_garbage_frames_are_quarantined_and_the_stream_goes_on() -> None:
    """Invalid JSON, unknown kinds and broken trades are quarantined; good trades still flow."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_str("{not json")
        await ws.send_json({"type": "surprise"})
        await ws.send_json({**match(1), "price": "NaN"})
        await ws.send_json({**match(2), "side": "sideways"})
        await ws.send_bytes(b"\x00\x01binary garbage")
        await ws.send_json(match(3))
        return await drain(ws)

    run = against(handler, 0.3)
    assert [t.trade_id for t in run.trades] == ["3"]
    reasons = [q.reason for q in run.quarantined]
    assert len(reasons) == 5 and run.consumer.stats.reconnects == 0
    assert any("price is missing or not a positive number" in r for r in reasons)
    assert any("side is not buy or sell" in r for r in reasons)
    assert all(q.exchange == "testex" and q.frame for q in run.quarantined)


def test_a_failing_callback_does_not_stop_the_stream() -> None:
    """A trade callback that raises is logged and counted; trades keep flowing to the others."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json(match(1))
        await ws.send_json(match(2))
        return await drain(ws)

    def broken(trade: Trade) -> None:
        raise RuntimeError("disk full")

    run = against(handler, 0.3, setup=lambda consumer: consumer.on_trade(broken))
    assert [t.trade_id for t in run.trades] == ["1", "2"]
    assert run.connections == 1 and run.consumer.stats.callback_errors == 2

    def only(consumer: BaseConsumer) -> None:  # the single-callback path the collector's writer takes
        consumer.on_trade_callbacks.clear()
        consumer.on_trade(broken)

    run = against(handler, 0.3, setup=only)
    assert run.connections == 1 and run.consumer.stats.callback_errors == 2 and run.consumer.stats.trades == 2


def test_frames_are_read_while_paced_subscriptions_go_out() -> None:
    """Bitstamp subscribes one symbol per message, 20 a second: 30 symbols take 1.5 s, and the
    first symbol's trades are taken (with their own received_at) long before the last goes out."""
    bitstamp = load_spec(EXCHANGES / "bitstamp.yaml")
    symbols = [f"C{n:02d}-USD" for n in range(29)] + ["BTC-USD"]
    trade = {"data": {"id": 310436510, "timestamp": "1700489331", "amount": 0.0015, "amount_str": "0.00150000",
                      "price": 37021.47, "price_str": "37021.47", "type": 1, "microtimestamp": "1700489331512000",
                      "buy_order_id": 1684931573284864, "sell_order_id": 1684931580133377},
             "channel": "live_trades_btcusd", "event": "trade"}
    subscribes: list[Any] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        subscribes.append(await read_json(ws))
        await ws.send_json(trade)
        return await drain(ws)

    run = drive(handler, 0.6, bitstamp, symbols=symbols)  # stops before the subscriptions are all out
    assert subscribes == [{"event": "bts:subscribe", "data": {"channel": "live_trades_c00usd"}}]
    assert [(t.symbol, t.trade_id) for t in run.trades] == [("BTC-USD", "310436510")]
