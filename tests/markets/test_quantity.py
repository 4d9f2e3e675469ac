"""The base quantity of stored trades: the ``trades_base`` view (migration 0005) and bitty's exact
reader ``base_quantities``, on SQLite and the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bitty.markets.instruments import Instrument, save_instruments
from bitty.markets.quantity import base_quantities
from bitty.storage.store import Store
from bitty.trade import Trade

T0 = datetime(2025, 11, 20, 14, 2, 17, tzinfo=UTC)
D = Decimal

INSTRUMENTS = [
    Instrument("BTC-USDT", "BTC-USDT", "spot", "BTC", "USDT", size_unit="base"),
    Instrument("BTC-USDT-SWAP", "BTC-USDT-PERP", "perpetual", "BTC", "USDT", contract_size=D("0.01"),
               size_unit="contracts"),
    Instrument("BTC-USD-SWAP", "BTC-USD-PERP", "perpetual", "BTC", "USD", "BTC", contract_size=D("100"),
               inverse=True, size_unit="contracts"),
    Instrument("BTC-USD-270326", "BTC-USD-20270326", "future", "BTC", "USD", "BTC", size_unit="contracts"),
]
# (symbol, price, size, the exact base quantity or None)
TRADES = [
    ("BTC-USDT", "91729.9", "0.00024913", D("0.00024913")),
    ("BTC-USDT-PERP", "91712.3", "12", D("0.12")),
    ("BTC-USD-PERP", "91708.5", "35", D("3500") / D("91708.5")),
    ("BTC-USD-20270326", "97840.1", "4", None),  # contracts with no known contract size
    ("ETH-USDT", "3012.61", "0.331296", None),  # no instruments row
]


def store_with_trades(db_url: str) -> Store:
    store = Store(db_url)
    store.open()
    save_instruments(store.engine, "okx", INSTRUMENTS)
    # Deribit's inverse future: `amount` in USD (quote units)
    save_instruments(store.engine, "deribit", [Instrument("BTC-26DEC25", "BTC-USD-20251226", "future", "BTC", "USD",
                                                          contract_size=D("10"), inverse=True, size_unit="quote")])
    rows = [Trade("okx", s, str(n), D(p), D(z), "buy", T0, T0) for n, (s, p, z, _) in enumerate(TRADES)]
    rows.append(Trade("deribit", "BTC-USD-20251226", "403691826", D("92605.0"), D("1200.0"), "buy", T0, T0))
    assert len(store.write(rows)) == len(rows)
    return store


def test_base_quantities_are_exact_on_every_database(db_url: str) -> None:
    """bitty's reader gives size, size x contract size, size x contract size / price and size / price
    as exact Decimals, and None where the unit or contract size is unknown."""
    store = store_with_trades(db_url)
    try:
        got = {q.trade.symbol: (q.size_unit, q.base_size) for q in base_quantities(store.engine, "okx")}
        deribit = base_quantities(store.engine, "deribit", "BTC-USD-20251226")
    finally:
        store.close()
    assert got == {"BTC-USDT": ("base", D("0.00024913")), "BTC-USDT-PERP": ("contracts", D("0.12")),
                   "BTC-USD-PERP": ("contracts", D("3500") / D("91708.5")),
                   "BTC-USD-20270326": ("contracts", None), "ETH-USDT": (None, None)}
    assert [(q.size_unit, q.base_size) for q in deribit] == [("quote", D("1200.0") / D("92605.0"))]


def test_trades_base_view_derives_the_base_quantity(db_url: str) -> None:
    """The trades_base view joins every trade to its instrument: exact NUMERIC on PostgreSQL
    (products exact, quotients to 16 digits), the size's own text for base units and a float
    otherwise on SQLite; NULL where no base quantity can be derived."""
    store = store_with_trades(db_url)
    try:
        with store.engine.connect() as conn:
            rows = {r.symbol: r for r in conn.execute(sa.text(
                "SELECT symbol, size_unit, contract_size, base_size FROM trades_base ORDER BY id"))}
    finally:
        store.close()
    assert set(rows) == {s for s, *_ in TRADES} | {"BTC-USD-20251226"}
    expected = {s: want for s, _, _, want in TRADES} | {"BTC-USD-20251226": D("1200") / D("92605")}
    for symbol, want in expected.items():
        value = rows[symbol].base_size
        if want is None:
            assert value is None, symbol
        elif store.dialect == "postgresql":
            assert isinstance(value, Decimal)
            assert abs(value - want) < D("1e-15") * want, symbol
            if symbol in ("BTC-USDT", "BTC-USDT-PERP"):
                assert value == want  # products and base sizes are exact
        elif symbol == "BTC-USDT":
            assert value == "0.00024913"  # the stored text, not a float
        else:
            assert float(value) == pytest.approx(float(want), rel=1e-12), symbol
    assert rows["ETH-USDT"].size_unit is None
