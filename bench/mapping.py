"""In-process mapping: the spec-driven ``Mapper`` against a hand-written parser, against
plain ``jmespath.search`` with the same expressions, over the same decoded frames, and against
cryptofeed's own handlers (``bench.reference``) on the same trades."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import jmespath
import orjson

from bench import reference
from bench.frames import generate, load, native, symbols
from bitty.engine.dispatch import Dispatcher
from bitty.lang.functions import OPTIONS, iso_time
from bitty.mapping.mapper import Mapper, derive_trade_id
from bitty.spec.load import Spec
from bitty.trade import Trade

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KRAKEN_SIDES = {"b": "buy", "s": "sell"}
# A spec that reads another one's exchange in another wire format: its symbols and natives
WIRE = {"binance-aggtrade": "binance"}


def mapper_for(spec: Spec, exchange: str, count: int = 10) -> Mapper:
    mapper = Mapper(spec)
    mapper.learn(symbols(WIRE.get(exchange, exchange), count))
    return mapper


def names_of(exchange: str) -> dict[str, str]:
    """The benchmark's ten symbols of ``exchange``, native -> normalized."""
    wire = WIRE.get(exchange, exchange)
    return {native(wire, s): s for s in symbols(wire, 10)}


def hand_written(exchange: str) -> Callable[[str, datetime], list[Trade]]:
    """What a person would write for one exchange: orjson and dict access, same Trade rows."""
    names = names_of(exchange)
    if exchange in ("binance", "binance-aggtrade"):
        key = "a" if exchange == "binance-aggtrade" else "t"

        def parse(text: str, received: datetime) -> list[Trade]:
            d = orjson.loads(text)["data"]
            return [Trade(exchange, names[d["s"]], str(d[key]), Decimal(d["p"]), Decimal(d["q"]),
                          "sell" if d["m"] else "buy", EPOCH + timedelta(milliseconds=d["T"]), received)]
    elif exchange == "coinbase":
        def parse(text: str, received: datetime) -> list[Trade]:
            d = orjson.loads(text)
            return [Trade("coinbase", names[d["product_id"]], str(d["trade_id"]), Decimal(d["price"]),
                          Decimal(d["size"]), "sell" if d["side"] == "buy" else "buy", iso_time(d["time"]),  # type: ignore[arg-type]
                          received)]
    else:
        def parse(text: str, received: datetime) -> list[Trade]:
            frame = orjson.loads(text)
            symbol = names[frame[-1]]
            out = []
            for n, r in enumerate(frame[1]):
                price, size, side = Decimal(r[0]), Decimal(r[1]), KRAKEN_SIDES[r[3]]
                moment = EPOCH + timedelta(microseconds=int(Decimal(r[2]) * 1_000_000))
                out.append(Trade("kraken", symbol, derive_trade_id(moment, price, size, side, n + 1), price, size,
                                 side, moment, received))
            return out
    return parse


def plain_jmespath(spec: Spec, exchange: str) -> Callable[[str, datetime], int]:
    """Every expression through ``jmespath.search`` (its parse cache, the interpreter), counting
    the records whose fields all evaluate: the cost a naive spec engine pays."""
    kind = next(k for k in spec.messages if k.type == "trade")
    match, records = kind.match.source, kind.records.source if kind.records else None
    fields = [e.source for _, e in kind.fields]

    def run(text: str, received: datetime) -> int:
        frame = orjson.loads(text)
        if not jmespath.search(match, frame, options=OPTIONS):
            return 0
        items = jmespath.search(records, frame, options=OPTIONS) if records else frame
        items = items if isinstance(items, list) else [items]
        for record in items:
            context = {"record": record, "frame": frame}
            for source in fields:
                jmespath.search(source, context, options=OPTIONS)
        return len(items)

    return run


def reader(spec: Spec, exchange: str, count: int = 10) -> Callable[[str, datetime], list[Trade]]:
    """A frame's trades as the engine maps them: ``Dispatcher.handle`` (decode inline, the
    generated program, and the mapper's exact path for any frame the program leaves to it)."""
    handle = Dispatcher(spec, spec.name, symbols(WIRE.get(exchange, exchange), count)).handle

    def read(text: str, received: datetime) -> list[Trade]:
        result = handle(text, received)
        return result if isinstance(result, list) else result.trades  # type: ignore[return-value]

    return read


def _rate(fn: Callable[[str, datetime], Any], frames: list[str], seconds: float) -> float:
    received = datetime.now(UTC)
    done, started = 0, time.perf_counter()
    while True:
        for frame in frames:
            fn(frame, received)
        done += len(frames)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def _row(exchange: str, frames: list[str], seconds: float, cryptofeed: float | None) -> dict[str, Any]:
    spec = load(exchange)
    mapper = mapper_for(spec, exchange)
    parse = hand_written(exchange)
    expected = parse(frames[0], datetime.now(UTC))
    read = reader(spec, exchange)
    for handle in (read, lambda f, r: mapper.handle(mapper.decode(f), r).trades,
                   lambda f, r: mapper.handle_exactly(mapper.decode(f), r).trades):
        got = handle(frames[0], expected[0].received_at)
        assert got == expected, (got, expected)  # same rows, or the comparison is meaningless
    return {
        "exchange": exchange,
        "spec mapper": _rate(read, frames, seconds),
        # the mapper without its generated fast path (bitty.mapping.program): the step it saves
        "exact path": _rate(lambda f, r, m=mapper: m.handle_exactly(m.decode(f), r), frames, seconds),
        "hand-written": _rate(parse, frames, seconds),
        "jmespath.search": _rate(plain_jmespath(spec, exchange), frames, seconds),
        "cryptofeed": cryptofeed,
    }


def _cryptofeed(exchange: str, frames: list[str], wire: list[str], seconds: float) -> float | None:
    """cryptofeed's messages per second on ``wire``, ``frames`` in its format, once its trades
    for the first one are bitty's; None without cryptofeed."""
    if exchange not in reference.FEEDS:
        return None
    names = names_of(exchange)
    expected = hand_written(exchange)(frames[0], datetime.now(UTC))
    # Kraken sends no trade id: cryptofeed has none, bitty derives one
    ids = [None if exchange == "kraken" else t.trade_id for t in expected]
    want = [(t.symbol, i, t.price, t.size, t.side, round(t.time.timestamp(), 6)) for t, i in zip(expected, ids, strict=True)]
    got = reference.trades(exchange, names, wire[0])
    assert got == want, (got, want)
    return reference.rate(exchange, names, wire, seconds)


def run(seconds: float = 1.0, frames_per_exchange: int = 20_000) -> list[dict[str, Any]]:
    """Messages per second (decode + map) for each exchange and each way of mapping."""
    rows = []
    for exchange in ("binance", "coinbase", "kraken"):
        natives = list(names_of(exchange))
        frames = list(generate(exchange, natives, frames_per_exchange))
        wire = reference.wire_frames(exchange, frames)
        cryptofeed = _cryptofeed(exchange, frames, wire, seconds)
        rows.append(_row(exchange, frames, seconds, cryptofeed))
        if exchange == "binance":
            # cryptofeed reads the aggTrade stream: bitty's binance-aggtrade spec on those very frames
            rows.append(_row("binance-aggtrade", wire, seconds, cryptofeed))
    return rows
