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
