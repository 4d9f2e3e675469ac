"""Bringing a database's schema up to date: the Alembic migrations in ``migrations/``, run by
``Store.open``.

Every schema change is a migration (``migrations/versions/``); ``tables.py`` describes the
schema they lead to. A database created before migrations existed (``create_all`` of the tables,
no ``alembic_version``) is adopted: the baseline migration creates only the tables it lacks, and
the later ones upgrade it. The upgrade holds a lock (PostgreSQL: an advisory lock, in one
transaction; SQLite: the database's write lock), so collectors started together on a fresh
database migrate it once, one after the other.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)
# Alembic narrates every step at INFO, from its import on (plugins, DDL mode, each revision):
# bitty logs one line per upgrade instead, and keeps Alembic's warnings. Alembic is imported
# only here, after this, and only by what opens a database for writing.
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock's key for schema upgrades: any constant shared by every bitty ("bitty" in ASCII).
LOCK_KEY = 0x6269747479
# Alembic runs a migration through module-level state (``alembic.context``, ``alembic.op``):
# one upgrade at a time in a process.
_UPGRADING = threading.Lock()


def config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    """The newest revision shipped with this bitty."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: sa.Connection) -> str | None:
    """The revision a database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine) -> None:
    """Upgrade the database to the newest revision (a no-op when it is there already)."""
    from alembic import command

    cfg = config()
    with engine.connect() as connection:
        if current(connection) == head():
            return  # the usual case: no lock taken, so a database busy with writes still opens
    with _UPGRADING, engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Held to the end of this transaction; a second collector waits here, then finds
            # the schema at head (PostgreSQL's DDL is transactional: all or nothing).
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        elif engine.dialect.name == "sqlite":
            # The database's write lock, taken now rather than at the first write (the sqlite3
            # module starts no transaction before DDL): the same, for collectors sharing a file.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        before = current(connection)
        if before == head():
            return
        if before is None and sa.inspect(connection).has_table("trades"):
            logger.info("database created before schema migrations: adopting it")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        logger.info("database schema upgraded from %s to %s", before or "nothing", head())
