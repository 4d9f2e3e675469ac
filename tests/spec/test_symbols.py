from __future__ import annotations

from datetime import date

import pytest

from bitty.errors import SymbolError
from bitty.spec.symbols import Name, SymbolRules, guess, instrument_name, parse_name, resolve

BINANCE = SymbolRules("{base}{quote}", "lower", quotes=("USDT", "USDC", "BTC", "USD"))
KRAKEN = SymbolRules("{base}/{quote}", aliases={"XBT": "BTC", "XDG": "DOGE"})
FUTURES = SymbolRules("{base}{quote}", quotes=("USDT",), suffix="PERP")


@pytest.mark.parametrize(("rules", "normalized", "native"), [
    (BINANCE, "BTC-USDT", "btcusdt"),
    (BINANCE, "ETH-BTC", "ethbtc"),
    (KRAKEN, "BTC-USD", "XBT/USD"),
    (KRAKEN, "DOGE-USD", "XDG/USD"),
    (FUTURES, "BTC-USDT-PERP", "BTCUSDT"),
])
def test_round_trip(rules: SymbolRules, normalized: str, native: str) -> None:
    """Normalized -> native -> normalized is the identity (XBT is BTC, perps carry -PERP)."""
    assert rules.to_native(normalized) == native
    assert rules.to_normalized(native) == normalized


def test_unreadable_native_is_none() -> None:
    """A native symbol the rules cannot split is None, not a guess."""
    assert BINANCE.to_normalized("btcxyz") is None
    assert KRAKEN.to_normalized("XBTUSD") is None


def test_resolve_accepts_native_and_normalized() -> None:
    """--symbols takes either form."""
    assert resolve(BINANCE, ["btcusdt", "ETH-USDT", "BTC-USDT"]) == ["BTC-USDT", "ETH-USDT"]


def test_resolve_suggests_known_symbols() -> None:
    """An unknown symbol is an error naming the closest listed ones."""
    with pytest.raises(SymbolError, match="did you mean BTC-USDT"):
        resolve(BINANCE, ["BTC-USDX"], known=["BTC-USDT", "ETH-USDT"])


OKX = SymbolRules("{base}-{quote}")
DERIBIT = SymbolRules("{base}_{quote}-PERPETUAL", suffix="PERP", explicit={"BTC-PERPETUAL": "BTC-USD-PERP"})
BITFINEX = SymbolRules("t{base}{quote}", case="keep", aliases={"UST": "USDT"})
KRAKEN_FUTURES = SymbolRules("{base}/{quote}", aliases={"XBT": "BTC"})


@pytest.mark.parametrize(("rules", "native", "name"), [
    (BINANCE, "TESTUSDT", "TEST-USDT"),  # a test pair: quote from the spec
    (BINANCE, "BTCUSDT_250328", "BTC-USDT-20250328"),  # Binance delivery code YYMMDD
    (BINANCE, "ADAEURI", "ADAEURI"),  # no quote found: the native symbol, upper case
    (OKX, "BTC-USDT-SWAP", "BTC-USDT-PERP"),
    (OKX, "BTC-USD-251226", "BTC-USD-20251226"),
    (OKX, "BTC-USD-251226-100000-C", "BTC-USD-20251226-100000-C"),
    (DERIBIT, "BTC-27DEC24", "BTC-USD-20241227"),  # quote of another BTC symbol of the spec
    (DERIBIT, "BTC-27DEC24-100000-P", "BTC-USD-20241227-100000-P"),
    (DERIBIT, "ETH_USDC-PERPETUAL", "ETH-USDC-PERP"),
    (BITFINEX, "tTESTBTC:TESTUSD", "TESTBTC-TESTUSD"),  # Bitfinex test pair: prefix dropped, colon split
    (KRAKEN_FUTURES, "PF_XBTUSD", "BTC-USD"),  # market prefix dropped; XBT-USD beats XB-TUSD
    (KRAKEN_FUTURES, "FI_XBTUSD_250328", "BTC-USD-20250328"),
    (FUTURES, "ETHUSDC", "ETH-USDC-PERP"),  # a quote missing from `quotes`: a common one; spec suffix
])
def test_guess_names_unreadable_natives_by_general_rules(rules: SymbolRules, native: str, name: str) -> None:
    """Native symbols the spec's pattern cannot read get a name by the documented general rules."""
    assert guess(native, rules)[0] == name


def test_resolve_never_refuses_a_native_symbol_without_listing(caplog: pytest.LogCaptureFixture) -> None:
    """Without a listing an unreadable native is named by the rules, remembered both ways, and warned about."""
    rules = SymbolRules("{base}{quote}", "lower", quotes=("USDT",))
    assert resolve(rules, ["BTCXYZ", "btcusdt"], exchange="binance") == ["BTCXYZ", "BTC-USDT"]
    assert rules.to_native("BTCXYZ") == "BTCXYZ" and rules.to_normalized("BTCXYZ") == "BTCXYZ"
    assert "binance: native symbol 'BTCXYZ' is not readable" in caplog.text


def test_names_parse_back_into_parts() -> None:
    """The naming scheme is readable: kind, expiry, strike and right come back out of a name."""
    assert instrument_name("btc", "usd", "option", date(2025, 12, 26), "100000", "C") == "BTC-USD-20251226-100000-C"
    parsed = parse_name("BTC-USD-20251226-100000-C")
    assert parsed is not None and (parsed.kind, parsed.expiry, parsed.strike, parsed.right) == (
        "option", date(2025, 12, 26), "100000", "C")
    assert parse_name("BTC-USDT-PERP") == Name("BTC", "USDT", "perpetual")
    assert parse_name("ETH-BTC") == Name("ETH", "BTC")
    assert parse_name("BTC-USD-XYZ") is None
