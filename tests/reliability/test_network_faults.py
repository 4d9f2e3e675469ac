"""Network and exchange faults, each against a real local websocket server misbehaving on purpose."""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from bitty.engine.consumer import BaseConsumer
from bitty.pipeline import CollectOptions, collect
from bitty.spec.load import load_spec, parse_spec
from bitty.storage.store import Store
from tests.conftest import SPECS
from tests.engine.test_consumer import SPEC, heartbeat, match
from tests.wsserver import Run, accept, drain, drive, feed_while_draining, read_json, run_for, serve

SPEC_TEXT = (SPECS / "positive" / "testex.yaml").read_text()


def spec_with(**replacements: str) -> Any:
    text = SPEC_TEXT
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    return parse_spec(text, Path("testex.yaml"))


def against(handler: Any, seconds: float, spec: Any = SPEC, **kwargs: Any) -> Run:
    """Run a consumer of ``spec`` (testex by default) against ``handler`` for ``seconds``."""
    return drive(handler, seconds, spec, **kwargs)


def test_tcp_reset_reconnects() -> None:
    """An abrupt TCP reset (no close frame) is a dropped connection: reconnect, resubscribe, go on."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json(match(n))
        if n == 1:
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()  # RST, no websocket close
            return ws
        return await drain(ws)

    run = against(handler, 0.35)
    assert run.connections == 2 and [t.trade_id for t in run.trades] == ["1", "2"]
    assert "server closed the connection (code 1006)" in run.consumer.stats.last_error


def test_stalled_connection_is_reopened_after_idle_timeout() -> None:
    """A server that accepts and then sends nothing at all is dropped after idle_timeout."""
    spec = spec_with(**{"idle_timeout: 5": "idle_timeout: 0.3", "timeout: 0.4": "timeout: 2",
                        "trade_timeout: 0.8": "trade_timeout: 10"})

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        return await drain(ws)

    run = against(handler, 0.8, spec, symbols=["BTC-USD"])
    assert run.connections >= 2 and "no frame for 0.3s" in run.consumer.stats.last_error


def test_dead_subscription_with_live_pings_is_restarted() -> None:
    """The connection stays up and answers pings, but the subscription stopped: heartbeats end,
    so the stream is restarted within heartbeat.timeout although frames keep arriving."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json(heartbeat("BTC-USD", 1))
        await ws.send_json(heartbeat("ETH-USD", 1))

        async def pings() -> None:  # only pings from now on, application and protocol level
            for i in range(40):
                await ws.send_json({"type": "ping", "n": i})
                await ws.ping()
                await asyncio.sleep(0.05)

        return await feed_while_draining(ws, pings)

    run = against(handler, 1.0)
    assert run.consumer.stats.reconnects >= 1 and "no heartbeat" in run.consumer.stats.last_error


def test_handshake_503_backs_off_and_recovers() -> None:
    """5xx on the handshake is retried with backoff (Retry-After honoured) until it succeeds."""
    times: list[float] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        times.append(time.monotonic())
        if n <= 2:
            return web.Response(status=503, headers={"Retry-After": "0.2"})
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json(match(1))
        return await drain(ws)

    run = against(handler, 1.0)
    assert len(times) >= 3 and times[1] - times[0] >= 0.2 and times[2] - times[1] >= 0.2
    assert run.trades and {t.trade_id for t in run.trades} == {"1"}


def test_oversized_frame_closes_and_reconnects_with_a_clear_error() -> None:
    """A frame over connection.max_frame_bytes is refused (not buffered) and the stream reopens."""
    spec = spec_with(**{"idle_timeout: 5": "idle_timeout: 5\nconnection:\n  max_frame_bytes: 2048"})

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        if n == 1:
            await ws.send_str('{"type": "match", "pad": "' + "x" * 10_000 + '"}')
        await ws.send_json(match(n))
        return await drain(ws)

    run = against(handler, 0.35, spec)
    assert run.connections >= 2 and "2" in [t.trade_id for t in run.trades]
    assert "frame over connection.max_frame_bytes" in run.consumer.stats.last_error


def test_decompression_bomb_is_quarantined_not_inflated() -> None:
    """A small gzip frame that would inflate past max_frame_bytes is refused and quarantined."""
    spec = spec_with(**{"idle_timeout: 5": "idle_timeout: 5\nconnection:\n  max_frame_bytes: 65536",
                        "timeout: 0.4": "timeout: 5", "trade_timeout: 0.8": "trade_timeout: 10"})
    bomb = gzip.compress(b'{"type":"match","pad":"' + b"0" * 50_000_000 + b'"}')
    assert len(bomb) < 100_000

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_bytes(bomb)
        await ws.send_bytes(gzip.compress(b'{"type":"match","trade_id":5,"product_id":"BTC-USD","price":"1",'
                                          b'"size":"2","side":"buy","time":"2024-01-01T00:00:00Z"}'))
        return await drain(ws)

    run = against(handler, 0.5, spec)
    assert [t.trade_id for t in run.trades] == ["5"]
    assert len(run.quarantined) == 1 and "decompresses to more than 65536 bytes" in run.quarantined[0].reason
    assert len(run.quarantined[0].frame) < 10_000


def test_exchange_reconnect_notice_reconnects_at_once() -> None:
    """A `reconnect` kind (maintenance notice) closes the connection and opens a new one."""
    notice = "  notice:\n    type: reconnect\n    match: type == 'reconnect'\n    message: reason\n"
    spec = spec_with(**{"  rejected:\n": notice + "  rejected:\n"})

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json(match(n))
        if n == 1:
            await ws.send_json({"type": "reconnect", "reason": "maintenance in 60s"})
        return await drain(ws)

    run = against(handler, 0.3, spec)
    assert run.connections == 2 and [t.trade_id for t in run.trades] == ["1", "2"]
    assert "announced a disconnect: maintenance in 60s" in run.consumer.stats.last_error


def test_exchange_error_that_is_not_fatal_keeps_the_stream() -> None:
    """A non-fatal exchange error is logged and counted; trades continue on the same connection."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json({"type": "error", "message": "slow down"})
        await ws.send_json(match(1))
        return await drain(ws)

    run = against(handler, 0.3)
    assert run.connections == 1 and run.consumer.stats.exchange_errors == 1 and len(run.trades) == 1


def test_bundled_spec_loads() -> None:
    """Sanity: the test exchange spec is valid as written."""
    assert load_spec(SPECS / "positive" / "testex.yaml").name == "testex"


def test_handshake_that_never_answers_times_out_and_retries() -> None:
    """A server that accepts TCP but never answers the upgrade does not hang the stream."""
    accepted: list[int] = []

    async def main() -> BaseConsumer:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(1)
            await reader.read()  # never answer
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        consumer = BaseConsumer(["BTC-USD"], url=f"ws://127.0.0.1:{port}", spec=SPEC, backoff_initial=0.01)
        consumer.connect_timeout = 0.2
        await run_for(consumer, 0.7)
        server.close()
        await server.wait_closed()
        return consumer

    consumer = asyncio.run(main())
    assert len(accepted) >= 2 and "no websocket handshake within 0.2s" in consumer.stats.last_error


def test_forced_disconnect_is_handed_over_without_loss_or_duplicates(tmp_path: Path) -> None:
    """Before connection.max_age a second connection opens; the old one closes only once the new
    one delivers. The stored trades are exactly the exchange's, with no hole and no repeat."""
    import sqlalchemy as sa

    from bitty.pipeline import CollectOptions, collect

    spec_file = tmp_path / "testex.yaml"
    spec_file.write_text(SPEC_TEXT.replace("idle_timeout: 5", "idle_timeout: 5\nconnection:\n  max_age: 1.0")
                         .replace("timeout: 0.4", "timeout: 5").replace("trade_timeout: 0.8", "trade_timeout: 10"))
    open_sockets: set[web.WebSocketResponse] = set()
    spans: list[list[float]] = []
    sent: list[int] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        span = [time.monotonic(), 0.0]
        spans.append(span)
        open_sockets.add(ws)
        await drain(ws)
        open_sockets.discard(ws)
        span[1] = time.monotonic()
        return ws

    async def ticker() -> None:
        n = 0
        while True:
            await asyncio.sleep(0.01)
            if open_sockets:
                n += 1
                sent.append(n)
                for ws in list(open_sockets):
                    if not ws.closed:
                        await ws.send_json({**match(n), "time": f"2024-01-02T03:04:05.{n:06d}Z"})

    async def main() -> tuple[Any, list[str]]:
        async with serve(handler) as server:
            tick = asyncio.create_task(ticker())
            result = await collect(CollectOptions(
                exchanges=[str(spec_file)], symbols=["BTC-USD"], url=server.url, db=f"sqlite:///{tmp_path}/h.db",
                duration=1.6, progress_interval=3600, spill_dir=str(tmp_path / "spill")))
            tick.cancel()
        engine = sa.create_engine(f"sqlite:///{tmp_path}/h.db")
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.text("select trade_id from trades order by cast(trade_id as integer)"))]
            gaps = conn.execute(sa.text("select count(*) from gaps")).scalar_one()
        engine.dispose()
        return result, ids, gaps

    result, ids, gaps = asyncio.run(main())
    assert len(spans) == 2, spans
    first, second = spans
    assert second[0] < first[1], "the new connection must open before the old one closes"
    numbers = [int(i) for i in ids]
    assert numbers == list(range(numbers[0], numbers[-1] + 1)), "no trade may fall between the connections"
    assert len(numbers) == len(set(numbers)) and result.duplicates > 0
    assert gaps == 0


def test_protocol_pings_are_answered_but_are_not_data() -> None:
    """A server that keeps pinging (and sending pongs) but sends no data is answered with pongs
    and still restarted after idle_timeout: protocol pings never count as data."""
    spec = spec_with(**{"idle_timeout: 5": "idle_timeout: 0.3", "timeout: 0.4": "timeout: 2",
                        "trade_timeout: 0.8": "trade_timeout: 10"})
    pongs: list[bytes] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await read_json(ws)

        async def ping() -> None:
            for i in range(1_000_000):  # for as long as the client stays
                await ws.ping(str(i).encode())
                await ws.pong(b"unsolicited")
                await asyncio.sleep(0.05)

        task = asyncio.create_task(ping())
        async for msg in ws:
            if msg.type == web.WSMsgType.PONG:
                pongs.append(msg.data)
        task.cancel()
        return ws

    run = against(handler, 1.0, spec, symbols=["BTC-USD"])
    assert pongs[:3] == [b"0", b"1", b"2"]
    assert run.connections >= 2 and "no frame for 0.3s" in run.consumer.stats.last_error


def test_dead_subscription_is_restarted_within_two_heartbeats() -> None:
    """Heartbeats every 0.05 s report a trade we never received: the stream is restarted at the
    second such heartbeat, long before the 5 s heartbeat timeout."""
    spec = spec_with(**{"timeout: 0.4": "timeout: 5", "trade_timeout: 0.8": "trade_timeout: 10"})

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_json(match(10))
        await ws.send_json(match(20, "ETH-USD"))
        beats = 0

        async def beat() -> None:
            nonlocal beats
            while True:
                await ws.send_json(heartbeat("BTC-USD", 10))
                await ws.send_json(heartbeat("ETH-USD", 21 if n == 1 else 20))  # 21 never reaches us
                beats += 1
                await asyncio.sleep(0.05)

        await feed_while_draining(ws, beat)
        return ws

    run = against(handler, 1.0, spec)
    assert run.connections == 2, run.consumer.stats.last_error
    assert run.consumer.stats.last_error.startswith("restarting: ETH-USD: heartbeat reports last trade 21")


def test_trades_between_heartbeats_ahead_of_them_are_not_a_dead_subscription() -> None:
    """Heartbeats that run one trade ahead of a busy stream (the trade follows each heartbeat)
    never restart it: trades keep arriving between them."""
    spec = spec_with(**{"timeout: 0.4": "timeout: 5", "trade_timeout: 0.8": "trade_timeout: 10"})

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)

        async def busy() -> None:
            trade_id = 100
            while True:
                trade_id += 1
                await ws.send_json(heartbeat("BTC-USD", trade_id))
                await ws.send_json(heartbeat("ETH-USD", 7))
                await ws.send_json(match(trade_id))
                await asyncio.sleep(0.03)

        return await feed_while_draining(ws, busy)

    run = against(handler, 0.8, spec)
    assert run.connections == 1, run.consumer.stats.last_error
    assert len(run.trades) >= 5


# --- rest.latest: data liveness on an exchange without heartbeats (Binance) --------------------

BINANCE_TEXT = (Path(__file__).parents[2] / "exchanges.d" / "binance.yaml").read_text()
T0 = datetime(2024, 5, 14, 9, 30, tzinfo=UTC)


def binance_spec(folder: Path, idle_timeout: float) -> Path:
    """The bundled Binance spec with a short idle_timeout (its rest.latest and rest.trades as they are)."""
    assert "idle_timeout: 60" in BINANCE_TEXT and "  latest:" in BINANCE_TEXT
    path = folder / "binance.yaml"
    latest = "            fields:\n              trade_id: str(record.id)\n              time: epoch_ms(record.time)\n"
    assert BINANCE_TEXT.count(latest) == 1
    text = BINANCE_TEXT.replace(latest, latest + "            per_second: 50\n")  # no budget wait here
    path.write_text(text.replace("idle_timeout: 60", f"idle_timeout: {idle_timeout}"))
    return path


class QuietBinance:
    """A local Binance: the combined `<symbol>@trade` stream, GET /api/v3/trades (the latest
    trades, newest last) and GET /api/v3/historicalTrades (ascending from ``fromId``). Each
    connection delivers its script, then only protocol pings. ``published`` is the exchange's
    last trade: trades published beyond the script never reach the stream (a dead subscription)."""

    def __init__(self, scripts: list[tuple[list[int], int]], rest_status: int = 200) -> None:
        self.scripts = scripts  # per connection: (trades sent, the exchange's latest trade then)
        self.published = 0
        self.rest_status = rest_status
        self.latest_calls = 0
        self.history_calls = 0
        self.connections = 0  # websocket connections (the server's own count includes REST calls)

    @staticmethod
    def record(n: int) -> dict[str, Any]:
        return {"id": n, "price": f"{91000 + n}.01000000", "qty": "0.00100000", "quoteQty": "91.00000000",
                "time": int((T0 + timedelta(seconds=n)).timestamp() * 1000), "isBuyerMaker": n % 2 == 0,
                "isBestMatch": True}

    async def handle(self, request: web.Request, _n: int) -> web.StreamResponse:
        if request.path == "/api/v3/trades":
            self.latest_calls += 1
            assert request.query["symbol"] == "BTCUSDT" and request.query["limit"] == "1"
            if self.rest_status != 200:
                return web.json_response({"code": -1003, "msg": "Too much request weight used"},
                                         status=self.rest_status)
            return web.json_response([self.record(self.published)] if self.published else [])
        if request.path == "/api/v3/exchangeInfo":
            return web.json_response({"symbols": [
                {"symbol": "BTCUSDT", "baseAsset": "BTC", "quoteAsset": "USDT", "status": "TRADING"}]})
        if request.path == "/api/v3/historicalTrades":
            self.history_calls += 1
            first = int(request.query["fromId"])
            return web.json_response([self.record(n) for n in range(first, self.published + 1)][:1000])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        sent, published = self.scripts.pop(0) if self.scripts else ([], self.published)
        for n in sent:
            record = self.record(n)
            await ws.send_json({"stream": "btcusdt@trade", "data": {
                "e": "trade", "E": record["time"] + 1, "s": "BTCUSDT", "t": n, "p": record["price"],
                "q": record["qty"], "T": record["time"], "m": record["isBuyerMaker"], "M": True}})
        self.published = published

        async def pings() -> None:  # the server's protocol pings, never data
            while True:
                await ws.ping()
                await asyncio.sleep(0.05)

        return await feed_while_draining(ws, pings)


async def _collect_binance(exchange: QuietBinance, folder: Path, idle_timeout: float, seconds: float,
                           rest: bool = True, symbols: tuple[str, ...] = ("BTC-USDT",)) -> tuple[Any, int, str]:
    """Collect ``symbols`` from ``exchange`` for ``seconds``: the result, websocket connections, database."""
    spec = binance_spec(folder, idle_timeout)
    db = f"sqlite:///{folder}/binance.db"
    async with serve(exchange.handle) as server:
        origin = server.url.replace("ws://", "http://")
        options = CollectOptions(exchanges=[str(spec)], symbols=list(symbols), db=db, url=server.url + "/stream",
                                 rest_urls={"binance": origin} if rest else {}, duration=seconds,
                                 symbol_list_urls={"binance": origin + "/api/v3/exchangeInfo"},
                                 backoff_initial=0.01, progress_interval=60, spill_dir=str(folder / "spill"))
        result = await asyncio.wait_for(collect(options), 30)
        return result, exchange.connections, db


def test_dead_subscription_without_heartbeats_is_restarted_and_its_gap_backfilled(tmp_path: Path, caplog: Any) -> None:
    """Binance sends no heartbeat: the stream goes silent behind live protocol pings while REST's
    latest trade moves on (6 > 3): restarted after one idle_timeout, and the trades missed
    meanwhile are backfilled from REST; then a quiet market (REST's latest is ours) is kept open
    for many idle periods."""
    exchange = QuietBinance([([1, 2, 3], 6), ([7, 8], 8)])
    with caplog.at_level(logging.INFO, logger="bitty.engine"):
        result, connections, db = asyncio.run(_collect_binance(exchange, tmp_path, idle_timeout=0.3, seconds=2.5))
    assert "BTC-USDT: the exchange's latest trade 6 is newer than ours 3 (dead subscription)" in caplog.text
    assert connections == 2 and result.reconnects == 1
    assert sorted(int(t.trade_id) for t in Store(db).read_trades("binance")) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert exchange.history_calls >= 1
    assert exchange.latest_calls >= 4  # the first check, then one per idle_timeout of the quiet market


def test_quiet_market_without_heartbeats_is_not_restarted(tmp_path: Path) -> None:
    """A symbol whose last trade is the exchange's latest stays connected through several idle
    periods: REST vouches for the quiet, at most one check per idle_timeout."""
    exchange = QuietBinance([([1, 2], 2)])
    result, connections, _db = asyncio.run(_collect_binance(exchange, tmp_path, idle_timeout=0.3, seconds=1.6))
    assert connections == 1 and result.reconnects == 0
    assert 3 <= exchange.latest_calls <= 5  # ~1.6 s / 0.3 s, never more than one per interval


def test_unreachable_rest_latest_falls_back_to_the_idle_restart(tmp_path: Path, caplog: Any) -> None:
    """REST answers 429 to the latest-trade check: the silent connection is restarted after
    idle_timeout as it was before rest.latest, and the cause is logged."""
    exchange = QuietBinance([([1, 2], 2)], rest_status=429)
    with caplog.at_level(logging.WARNING, logger="bitty.engine.connection"):
        result, connections, _db = asyncio.run(_collect_binance(exchange, tmp_path, idle_timeout=0.3, seconds=1.0))
    assert connections >= 2 and result.reconnects >= 1
    assert "BTC-USDT: cannot check the latest trade: GET http://127.0.0.1" in caplog.text
    assert "HTTP 429" in caplog.text


def test_redirected_websocket_without_a_rest_url_does_not_check(tmp_path: Path) -> None:
    """--url without a REST URL (a replay, a local exchange): the real REST never saw that
    stream, so no check is made and silence restarts after idle_timeout as before."""
    exchange = QuietBinance([([1, 2], 2)])
    result, connections, _db = asyncio.run(_collect_binance(exchange, tmp_path, idle_timeout=0.3, seconds=1.0,
                                                            rest=False))
    assert exchange.latest_calls == 0 and connections >= 2 and result.reconnects >= 1


class BusyBinance(QuietBinance):
    """A local Binance with two symbols on one connection: ETH-USDT trades every 50 ms on every
    connection, BTC-USDT as scripted (then its subscription goes silently dead while the
    exchange's latest BTC trade moves on): the connection itself is never silent."""

    def __init__(self, scripts: list[tuple[list[int], int]]) -> None:
        super().__init__(scripts)
        self.eth = 0  # the exchange's last ETH trade, every one of them sent on the stream
        self.eth_latest_calls = 0

    @staticmethod
    def event(symbol: str, record: dict[str, Any]) -> dict[str, Any]:
        return {"stream": f"{symbol.lower()}@trade", "data": {
            "e": "trade", "E": record["time"] + 1, "s": symbol, "t": record["id"], "p": record["price"],
            "q": record["qty"], "T": record["time"], "m": record["isBuyerMaker"], "M": True}}

    async def handle(self, request: web.Request, _n: int) -> web.StreamResponse:
        symbol = request.query.get("symbol")
        if symbol == "ETHUSDT" and request.path == "/api/v3/trades":
            self.eth_latest_calls += 1
            return web.json_response([self.record(self.eth)] if self.eth else [])
        if symbol == "ETHUSDT" and request.path == "/api/v3/historicalTrades":
            return web.json_response([self.record(n) for n in range(int(request.query["fromId"]), self.eth + 1)])
        if request.path == "/api/v3/exchangeInfo":
            return web.json_response({"symbols": [
                {"symbol": native, "baseAsset": native[:3], "quoteAsset": "USDT", "status": "TRADING"}
                for native in ("BTCUSDT", "ETHUSDT")]})
        if request.path != "/stream":
            return await super().handle(request, _n)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        sent, published = self.scripts.pop(0) if self.scripts else ([], self.published)
        for n in sent:
            await ws.send_json(self.event("BTCUSDT", self.record(n)))
        self.published = published

        async def busy() -> None:  # ETH trades on; BTC's subscription says nothing more
            while True:
                self.eth += 1
                await ws.send_json(self.event("ETHUSDT", self.record(self.eth)))
                await ws.ping()
                await asyncio.sleep(0.05)

        return await feed_while_draining(ws, busy)


def test_one_dead_symbol_among_busy_ones_is_restarted_and_its_gap_backfilled(tmp_path: Path, caplog: Any) -> None:
    """ETH-USDT trades all along on the connection while BTC-USDT's subscription is silently
    dead (REST's latest BTC trade 6 > our 3): BTC's own clock runs out, it alone is checked,
    the connection is restarted and BTC's missed trades are backfilled; ETH is never asked about."""
    exchange = BusyBinance([([1, 2, 3], 6), ([7, 8], 8)])
    with caplog.at_level(logging.INFO, logger="bitty.engine"):
        result, connections, db = asyncio.run(_collect_binance(
            exchange, tmp_path, idle_timeout=0.3, seconds=2.5, symbols=("BTC-USDT", "ETH-USDT")))
    assert "BTC-USDT: the exchange's latest trade 6 is newer than ours 3 (dead subscription)" in caplog.text
    assert connections == 2 and result.reconnects == 1
    stored = Store(db).read_trades("binance")
    assert sorted(int(t.trade_id) for t in stored if t.symbol == "BTC-USDT") == [1, 2, 3, 4, 5, 6, 7, 8]
    assert exchange.history_calls >= 1  # BTC's gap came from REST
    assert exchange.eth_latest_calls == 0 and exchange.latest_calls >= 2  # BTC: the dead one, then quiet
