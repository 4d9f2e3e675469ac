"""Many collectors: each run's identity and lease (``runs.key``, ``name``, ``shard``,
``lease_until``), the run that was connected (``coverage.run_key``), and a key for gaps that
arrive over NATS (``gaps.key``). All nullable: rows written before keep their meaning.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("name", sa.String(255), nullable=True))
        batch.add_column(sa.Column("shard", sa.String(16), nullable=True))
        batch.add_column(sa.Column("lease_until", TIME, nullable=True))
        batch.create_unique_constraint("runs_key", ["key"])
    with op.batch_alter_table("coverage") as batch:
        batch.add_column(sa.Column("run_key", sa.String(64), nullable=True))
    with op.batch_alter_table("gaps") as batch:
        batch.add_column(sa.Column("key", sa.String(96), nullable=True))
        batch.create_unique_constraint("gaps_key", ["key"])


def downgrade() -> None:
    with op.batch_alter_table("gaps") as batch:
        batch.drop_constraint("gaps_key", type_="unique")
        batch.drop_column("key")
    with op.batch_alter_table("coverage") as batch:
        batch.drop_column("run_key")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("runs_key", type_="unique")
        for column in ("lease_until", "shard", "name", "key"):
            batch.drop_column(column)
