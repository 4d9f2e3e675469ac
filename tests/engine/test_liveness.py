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


# Each bundled spec's rest.latest against the response sample of the exchange's own docs (the
# sample quoted in the spec), newest trade first where the endpoint lists newest first.
DOCUMENTED = [
    ("binance-futures", [{"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.00",
                          "time": 1499865549590, "isBuyerMaker": True}],
     "https://fapi.binance.com/fapi/v1/trades?symbol=BTCUSDT&limit=1", Latest("28457", datetime(
         2017, 7, 12, 13, 19, 9, 590000, tzinfo=UTC))),
    ("binance-futures-aggtrade", [{"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27781,
                                   "T": 1498793709153, "m": True}],
     "https://fapi.binance.com/fapi/v1/aggTrades?symbol=BTCUSDT&limit=1", Latest("26129", datetime(
         2017, 6, 30, 3, 35, 9, 153000, tzinfo=UTC))),
    ("binance-coinm", [{"a": 26129, "p": "0.01633102", "q": "4.70443515", "f": 27781, "l": 27781,
                        "T": 1498793709153, "m": True}],
     "https://dapi.binance.com/dapi/v1/aggTrades?symbol=BTCUSD_PERP&limit=1", Latest("26129", datetime(
         2017, 6, 30, 3, 35, 9, 153000, tzinfo=UTC))),
    ("bybit-linear", {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": [
        {"execId": "5706445b-8543-59bc-8988-93e0f4a3f0f9", "symbol": "BTCUSDT", "price": "16814.50",
         "size": "0.001", "side": "Buy", "time": "1671970297430", "isBlockTrade": False}]},
        "retExtInfo": {}, "time": 1671970297723},
     "https://api.bybit.com/v5/market/recent-trade?category=linear&symbol=BTCUSDT&limit=1",
     Latest("5706445b-8543-59bc-8988-93e0f4a3f0f9", datetime(2022, 12, 25, 12, 11, 37, 430000, tzinfo=UTC))),
    ("okx", {"code": "0", "msg": "", "data": [
        {"instId": "BTC-USDT", "side": "sell", "sz": "0.00001", "source": "0", "px": "29963.2",
         "tradeId": "242720720", "ts": "1654161646974"},
        {"instId": "BTC-USDT", "side": "sell", "sz": "0.00001", "source": "0", "px": "29964.1",
         "tradeId": "242720719", "ts": "1654161641568"}]},
     "https://www.okx.com/api/v5/market/trades?instId=BTC-USDT&limit=1",
     Latest("242720720", datetime(2022, 6, 2, 9, 20, 46, 974000, tzinfo=UTC))),
    ("coinbase", [{"time": "2014-11-07T22:19:28.578544Z", "trade_id": 74, "price": "10.00000000",
                   "size": "0.01000000", "side": "buy"},
                  {"time": "2014-11-07T01:08:43.642366Z", "trade_id": 73, "price": "100.00000000",
                   "size": "0.01000000", "side": "sell"}],
     "https://api.exchange.coinbase.com/products/BTC-USD/trades?limit=1",
     Latest("74", datetime(2014, 11, 7, 22, 19, 28, 578544, tzinfo=UTC))),
]


@pytest.mark.parametrize(("name", "body", "url", "expected"), DOCUMENTED, ids=[d[0] for d in DOCUMENTED])
def test_each_bundled_rest_latest_reads_its_documented_sample(name: str, body: object, url: str,
                                                              expected: Latest) -> None:
    """The spec's rest.latest URL and mapping read the exchange's documented response sample."""
    spec = load_spec(EXCHANGES / f"{name}.yaml")
    fetcher = LatestFetcher(spec)
    symbol = {"binance-coinm": "BTC-USD-PERP", "bybit-linear": "BTC-USDT-PERP", "binance-futures": "BTC-USDT-PERP",
              "binance-futures-aggtrade": "BTC-USDT-PERP", "coinbase": "BTC-USD"}.get(name, "BTC-USDT")
    assert fetcher.url(symbol) == url
    assert fetcher.latest(body) == expected


def test_exchange_errors_in_bundled_specs_are_latest_errors() -> None:
    """An error answered with HTTP 200 (OKX code, Bybit retCode, Binance msg) is a LatestError."""
    with pytest.raises(LatestError, match="51001: Instrument ID does not exist"):
        LatestFetcher(load_spec(EXCHANGES / "okx.yaml")).latest(
            {"code": "51001", "msg": "Instrument ID does not exist", "data": []})
    with pytest.raises(LatestError, match="10001: params error"):
        LatestFetcher(load_spec(EXCHANGES / "bybit.yaml")).latest(
            {"retCode": 10001, "retMsg": "params error", "result": {}, "retExtInfo": {}, "time": 1})
    with pytest.raises(LatestError, match="Invalid symbol"):
        LatestFetcher(load_spec(EXCHANGES / "binance-coinm.yaml")).latest({"code": -1121, "msg": "Invalid symbol."})
