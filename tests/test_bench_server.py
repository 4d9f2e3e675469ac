"""The benchmark's frames and flooding server: every exchange's frames map through its bundled
spec into the trades they carry, the server sends ``bench.frames.generate``'s frames byte for
byte, and real consumers collect every trade from it without a restart."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest

from bench import server, wire
from bench.endtoend import bitty_run
from bench.frames import SCALE_EXCHANGES, generate, heartbeats, load, native, symbols, trades_in
from bitty.mapping.mapper import Mapper

COUNT = 1_234  # two whole chunks and a partial one


@pytest.mark.parametrize("exchange", SCALE_EXCHANGES)
def test_frames_map_through_the_bundled_spec_into_their_trades(exchange: str) -> None:
    """Each frame maps to its trades (its symbol, unique ids) with no reject, fast path or not."""
    spec = load(exchange)
    chosen = symbols(exchange, 12)
    natives = [native(exchange, s) for s in chosen]
    assert natives == [spec.symbols.to_native(s) for s in chosen]  # what bitty subscribes to
    mapper = Mapper(spec)
    mapper.learn(chosen)
    received = datetime.now(UTC)
    trades = []
    for n, text in enumerate(generate(exchange, natives, 60, start_id=501)):
        outcome = mapper.handle(mapper.decode(text), received)
        assert (outcome.kind, outcome.rejects) == ("trade", []), text
        assert outcome == mapper.handle_exactly(mapper.decode(text), received)
        assert outcome.trades and {t.symbol for t in outcome.trades} == {chosen[n % 12]}
        trades += outcome.trades
    assert len(trades) == trades_in(exchange, 60)
    assert len({(t.symbol, t.trade_id) for t in trades}) == len(trades)


@pytest.mark.parametrize("exchange", SCALE_EXCHANGES)
def test_heartbeats_are_frames_the_spec_knows(exchange: str) -> None:
    """Busy and idle heartbeats map to heartbeats (or frames to ignore), never to unknown frames."""
    mapper = Mapper(load(exchange))
    chosen = symbols(exchange, 3)
    mapper.learn(chosen)
    natives = [native(exchange, s) for s in chosen]
    for idle in (False, True):
        for data in heartbeats(exchange, natives, 1, 7, idle):
            outcome = mapper.handle(mapper.decode(data.decode()), datetime.now(UTC))
            assert outcome.kind in ("heartbeat", "ignore"), data
            if exchange == "coinbase":
                assert outcome.symbol in chosen and outcome.last_trade_id is not None


def _url(exchange: str, port: int, natives: list[str]) -> str:
    if exchange == "binance":
        return f"ws://127.0.0.1:{port}/stream?streams=" + "/".join(n.lower() + "@trade" for n in natives)
    return f"ws://127.0.0.1:{port}/bench?natives=" + ",".join(natives)


def _is_heartbeat(text: str) -> bool:
    return orjson.loads(text).get("type") == "heartbeat" if text.startswith("{") else False


async def _collect(exchange: str, natives: list[str], connections: int) -> list[tuple[list[str], list[str]]]:
    """What each of ``connections`` successive clients receives: the frames up to the end of the
    flood, then what comes while it is idle (up to the second ping); then it pings and closes."""
    servers, ports = await server.start({exchange: COUNT})
    received = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(connections):
                async with session.ws_connect(_url(exchange, ports[exchange], natives), autoping=False) as ws:
                    flood: list[str] = []
                    trades = 0
                    while trades < COUNT:
                        flood.append(await ws.receive_str(timeout=2))
                        trades += not _is_heartbeat(flood[-1])
                    idle, pings = [], 0
                    while pings < 2:
                        msg = await ws.receive(timeout=2)
                        if msg.type == aiohttp.WSMsgType.PING:
                            assert msg.data == b"bench"
                            pings += 1
                        elif pings == 1:
                            idle.append(msg.data)
                    received.append((flood, idle))
                    await ws.send_str('{"op":"ping"}')  # a keepalive the server ignores
                    await ws.ping(b"still there?")
                    while (msg := await ws.receive(timeout=2)).type != aiohttp.WSMsgType.PONG:
                        assert msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.TEXT)
                    assert msg.data == b"still there?"
                    await ws.close()
                    assert ws.close_code == 1000  # the server echoed the close
    finally:
        for s in servers:
            s.close()
    return received


@pytest.mark.parametrize("exchange", SCALE_EXCHANGES)
def test_frames_are_generates_with_a_fresh_start_id_per_connection(exchange: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each connection gets generate()'s frames for its symbols, trade ids from its own start_id,
    then pings and the exchange's idle heartbeats."""
    monkeypatch.setattr(server, "_ids", itertools.count(1, 1_000_000))
    monkeypatch.setattr(server, "IDLE_EVERY", 0.02)
    natives = [native(exchange, s) for s in symbols(exchange, 12)]
    first, second = asyncio.run(_collect(exchange, natives, connections=2))
    for (flood, idle), start_id in ((first, 1), (second, 1_000_001)):
        assert [t for t in flood if not _is_heartbeat(t)] == list(generate(exchange, natives, COUNT, start_id=start_id))
        assert idle == [h.decode() for h in heartbeats(exchange, natives, start_id, COUNT, idle=True)]


def test_coinbase_heartbeats_vouch_for_the_last_trade_of_each_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat round leads every chunk; each names its product's last trade id so far, as
    bitty's watchdog requires of a healthy stream."""
    monkeypatch.setattr(server, "IDLE_EVERY", 0.02)
    natives = [native("coinbase", s) for s in symbols("coinbase", 12)]
    ((flood, _),) = asyncio.run(_collect("coinbase", natives, connections=1))
    last: dict[str, int] = {}
    rounds = 0
    for text in flood:
        frame = orjson.loads(text)
        if frame["type"] == "match":
            last[frame["product_id"]] = frame["trade_id"]
        else:
            rounds += frame["product_id"] == natives[0]
            assert frame["last_trade_id"] == last.get(frame["product_id"], frame["last_trade_id"])
    assert rounds == -(-COUNT // server.CHUNK)


def test_a_url_without_symbols_is_refused() -> None:
    """No natives= and no streams=: HTTP 400, as the server cannot know what to send."""

    async def connect() -> int:
        servers, ports = await server.start({"okx": 10})
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                    await session.ws_connect(f"ws://127.0.0.1:{ports['okx']}/ws/v5/public")
                return caught.value.status
        finally:
            for s in servers:
                s.close()

    assert asyncio.run(connect()) == 400


def test_bitty_collects_every_exchange_at_once_without_a_restart(tmp_path: Path) -> None:
    """Real consumers of all ten specs, paced frames per symbol: every trade stored, nothing
    quarantined, no connection restarted."""

    async def run() -> dict[str, object]:
        servers, ports = await server.start({e: 3 * 12 for e in SCALE_EXCHANGES}, per_symbol=12, per_second=200)
        try:
            return await bitty_run(list(SCALE_EXCHANGES), ports, f"sqlite:///{tmp_path}/scale.db", 3, 12,
                                   timeout=20, per_symbol=True)
        finally:
            for s in servers:
                s.close()

    r = asyncio.run(run())
    assert r["expected"] == sum(trades_in(e, 36) for e in SCALE_EXCHANGES)
    assert (r["trades"], r["reconnects"], r["quarantined"], r["connections"]) == (r["expected"], 0, 0, 10)


def test_templates_match_generate_for_odd_symbols() -> None:
    """Symbols JSON must escape, or holding '%', come out as orjson would write them."""
    natives = ['a%s"b', "c\\d", "é/€", "X"]
    for exchange in SCALE_EXCHANGES:
        frames = list(generate(exchange, natives, 40, start_id=7))
        for n, text in enumerate(frames):
            assert natives[n % 4] in _strings(orjson.loads(text)), text
        feed = server.Feed(exchange, server.templates(exchange, 40))
        data = b"".join(feed.chunks(natives, 7, 40, size=16))
        sent = [p for p in _server_frames(data) if not _is_heartbeat(p.decode())]
        assert sent == [t.encode() for t in frames]


def _strings(value: object) -> list[str]:
    """Every string in a decoded JSON value."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for item in items for s in _strings(item)]


def _server_frames(data: bytes) -> list[bytes]:
    """Payloads of unmasked text frames (the server's), checking their headers."""
    out, at = [], 0
    while at < len(data):
        assert data[at] == 0x81
        length, at = data[at + 1], at + 2
        if length == 126:
            length, at = int.from_bytes(data[at:at + 2], "big"), at + 2
        out.append(data[at:at + length])
        at += length
    return out


def _masked(payload: bytes, opcode: int = wire.TEXT, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    size = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big") if n < 65536 else bytes([127]) + n.to_bytes(8, "big")
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | size[0]]) + size[1:] + mask + wire.unmask(payload, mask)


def test_parser_reads_every_length_encoding_and_reassembles_fragments() -> None:
    """Masked client frames with 7-, 16- and 64-bit lengths, fed byte by byte, and fragments with a ping between."""
    small, medium, large = b"x" * 125, b"y" * 126, b"z" * 70_000
    stream = (_masked(small) + _masked(medium) + _masked(large, wire.BINARY)
              + _masked(b"he", fin=False) + _masked(b"?", wire.PING) + _masked(b"llo", wire.CONTINUATION)
              + _masked((1000).to_bytes(2, "big"), wire.CLOSE))
    parser = wire.Parser()
    messages = [m for i in range(0, len(stream), 999) for m in parser.feed(stream[i:i + 999])]
    assert messages == [(wire.TEXT, small), (wire.TEXT, medium), (wire.BINARY, large), (wire.PING, b"?"),
                        (wire.TEXT, b"hello"), (wire.CLOSE, b"\x03\xe8")]


def test_parser_refuses_unmasked_frames() -> None:
    """A client frame without a mask breaks RFC 6455 and is refused with status 1002."""
    with pytest.raises(wire.ProtocolError) as caught:
        wire.Parser().feed(wire.frame(b"hi"))
    assert caught.value.status == 1002


def test_handshake_and_headers() -> None:
    """The accept key is RFC 6455's own example; server headers use 7, 16 and 64-bit lengths."""
    assert wire.accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert wire.header(125) == b"\x81\x7d"
    assert wire.header(126) == b"\x81\x7e\x00\x7e"
    assert wire.header(70_000) == b"\x81\x7f" + (70_000).to_bytes(8, "big")


def test_serve_sends_ports_and_stops_when_told() -> None:
    """The process entry point reports one port per exchange and exits on any pipe message."""
    ctx = multiprocessing.get_context("spawn")
    pipe, child = ctx.Pipe()
    process = ctx.Process(target=server.serve, args=(dict.fromkeys(SCALE_EXCHANGES, 10), child), daemon=True)
    process.start()
    try:
        assert pipe.poll(20)
        ports = pipe.recv()
        assert sorted(ports) == sorted(SCALE_EXCHANGES) and all(isinstance(p, int) for p in ports.values())
        pipe.send("stop")
        process.join(10)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.terminate()
            process.join()
