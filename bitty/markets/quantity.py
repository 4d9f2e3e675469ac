"""Trades in base units: each stored trade with its quantity in the base asset, where its
instrument's unit (and contract size) lets it be derived.

The database view ``trades_base`` (migration 0005) gives the same column to SQL users; on SQLite
its arithmetic is floating point, so bitty's own readers use this module, which computes with
``Decimal`` on every database (``bitty.markets.instruments.base_size``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from bitty.markets.instruments import Instrument, base_size
from bitty.storage import tables
from bitty.trade import Trade

TRADE_COLUMNS = ("exchange", "symbol", "trade_id", "price", "size", "side", "time", "received_at")


@dataclass(frozen=True)
class BaseQuantity:
    trade: Trade
    size_unit: str | None  # base | contracts | quote; None: the symbol has no instruments row
    base_size: Decimal | None  # None: not derivable (no instrument row, no contract size, price 0)


def base_quantities(engine: sa.Engine, exchange: str, symbol: str | None = None) -> list[BaseQuantity]:
    """The exchange's stored trades (of one symbol), oldest id first, with their base quantity."""
    t, i = tables.trades, tables.instruments
    query = (sa.select(*(t.c[c] for c in TRADE_COLUMNS), i.c.size_unit, i.c.contract_size, i.c.inverse)
             .select_from(t.outerjoin(i, sa.and_(i.c.exchange == t.c.exchange, i.c.symbol == t.c.symbol)))
             .where(t.c.exchange == exchange).order_by(t.c.id))
    if symbol is not None:
        query = query.where(t.c.symbol == symbol)
    out = []
    with engine.connect() as conn:
        for row in conn.execute(query):
            trade = Trade(*row[:len(TRADE_COLUMNS)])
            unit, contract, inverse = row[len(TRADE_COLUMNS):]
            if unit is None:
                out.append(BaseQuantity(trade, None, None))
                continue
            instrument = Instrument(trade.symbol, trade.symbol, contract_size=contract, inverse=bool(inverse),
                                    size_unit=unit)
            out.append(BaseQuantity(trade, unit, base_size(trade.size, trade.price, instrument)))
    return out
