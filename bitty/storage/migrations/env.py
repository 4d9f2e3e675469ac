"""Alembic's entry point: runs the migrations on the connection ``bitty.storage.migrate`` passes,
inside its transaction (and, on PostgreSQL, its advisory lock)."""

from __future__ import annotations

from alembic import context

from bitty.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("bitty's migrations run through bitty.storage.migrate.upgrade(engine), not the alembic command")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
