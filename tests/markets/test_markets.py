"""Markets end to end: derivative listings, native symbols collected without a listing, symbols
per exchange, spec parameters, and whole exchanges redirected to a local replay."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from bitty.cli import main
from bitty.commands.replay import ReplayServer, load_session
from bitty.errors import SpecError, SymbolError
from bitty.markets.instruments import base_size, parse_listing, read_instruments, save_instruments, unlisted
from bitty.pipeline import CollectOptions, collect
from bitty.planning import fetch_listings, load_specs, plan
from bitty.spec.load import load_spec
from bitty.storage import tables
from bitty.storage.store import Store
from tests.conftest import EXCHANGES

OKX_LISTING = json.loads((EXCHANGES / "fixtures/okx/symbols.json").read_text())


def okx_frame(inst: str, trade_id: str, px: str, sz: str) -> dict[str, object]:
    """A `trades` push as OKX documents it (all values strings)."""
    return {"arg": {"channel": "trades", "instId": inst},
            "data": [{"instId": inst, "tradeId": trade_id, "px": px, "sz": sz, "side": "buy",
                      "ts": "1700489331512", "count": "1"}]}


def okx_session(tmp_path: Path, natives: list[str], http: bool = True) -> Path:
    lines: list[object] = []
    if http:
        def body(kind: str, family: str = "") -> dict[str, object]:
            return {"code": "0", "msg": "", "data": [r for r in OKX_LISTING["data"] if r["instType"] == kind
                                                     and (not family or r["instFamily"] == family)]}
        for kind in ("SPOT", "SWAP", "FUTURES"):
            lines.append({"http": f"/api/v5/public/instruments?instType={kind}", "body": body(kind)})
        for family in ("BTC-USD", "ETH-USD"):
            lines.append({"http": f"/api/v5/public/instruments?instType=OPTION&instFamily={family}",
                          "body": body("OPTION", family)})
    lines.append({"send": {"op": "subscribe", "args": [{"channel": "trades", "instId": n} for n in natives]}})
    for i, native in enumerate(natives):
        lines.append({"recv": okx_frame(native, str(100 + i), "42219.9", "3")})
    path = tmp_path / "okx.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


async def run_collect(session: Path, db: str, options: dict[str, object], trades: int) -> ReplayServer:
    server = ReplayServer(load_session(session), hold=True)
    url = await server.start()
    try:
        defaults: dict[str, object] = {"exchanges": ["okx"], "urls": {"okx": url}, "db": db, "duration": 10,
                                       "max_trades": trades, "progress_interval": 60, "backfill": False}
        await collect(CollectOptions(**{**defaults, **options}))  # type: ignore[arg-type]
    finally:
        await server.close()
    return server


def stored(db: str) -> list[tuple[str, str]]:
    store = Store(db)
    try:
        return sorted((t.symbol, format(t.size, "f")) for t in store.read_trades())
    finally:
        store.close()


def test_okx_listing_names_every_kind() -> None:
    """OKX's listing gives spot, linear and inverse perpetuals, dated futures and options, each
    with its normalized name, settlement, expiry, strike and contract size."""
    spec = load_spec(EXCHANGES / "okx.yaml")
    found = {i.native: i for i in parse_listing(spec, OKX_LISTING)}
    assert found["BTC-USDT"].normalized == "BTC-USDT" and found["BTC-USDT"].size_unit == "base"
    linear = found["BTC-USDT-SWAP"]
    assert (linear.normalized, linear.kind, linear.settle, linear.inverse) == ("BTC-USDT-PERP", "perpetual", "USDT", False)
    assert (linear.contract_size, linear.size_unit) == (Decimal("0.01"), "contracts")
    inverse = found["BTC-USD-SWAP"]
    assert (inverse.normalized, inverse.settle, inverse.inverse, inverse.contract_size) == (
        "BTC-USD-PERP", "BTC", True, Decimal("100"))
    future = found["BTC-USD-270326"]
    assert (future.normalized, future.kind, str(future.expiry)) == ("BTC-USD-20270326", "future", "2027-03-26")
    option = found["BTC-USD-270326-100000-C"]
    assert (option.normalized, option.kind, option.strike, option.right) == (
        "BTC-USD-20270326-100000-C", "option", Decimal("100000"), "C")
    assert found["BTC-USD-270326-80000-P"].normalized == "BTC-USD-20270326-80000-P"


def test_base_size_from_contracts() -> None:
    """Contracts become base units: size x contract size (linear), size x contract size / price (inverse)."""
    spec = load_spec(EXCHANGES / "okx.yaml")
    found = {i.native: i for i in parse_listing(spec, OKX_LISTING)}
    assert base_size(Decimal("3"), Decimal("40000"), found["BTC-USDT-SWAP"]) == Decimal("0.03")
    assert base_size(Decimal("4"), Decimal("40000"), found["BTC-USD-SWAP"]) == Decimal("0.01")
    assert base_size(Decimal("1.5"), Decimal("40000"), found["BTC-USDT"]) == Decimal("1.5")


def test_bad_listing_records_are_warnings_naming_exchange_and_symbol(caplog: pytest.LogCaptureFixture) -> None:
    """A future with no expiry and a contract size of zero are warned about, by exchange and
    symbol, and still listed; a listing of another shape is a clear error."""
    spec = load_spec(EXCHANGES / "okx.yaml")
    records = [dict(r) for r in OKX_LISTING["data"] if r["instId"] in ("BTC-USD-270326", "BTC-USDT-SWAP")]
    for record in records:
        if record["instType"] == "FUTURES":
            record["expTime"] = ""
        else:
            record["ctVal"] = "0"
    with caplog.at_level(logging.WARNING):
        found = {i.native: i for i in parse_listing(spec, {"code": "0", "data": records})}
    assert "okx: BTC-USD-270326: a future with no expiry" in caplog.text
    assert found["BTC-USD-270326"].normalized == "BTC-USD-20270326"  # from the native code
    assert "okx: BTC-USDT-SWAP: contract size 0 is not positive" in caplog.text
    assert found["BTC-USDT-SWAP"].contract_size is None and found["BTC-USDT-SWAP"].size_unit == "contracts"
    with caplog.at_level(logging.WARNING):
        parse_listing(spec, {"code": "0", "data": [{"instrumentId": "BTC-USDT", "state": "live"}]})
    assert "okx: 1 listed records give no native symbol" in caplog.text
    with pytest.raises(Exception, match=r"okx: symbols\.list\.records did not give a list"):
        parse_listing(spec, {"code": "50011", "msg": "Too Many Requests"})


def test_native_symbols_are_never_refused_without_a_listing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With no listing reachable, native symbols the spec's pattern cannot read (a swap, a dated
    future, an option) are collected under rule-given names, with a warning, and recorded in the
    instruments table as guesses."""
    natives = ["BTC-USDT-SWAP", "BTC-USD-270326", "BTC-USD-270326-100000-C"]
    session = okx_session(tmp_path, natives, http=False)
    db = f"sqlite:///{tmp_path}/t.db"
    with caplog.at_level(logging.WARNING):
        asyncio.run(run_collect(session, db, {"symbols": natives,
                                              "symbol_list_urls": {"okx": "http://127.0.0.1:9/none"}}, 3))
    assert "okx: native symbol 'BTC-USD-270326' is not readable" in caplog.text
    assert stored(db) == [("BTC-USD-20270326", "3"), ("BTC-USD-20270326-100000-C", "3"), ("BTC-USDT-PERP", "3")]
    store = Store(db)
    try:
        rows = {i.native: i for i in read_instruments(store.engine, "okx")}
    finally:
        store.close()
    assert rows["BTC-USD-270326"].kind == "future" and rows["BTC-USD-270326"].source == "guess"


def test_listing_renames_what_was_collected_under_a_guess(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Once the listing is reachable, trades stored under a rule-given name take the listed name."""
    db = f"sqlite:///{tmp_path}/t.db"
    session = okx_session(tmp_path, ["BTC-USD-270326"], http=False)
    asyncio.run(run_collect(session, db, {"symbols": ["BTC-USD-270326"],
                                          "symbol_list_urls": {"okx": "http://127.0.0.1:9/none"}}, 1))
    spec = load_spec(EXCHANGES / "okx.yaml")
    listed = [i for i in parse_listing(spec, OKX_LISTING) if i.native == "BTC-USD-270326"]
    listed = [type(listed[0])(**{**vars(listed[0]), "normalized": "BTC-USD-LISTED"})]
    store = Store(db)
    try:
        with caplog.at_level(logging.WARNING):
            save_instruments(store.engine, "okx", listed)
        assert [t.symbol for t in store.read_trades()] == ["BTC-USD-LISTED"]
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(tables.instruments.c.source)).scalars().all() == ["listing"]
    finally:
        store.close()
    assert "collected as BTC-USD-20270326 (no listing then)" in caplog.text


def test_okx_runs_offline_with_listing_from_the_replay(tmp_path: Path) -> None:
    """--rest-url sends the listing requests to the replay, which serves them from the session;
    --markets perpetual takes every listed perpetual, stored in contracts with their unit recorded."""
    session = okx_session(tmp_path, ["BTC-USDT-SWAP", "BTC-USD-SWAP"])
    db = f"sqlite:///{tmp_path}/t.db"

    async def go() -> ReplayServer:
        server = ReplayServer(load_session(session), hold=True)
        url = await server.start()
        try:
            await collect(CollectOptions(exchanges=["okx"], urls={"okx": url}, db=db, duration=10, max_trades=2,
                                         progress_interval=60, backfill=False, markets=["perpetual"],
                                         rest_urls={"okx": url.replace("ws://", "http://")}))
        finally:
            await server.close()
        return server

    server = asyncio.run(go())
    assert "GET /api/v5/public/instruments?instType=SWAP" in server.http_requests
    assert not server.mismatches
    assert stored(db) == [("BTC-USD-PERP", "3"), ("BTC-USDT-PERP", "3")]
    store = Store(db)
    try:
        units = {i.normalized: i.size_unit for i in read_instruments(store.engine)}
    finally:
        store.close()
    assert units["BTC-USD-PERP"] == "contracts" and units["BTC-USDT"] == "base"


TOKEN = ("2neAiuYvAU61ZDXANAGAsiL4-iAExhsBXZxftpOeh_55i3Ysy2q2LEsEWU64mdzUOPusi34M_wGoSf7iNyEWJ4aBZXpWhrmY9jKtqkdWoFa75w3"
         "istPvPtiYB9J6i9GjsxUuhPw3BlrzazF6ghq4L_Rl0b1fDlgpBXkhuBn0ZPqDWKGyuYQvhJe9ocaaT39-.mI1XV8bBDFHl_zpVVFTdFQ==")


def test_kucoin_bootstrap_against_a_local_replay(tmp_path: Path) -> None:
    """A KuCoin-style bootstrap (POST for a token and server) is answered by the replay from the
    session file, and the websocket then connects to the replay with that token."""
    bootstrap = {"code": "200000", "data": {"token": TOKEN,
                                                "instanceServers": [{"endpoint": "wss://ws-api-spot.kucoin.com/",
                                                                     "encrypt": True, "protocol": "websocket",
                                                                     "pingInterval": 18000, "pingTimeout": 10000}]}}
    session = tmp_path / "kucoin.jsonl"
    recorded = (EXCHANGES / "fixtures/kucoin/session.jsonl").read_text()
    session.write_text(json.dumps({"http": "/api/v1/bullet-public", "body": bootstrap}) + "\n" + recorded)
    golden = len((EXCHANGES / "fixtures/kucoin/golden.jsonl").read_text().splitlines())
    db = f"sqlite:///{tmp_path}/t.db"

    async def go() -> ReplayServer:
        server = ReplayServer(load_session(session), hold=True)
        url = await server.start()
        try:
            await collect(CollectOptions(exchanges=["kucoin"], urls={"kucoin": url}, db=db, duration=10,
                                         max_trades=golden, progress_interval=60, backfill=False,
                                         rest_urls={"kucoin": url.replace("ws://", "http://")}))
        finally:
            await server.close()
        return server

    server = asyncio.run(go())
    assert server.http_requests == ["POST /api/v1/bullet-public"]
    assert "token=2neAiuYvAU61" in server.paths[0]
    assert len(stored(db)) == golden


def test_symbols_per_exchange() -> None:
    """--symbols EXCHANGE:A,B applies to one exchange, a bare list to the others; errors name the exchange."""
    coinbase, binance = load_spec(EXCHANGES / "coinbase.yaml"), load_spec(EXCHANGES / "binance.yaml")
    planned = plan([coinbase, binance], ["ETH-USD"], {}, {"binance": ["BTCUSDT", "ethusdt"]})
    assert [(s.name, symbols) for s, symbols in planned] == [("coinbase", ["ETH-USD"]),
                                                             ("binance", ["BTC-USDT", "ETH-USDT"])]
    with pytest.raises(SymbolError, match="'kraken' is not among the exchanges collected"):
        plan([coinbase], None, {}, {"kraken": ["BTC-USD"]})
    listings = {"binance": parse_listing(binance, json.loads((EXCHANGES / "fixtures/binance/symbols.json").read_text()))}
    with pytest.raises(SymbolError, match=r"^binance: unknown symbol 'BTC-USD'"):
        plan([coinbase, binance], ["BTC-USD"], listings)
    with pytest.raises(SymbolError, match="--markets 'perp'"):
        plan([binance], None, listings, markets=["perp"])


def test_expired_future_requested_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A dated future whose expiry has passed is collected, with a warning naming exchange and symbol."""
    okx = load_spec(EXCHANGES / "okx.yaml")
    with caplog.at_level(logging.WARNING):
        planned = plan([okx], ["BTC-USD-200925"], {})
    assert planned[0][1] == ["BTC-USD-20200925"]
    assert "okx: BTC-USD-20200925 expired on 2020-09-25" in caplog.text


def test_stream_parameter_chooses_aggtrade() -> None:
    """-p stream=aggTrade turns binance into its aggregate-trade variant; binance-aggtrade is an
    alias of it; an unknown choice is a one-line error listing the values."""
    default = load_specs(["binance"], [])[0]
    chosen = load_specs(["binance"], [], {"": {"stream": "aggTrade"}})[0]
    alias = load_spec(EXCHANGES / "binance-aggtrade.yaml")
    assert (default.name, default.params, default.trade_ids) == ("binance", (("stream", "trade"),), "sequential")
    assert (chosen.name, chosen.trade_ids) == ("binance-aggtrade", "opaque")
    assert "@aggTrade" in str(chosen.url.render({"symbols": ["btcusdt"]}))
    assert alias.name == "binance-aggtrade" and alias.path.name == "binance-aggtrade.yaml"
    assert chosen.rest_trades is not None and "aggTrades" in str(chosen.rest_trades.url.render(
        {"symbol": "BTCUSDT", "from_id": "1"}))
    with pytest.raises(SpecError, match="binance: stream=aggtrade: expected one of trade, aggTrade"):
        load_specs(["binance"], [], {"binance": {"stream": "aggtrade"}})
    with pytest.raises(Exception, match="no exchange collected declares the parameter 'depth'"):
        load_specs(["coinbase"], [], {"": {"depth": "1"}})


def test_validate_checks_parameter_declarations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A default that is not a value, a value leaving a variable unset, and an unknown
    placeholder are each a located validate error."""
    text = (EXCHANGES / "binance.yaml").read_text()
    text = text.replace("    default: trade\n", "    default: trades\n", 1)
    text = text.replace("          trade_ids: opaque\n", "", 1)
    text = text.replace("'@{{stream}}'", "'@{{steam}}'", 1)
    (tmp_path / "binance.yaml").write_text(text)
    assert main(["validate", str(tmp_path / "binance.yaml")]) == 1
    out = capsys.readouterr().out
    assert "$.params.stream.default: default 'trades' is not one of the values: trade, aggTrade" in out
    assert "$.params.stream.values.aggTrade: sets no trade_ids (other values of stream do)" in out
    assert "unknown parameter {{steam}}" in out


def test_symbols_command_shows_and_saves_instruments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bitty symbols okx --rest-url ... --db ...` prints kinds and contract sizes and fills the instruments table."""
    session = okx_session(tmp_path, [])

    async def go() -> None:
        server = ReplayServer(load_session(session), hold=True)
        url = await server.start()
        try:
            db = f"sqlite:///{tmp_path}/i.db"
            code = await asyncio.to_thread(main, ["symbols", "okx", "--rest-url", url.replace("ws://", "http://"),
                                                  "--db", db, "--markets", "future,option"])
            assert code == 0
            store = Store(db)
            try:
                assert {i.normalized for i in read_instruments(store.engine, "okx")} == {
                    "BTC-USD-20270326", "BTC-USDT-20270326", "BTC-USD-20270326-100000-C", "BTC-USD-20270326-80000-P"}
            finally:
                store.close()
        finally:
            await server.close()

    asyncio.run(go())
    out = capsys.readouterr().out
    assert re.search(r"^BTC-USD-270326 +BTC-USD-20270326 +future +BTC +2027-03-26 +100 +contracts$", out, re.M)


def test_fetch_listings_follows_rest_url() -> None:
    """Every listing URL is redirected to --rest-url's origin, path and query kept."""
    okx = load_spec(EXCHANGES / "okx.yaml")

    async def go() -> list[str]:
        server = ReplayServer([], http={"/api/v5/public/instruments": json.dumps(OKX_LISTING).encode()})
        url = await server.start()
        try:
            listings = await fetch_listings([okx], {}, {"okx": url.replace("ws://", "http://")})
        finally:
            await server.close()
        assert "BTC-USDT-PERP" in {i.normalized for i in listings["okx"]}
        return server.http_requests

    requests = asyncio.run(go())
    assert len(requests) == 5 and requests[0] == "GET /api/v5/public/instruments?instType=SPOT"


def test_deribit_listing_perpetuals_futures_options_and_size_units() -> None:
    """Deribit's listing names perpetuals, dated futures and options; inverse contracts' sizes are
    USD (quote units, base = amount / price), options' are base coin."""
    spec = load_spec(EXCHANGES / "deribit.yaml")
    found = {i.native: i for i in parse_listing(spec, json.loads((EXCHANGES / "fixtures/deribit/symbols.json").read_text()))}
    assert found["BTC-PERPETUAL"].normalized == "BTC-USD-PERP" and found["BTC-PERPETUAL"].size_unit == "quote"
    assert found["BTC_USDC-PERPETUAL"].normalized == "BTC-USDC-PERP" and found["BTC_USDC-PERPETUAL"].size_unit == "base"
    future = found["BTC-27DEC24"]
    assert (future.normalized, future.kind, future.inverse, future.settle) == ("BTC-USD-20241227", "future", True, "BTC")
    option = found["BTC-13JAN23-16000-P"]
    assert (option.normalized, option.kind, option.size_unit) == ("BTC-USD-20230113-16000-P", "option", "base")
    assert base_size(Decimal("500"), Decimal("50000"), found["BTC-PERPETUAL"]) == Decimal("0.01")
    assert base_size(Decimal("0.1"), Decimal("0.02"), option) == Decimal("0.1")


def test_bitmex_and_binance_futures_listings_name_dated_contracts() -> None:
    """BitMEX lists inverse, quanto and dated contracts and spot; Binance USD-M its quarterlies."""
    bitmex = load_spec(EXCHANGES / "bitmex.yaml")
    found = {i.native: i for i in parse_listing(bitmex, json.loads((EXCHANGES / "fixtures/bitmex/symbols.json").read_text()))}
    assert (found["XBTUSD"].normalized, found["XBTUSD"].inverse, found["XBTUSD"].settle) == ("BTC-USD-PERP", True, "BTC")
    assert (found["ETHUSD"].normalized, found["ETHUSD"].settle) == ("ETH-USD-PERP", "BTC")  # quanto
    assert (found["XBTZ24"].normalized, found["XBTZ24"].kind) == ("BTC-USD-20241227", "future")
    assert found["XBT_USDT"].normalized == "BTC-USDT" and ".BXBT" not in found
    usdm = load_spec(EXCHANGES / "binance-futures.yaml")
    body = json.loads((EXCHANGES / "fixtures/binance-futures/symbols.json").read_text())
    found = {i.native: i for i in parse_listing(usdm, body)}
    assert (found["BTCUSDT_251226"].normalized, found["BTCUSDT_251226"].kind) == ("BTC-USDT-20251226", "future")
    assert found["BTCUSDT"].normalized == "BTC-USDT-PERP" and "SRMUSDT" not in found


def test_bybit_categories_are_choices_with_their_own_units() -> None:
    """bybit's category choice picks the endpoint, the names and the unit of sizes: base units
    for spot and linear contracts, USD (quote) for inverse ones, where base = size / price."""
    inverse = load_specs(["bybit"], [], {"bybit": {"category": "inverse"}})[0]
    assert inverse.name == "bybit-inverse" and inverse.default_symbols == ("BTC-USD-PERP", "ETH-USD-PERP")
    assert str(inverse.url.render({})) == "wss://stream.bybit.com/v5/public/inverse"
    body = json.loads((EXCHANGES / "fixtures/bybit-inverse/symbols.json").read_text())
    found = {i.native: i for i in parse_listing(inverse, body)}
    assert (found["BTCUSD"].normalized, found["BTCUSD"].size_unit, found["BTCUSD"].settle) == ("BTC-USD-PERP", "quote", "BTC")
    assert (found["BTCUSDZ25"].normalized, found["BTCUSDZ25"].kind) == ("BTC-USD-20251226", "future")
    assert base_size(Decimal("1500"), Decimal("75000"), found["BTCUSD"]) == Decimal("0.02")
    linear = load_spec(EXCHANGES / "bybit-linear.yaml")
    body = json.loads((EXCHANGES / "fixtures/bybit-linear/symbols.json").read_text())
    found = {i.native: i for i in parse_listing(linear, body)}
    assert (found["BTCUSDT"].normalized, found["BTCUSDT"].size_unit) == ("BTC-USDT-PERP", "base")
    assert found["BTC-26DEC25"].normalized == "BTC-USDC-20251226"
    spot = load_spec(EXCHANGES / "bybit.yaml")
    assert spot.symbols.suffix is None and spot.markets == ("spot",)  # a null variable removes its key


def test_bitfinex_derivative_pairs_are_perpetuals() -> None:
    """Bitfinex's derivatives listing (BASEF0:QUOTEF0) names perpetuals, settled in the quote."""
    spec = load_spec(EXCHANGES / "bitfinex.yaml")
    found = {i.native: i for i in parse_listing(spec, [["BTCF0:USTF0", "ETHF0:USTF0", "TESTBTCF0:TESTUSDTF0"]])}
    assert (found["tBTCF0:USTF0"].normalized, found["tBTCF0:USTF0"].kind) == ("BTC-USDT-PERP", "perpetual")
    assert found["tETHF0:USTF0"].settle == "USDT" and "tTESTBTCF0:TESTUSDTF0" not in found
    spot = {i.native: i for i in parse_listing(spec, [["BTCUSD", "DOGE:USD"]])}
    assert (spot["tBTCUSD"].normalized, spot["tDOGE:USD"].normalized) == ("BTC-USD", "DOGE-USD")


def test_binance_coinm_sizes_are_inverse_contracts() -> None:
    """COIN-M sizes are contracts of 100 USD (BTC) or 10 USD: base = contracts x size / price."""
    spec = load_spec(EXCHANGES / "binance-coinm.yaml")
    body = json.loads((EXCHANGES / "fixtures/binance-coinm/symbols.json").read_text())
    found = {i.native: i for i in parse_listing(spec, body)}
    btc = found["BTCUSD_PERP"]
    assert (btc.normalized, btc.size_unit, btc.contract_size, btc.inverse, btc.settle) == (
        "BTC-USD-PERP", "contracts", Decimal("100"), True, "BTC")
    assert found["ETHUSD_260327"].normalized == "ETH-USD-20260327" and "BTCUSD_250926" not in found  # delivered
    assert base_size(Decimal("12"), Decimal("80000"), btc) == Decimal("0.015")


def test_gateio_futures_sizes_are_contracts_signed_by_side() -> None:
    """Gate futures sizes are contracts (quanto_multiplier base units each), the sign is the taker side."""
    spec = load_spec(EXCHANGES / "gateio-futures.yaml")
    body = json.loads((EXCHANGES / "fixtures/gateio-futures/symbols.json").read_text())
    found = {i.native: i for i in parse_listing(spec, body)}
    btc = found["BTC_USDT"]
    assert (btc.normalized, btc.size_unit, btc.contract_size, btc.inverse) == (
        "BTC-USDT-PERP", "contracts", Decimal("0.0001"), False)
    assert "LUNA_USDT" not in found  # in delisting
    assert base_size(Decimal("108"), Decimal("37021.4"), btc) == Decimal("0.0108")


def test_kraken_futures_listing_and_a_name_collision(caplog: pytest.LogCaptureFixture) -> None:
    """Kraken Futures: flexible perpetuals in base units, inverse ones in 1 USD contracts, dated
    futures named by expiry; two instruments with one name are warned about, the later keeps its native name."""
    spec = load_spec(EXCHANGES / "kraken-futures.yaml")
    body = json.loads((EXCHANGES / "fixtures/kraken-futures/symbols.json").read_text())
    with caplog.at_level(logging.WARNING):
        found = {i.native: i for i in parse_listing(spec, body)}
    assert (found["PF_XBTUSD"].normalized, found["PF_XBTUSD"].size_unit) == ("BTC-USD-PERP", "base")
    inverse = found["PI_XBTUSD"]
    assert (inverse.normalized, inverse.size_unit, inverse.inverse, inverse.settle) == ("PI_XBTUSD", "contracts", True, "BTC")
    assert "kraken-futures: PF_XBTUSD and PI_XBTUSD would both be named BTC-USD-PERP" in caplog.text
    assert found["FI_XBTUSD_270326"].normalized == "BTC-USD-20270326" and "PF_OLDUSD" not in found


def test_a_run_without_listing_keeps_what_the_listing_said(tmp_path: Path) -> None:
    """Instruments named by the rules never overwrite the listing's rows (contract sizes stay)."""
    spec = load_spec(EXCHANGES / "okx.yaml")
    store = Store(f"sqlite:///{tmp_path}/i.db")
    try:
        store.open()
        save_instruments(store.engine, "okx", parse_listing(spec, OKX_LISTING))
        save_instruments(store.engine, "okx", [unlisted("BTC-USDT-SWAP", "BTC-USDT-PERP"), unlisted("XYZ-USDT", "XYZ-USDT")])
        rows = {i.native: i for i in read_instruments(store.engine, "okx")}
    finally:
        store.close()
    assert rows["BTC-USDT-SWAP"].source == "listing" and rows["BTC-USDT-SWAP"].contract_size == Decimal("0.01")
    assert rows["XYZ-USDT"].source == "guess"


def test_command_line_symbols_urls_and_params_per_exchange() -> None:
    """--symbols EXCHANGE:A,B, --url EXCHANGE=URL and -p EXCHANGE.NAME=VALUE parse per exchange;
    a Bitfinex native with a colon is not taken for an exchange name."""
    from bitty.cli import _params, _per_exchange, _symbols

    assert _symbols(["binance:BTCUSDT,ETHUSDT", "coinbase:BTC-USD", "ETH-USD", "tTESTBTC:TESTUSD"]) == (
        ["ETH-USD", "tTESTBTC:TESTUSD"], {"binance": ["BTCUSDT", "ETHUSDT"], "coinbase": ["BTC-USD"]})
    assert _per_exchange(["okx=ws://127.0.0.1:1", "ws://127.0.0.1:2/stream?streams=a"]) == (
        {"okx": "ws://127.0.0.1:1"}, "ws://127.0.0.1:2/stream?streams=a")
    assert _params(["stream=aggTrade", "bybit.category=linear"]) == {"": {"stream": "aggTrade"},
                                                                     "bybit": {"category": "linear"}}
    with pytest.raises(Exception, match="expected NAME=VALUE"):
        _params(["stream"])


def test_unlisted_instruments_take_their_size_unit_from_the_spec(tmp_path: Path) -> None:
    """Without a listing, the spec's symbols.size_units gives the unit of each rule-named
    instrument (OKX swaps, futures, options: contracts; spot: base), so the trades_base view gives
    no base quantity where the contract size is unknown instead of taking contracts for coins."""
    natives = ["BTC-USDT", "BTC-USDT-SWAP", "BTC-USD-270326", "BTC-USD-270326-100000-C"]
    session = okx_session(tmp_path, natives, http=False)
    db = f"sqlite:///{tmp_path}/t.db"
    asyncio.run(run_collect(session, db, {"symbols": natives,
                                          "symbol_list_urls": {"okx": "http://127.0.0.1:9/none"}}, 4))
    store = Store(db)
    try:
        rows = {i.native: (i.kind, i.size_unit, i.source) for i in read_instruments(store.engine, "okx")}
        with store.engine.connect() as conn:
            base = dict(conn.execute(sa.text("SELECT symbol, base_size FROM trades_base")).all())
    finally:
        store.close()
    assert rows == {"BTC-USDT": ("spot", "base", "guess"), "BTC-USDT-SWAP": ("perpetual", "contracts", "guess"),
                    "BTC-USD-270326": ("future", "contracts", "guess"),
                    "BTC-USD-270326-100000-C": ("option", "contracts", "guess")}
    assert base == {"BTC-USDT": "3", "BTC-USDT-PERP": None, "BTC-USD-20270326": None,
                    "BTC-USD-20270326-100000-C": None}


def test_size_units_by_kind_and_quote() -> None:
    """A `kind/QUOTE` entry of symbols.size_units beats the kind's; a kind not named is base."""
    from bitty.markets.instruments import unlisted

    rules = load_spec(EXCHANGES / "deribit.yaml").symbols
    assert unlisted("BTC-27DEC24", "BTC-USD-20241227", rules).size_unit == "quote"
    assert unlisted("BTC_USDC-PERPETUAL", "BTC-USDC-PERP", rules).size_unit == "base"
    assert unlisted("BTC-27DEC24-100000-C", "BTC-USD-20241227-100000-C", rules).size_unit == "base"
