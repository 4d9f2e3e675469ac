"""The mapper's fast path (``bitty.mapping.program``) returns exactly what the exact path returns, for
every frame of every bundled fixture, for mutated frames, and at the edges of its inline code."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitty.lang.functions import from_epoch, iso_time
from bitty.mapping import codec
from bitty.mapping.mapper import Mapper
from bitty.spec.load import Spec, load_spec, parse_spec
from tests.conftest import EXCHANGES, replace_at, value_paths

SPECS: list[Spec] = [load_spec(p) for p in sorted(EXCHANGES.glob("*.yaml"))]
# When frames are "received": after every fixture's trades, which must not lie more than a day
# after it (bitty.mapping.bounds).
NOW = datetime(2100, 1, 1, tzinfo=UTC)  # late: the epoch edges up to 4e9 s (2096) stay in bounds


def _frames(spec: Spec) -> list[Any]:
    """Every frame the fixtures send, decoded as the consumer decodes it."""
    mapper = Mapper(spec)
    out = []
    for name in ("session.jsonl", "errors.jsonl", "reconnects.jsonl"):
        path = spec.path.parent / "fixtures" / spec.name / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            event = codec.loads(line) if line.strip() else {}
            if "recv" in event:
                out.append(event["recv"])
            elif "recv_text" in event:
                out.append(mapper.decode(event["recv_text"]))
            elif "recv_binary" in event:
                with contextlib.suppress(ValueError):  # a frame the mapper refuses maps to nothing
                    out.append(mapper.decode(base64.b64decode(event["recv_binary"])))
    return out


def _mappers(spec: Spec, frames: list[Any]) -> tuple[Mapper, Mapper]:
    """A mapper that knows every symbol the frames trade, and one that knows none."""
    reference, channels = Mapper(spec), {}
    symbols = {t.symbol for f in frames for t in reference.handle_exactly(f, NOW, channels).trades}
    learned = Mapper(spec)
    learned.learn(sorted(symbols))
    return learned, Mapper(spec)


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_fixture_frames_map_the_same_on_both_paths(spec: Spec) -> None:
    frames = _frames(spec)
    learned, unlearned = _mappers(spec, frames)
    for mapper in (learned, unlearned):
        fast_channels: dict[str, str] = {}
        exact_channels: dict[str, str] = {}
        for frame in frames:
            assert mapper.handle(frame, NOW, fast_channels) == mapper.handle_exactly(frame, NOW, exact_channels), frame
        assert fast_channels == exact_channels


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_the_fast_path_takes_the_fixture_trades(spec: Spec) -> None:
    """Every bundled spec's trade frames go through the program once their symbols are known:
    a change that quietly disables it fails here."""
    frames = _frames(spec)
    learned, _ = _mappers(spec, frames)
    assert learned.program is not None
    channels: dict[str, str] = {}
    taken = 0
    for frame in frames:
        exact = learned.handle_exactly(frame, NOW, channels)
        if exact.kind == "trade" and exact.trades and not exact.rejects:
            assert learned.program(frame, NOW, channels) == (exact.name, exact.trades), frame
            taken += 1
    assert taken > 0


FRAMES = [(i, f) for i, spec in enumerate(SPECS) for f in _frames(spec)]
MAPPERS = [_mappers(spec, _frames(spec))[0] for spec in SPECS]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64), st.floats(),
    st.text(max_size=12),
    st.sampled_from(["NaN", "Infinity", "-1", "0", "0E-8", "1e400", "1_000", " 5", "buy", "sell", "Buy", "b", "s",
                     "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.1234567Z", "2024-01-01Z", " 2024-01-01T00:00:00Z",
                     "2024-01-01T00:00:00+01:00", "1714564800.123456"]),
    st.sampled_from([0, 1, -1, 1_714_564_800_123, 3_999_999_999_999, 4_000_000_000_000, 10**16, True, False]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_frames_map_the_same_on_both_paths(data: st.DataObject) -> None:
    index, frame = data.draw(st.sampled_from(FRAMES))
    path = data.draw(st.sampled_from(value_paths(frame)))
    mutated = replace_at(frame, path, data.draw(SCALARS))
    mapper = MAPPERS[index]
    assert mapper.handle(mutated, NOW, {}) == mapper.handle_exactly(mutated, NOW, {})


INLINE_SPEC = """
name: inline
version: 1
url: wss://example.invalid/
symbols: {default: [BTC-USD], native: "{base}{quote}", quotes: [USD]}
subscribe: {per: connection, messages: []}
messages:
  trade:
    type: trade
    match: "e == 't'"
    fields:
      symbol: record.s
      trade_id: str(record.i)
      price: decimal(record.p)
      size: decimal(record.q)
      side: "lookup(record.m, {true: 'sell', false: 'buy', x: 'buy'})"
      time: "epoch_s(record.ts) || epoch_ms(record.tm) || epoch_us(record.tu) || iso_time(record.ti)"
"""


def _inline_mapper() -> Mapper:
    mapper = Mapper(parse_spec(INLINE_SPEC, EXCHANGES / "inline.yaml"))
    mapper.learn(["BTC-USD"])
    return mapper


EDGES = [0, 1, 999, 1_000, 1_714_564_800_123, 3_999_999_999, 4_000_000_000, 3_999_999_999_999, 4_000_000_000_000,
         3_999_999_999_999_999, 4_000_000_000_000_000, 2**53 - 1, 2**53 + 1]


@pytest.mark.parametrize("unit", ["ts", "tm", "tu"])
def test_inline_epochs_are_exact_at_the_edges(unit: str) -> None:
    mapper = _inline_mapper()
    per_second = {"ts": 1, "tm": 1_000, "tu": 1_000_000}[unit]
    for value in EDGES + [v - 1 for v in EDGES if v] + [v + 7 for v in EDGES]:
        frame = {"e": "t", "s": "BTCUSD", "i": 1, "p": "1", "q": "1", "m": True, unit: value}
        fast, exact = mapper.handle(frame, NOW), mapper.handle_exactly(frame, NOW)
        assert fast == exact, value
        if exact.trades:
            assert exact.trades[0].time == from_epoch(value, per_second)


@pytest.mark.parametrize("unit", ["ts", "tm", "tu"])
def test_inline_epoch_texts_are_exact_at_the_edges(unit: str) -> None:
    """Epoch counts sent as text (Kraken's "1714564800.123456", Bitstamp's microtimestamp)."""
    mapper = _inline_mapper()
    per_second = {"ts": 1, "tm": 1_000, "tu": 1_000_000}[unit]
    texts = [str(v) for v in EDGES + [v - 1 for v in EDGES if v] + [v + 7 for v in EDGES]]
    texts += ["0" + t for t in texts] + ["", " 1", "1 ", "1_0", "+1", "-1", "1e3", "\u0661", "1.", ".5", "3999999999.9999995",
                                         "3999999999.999999", "4000000000.000000", "1714564800.1234567", "nan"]
    for value in texts:
        frame = {"e": "t", "s": "BTCUSD", "i": 1, "p": "1", "q": "1", "m": True, unit: value}
        fast, exact = mapper.handle(frame, NOW), mapper.handle_exactly(frame, NOW)
        assert fast == exact, value
        if exact.trades:
            assert exact.trades[0].time == from_epoch(value, per_second)


EPOCH_TEXT = st.builds(lambda whole, fraction: str(whole) + fraction,
                       st.integers(min_value=0, max_value=4_100_000_000),
                       st.sampled_from(["", "."]).flatmap(
                           lambda dot: st.text("0123456789", min_size=1, max_size=7).map(lambda d: dot + d)
                           if dot else st.just("")))


@settings(max_examples=500, deadline=None)
@given(EPOCH_TEXT)
def test_inline_epoch_seconds_text_is_exact(text: str) -> None:
    mapper = _inline_mapper()
    frame = {"e": "t", "s": "BTCUSD", "i": 1, "p": "1", "q": "1", "m": False, "ts": text}
    fast, exact = mapper.handle(frame, NOW), mapper.handle_exactly(frame, NOW)
    assert fast == exact
    if exact.trades:
        assert exact.trades[0].time == from_epoch(text, 1)


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=4_000_000_000_000_000), st.sampled_from(["ts", "tm", "tu"]))
def test_inline_epochs_are_exact(value: int, unit: str) -> None:
    mapper = _inline_mapper()
    frame = {"e": "t", "s": "BTCUSD", "i": 1, "p": "1", "q": "1", "m": False, unit: value}
    assert mapper.handle(frame, NOW) == mapper.handle_exactly(frame, NOW)


ISO_TEXT = st.builds(
    lambda moment, digits, suffix, pad: pad + moment.strftime("%Y-%m-%dT%H:%M:%S")
    + ("." + f"{moment.microsecond:06d}{moment.microsecond % 1000:03d}"[:digits] if digits else "") + suffix,
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=0, max_value=9), st.sampled_from(["Z", "z", "+00:00", "+05:30", "", "ZZ"]),
    st.sampled_from(["", " "]),
)


@settings(max_examples=500, deadline=None)
@given(ISO_TEXT)
def test_inline_iso_time_is_exact(text: str) -> None:
    mapper = _inline_mapper()
    frame = {"e": "t", "s": "BTCUSD", "i": "7", "p": "2.5", "q": "0.1", "m": "x", "ti": text}
    fast, exact = mapper.handle(frame, NOW), mapper.handle_exactly(frame, NOW)
    assert fast == exact
    if exact.trades:
        assert exact.trades[0].time == iso_time(text)


def test_the_fast_path_sees_symbols_learned_later() -> None:
    mapper = Mapper(parse_spec(INLINE_SPEC, EXCHANGES / "inline.yaml"))
    frame = {"e": "t", "s": "ETHUSD", "i": 1, "p": "1", "q": "1", "m": True, "ts": 1_700_000_000}
    assert mapper.program is not None and mapper.program(frame, NOW, None) is None
    mapper.learn(["ETH-USD"])
    found = mapper.program(frame, NOW, None)
    assert found is not None and found[1][0].symbol == "ETH-USD"
    assert found[1][0].time == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=1_700_000_000)


def test_an_error_frame_with_a_huge_integer_is_still_an_error() -> None:
    """Found by a longer run of the mutation test above: the exact path's message fallback
    serialised the frame with orjson, which refuses integers past 64 bits, and raised."""
    htx = next(s for s in SPECS if s.name == "htx")
    frame = {"id": "1", "status": "error", "err-code": -(2**63) - 1, "ts": 1_700_489_331_012}
    outcome = Mapper(htx).handle(frame, NOW)
    assert outcome.kind == "error" and str(-(2**63) - 1) in outcome.message


def test_derived_ids_number_identical_trades_and_keep_their_format() -> None:
    """Kraken v1 sends no ids: identical trades in one frame (the same price written two ways
    included) are numbered, on both paths, and a derived id stays the hash it always was, so
    trades stored by earlier versions are recognized when received again."""
    kraken = next(s for s in SPECS if s.name == "kraken")
    mapper = Mapper(kraken)
    mapper.learn(["BTC-USD"])
    record = ["22675.06", "0.45263244", "1714564800.123456", "b", "l", ""]
    frame = [42, [record, record, ["22675.060", *record[1:]], ["22675.07", *record[1:]]], "trade", "XBT/USD"]
    fast, exact = mapper.handle(frame, NOW), mapper.handle_exactly(frame, NOW)
    assert fast == exact and mapper.program is not None and mapper.program(frame, NOW, None) is not None

    def derived(text: str) -> str:
        return "d" + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()

    base = "2024-05-01T12:00:00.123456+00:00|{}|0.45263244|buy|{}"
    assert [t.trade_id for t in exact.trades] == [derived(base.format("22675.06", 1)), derived(base.format("22675.06", 2)),
                                                  derived(base.format("22675.06", 3)), derived(base.format("22675.07", 1))]


def test_epoch_second_cache_stays_bounded_and_exact() -> None:
    from bitty.lang.compiler import _Seconds

    seconds = _Seconds()
    for second in range(0, 4_000_000_000, 39_999):  # 100,001 distinct seconds
        assert seconds[second] == from_epoch(second, 1)
    assert 0 < len(seconds) <= 100_000
