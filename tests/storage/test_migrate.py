"""Schema migrations on SQLite and the real PostgreSQL: head equals tables.py, a database made by
the schema before migrations is adopted and upgraded with its rows, collectors started together
migrate a fresh database once, and SQLite keeps every time in one sortable UTC text form."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from bitty.storage import migrate
from bitty.storage.ledger import Ledger
from bitty.storage.store import Store, database_url
from bitty.storage.tables import gaps, metadata, runs, trades
from bitty.trade import Trade
from tests.conftest import ROOT

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def trade(n: int) -> Trade:
    return Trade("testex", "BTC-USD", str(n), Decimal("100.5"), Decimal("0.01"), "buy", T0 + timedelta(seconds=n), T0)


def create_previous_schema(engine: sa.Engine) -> None:
    """The tables as bitty created them before migrations (create_all, 32-bit ids): the baseline
    revision, without the alembic_version table that marks a migrated database."""
    from alembic import command

    cfg = migrate.config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0001")
        connection.exec_driver_sql("DROP TABLE alembic_version")


def id_types(engine: sa.Engine) -> dict[str, tuple[str, str]]:
    """PostgreSQL: (column type, sequence type) of every table's id."""
    query = sa.text(
        "SELECT c.table_name, c.data_type, s.data_type FROM information_schema.columns c "
        "JOIN information_schema.sequences s ON s.sequence_schema = c.table_schema "
        "AND s.sequence_name = c.table_name || '_id_seq' "
        "WHERE c.table_schema = current_schema() AND c.column_name = 'id'")
    with engine.connect() as conn:
        return {row[0]: (row[1], row[2]) for row in conn.execute(query)}


def test_schema_at_head_equals_tables(db_url: str) -> None:
    """The migrations build exactly the tables tables.py describes (a change there needs a migration)."""
    store = Store(db_url)
    store.open()
    with store.engine.connect() as conn:
        assert migrate.current(conn) == migrate.head()
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata) == []
    store.close()


def test_database_of_the_previous_schema_is_upgraded_and_keeps_its_rows(db_url: str) -> None:
    """A database made by create_all of the pre-migration tables is adopted, upgraded to head
    (64-bit ids on PostgreSQL), and keeps every row."""
    engine = sa.create_engine(database_url(db_url))
    create_previous_schema(engine)
    with engine.begin() as conn:
        conn.execute(trades.insert(), [t.as_row() for t in (trade(1), trade(2))])
        conn.execute(gaps.insert().values(exchange="testex", symbol="BTC-USD", from_time=T0, cause="disconnect",
                                          status="open", reason="", backfilled=0, duplicates=0, opened_at=T0))
        conn.execute(runs.insert().values(host="h", pid=1, exchanges="testex", started_at=T0, alive_at=T0,
                                          status="stopped"))
        assert migrate.current(conn) is None
    if engine.dialect.name == "postgresql":
        assert id_types(engine)["trades"] == ("integer", "integer")
    engine.dispose()

    store = Store(db_url)
    store.open()
    with store.engine.connect() as conn:
        assert migrate.current(conn) == migrate.head()
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata) == []
    assert [t.trade_id for t in store.read_trades()] == ["1", "2"]
    assert [g.status for g in Ledger(store.engine).gaps("testex")] == ["open"]
    assert store.count(runs) == 1
    if store.dialect == "postgresql":
        assert set(id_types(store.engine).values()) == {("bigint", "bigint")}
        with store.engine.begin() as conn:
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('trades', 'id'), 3000000000)"))
    else:  # SQLite: INTEGER PRIMARY KEY is the 64-bit rowid, before and after
        with store.engine.begin() as conn:
            conn.execute(trades.insert().values(id=3000000000, **trade(3).as_row()))
    assert store.write([trade(4)]) == [trade(4)]
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(trades.c.id).where(trades.c.trade_id == "4")).scalar_one() > 2**31
    store.close()


def test_stores_opened_together_in_one_process_migrate_once(db_url: str) -> None:
    """Four stores opened at the same instant by four threads on an empty database all open, and
    the schema is created once (no duplicate pg_type race, no two Alembic runs at once)."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start() -> None:
        store = Store(db_url)
        try:
            barrier.wait(timeout=10)
            store.open()
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert errors == []
    store = Store(db_url)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert migrate.current(conn) == migrate.head()
    store.close()


@pytest.mark.parametrize("scheme", ["postgres://", "postgresql://"])
def test_postgres_urls_use_psycopg(pg_url: str, scheme: str) -> None:
    """postgres:// and postgresql:// URLs open PostgreSQL through psycopg (the postgres extra)."""
    store = Store(pg_url.replace("postgresql+psycopg://", scheme))
    assert store.engine.driver == "psycopg"
    store.open()
    assert store.write([trade(1)]) == [trade(1)]
    store.close()


def test_sqlite_times_are_one_sortable_utc_text(sqlite_url: str) -> None:
    """Every time SQLite holds (trades by the fast path, the ledger through SQLAlchemy) is
    'YYYY-MM-DD HH:MM:SS.ffffff' in UTC, so text order is time order; the README's query works."""
    store = Store(sqlite_url)
    store.open()
    east = datetime(2024, 1, 2, 9, 4, 5, tzinfo=timezone(timedelta(hours=3)))  # 06:04:05 UTC
    store.write([trade(1), Trade("testex", "BTC-USD", "2", Decimal(1), Decimal(1), "sell", east, east)])
    ledger = Ledger(store.engine)
    ledger.open_gap("testex", "BTC-USD", T0, "disconnect", "1", east)
    with store.engine.connect() as conn:
        texts = [row[0] for row in conn.exec_driver_sql(
            "SELECT time FROM trades UNION ALL SELECT received_at FROM trades "
            "UNION ALL SELECT from_time FROM gaps UNION ALL SELECT opened_at FROM gaps")]
        assert texts and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", t) for t in texts), texts
        assert "2024-01-02 03:04:06.000000" in texts and "2024-01-02 06:04:05.000000" in texts
        # docs/storage.md: trades of one hour, by text comparison
        rows = conn.exec_driver_sql(
            "SELECT trade_id, time FROM trades WHERE time >= '2024-01-02 06:00:00' AND time < '2024-01-02 07:00:00' "
            "ORDER BY time").all()
    assert rows == [("2", "2024-01-02 06:04:05.000000")]
    store.close()


OPEN_WHEN_TOLD = """
import pathlib, sys, time
from bitty.storage.store import Store
store = Store(sys.argv[1])
go = pathlib.Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
store.open()
store.close()
"""


def test_collectors_started_together_migrate_a_fresh_database_once(db_url: str, tmp_path: Path) -> None:
    """Four collector processes opening a fresh database at once (one SQLite file, one PostgreSQL
    schema) all start, and the schema is created once."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_WHEN_TOLD, db_url, str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()
        results = [proc.communicate(timeout=40) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], [err for _, err in results]
    store = Store(db_url)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert migrate.current(conn) == migrate.head()
    store.close()
