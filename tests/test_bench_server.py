"""The benchmark's frames and flooding server: every exchange's frames map through its bundled
spec into the trades they carry; the server's frames are ``bench.frames.generate``'s, byte for
byte, and it speaks enough RFC 6455 for aiohttp's client (handshake, ping, close)."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
from datetime import UTC, datetime

import aiohttp
import orjson
import pytest

from bench import server, wire
from bench.frames import EXCHANGES, SCALE_EXCHANGES, generate, heartbeats, native, symbols, trades_in
from bench.mapping import load
from bitty.mapper import Mapper

COUNT = 2_345  # two whole chunks and a partial one


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
    return f"ws://127.0.0.1:{port}/"


async def _collect(exchange: str, natives: list[str], connections: int) -> list[list[str]]:
    """What each of ``connections`` successive clients receives, then pings and closes."""
    servers, ports = await server.start(COUNT)
    received = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(connections):
                async with session.ws_connect(_url(exchange, ports[exchange], natives), autoping=False) as ws:
                    if exchange != "binance":
                        await ws.send_str(orjson.dumps({"product_ids": natives, "pair": natives}).decode())
                    received.append([(await ws.receive_str(timeout=2)) for _ in range(COUNT)])
                    await ws.send_str('{"op":"ping"}')  # a keepalive the server ignores
                    await ws.ping(b"still there?")
                    pong = await ws.receive(timeout=2)
                    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"still there?")
                    await ws.close()
                    assert ws.close_code == 1000  # the server echoed the close
    finally:
        for s in servers:
            s.close()
    return received


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_frames_are_generates_with_a_fresh_start_id_per_connection(exchange: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each connection gets generate()'s frames for its symbols, trade ids from its own start_id."""
    monkeypatch.setattr(server, "_ids", itertools.count(1, 1_000_000))
    natives = [native(exchange, s) for s in symbols(exchange, 12)]
    first, second = asyncio.run(_collect(exchange, natives, connections=2))
    assert first == list(generate(exchange, natives, COUNT, start_id=1))
    assert second == list(generate(exchange, natives, COUNT, start_id=1_000_001))


def test_templates_match_generate_for_odd_symbols() -> None:
    """Symbols JSON must escape, or holding '%', come out as orjson would write them."""
    natives = ['a%s"b', "c\\d", "é/€", "X"]
    for exchange in EXCHANGES:
        templates = server.Templates.build(exchange, 40)
        data = b"".join(templates.chunks(natives, 7, size=16))
        assert _server_frames(data) == [t.encode() for t in generate(exchange, natives, 40, start_id=7)]


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
    process = ctx.Process(target=server.serve, args=(10, child), daemon=True)
    process.start()
    try:
        assert pipe.poll(20)
        ports = pipe.recv()
        assert sorted(ports) == sorted(EXCHANGES) and all(isinstance(p, int) for p in ports.values())
        pipe.send("stop")
        process.join(10)
        assert process.exitcode == 0
    finally:
        if process.is_alive():
            process.terminate()
            process.join()
