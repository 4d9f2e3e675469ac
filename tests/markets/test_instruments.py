"""`bitty symbols` and the symbol check of `bitty collect`, against a local HTTP server serving
each exchange's documented symbol-list response."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bitty.cli import main
from bitty.commands.replay import ReplayServer
from bitty.errors import SymbolError
from bitty.markets.instruments import parse_listing
from bitty.planning import fetch_listings, plan
from bitty.spec.load import load_spec
from tests.commands.test_collect import serve_in_thread
from tests.conftest import EXCHANGES

SPECS = sorted(EXCHANGES.glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_listing_contains_defaults_and_round_trips(path: Path) -> None:
    """Each symbols.json lists the spec's default symbols, and every listed pair maps both ways."""
    spec = load_spec(path)
    body = json.loads((EXCHANGES / "fixtures" / path.stem / "symbols.json").read_text())
    instruments = parse_listing(spec, body)
    normalized = {i.normalized for i in instruments}
    assert set(spec.default_symbols) <= normalized
    for instrument in instruments:
        assert instrument.normalized, f"{instrument.native} cannot be normalized"
        spec.symbols.learn(instrument.native, instrument.normalized)
        assert spec.symbols.to_native(instrument.normalized) == instrument.native
        assert spec.symbols.to_normalized(instrument.native) == instrument.normalized


def test_symbols_command_over_http(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bitty symbols coinbase --url` prints native and normalized symbols from the REST response."""
    session = tmp_path / "empty.jsonl"
    session.write_text("")
    url, stop = serve_in_thread(session, http={"/products": (EXCHANGES / "fixtures/coinbase/symbols.json").read_bytes()})
    try:
        http = url.replace("ws://", "http://")
        assert main(["symbols", "coinbase", "--url", f"{http}/products", "--format", "json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert {"native": "ETH-BTC", "normalized": "ETH-BTC", "kind": "spot", "base": "ETH", "quote": "BTC",
                "settle": "BTC", "expiry": None, "strike": None, "right": None, "contract_size": None,
                "inverse": False, "size_unit": "base", "source": "listing"} in listed
        assert {i["native"] for i in listed} == {"BTC-USD", "ETH-USD", "ETH-BTC"}  # not delisted LTC-USD
        assert main(["symbols", "coinbase", "--url", f"{http}/missing"]) == 1
    finally:
        stop()  # type: ignore[operator]


def test_collect_rejects_unknown_symbol_with_suggestion() -> None:
    """With the exchange's list at hand, an unknown symbol is refused and the closest named."""
    spec = load_spec(EXCHANGES / "binance.yaml")

    async def main_() -> None:
        server = ReplayServer([], http={"/symbols": (EXCHANGES / "fixtures/binance/symbols.json").read_bytes()})
        url = await server.start()
        try:
            listings = await fetch_listings([spec], {"binance": url.replace("ws://", "http://") + "/symbols"})
        finally:
            await server.close()
        assert plan([spec], ["btcusdt"], listings)[0][1] == ["BTC-USDT"]
        with pytest.raises(SymbolError, match="did you mean BTC-USDT"):
            plan([spec], ["BTC-USDX"], listings)

    asyncio.run(main_())


def test_unreachable_listing_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """When the list cannot be fetched the symbols are used as given, with a warning."""
    spec = load_spec(EXCHANGES / "binance.yaml")
    listings = asyncio.run(fetch_listings([spec], {"binance": "http://127.0.0.1:9/nothing"}))
    assert listings == {}
    assert "cannot check symbols" in caplog.text
    assert plan([spec], ["BTC-USDX"], listings)[0][1] == ["BTC-USDX"]
