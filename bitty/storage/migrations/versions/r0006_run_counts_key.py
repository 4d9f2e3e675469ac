"""A key for the counts a run reports over NATS (``run_counts.key``, unique): ``bitty sink``
stores a redelivered ``run_counts`` event once. Nullable: rows written before, and rows a
collector writes to its own database, have none.

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_counts") as batch:
        batch.add_column(sa.Column("key", sa.String(160), nullable=True))
        batch.create_unique_constraint("run_counts_key", ["key"])


def downgrade() -> None:
    with op.batch_alter_table("run_counts") as batch:
        batch.drop_constraint("run_counts_key", type_="unique")
        batch.drop_column("key")
