"""``bitty demo``: the whole pipeline offline. Bundled fixture sessions are served by local
replay servers, collected by the real engine into SQLite, and what was stored is printed."""

from __future__ import annotations

import sys

import sqlalchemy as sa

from bitty.commands.replay import ReplayServer, load_session
from bitty.pipeline import CollectOptions, collect
from bitty.spec import files as paths
from bitty.spec.load import find_spec, spec_files
from bitty.storage.store import Store
from bitty.storage.tables import trades

DEFAULT_EXCHANGES = ("coinbase", "binance", "kraken", "bitstamp")


async def demo(db: str, exchanges: list[str] | None = None) -> int:
    files = spec_files(paths.spec_dirs())
    names = exchanges or [n for n in DEFAULT_EXCHANGES if n in files]
    servers: dict[str, ReplayServer] = {}
    try:
        for name in names:
            session = paths.fixtures_dir(find_spec(name)) / "session.jsonl"
            server = ReplayServer(load_session(session))
            await server.start()
            servers[name] = server
            print(f"replaying {name} on {server.url}", file=sys.stderr)
        result = await collect(CollectOptions(
            exchanges=names, urls={n: s.url for n, s in servers.items()}, db=db,
            reconnect=False, progress_interval=3600,
        ))
    finally:
        for server in servers.values():
            await server.close()
    _print_summary(db)
    print(f"\n{result.received} trades received, {result.stored} new rows stored in {db}, "
          f"{result.duplicates} duplicates ignored, {result.quarantined} frames quarantined")
    return 1 if result.failures else 0


def _print_summary(db: str) -> None:
    store = Store(db)
    try:
        with store.engine.connect() as conn:
            counts = conn.execute(
                sa.select(trades.c.exchange, trades.c.symbol, sa.func.count())
                .group_by(trades.c.exchange, trades.c.symbol).order_by(trades.c.exchange, trades.c.symbol)
            ).all()
        print(f"{'exchange':<12} {'symbol':<14} {'trades':>7}")
        for exchange, symbol, count in counts:
            print(f"{exchange:<12} {symbol:<14} {count:>7}")
        print()
        print(f"{'exchange':<10} {'symbol':<10} {'trade_id':<14} {'side':<4} {'price':>14} {'size':>14}  time")
        for trade in store.read_trades()[-12:]:
            print(f"{trade.exchange:<10} {trade.symbol:<10} {trade.trade_id[:14]:<14} {trade.side:<4} "
                  f"{format(trade.price, 'f'):>14} {format(trade.size, 'f'):>14}  {trade.time:%Y-%m-%d %H:%M:%S.%f}")
    finally:
        store.close()
