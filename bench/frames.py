"""Realistic frames in the formats the benchmark floods: Binance combined-stream ``trade``,
Coinbase ``match`` and Kraken v1 ``trade`` (1 to 3 trades per frame, no trade ids)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import orjson

EXCHANGES = ("binance", "coinbase", "kraken")
BASES = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "LINK", "AVAX"]
T0_MS = 1_714_564_800_000


def symbols(exchange: str, count: int) -> list[str]:
    """``count`` distinct normalized symbols that the exchange's spec can map."""
    quote = "USDT" if exchange == "binance" else "USD"
    out = [f"{b}-{quote}" for b in BASES]
    i = 0
    while len(out) < count:
        out.append(f"C{i:04d}X-{quote}")
        i += 1
    return out[:count]


def native(exchange: str, symbol: str) -> str:
    base, quote = symbol.split("-")
    if exchange == "binance":
        return base + quote
    if exchange == "kraken":
        return ("XBT" if base == "BTC" else "XDG" if base == "DOGE" else base) + "/" + quote
    return symbol


def generate(exchange: str, natives: list[str], count: int, start_id: int = 1, seed: int = 7) -> Iterator[str]:
    """``count`` text frames cycling over ``natives``; trade ids start at ``start_id``."""
    rng = random.Random(seed)
    for n in range(count):
        sym = natives[n % len(natives)]
        tid = start_id + n
        price = f"{rng.uniform(10, 70000):.2f}"
        size = f"{rng.uniform(0.0001, 3):.8f}"
        ms = T0_MS + n
        if exchange == "binance":
            yield orjson.dumps({"stream": sym.lower() + "@trade", "data": {
                "e": "trade", "E": ms + 1, "s": sym, "t": tid, "p": price, "q": size,
                "T": ms, "m": rng.random() < 0.5, "M": True}}).decode()
        elif exchange == "coinbase":
            yield orjson.dumps({
                "type": "match", "trade_id": tid, "maker_order_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "taker_order_id": str(uuid.UUID(int=rng.getrandbits(128))), "side": rng.choice(("buy", "sell")),
                "size": size, "price": price, "product_id": sym, "sequence": 50_000_000_000 + tid,
                "time": f"2024-05-01T12:{(n // 60_000_000) % 60:02d}:{(n // 1_000_000) % 60:02d}.{n % 1_000_000:06d}Z",
            }).decode()
        else:
            trades = [[price, size, f"{(ms + k) / 1000:.6f}", rng.choice("bs"), "l", ""]
                      for k in range(1 + n % 3)]
            yield orjson.dumps([42, trades, "trade", sym]).decode()


def trades_in(exchange: str, count: int) -> int:
    """Trades carried by the first ``count`` frames of ``generate``."""
    if exchange != "kraken":
        return count
    full, rest = divmod(count, 3)
    return full * 6 + (0, 1, 3)[rest]
