"""Realistic trade frames in ten exchanges' own wire formats, as their bundled specs read them
(``exchanges.d/<name>.yaml``, fixtures in ``exchanges.d/fixtures/<name>/session.jsonl``).

A frame is built once as a template: encoded JSON with holes where one connection's frames
differ from another's (the native symbol, the trade ids). ``generate`` and the flooding server
(``bench.server``) fill the same templates with the same ``holes``, so the server's bytes are
``generate``'s by construction and cost it no encoding per frame.
"""

from __future__ import annotations

import itertools
import random
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from bitty.spec import files as paths
from bitty.spec.load import Spec, find_spec, load_spec

EXCHANGES = ("binance", "coinbase", "kraken")  # mapping and end-to-end runs
# The scale run: those three and seven more whose specs need no REST bootstrap (kucoin), no
# compressed binary frames (htx), no channel ids assigned by subscription acks (bitfinex) and
# no per-symbol subscribe messages paced at 20 a second (bitstamp: 50 s for 1,000 symbols).
SCALE_EXCHANGES = (*EXCHANGES, "okx", "bybit", "gateio", "poloniex", "bitmex", "deribit", "gemini")
BASES = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "LINK", "AVAX"]
T0_MS = 1_714_564_800_000
# Frame n carries 1 + n % BATCH[exchange] trades (1 where the exchange sends one per frame).
BATCH = {"kraken": 3, "bybit": 3, "bitmex": 2, "deribit": 2}

# Holes, written into a frame's strings while it is built and cut out once it is encoded: the
# native, the native in lower case, and the frame's id ``start_id + n`` in decimal, in ten
# zero-padded digits (after a leading digit: a sequence number far from the ids) or in ten hex
# digits (BitMEX's trdMatchID). Trade k of a frame of several has the id ``ID + str(k)``: the
# frame's id times ten plus k. A string opening with NUMBER is written as a bare JSON number.
NATIVE, LOWER, ID, ID10, HEX = "\x00n", "\x00l", "\x00i", "\x00z", "\x00x"
NUMBER = "\x01"
_HOLES = {b"\\u0000n": b"%(n)s", b"\\u0000l": b"%(l)s", b"\\u0000i": b"%(i)d", b"\\u0000z": b"%(i)010d",
          b"\\u0000x": b"%(i)010x"}
_BARE = re.compile(rb'"\\u0001([^"]*)"')
KEYS = (b"n", b"l", b"i")  # bytes: a bytes %-template looks its keys up as bytes


def load(exchange: str) -> Spec:
    """The bundled spec of ``exchange``."""
    return load_spec(find_spec(exchange, paths.spec_dirs([])))


def symbols(exchange: str, count: int) -> list[str]:
    """``count`` distinct normalized symbols that the exchange's spec can map: the ten real
    bases, then C0000X, C0001X, ..."""
    bases = (BASES + [f"C{i:04d}X" for i in range(max(count - len(BASES), 0))])[:count]
    if exchange == "bitmex":
        return [f"{b}-USD-PERP" for b in bases]
    if exchange == "deribit":  # inverse BTC and ETH perpetuals, linear USDC ones for the rest
        return [f"{b}-{'USD' if b in ('BTC', 'ETH') else 'USDC'}-PERP" for b in bases]
    quote = "USDT" if exchange in ("binance", "okx", "bybit", "gateio", "poloniex") else "USD"
    return [f"{b}-{quote}" for b in bases]


def native(exchange: str, symbol: str) -> str:
    """The exchange's own name for a normalized symbol, written by hand from its docs."""
    base, quote = symbol.split("-")[:2]
    if exchange in ("binance", "bybit", "gemini"):
        return base + quote
    if exchange == "kraken":
        return ("XBT" if base == "BTC" else "XDG" if base == "DOGE" else base) + "/" + quote
    if exchange in ("gateio", "poloniex"):
        return f"{base}_{quote}"
    if exchange == "bitmex":
        return ("XBT" if base == "BTC" else base) + quote
    if exchange == "deribit":
        return f"{base}-PERPETUAL" if base in ("BTC", "ETH") else f"{base}_{quote}-PERPETUAL"
    return symbol  # coinbase, okx


def _binance(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    return {"stream": LOWER + "@trade", "data": {
        "e": "trade", "E": ms + 1, "s": NATIVE, "t": NUMBER + ID, "p": price, "q": size,
        "T": ms, "m": rng.random() < 0.5, "M": True}}


def _coinbase(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    return {
        "type": "match", "trade_id": NUMBER + ID, "maker_order_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "taker_order_id": str(uuid.UUID(int=rng.getrandbits(128))), "side": rng.choice(("buy", "sell")),
        "size": size, "price": price, "product_id": NATIVE, "sequence": NUMBER + "5" + ID10,
        "time": f"2024-05-01T12:{(n // 60_000_000) % 60:02d}:{(n // 1_000_000) % 60:02d}.{n % 1_000_000:06d}Z",
    }


def _kraken(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    trades = [[price, size, f"{(ms + k) / 1000:.6f}", rng.choice("bs"), "l", ""] for k in range(1 + n % 3)]
    return [42, trades, "trade", NATIVE]


def _okx(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    return {"arg": {"channel": "trades", "instId": NATIVE}, "data": [{
        "instId": NATIVE, "tradeId": ID, "px": price, "sz": size, "side": rng.choice(("buy", "sell")),
        "ts": str(ms), "count": "1", "source": "0", "seqId": NUMBER + "6" + ID10}]}


def _bybit(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    return {"topic": "publicTrade." + NATIVE, "ts": ms + 1, "type": "snapshot", "data": [{
        "i": ID + str(k), "T": ms, "p": price, "v": size, "S": rng.choice(("Buy", "Sell")),
        "seq": NUMBER + "1" + ID10, "s": NATIVE, "BT": False, "RPI": rng.random() < 0.1} for k in range(1 + n % 3)]}


def _gateio(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    return {"time": ms // 1000, "time_ms": ms + 7, "channel": "spot.trades", "event": "update", "result": {
        "id": NUMBER + ID, "create_time": ms // 1000, "create_time_ms": f"{ms}.{rng.randrange(10_000):04d}",
        "side": rng.choice(("buy", "sell")), "currency_pair": NATIVE, "amount": size, "price": price,
        "range": f"{ID}-{ID}"}}


def _poloniex(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    return {"channel": "trades", "data": [{
        "symbol": NATIVE, "amount": f"{float(price) * float(size):.8f}", "takerSide": rng.choice(("buy", "sell")),
        "quantity": size, "createTime": ms, "price": price, "id": ID, "ts": ms + 6}]}


def _bitmex(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    stamp = f"2024-05-01T12:{(n // 60_000) % 60:02d}:{(n // 1000) % 60:02d}.{n % 1000:03d}Z"
    out = []
    for k in range(1 + n % 2):
        contracts = rng.randrange(1, 400) * 100
        px = round(float(price), 1)
        out.append({"timestamp": stamp, "symbol": NATIVE, "side": rng.choice(("Buy", "Sell")), "size": contracts,
                    "price": px, "tickDirection": "ZeroPlusTick", "trdMatchID": f"00000000-006d-1000-0000-{HEX}{k:02x}",
                    "grossValue": contracts * 1014, "homeNotional": contracts / px, "foreignNotional": float(contracts),
                    "trdType": "Regular"})
    return {"table": "trade", "action": "insert", "data": out}


def _deribit(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    px = round(float(price), 1)
    return {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": f"trades.{NATIVE}.100ms", "data": [{
        "timestamp": ms, "price": px, "amount": float(rng.randrange(1, 500) * 10), "direction": rng.choice(("buy", "sell")),
        "index_price": round(px * 0.9998, 2), "instrument_name": NATIVE, "trade_seq": NUMBER + ID + str(k),
        "mark_price": round(px * 0.9999, 2), "tick_direction": rng.randrange(4), "contracts": float(rng.randrange(1, 50)),
        "trade_id": ID + str(k)} for k in range(1 + n % 2)]}}


def _gemini(rng: random.Random, n: int, ms: int, price: str, size: str) -> Any:
    return {"type": "trade", "symbol": NATIVE, "event_id": NUMBER + "1" + ID10, "timestamp": ms, "price": price,
            "quantity": size, "side": rng.choice(("buy", "sell")), "tid": NUMBER + "2" + ID10}


BUILDERS: dict[str, Callable[[random.Random, int, int, str, str], Any]] = {
    "binance": _binance, "coinbase": _coinbase, "kraken": _kraken, "okx": _okx, "bybit": _bybit,
    "gateio": _gateio, "poloniex": _poloniex, "bitmex": _bitmex, "deribit": _deribit, "gemini": _gemini,
}


def encode(message: Any) -> bytes:
    """A frame with holes as a %-template: ``encode(m) % holes(...)`` is a frame's bytes."""
    raw = _BARE.sub(rb"\1", orjson.dumps(message).replace(b"%", b"%%"))
    for marker, hole in _HOLES.items():
        raw = raw.replace(marker, hole)
    return raw


def templates(exchange: str, count: int, seed: int = 7) -> list[bytes]:
    """The first ``count`` frames of an exchange as templates; the same for every connection."""
    build = BUILDERS[exchange]
    rng = random.Random(seed)
    out = []
    for n in range(count):
        price = f"{rng.uniform(10, 70000):.2f}"
        size = f"{rng.uniform(0.0001, 3):.8f}"
        out.append(encode(build(rng, n, T0_MS + n, price, size)))
    return out


def escaped(text: str) -> bytes:
    """``text`` as it sits between a JSON string's quotes."""
    return orjson.dumps(text)[1:-1]


def holes(natives: list[str], start_id: int) -> Iterator[dict[bytes, Any]]:
    """What fills frame n's holes, for n = 0, 1, ...: its native (cycling over ``natives``) and its
    id ``start_id + n``. Endless, and C-level: no Python call per frame."""
    columns = zip(itertools.cycle([escaped(n) for n in natives]),
                  itertools.cycle([escaped(n.lower()) for n in natives]), itertools.count(start_id))
    return map(dict, map(zip, itertools.repeat(KEYS), columns))


def generate(exchange: str, natives: list[str], count: int, start_id: int = 1, seed: int = 7) -> Iterator[str]:
    """``count`` text frames cycling over ``natives``; frame ids start at ``start_id``."""
    for template, values in zip(templates(exchange, count, seed), holes(natives, start_id), strict=False):
        yield (template % values).decode()


def trades_in(exchange: str, count: int) -> int:
    """Trades carried by the first ``count`` frames of ``generate``."""
    period = BATCH.get(exchange, 1)
    full, rest = divmod(count, period)
    return full * period * (period + 1) // 2 + rest * (rest + 1) // 2


def heartbeats(exchange: str, natives: list[str], start_id: int, sent: int, idle: bool) -> list[bytes]:
    """The heartbeat frames a connection gets after the first ``sent`` frames of ``generate``:
    Coinbase sends one per product (about every second, busy or not) with the product's last
    trade id; Kraken and Gemini send one per connection, only while no trades flow; the others
    send none."""
    if exchange == "kraken":
        return [b'{"event":"heartbeat"}'] if idle else []
    if exchange == "gemini":
        return [orjson.dumps({"type": "heartbeat", "timestamp": T0_MS + sent})] if idle else []
    if exchange != "coinbase":
        return []
    out, size = [], len(natives)
    for i, name in enumerate(natives):
        # product i's last frame before frame `sent`; before its first one, an id before start_id
        last = start_id + i + (sent - 1 - i) // size * size if sent > i else start_id - 1
        out.append(orjson.dumps({"type": "heartbeat", "last_trade_id": last, "product_id": name,
                                 "sequence": 50_000_000_000 + last, "time": "2024-05-01T12:00:00.000000Z"}))
    return out
