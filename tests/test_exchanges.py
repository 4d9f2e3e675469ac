"""Conformance: every spec in exchanges.d/ replays its fixtures into its golden rows."""

from __future__ import annotations

import asyncio

import pytest

from bitty.commands.test import check
from bitty.spec.load import load_spec
from tests.conftest import EXCHANGES

SPECS = sorted(EXCHANGES.glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_replays_into_golden_rows(path) -> None:  # type: ignore[no-untyped-def]
    """The spec loads, the client sends what the session expects, and the rows match golden."""
    result = asyncio.run(check(load_spec(path)))
    assert result.ok, "\n".join(result.problems)
    assert len(result.rows) >= 3


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_has_complete_fixtures(path) -> None:  # type: ignore[no-untyped-def]
    """Every exchange ships a session, golden rows, error frames and a symbol list response."""
    folder = EXCHANGES / "fixtures" / path.stem
    missing = [n for n in ("session.jsonl", "golden.jsonl", "errors.jsonl", "symbols.json") if not (folder / n).exists()]
    assert not missing, f"{folder}: missing {missing}"


def test_golden_rows_cover_both_sides() -> None:
    """Across the bundled exchanges the fixtures exercise buy and sell takers."""
    import orjson

    sides = set()
    for path in SPECS:
        for line in (EXCHANGES / "fixtures" / path.stem / "golden.jsonl").read_text().splitlines():
            sides.add(orjson.loads(line)["side"])
    assert sides == {"buy", "sell"}


@pytest.mark.parametrize("name", ["bitmex", "bybit"])
def test_batched_subscriptions_stay_within_the_exchange_limit(name: str) -> None:
    """45 symbols on one connection go out as subscribe messages of at most batch_size topics
    (BitMEX refuses more than 20 args, Bybit spot more than 10), every symbol once."""
    from bitty.engine.consumer import BaseConsumer
    from bitty.planning import plan

    spec = load_spec(EXCHANGES / f"{name}.yaml")
    symbols = [f"C{n:02d}X-USDT" for n in range(45)]
    [(_, chosen)] = plan([spec], symbols)  # one connection
    consumer = BaseConsumer(chosen, spec=spec)
    messages = consumer._subscribe_messages()
    sizes = [len(m["args"]) for m in messages]
    assert spec.subscribe.batch_size is not None and max(sizes) == spec.subscribe.batch_size
    assert sum(sizes) == 45 and len({a for m in messages for a in m["args"]}) == 45


# Derivative instruments each bundled session carries, with what its recorded listing says of them:
# (native, normalized name, kind, contract size, unit of the published size, inverse).
DERIVATIVES = {
    "bitmex": [("XBTUSD", "BTC-USD-PERP", "perpetual", None, "base", True),
               ("ETHUSD", "ETH-USD-PERP", "perpetual", None, "base", False),  # quanto: settled in XBT
               ("XBTZ24", "BTC-USD-20241227", "future", None, "base", True)],
    "deribit": [("BTC-PERPETUAL", "BTC-USD-PERP", "perpetual", "10", "quote", True),
                ("BTC-26DEC25", "BTC-USD-20251226", "future", "10", "quote", True),
                ("BTC-19DEC25-95000-C", "BTC-USD-20251219-95000-C", "option", "1", "base", False)],
    "bitfinex": [("tBTCF0:USTF0", "BTC-USDT-PERP", "perpetual", None, "base", False)],
    "okx": [("BTC-USDT-SWAP", "BTC-USDT-PERP", "perpetual", "0.01", "contracts", False),
            ("BTC-USD-SWAP", "BTC-USD-PERP", "perpetual", "100", "contracts", True),
            ("BTC-USD-270326", "BTC-USD-20270326", "future", "100", "contracts", True),
            ("BTC-USD-270326-100000-C", "BTC-USD-20270326-100000-C", "option", "0.01", "contracts", False)],
}


@pytest.mark.parametrize("name", sorted(DERIVATIVES))
def test_bundled_sessions_carry_derivative_trades_named_from_their_listing(name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The bundled session of a derivatives exchange stores trades of each instrument kind under
    the names its recorded listing gives, with contract size, size unit and inverse flag."""
    from decimal import Decimal

    from bitty.commands.test import replay
    from bitty.markets.instruments import read_instruments
    from bitty.storage.store import Store

    spec = load_spec(EXCHANGES / f"{name}.yaml")
    db = f"sqlite:///{tmp_path}/t.db"
    rows, server, reasons, _ = asyncio.run(replay(spec, EXCHANGES / "fixtures" / name / "session.jsonl", db))
    assert not reasons and not server.mismatches
    assert server.http_requests  # the listing came from the session, not the internet
    stored = {r["symbol"] for r in rows}
    store = Store(db)
    try:
        listed = {i.native: i for i in read_instruments(store.engine, name)}
    finally:
        store.close()
    for native, symbol, kind, contract, unit, inverse in DERIVATIVES[name]:
        assert symbol in stored, f"{name}: no trade of {symbol}"
        got = listed[native]
        assert (got.normalized, got.kind, got.size_unit, got.inverse) == (symbol, kind, unit, inverse)
        assert got.contract_size == (Decimal(contract) if contract else None)
