"""64-bit ids on PostgreSQL: ``trades.id`` (and every table's id) BIGINT, its sequence too.

A serial column is a 32-bit INTEGER fed by a 32-bit sequence: about 2.1 billion trades, which a
collector of many symbols reaches in months. SQLite is unchanged: its INTEGER PRIMARY KEY is the
64-bit rowid already. On PostgreSQL, ALTER COLUMN TYPE rewrites the table under an exclusive
lock: 12.6 s for a million rows on a small two-core machine, tens of minutes per hundred million.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("trades", "quarantine", "runs", "coverage", "gaps", "run_counts")


def upgrade() -> None:
    _ids("bigint")


def downgrade() -> None:
    _ids("integer")


def _ids(kind: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN id TYPE {kind}")
        sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": table}).scalar()
        if sequence is not None:
            op.execute(f"ALTER SEQUENCE {sequence} AS {kind}")
