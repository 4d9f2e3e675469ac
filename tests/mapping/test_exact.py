"""Exact by construction: the digits the exchange sent, the ids it gave, the zone it meant, and
sanity bounds on what a record may be. Every frame goes through both mapper paths (the generated
fast path and the exact one), from its JSON text, as the consumer decodes it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitty.errors import SpecError
from bitty.mapping import codec
from bitty.mapping.bounds import MAX_DIGITS
from bitty.mapping.mapper import Mapper, Outcome
from bitty.spec.load import Spec, load_spec, parse_spec
from tests.conftest import EXCHANGES, replace_at, value_paths

NOW = datetime(2024, 6, 1, tzinfo=UTC)

SPEC_TEXT = """
name: exact
url: wss://example.invalid/
symbols: {default: [BTC-USD], native: "{base}-{quote}"}
subscribe: {per: connection, messages: []}
messages:
  trade:
    type: trade
    match: "type == 'match'"
    fields:
      symbol: record.product_id
      trade_id: str(record.trade_id)
      price: decimal(record.price)
      size: decimal(record.size)
      side: record.side
      time: iso_time(record.time)
"""


def _spec(text: str = SPEC_TEXT) -> Spec:
    return parse_spec(text, EXCHANGES / "exact.yaml")


def _mapper(text: str = SPEC_TEXT) -> Mapper:
    mapper = Mapper(_spec(text))
    mapper.learn(["BTC-USD"])
    return mapper


def _frame_text(**changes: str) -> str:
    """A match frame's JSON text; ``changes`` are raw JSON texts of its values."""
    values = {"type": '"match"', "product_id": '"BTC-USD"', "trade_id": "7", "price": '"100.5"', "size": '"0.25"',
              "side": '"buy"', "time": '"2024-01-02T03:04:05.123456Z"', **changes}
    return "{" + ",".join(f'"{k}":{v}' for k, v in values.items()) + "}"


def _map(mapper: Mapper, text: str, received_at: datetime = NOW) -> Outcome:
    """The outcome of a frame's text, checked to be the same on both paths."""
    frame = mapper.decode(text)
    fast, exact = mapper.handle(frame, received_at, {}), mapper.handle_exactly(frame, received_at, {})
    assert fast == exact, text
    return exact


# --- decimals ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["100473000.00000000", "0.0010", "0.1234567890123456789",
                                  "123456789012345678901234.5678901234567890", "1E-12", "2.50E+3", "7"])
@pytest.mark.parametrize("as_string", [False, True])
def test_a_json_number_keeps_its_digits(text: str, as_string: bool) -> None:
    """A price sent as a JSON number keeps every digit it was sent with, trailing zeros
    included, and equals the same value sent as a string."""
    mapper = _mapper()
    outcome = _map(mapper, _frame_text(price=f'"{text}"' if as_string else text, size=text))
    assert not outcome.rejects
    [trade] = outcome.trades
    assert type(trade.price) is Decimal and type(trade.size) is Decimal
    assert str(trade.price) == str(Decimal(text)) and str(trade.size) == str(Decimal(text))
    assert trade.as_json()["price"] == format(Decimal(text), "f")


def test_no_float_is_ever_decoded() -> None:
    """Frames decode numbers with a fraction or exponent to Decimal, integers to int."""
    frame = codec.loads('{"a": 0.1, "b": [1e-12, 3], "c": 1E+2, "d": -0.0, "e": 123456789012345678901234567890}')
    assert frame == {"a": Decimal("0.1"), "b": [Decimal("1e-12"), 3], "c": Decimal("1E+2"), "d": Decimal("-0.0"),
                     "e": 123456789012345678901234567890}
    assert [type(v) for v in (frame["a"], frame["b"][0], frame["c"], frame["d"])] == [Decimal] * 4


def test_abs_keeps_every_digit() -> None:
    """abs() of a negative size (Bitfinex's sells) keeps all 40 digits: no context rounding."""
    text = SPEC_TEXT.replace("size: decimal(record.size)", "size: abs(record.size)")
    digits = "-1234567890.123456789012345678901234567890"
    [trade] = _map(_mapper(text), _frame_text(size=digits)).trades
    assert str(trade.size) == digits[1:]


# --- bad input: stored exactly or quarantined with a reason ---------------------------------


@pytest.mark.parametrize(("price", "reason"), [
    ("1e999999", "price is out of bounds"),
    ('"1e999999"', "price is out of bounds"),
    ("1e-31", "price is out of bounds"),
    ('"NaN"', "price is missing or not a positive number"),
    ('"Infinity"', "price is missing or not a positive number"),
    ("-0", "price is not positive"),
    ("-0.0", "price is not positive"),
    ('"-0.00"', "price is not positive"),
    ("0", "price is not positive"),
    ("-5.5", "price is not positive"),
    ("1." + "1" * MAX_DIGITS, "more than 40 significant digits"),
    ('"' + "9" * (MAX_DIGITS + 1) + 'E-20"', "more than 40 significant digits"),
    ("true", "price is missing or not a positive number"),
    ("null", "price is missing or not a positive number"),
])
def test_out_of_bounds_prices_are_quarantined_with_the_reason(price: str, reason: str) -> None:
    """Prices no exchange trades at are rejected with a reason, on both paths, never stored."""
    outcome = _map(_mapper(), _frame_text(price=price))
    assert outcome.trades == [] and len(outcome.rejects) == 1
    assert reason in outcome.rejects[0], outcome.rejects


@pytest.mark.parametrize("text", ["1" * 30, "0." + "1" * (MAX_DIGITS - 1), "0.0000" + "1" * MAX_DIGITS, "1E-30", "9.99E+29",
                                  "1" * 30 + "." + "1" * 10])
def test_values_at_the_bounds_are_stored_exactly(text: str) -> None:
    """40 significant digits, and the smallest and largest magnitudes allowed, are stored as sent."""
    [trade] = _map(_mapper(), _frame_text(price=text, size=f'"{text}"')).trades
    assert trade.price == trade.size == Decimal(text) and str(trade.price) == str(Decimal(text))


def test_a_bare_nan_is_not_json_and_is_quarantined_as_unknown() -> None:
    """`NaN` is not JSON: the frame is text no kind matches, never a float NaN."""
    outcome = _map(_mapper(), _frame_text(price="NaN"))
    assert outcome.kind == "unknown" and outcome.trades == []


@pytest.mark.parametrize(("time", "reason"), [
    ('"1970-01-01T00:00:00Z"', "time is before 2009"),
    ('"2008-12-31T23:59:59.999999Z"', "time is before 2009"),
    ('"9999-12-31T00:00:00Z"', "more than a day after the frame was received"),
    ('"2024-06-02T00:00:01Z"', "more than a day after the frame was received"),
])
def test_implausible_times_are_quarantined(time: str, reason: str) -> None:
    """Trade times before 2009 or more than a day after the frame arrived are rejected."""
    outcome = _map(_mapper(), _frame_text(time=time))
    assert outcome.trades == [] and reason in outcome.rejects[0]


def test_times_inside_the_window_are_stored() -> None:
    """The first moment of 2009 and a day after receipt are still plausible."""
    for time in ('"2009-01-01T00:00:00Z"', '"2024-06-02T00:00:00Z"'):
        assert len(_map(_mapper(), _frame_text(time=time)).trades) == 1


# --- honest ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("trade_id", ['""', "null", "[]", "{}"])
def test_a_record_without_its_id_is_quarantined_not_given_one(trade_id: str) -> None:
    """Where the exchange publishes ids, a record whose id is missing, null or empty is rejected
    with the reason; no id is derived for it."""
    outcome = _map(_mapper(), _frame_text(trade_id=trade_id))
    assert outcome.trades == []
    assert "trade_id is missing, empty or not a scalar" in outcome.rejects[0]
    assert "trade_ids: opaque" in outcome.rejects[0]


def test_a_record_with_no_id_field_at_all_is_quarantined() -> None:
    """A frame that lacks the id key entirely is rejected too."""
    mapper = _mapper()
    frame = codec.loads(_frame_text())
    del frame["trade_id"]
    outcome = mapper.handle(frame, NOW, {})
    assert outcome == mapper.handle_exactly(frame, NOW, {}) and outcome.trades == [] and outcome.rejects


NO_IDS = SPEC_TEXT.replace("      trade_id: str(record.trade_id)\n", "")


def test_a_spec_without_trade_id_says_the_exchange_has_none_and_ids_are_derived() -> None:
    """A spec that maps no trade_id is `trade_ids: none`: ids are derived, the same for the
    same trade and numbered for identical trades in one frame."""
    spec = _spec(NO_IDS)
    assert spec.trade_ids == "none"
    mapper = _mapper(NO_IDS)
    [first] = _map(mapper, _frame_text()).trades
    [again] = _map(mapper, _frame_text()).trades
    assert first.trade_id == again.trade_id and first.trade_id.startswith("d")


def test_trade_ids_none_with_a_mapped_id_is_a_spec_error() -> None:
    """`trade_ids: none` next to a mapped trade_id contradicts itself: the loader says which to remove."""
    with pytest.raises(SpecError, match=r"trade_ids: none says the exchange publishes no trade ids.*remove fields.trade_id"):
        _spec(SPEC_TEXT + "trade_ids: none\n")


@pytest.mark.parametrize("declared", ["opaque", "sequential"])
def test_ids_promised_but_not_mapped_is_a_spec_error(declared: str) -> None:
    """A spec promising ids without mapping one is told to map it or say `trade_ids: none`."""
    with pytest.raises(SpecError, match=rf"no trade_id, but trade_ids: {declared}.*set trade_ids: none"):
        _spec(NO_IDS + f"trade_ids: {declared}\n")


def test_bundled_specs_say_truthfully_whether_the_exchange_has_ids() -> None:
    """Each bundled exchange's docs show trade ids in its trade messages but Kraken's v1 feed
    (its "Trade ID" is v2 only): only kraken derives ids, and says so."""
    without = set()
    for path in sorted(EXCHANGES.glob("*.yaml")):
        spec = load_spec(path)
        maps_ids = {any(name == "trade_id" for name, _ in k.fields) for k in spec.messages if k.type == "trade"}
        assert maps_ids == ({False} if spec.trade_ids == "none" else {True}), path.name
        if spec.trade_ids == "none":
            without.add(spec.name)
    assert without == {"kraken"}
    assert "trade_ids: none" in (EXCHANGES / "kraken.yaml").read_text()


# --- zones ---------------------------------------------------------------------------------


def test_a_time_without_a_zone_is_quarantined_unless_the_spec_names_one() -> None:
    """`iso_time` of a local time is not taken as UTC: the record is rejected with how to fix it."""
    outcome = _map(_mapper(), _frame_text(time='"2024-01-02T12:00:00"'))
    assert outcome.trades == []
    assert "has no zone" in outcome.rejects[0] and "iso_time(x, 'Asia/Seoul')" in outcome.rejects[0]


@pytest.mark.parametrize("zone", ["Asia/Seoul", "+09:00", "+0900"])
def test_a_named_zone_reads_local_times(zone: str) -> None:
    """With the zone named (an IANA name or an offset), a Korean exchange's local time is 9 hours ahead of UTC."""
    mapper = _mapper(SPEC_TEXT.replace("iso_time(record.time)", f"iso_time(record.time, '{zone}')"))
    [trade] = _map(mapper, _frame_text(time='"2024-01-02T12:00:00.5"')).trades
    assert trade.time == datetime(2024, 1, 2, 3, 0, 0, 500000, tzinfo=UTC)
    [zoned] = _map(mapper, _frame_text(time='"2024-01-02T12:00:00+01:00"')).trades
    assert zoned.time == datetime(2024, 1, 2, 11, tzinfo=UTC)  # a text with its own zone keeps it


def test_an_unknown_zone_is_a_spec_error() -> None:
    """A zone name that does not exist fails when the spec loads, with what to write instead."""
    with pytest.raises(SpecError, match=r"unknown time zone 'Asia/Soul'.*IANA name"):
        _spec(SPEC_TEXT.replace("iso_time(record.time)", "iso_time(record.time, 'Asia/Soul')"))


# --- property: every bundled spec's price and size fields give back the digits sent ----------


def _trade_paths(spec: Spec) -> list[tuple[Mapper, Any, dict[str, str], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """For a bundled spec: a learned mapper, its first fixture trade frame with the channels
    assigned before it, and every place in the frame holding the first trade's price and size."""
    from tests.mapping.test_program import _frames, _mappers

    frames = _frames(spec)
    learned, _ = _mappers(spec, frames)
    channels: dict[str, str] = {}
    for frame in frames:
        outcome = learned.handle_exactly(frame, NOW_LATE, channels)
        if outcome.kind != "trade" or not outcome.trades or outcome.rejects:
            continue
        trade = outcome.trades[0]
        if trade.price == trade.size:
            continue
        found: dict[str, list[tuple[Any, ...]]] = {"price": [], "size": []}
        for path in value_paths(frame)[1:]:
            leaf = _get(frame, path)
            if isinstance(leaf, bool) or not isinstance(leaf, (str, int, Decimal)):
                continue
            try:
                number = Decimal(str(leaf)).copy_abs()
            except ArithmeticError:
                continue
            for name, value in (("price", trade.price), ("size", trade.size)):
                if number == value:
                    found[name].append(path)
        if found["price"] and found["size"]:
            return [(learned, frame, dict(channels), found["price"], found["size"])]
    return []


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


NOW_LATE = datetime(2100, 1, 1, tzinfo=UTC)
BUNDLED = [load_spec(p) for p in sorted(EXCHANGES.glob("*.yaml"))]
CASES = {spec.name: _trade_paths(spec) for spec in BUNDLED}

# Positive decimal texts in plain notation, as exchanges write them: up to 40 digits, trailing
# zeros kept, within the bounds.
DECIMAL_TEXT = st.builds(
    lambda whole, fraction: whole + ("." + fraction if fraction else ""),
    st.from_regex(r"[1-9][0-9]{0,19}", fullmatch=True) | st.just("0"),
    st.text("0123456789", max_size=19),
).filter(lambda t: Decimal(t) > 0)


def test_every_bundled_spec_has_a_case() -> None:
    """The property below runs on every bundled spec's first fixture trade."""
    assert all(CASES.values()), [name for name, cases in CASES.items() if not cases]


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(price=DECIMAL_TEXT, size=DECIMAL_TEXT, as_number=st.booleans())
def test_random_decimal_texts_come_back_digit_for_digit(name: str, price: str, size: str, as_number: bool) -> None:
    """Random decimal texts, put into a bundled spec's trade frame as JSON numbers or strings
    (as JSON numbers where the exchange's size is one), then encoded, decoded and mapped as the
    consumer does, come back digit for digit."""
    [(mapper, frame, channels, price_at, size_at)] = CASES[name]
    put = (lambda t: Decimal(t)) if as_number else (lambda t: t)
    for path in price_at:
        frame = replace_at(frame, path, put(price))
    for path in size_at:  # a size sent as a number stays one: Bitfinex's sign is its side
        frame = replace_at(frame, path, put(size) if isinstance(_get(frame, path), str) else Decimal(size))
    text = codec.dumps(frame).decode()
    assert (price in text) and (size in text)  # the wire carries the very digits
    decoded = mapper.decode(text)
    outcome = mapper.handle(decoded, NOW_LATE, dict(channels))
    exact = mapper.handle_exactly(decoded, NOW_LATE, dict(channels))
    assert outcome == exact
    mine = [t for t in exact.trades if format(t.price, "f") == price and format(t.size, "f") == size]
    assert mine, (exact.rejects, text)
