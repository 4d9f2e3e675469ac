from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitty.lang.functions import EPOCH, OPTIONS, from_epoch, iso_time, lookup, to_decimal, to_text
from bitty.trade import isoformat

UTC = UTC


def search(expression: str, data: object) -> object:
    return jmespath.search(expression, data, options=OPTIONS)


@pytest.mark.parametrize(("value", "expected"), [
    ("37021.47", Decimal("37021.47")),
    ("0.00150000", Decimal("0.00150000")),
    (5, Decimal(5)),
    (0.1, Decimal("0.1")),
    (1e-8, Decimal("1E-8")),
    ("12345678901234567890.123456789", Decimal("12345678901234567890.123456789")),
])
def test_decimal_is_exact(value: object, expected: Decimal) -> None:
    """decimal() keeps the exchange's digits: no binary float on the way."""
    result = to_decimal(value)
    assert result == expected and str(result) == str(expected)


@pytest.mark.parametrize("value", [None, True, "abc", "NaN", "Infinity", "", [], {}])
def test_decimal_rejects_non_numbers(value: object) -> None:
    """decimal() of garbage (NaN, inf, text, containers) is None, never an exception."""
    assert to_decimal(value) is None


def test_epoch_units_are_exact() -> None:
    """Epoch seconds, ms, us and ns give the same instant, to the microsecond."""
    expected = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert from_epoch("1700000000.123456", 1) == expected
    assert from_epoch(1700000000123456, 1_000_000) == expected
    assert from_epoch("1700000000123456789", 1_000_000_000) == expected
    assert from_epoch(1700000000123, 1000) == expected.replace(microsecond=123000)


@pytest.mark.parametrize(("text", "expected"), [
    ("2023-11-20T14:02:11.512367Z", datetime(2023, 11, 20, 14, 2, 11, 512367, tzinfo=UTC)),
    ("2023-11-20T14:02:11.512367123Z", datetime(2023, 11, 20, 14, 2, 11, 512367, tzinfo=UTC)),
    ("2023-11-20T15:02:11+01:00", datetime(2023, 11, 20, 14, 2, 11, tzinfo=UTC)),
    ("2023-11-20T14:02:11.5Z", datetime(2023, 11, 20, 14, 2, 11, 500000, tzinfo=UTC)),
    ("not a time", None),
    (12, None),
])
def test_iso_time(text: object, expected: datetime | None) -> None:
    """iso_time() reads Z, offsets and nanoseconds, and returns UTC."""
    assert iso_time(text) == expected


def test_lookup_stringifies_keys() -> None:
    """lookup() finds booleans as 'true'/'false' and numbers by their text."""
    assert lookup(True, {"true": "sell"}) == "sell"
    assert lookup(0, {"0": "buy"}) == "buy"
    assert lookup("x", {"y": 1}) is None
    assert search("lookup(m, {true: 'sell', false: 'buy'})", {"m": False}) == "buy"


def test_text_helpers() -> None:
    """String helpers work inside expressions and are total on wrong types."""
    assert search("regex(channel, 'live_trades_(.*)')", {"channel": "live_trades_btcusd"}) == "btcusd"
    assert search("split(s, '/')", {"s": "XBT/USD"}) == ["XBT", "USD"]
    assert search("replace(s, '_', '-')", {"s": "BTC_USDT"}) == "BTC-USDT"
    assert search("concat(lower(s), '@trade')", {"s": "BTCUSDT"}) == "btcusdt@trade"
    assert search("abs(a)", {"a": "-1.50"}) == Decimal("1.50")
    assert search("upper(n)", {"n": 5}) is None
    assert to_text(1700000000.0) == "1700000000"
    assert to_text(12) == "12"


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=0, max_value=9_000_000_000), st.integers(min_value=0, max_value=999_999_999),
       st.integers(min_value=0, max_value=9), st.sampled_from([1, 1_000, 1_000_000]))
def test_epoch_text_is_exact(seconds: int, fraction: int, digits: int, per_second: int) -> None:
    """Epoch text goes through float where that is exact: the result is the Decimal result, also
    past the float path's limits (more fraction digits, later than 4e9 s)."""
    if per_second == 1:
        text = str(seconds) + ("." + f"{fraction:09d}"[:digits] if digits else "")
    else:
        text = str(seconds * per_second + fraction * per_second // 1_000_000_000)
    exact = EPOCH + timedelta(microseconds=int(Decimal(text) * 1_000_000 / per_second))
    assert from_epoch(text, per_second) == exact


@settings(max_examples=1000, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.sampled_from([UTC, None, timezone(timedelta(hours=5, minutes=30))]))
def test_isoformat_by_the_second_is_isoformat(moment: datetime, zone: timezone | None) -> None:
    """Derived trade ids hash this text: it must stay exactly datetime.isoformat()."""
    moment = moment.replace(tzinfo=zone)
    assert isoformat(moment) == moment.isoformat()
    assert isoformat(moment.replace(microsecond=0)) == moment.replace(microsecond=0).isoformat()


def test_iso_time_without_a_zone_names_the_fix() -> None:
    """A local time with no zone is not taken as UTC: iso_time raises with how to name the zone."""
    from bitty.lang.functions import NoZone

    with pytest.raises(NoZone, match=r"has no zone.*iso_time\(x, 'Asia/Seoul'\)"):
        iso_time("2024-01-02T12:00:00")
    with pytest.raises(NoZone):
        search("iso_time(t)", {"t": "2024-01-02 12:00:00.123"})


@pytest.mark.parametrize(("zone", "expected_hour"), [
    ("Asia/Seoul", 3), ("+09:00", 3), ("+0900", 3), ("-05:30", 17), ("UTC", 12), ("Z", 12), ("America/New_York", 17),
])
def test_iso_time_reads_local_time_in_the_named_zone(zone: str, expected_hour: int) -> None:
    """iso_time(x, zone) reads a zone-less text in an IANA zone or at an offset; New York in
    January is UTC-5. A text that carries its own zone keeps it."""
    moment = search(f"iso_time(t, '{zone}')", {"t": "2024-01-02T12:00:00"})
    assert isinstance(moment, datetime) and moment.tzinfo is UTC
    assert (moment.hour, moment.minute) == (expected_hour, 30 if zone == "-05:30" else 0)
    assert search(f"iso_time(t, '{zone}')", {"t": "2024-01-02T12:00:00Z"}) == datetime(2024, 1, 2, 12, tzinfo=UTC)


def test_iso_time_with_a_zone_that_is_not_text_gives_null() -> None:
    """A zone read from the frame that is not text is a bad value: null, as for any bad input."""
    assert search("iso_time(t, z)", {"t": "2024-01-02T12:00:00", "z": 9}) is None


@pytest.mark.parametrize(("expression", "message"), [
    ("iso_time(t, 'Asia/Soul')", "unknown time zone 'Asia/Soul'"),
    ("iso_time(t, '+25:00')", r"unknown time zone '\+25:00'"),
    ("iso_time(t, `9`)", "zone must be a text"),
    ("iso_time(t, 'UTC', 'x')", "takes a text and optionally a zone, not 3 arguments"),
    ("[iso_time(t, 'Mars/Olympus')]", "unknown time zone 'Mars/Olympus'"),
])
def test_iso_time_mistakes_fail_when_the_expression_compiles(expression: str, message: str) -> None:
    """A literal zone that does not exist, or a call with too many arguments, is an expression error."""
    from bitty.lang.expr import ExpressionError, compile_expression

    with pytest.raises(ExpressionError, match=message):
        compile_expression(expression)


def test_abs_keeps_every_digit() -> None:
    """abs() is exact for 40 digits (Decimal's abs() would round to the context's 28)."""
    text = "-1234567890.123456789012345678901234567890"
    assert str(search("abs(v)", {"v": text})) == text[1:]
    assert str(search("abs(v)", {"v": Decimal(text)})) == text[1:]


def test_decimal_of_a_decoded_json_number_is_itself() -> None:
    """A JSON number decoded to a Decimal passes through decimal() unchanged; a non-finite one is null."""
    assert str(to_decimal(Decimal("100473000.00000000"))) == "100473000.00000000"
    assert to_decimal(Decimal("NaN")) is None and to_decimal(Decimal("-Infinity")) is None


@pytest.mark.parametrize(("expression", "expected"), [
    ("type(a)", "number"), ("to_number(a)", Decimal("1.50")), ("to_string(a)", "1.50"), ("max(b)", Decimal("3")),
    ("sum(b)", Decimal("5.5")), ("sort(b)", [Decimal("0.5"), 2, Decimal("3")]), ("a > `1`", True),
])
def test_standard_functions_take_decoded_json_numbers(expression: str, expected: object) -> None:
    """JMESPath's standard functions treat a JSON number decoded to a Decimal as a number, and
    keep its digits (to_number used to truncate it to an int), compiled and interpreted alike."""
    from bitty.lang.expr import compile_expression

    data = {"a": Decimal("1.50"), "b": [Decimal("3"), 2, Decimal("0.5")]}
    expr = compile_expression(expression)
    assert expr(data) == expected and expr.interpret(data) == expected
    assert str(expr(data)) == str(expected)
