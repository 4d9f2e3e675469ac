from __future__ import annotations

import pytest

from bitty.errors import SymbolError
from bitty.spec.symbols import SymbolRules, resolve

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
