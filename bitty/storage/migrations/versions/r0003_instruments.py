"""Instruments: what each exchange lists (kind, settlement, expiry, strike, contract size, the unit
its trade sizes are counted in), filled from its listing or, without one, from the native code.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of the column types (tables.py moves on; this file must not).
DECIMAL = sa.Numeric(asdecimal=True).with_variant(sa.String(), "sqlite")
TIME = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "instruments",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("exchange", sa.String(64), nullable=False),
        sa.Column("native", sa.String(128), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("base", sa.String(32), nullable=True),
        sa.Column("quote", sa.String(32), nullable=True),
        sa.Column("settle", sa.String(32), nullable=True),
        sa.Column("expiry", sa.Date, nullable=True),
        sa.Column("strike", DECIMAL, nullable=True),
        sa.Column("option_right", sa.String(1), nullable=True),
        sa.Column("contract_size", DECIMAL, nullable=True),
        sa.Column("inverse", sa.Boolean, nullable=False),
        sa.Column("size_unit", sa.String(16), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.UniqueConstraint("exchange", "native", name="instruments_exchange_native"),
    )
    op.create_index("instruments_exchange_symbol", "instruments", ["exchange", "symbol"])


def downgrade() -> None:
    op.drop_index("instruments_exchange_symbol", "instruments")
    op.drop_table("instruments")
