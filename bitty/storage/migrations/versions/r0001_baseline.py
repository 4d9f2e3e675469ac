"""Baseline: the tables as bitty created them before migrations (``create_all``, 32-bit ids).

A database created by that bitty already holds some or all of them: only the missing ones are
created, so adopting it needs no special case.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types of that time (tables.py moves on; this file must not):
# prices NUMERIC (decimal text on SQLite), times timezone-aware.
DECIMAL = sa.Numeric(asdecimal=True).with_variant(sa.String(), "sqlite")
TIME = sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)



def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "trades" not in existing:
        op.create_table(
            "trades", _id(),
            sa.Column("exchange", sa.String(64), nullable=False),
            sa.Column("symbol", sa.String(64), nullable=False),
            sa.Column("trade_id", sa.String(128), nullable=False),
            sa.Column("price", DECIMAL, nullable=False),
            sa.Column("size", DECIMAL, nullable=False),
            sa.Column("side", sa.String(4), nullable=False),
            sa.Column("time", TIME, nullable=False),
            sa.Column("received_at", TIME, nullable=False),
            sa.UniqueConstraint("exchange", "symbol", "trade_id", name="trades_exchange_symbol_trade_id"),
        )
        op.create_index("trades_exchange_symbol_time", "trades", ["exchange", "symbol", "time"])
    if "quarantine" not in existing:
        op.create_table(
            "quarantine", _id(),
            sa.Column("exchange", sa.String(64), nullable=False),
            sa.Column("spec_version", sa.Integer, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("frame", sa.Text, nullable=False),
            sa.Column("received_at", TIME, nullable=False),
        )
    if "runs" not in existing:
        op.create_table(
            "runs", _id(),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("exchanges", sa.Text, nullable=False),
            sa.Column("started_at", TIME, nullable=False),
            sa.Column("alive_at", TIME, nullable=False),
            sa.Column("stopped_at", TIME, nullable=True),
            sa.Column("status", sa.String(16), nullable=False),
        )
    if "coverage" not in existing:
        op.create_table(
            "coverage", _id(),
            sa.Column("exchange", sa.String(64), nullable=False),
            sa.Column("symbol", sa.String(64), nullable=False),
            sa.Column("started_at", TIME, nullable=False),
            sa.Column("ended_at", TIME, nullable=True),
            sa.Column("end_reason", sa.Text, nullable=True),
        )
        op.create_index("coverage_exchange_symbol_started", "coverage", ["exchange", "symbol", "started_at"])
    if "gaps" not in existing:
        op.create_table(
            "gaps", _id(),
            sa.Column("exchange", sa.String(64), nullable=False),
            sa.Column("symbol", sa.String(64), nullable=False),
            sa.Column("from_time", TIME, nullable=False),
            sa.Column("to_time", TIME, nullable=True),
            sa.Column("cause", sa.String(16), nullable=False),
            sa.Column("from_id", sa.String(128), nullable=True),
            sa.Column("to_id", sa.String(128), nullable=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("backfilled", sa.Integer, nullable=False),
            sa.Column("duplicates", sa.Integer, nullable=False),
            sa.Column("opened_at", TIME, nullable=False),
            sa.Column("closed_at", TIME, nullable=True),
        )
        op.create_index("gaps_exchange_symbol_from", "gaps", ["exchange", "symbol", "from_time"])
    if "run_counts" not in existing:
        op.create_table(
            "run_counts", _id(),
            sa.Column("exchange", sa.String(64), nullable=False),
            sa.Column("started_at", TIME, nullable=False),
            sa.Column("ended_at", TIME, nullable=False),
            sa.Column("received", sa.Integer, nullable=False),
            sa.Column("stored", sa.Integer, nullable=False),
            sa.Column("duplicates", sa.Integer, nullable=False),
            sa.Column("quarantined", sa.Integer, nullable=False),
        )


def downgrade() -> None:
    for name in ("run_counts", "gaps", "coverage", "runs", "quarantine", "trades"):
        op.drop_table(name)
