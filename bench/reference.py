"""cryptofeed's own hand-written handlers, measured as a baseline next to bitty's mapper.

What is timed is a cryptofeed feed's ``message_handler(text, conn, timestamp)`` on each raw
frame text: its JSON decoding (yapic.json, cryptofeed's choice, which also turns ISO times into
datetimes), its dispatch and its ``Trade`` objects (Decimal price and amount) awaited into a
no-op callback registered for TRADES. No socket: the feed is built but never started.

cryptofeed is optional (``pip install -e '.[bench]'``): ``FEEDS`` is empty without it. Its
feeds read Binance's aggTrade stream and Coinbase's Advanced Trade ``market_trades`` channel
(2.4.1 no longer reads the Exchange feed's ``match`` messages), so ``wire_frames`` rewrites
bitty's frames of those two exchanges into those formats, carrying the same trades; Kraken's
frames are read as they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

try:
    from cryptofeed.defines import TRADES
    from cryptofeed.exchanges import Binance, Coinbase, Kraken
    from cryptofeed.symbols import Symbols
except ImportError:
    FEEDS: dict[str, Any] = {}
else:
    FEEDS = {"binance": Binance, "coinbase": Coinbase, "kraken": Kraken}

# Printed under the mapping table
NOTE = ("cryptofeed: its feeds' own message_handler per frame text (yapic.json, Decimal Trade objects, a no-op callback):\n"
        "  binance on aggTrade frames of the same trades (bitty on those very frames: binance-aggtrade), coinbase on\n"
        "  Advanced Trade market_trades frames of the same trades, one a frame; kraken on the same frames, keeping no\n"
        "  trade id (bitty derives one per trade)")
MISSING = "cryptofeed: not installed; pip install -e '.[bench]' adds its own handlers as a baseline"

Handler = Callable[[str, Any, float], Coroutine[Any, Any, None]]


def _aggtrade(frame: Any) -> Any:
    """A Binance combined-stream trade event as the aggTrade event of that one trade: its
    aggregate id ``a`` and first and last trade ids ``f``, ``l`` are the trade's id."""
    d = frame["data"]
    return {"stream": frame["stream"].replace("@trade", "@aggTrade"), "data": {
        "e": "aggTrade", "E": d["E"], "s": d["s"], "a": d["t"], "p": d["p"], "q": d["q"], "f": d["t"], "l": d["t"],
        "T": d["T"], "m": d["m"], "M": d["M"]}}


def _market_trades(frame: Any) -> Any:
    """A Coinbase Exchange ``match`` as an Advanced Trade ``market_trades`` update holding that
    one trade (live updates batch 250 ms of trades). ``side`` is written as the taker's, the
    side cryptofeed reports, so its trade and bitty's are the same in every field."""
    return {"channel": "market_trades", "client_id": "", "timestamp": frame["time"],
            "sequence_num": frame["sequence"], "events": [{"type": "update", "trades": [{
                "trade_id": str(frame["trade_id"]), "product_id": frame["product_id"], "price": frame["price"],
                "size": frame["size"], "side": "SELL" if frame["side"] == "buy" else "BUY", "time": frame["time"]}]}]}


REWRITE: dict[str, Callable[[Any], Any]] = {"binance": _aggtrade, "coinbase": _market_trades}


def wire_frames(exchange: str, frames: list[str]) -> list[str]:
    """bitty's frames of ``exchange`` (``bench.frames.generate``) in the format cryptofeed reads."""
    rewrite = REWRITE.get(exchange)
    if rewrite is None:
        return frames
    return [orjson.dumps(rewrite(orjson.loads(f))).decode() for f in frames]


def _handler(exchange: str, names: dict[str, str], callback: Callable[[Any, float], Coroutine[Any, Any, None]]) -> Handler:
    """The ``message_handler`` of a cryptofeed feed of ``exchange`` subscribed to TRADES for
    ``names`` (native -> normalized symbol), built without the network."""
    cls = FEEDS[exchange]
    # Exchange.__init__ fetches the exchange's symbol list over REST unless cryptofeed's symbol
    # cache already holds one; seed it with the benchmark's symbols, as cryptofeed's own unit
    # tests do (Symbols.set in tests/unit/test_coinbase.py).
    Symbols.set(cls.id, {symbol: native for native, symbol in names.items()}, {})
    feed = cls(symbols=list(names.values()), channels=[TRADES], callbacks={TRADES: callback})
    return feed.message_handler


def trades(exchange: str, names: dict[str, str], frame: str) -> list[tuple[Any, ...]]:
    """What cryptofeed's callback receives for one frame: (symbol, id, price, amount, side,
    epoch seconds) per trade."""
    got: list[Any] = []

    async def keep(trade: Any, receipt: float) -> None:
        got.append(trade)

    asyncio.run(_handler(exchange, names, keep)(frame, None, time.time()))
    return [(t.symbol, t.id, t.price, t.amount, t.side, round(t.timestamp, 6)) for t in got]


async def _discard(trade: Any, receipt: float) -> None:
    pass


async def _replay(handler: Handler, frames: list[str], seconds: float) -> float:
    # One event loop, one ``await handler(...)`` per frame, as cryptofeed's ConnectionHandler
    # awaits message_handler for each message it reads. Nothing suspends, so the loop itself
    # never runs: on a no-op coroutine this costs about 95 ns a frame against 35 ns for the
    # plain call of mapping._rate, and driving each coroutine with send(None) and catching its
    # StopIteration would cost about 185 ns.
    received = time.time()
    done, started = 0, time.perf_counter()
    while True:
        for frame in frames:
            await handler(frame, None, received)
        done += len(frames)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def rate(exchange: str, names: dict[str, str], frames: list[str], seconds: float) -> float:
    """Messages per second through cryptofeed's ``message_handler`` of ``exchange``; ``frames``
    in its format (``wire_frames``)."""
    return asyncio.run(_replay(_handler(exchange, names, _discard), frames, seconds))
