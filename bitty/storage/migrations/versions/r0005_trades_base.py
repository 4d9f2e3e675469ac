"""The view ``trades_base``: every trade with its instrument's size unit, contract size and inverse
flag, and ``base_size``, the trade's quantity in the base asset where it can be derived:

- ``size`` when the instrument's sizes are base units;
- ``size * contract_size`` for contracts of a linear instrument (contract size in base units);
- ``size * contract_size / price`` for contracts of an inverse one (contract size in quote units,
  e.g. 100 USD);
- ``size / price`` for sizes in quote units (Deribit's inverse ``amount`` in USD);
- NULL when the trade's symbol has no row in ``instruments``, or a contract size is unknown.

PostgreSQL computes it in NUMERIC: products exactly, quotients rounded by PostgreSQL's numeric
division (at least 16 significant digits). SQLite keeps decimals as text, and its arithmetic is
floating point: there ``base_size`` is the exact text of ``size`` for base units and a REAL
(about 15 significant digits) otherwise; ``bitty.markets.quantity.base_quantities`` computes it
exactly in Python on either database.

Revision ID: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen here (a later migration that changes the view drops and re-creates it).
VIEW = """
CREATE VIEW trades_base AS
SELECT t.id, t.exchange, t.symbol, t.trade_id, t.price, t.size, t.side, t.time, t.received_at,
       i.kind, i.size_unit, i.contract_size, i.inverse,
       CASE
         WHEN i.size_unit = 'base' THEN t.size
         WHEN i.size_unit = 'quote' THEN {size} / NULLIF({price}, 0)
         WHEN i.size_unit = 'contracts' AND i.inverse THEN {size} * {contract} / NULLIF({price}, 0)
         WHEN i.size_unit = 'contracts' THEN {size} * {contract}
       END AS base_size
FROM trades t
LEFT JOIN instruments i ON i.exchange = t.exchange AND i.symbol = t.symbol
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # decimal text: arithmetic needs numbers
        columns = {"size": "CAST(t.size AS REAL)", "price": "CAST(t.price AS REAL)",
                   "contract": "CAST(i.contract_size AS REAL)"}
    else:
        columns = {"size": "t.size", "price": "t.price", "contract": "i.contract_size"}
    op.execute(VIEW.format(**columns))


def downgrade() -> None:
    op.execute("DROP VIEW trades_base")
