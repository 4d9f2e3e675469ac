"""rest.latest answers mapped without sockets: the latest of the records, errors as LatestError."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bitty.engine.liveness import Budget, Latest, LatestError, LatestFetcher, budget
from bitty.spec.load import load_spec
from tests.conftest import EXCHANGES

BINANCE = load_spec(EXCHANGES / "binance.yaml")


def record(n: int, ms: int) -> dict[str, object]:
    return {"id": n, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.00", "time": ms,
            "isBuyerMaker": True, "isBestMatch": True}


def test_the_latest_record_is_the_one_with_the_largest_time() -> None:
    """Whatever order the endpoint lists them in, the latest trade is the newest one."""
    fetcher = LatestFetcher(BINANCE)
    latest = fetcher.latest([record(28458, 1499865549591), record(28457, 1499865549590)])
    assert latest == Latest("28458", datetime(2017, 7, 12, 13, 19, 9, 591000, tzinfo=UTC))
    assert fetcher.latest([]) == Latest(None, None)  # nothing traded


def test_exchange_errors_and_bad_bodies_are_latest_errors() -> None:
    """An error body with HTTP 200, a body that is not a list, a record without an id: each a
    LatestError naming the cause (the watchdog then falls back to the idle restart)."""
    fetcher = LatestFetcher(BINANCE)
    with pytest.raises(LatestError, match="exchange error: Invalid symbol"):
        fetcher.latest({"code": -1121, "msg": "Invalid symbol."})
    with pytest.raises(LatestError, match="trade_id: null"):
        fetcher.latest([{"time": 1499865549590}])
    with pytest.raises(LatestError, match="records gave str"):
        fetcher.latest("maintenance")


def test_the_url_uses_the_native_symbol_and_the_rest_origin() -> None:
    """``symbol`` is the native symbol; a REST URL replaces only the origin."""
    fetcher = LatestFetcher(BINANCE, "http://127.0.0.1:8080")
    assert fetcher.url("BTC-USDT") == "http://127.0.0.1:8080/api/v3/trades?symbol=BTCUSDT&limit=1"
    assert LatestFetcher(BINANCE).url("ETH-USDT") == "https://api.binance.com/api/v3/trades?symbol=ETHUSDT&limit=1"


def test_the_budget_spaces_requests_across_connections() -> None:
    """Requests share one slot sequence: at 2 a second the fifth waits 2 s, whoever asks."""
    budget = Budget(2.0)
    assert [budget.reserve(100.0) for _ in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert budget.reserve(103.0) == 0.0  # idle since: no debt carried


def test_one_budget_per_exchange_in_a_collector() -> None:
    """Every connection of an exchange gets the same budget; another exchange its own."""
    async def look() -> None:
        assert budget("binance", 2.0) is budget("binance", 2.0)
        assert budget("okx", 2.0) is not budget("binance", 2.0)

    asyncio.run(look())
