"""The database: tables and batched, idempotent inserts through SQLAlchemy.

Prices and sizes are exact: NUMERIC on PostgreSQL, decimal text on SQLite (whose NUMERIC is a
float). Times are UTC. ``(exchange, symbol, trade_id)`` is unique and a repeated trade is
ignored and counted, so replays and reconnects never store a trade twice.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bitty.errors import SinkError
from bitty.storage import migrate
from bitty.storage.tables import quarantine, trades
from bitty.trade import THREE_DIGITS, Quarantined, SecondText, Trade

UTC = UTC


TRADE_COLUMNS = ("exchange", "symbol", "trade_id", "price", "size", "side", "time", "received_at")


class Store:
    """A database holding trades; ``write`` inserts a batch and reports which rows were new."""

    def __init__(self, url: str) -> None:
        url = database_url(url)
        self.url = url
        try:
            connect_args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
            self.engine = sa.create_engine(url, future=True, pool_pre_ping=True, connect_args=connect_args)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise SinkError(f"cannot use database {url!r}: {exc}") from None
        self.dialect = self.engine.dialect.name
        self._sqlite_rows = _SQLITE_ROWS
        self._pg_direct = True
        if self.dialect not in ("sqlite", "postgresql"):
            raise SinkError(f"database {self.dialect!r} is not supported: use sqlite:// or postgresql://")

    def open(self) -> None:
        """Connect, and bring the schema up to date (``bitty.storage.migrate``)."""
        try:
            if self.dialect == "sqlite":
                # Before anything else: switching to WAL fails at once (no waiting) while another
                # connection, a second collector's, is inside a transaction; once WAL, it is a no-op.
                with self.engine.begin() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            migrate.upgrade(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise SinkError(f"cannot open database {self.engine.url!r}: {_reason(exc)}") from None
        if self.dialect == "sqlite" and sqlite3.sqlite_version_info < (3, 32):
            self._sqlite_rows = 64

    def close(self) -> None:
        self.engine.dispose()

    def _insert(self) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(trades).on_conflict_do_nothing(
                index_elements=["exchange", "symbol", "trade_id"])
        return sqlite.insert(trades).on_conflict_do_nothing(index_elements=["exchange", "symbol", "trade_id"])

    def write(self, batch: Sequence[Trade], quarantined: Sequence[Quarantined] = (),
              also: Callable[[sa.Connection], object] | None = None) -> list[Trade]:
        """Insert trades (and quarantined frames) in one transaction; returns the trades that
        were new, in order. A failure writes nothing, so the caller can retry the same batch.
        ``also(conn)`` runs in the same transaction (``bitty sink``'s ledger events)."""
        driver_error = self.engine.dialect.loaded_dbapi.Error
        try:
            return self._write(batch, quarantined, also)
        except (sa.exc.SQLAlchemyError, driver_error) as exc:
            # A connection broken mid-transaction can fail its next ping in ways the pool does
            # not recognize as a disconnect; start the next attempt from fresh connections.
            self.engine.dispose()
            if isinstance(exc, sa.exc.SQLAlchemyError):
                raise
            # The COPY paths use the driver's cursor directly: its errors are SQLAlchemy's too.
            raise sa.exc.DBAPIError.instance(None, None, exc, driver_error) from exc

    def _write(self, batch: Sequence[Trade], quarantined: Sequence[Quarantined],
               also: Callable[[sa.Connection], object] | None = None) -> list[Trade]:
        inserted: set[tuple[str, str, str]] | None = set()
        with self.engine.begin() as conn:
            if batch:
                inserted = self._insert_trades(conn, batch)
            if quarantined:
                conn.execute(quarantine.insert(), [
                    {"exchange": q.exchange, "spec_version": q.spec_version, "reason": q.reason,
                     "frame": q.frame, "received_at": q.received_at}
                    for q in quarantined
                ])
            if also is not None:
                also(conn)
        if inserted is None:  # every row was new
            return list(batch)
        out = []
        for trade in batch:
            key = (trade.exchange, trade.symbol, trade.trade_id)
            if key in inserted:
                inserted.discard(key)  # a trade repeated inside one batch is new only once
                out.append(trade)
        return out

    def _insert_trades(self, conn: sa.Connection, batch: Sequence[Trade]) -> set[tuple[str, str, str]] | None:
        """Insert, skipping known (exchange, symbol, trade_id); the keys of the rows inserted, or
        None when every row was inserted (the usual case, which needs no keys read back).

        The generic statement binds every value through the column types; the driver-level
        paths below send text: sqlite3's multi-row statements, and psycopg's COPY, straight into
        the table or into a temporary one followed by one INSERT ... SELECT ... ON CONFLICT DO NOTHING.
        """
        if self.dialect == "sqlite":
            return _sqlite_insert(conn, batch, self._sqlite_rows)
        if self.dialect == "postgresql" and self.engine.driver == "psycopg":
            inserted = _postgresql_insert(conn, batch, self._pg_direct)
            # Straight into the table while batches hold only new trades; after one that held
            # known trades (a replay after a reconnect, a backfill), the staging path first.
            self._pg_direct = inserted is None
            return inserted
        statement = self._insert().returning(trades.c.exchange, trades.c.symbol, trades.c.trade_id)
        inserted = {tuple(r) for r in conn.execute(statement, [t.as_row() for t in batch])}
        return None if len(inserted) == len(batch) else inserted

    def read_trades(self, exchange: str | None = None) -> list[Trade]:
        query = sa.select(*(trades.c[c] for c in TRADE_COLUMNS)).order_by(trades.c.id)
        if exchange:
            query = query.where(trades.c.exchange == exchange)
        with self.engine.connect() as conn:
            return [Trade(*row) for row in conn.execute(query)]

    def count(self, table: sa.Table = trades) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def database_url(url: str) -> str:
    """``postgres://`` (Heroku, libpq) and ``postgresql://`` name bitty's PostgreSQL driver,
    psycopg 3 (the ``postgres`` extra); SQLAlchemy's own default there is psycopg2."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


# Many rows per statement: the sqlite3 module releases the GIL around every step, and a writer
# thread wins it back from a busy reader thread only after up to a switch interval (5 ms), so
# the statements a batch takes, not its rows, bound how fast it is written. A statement holds up
# to 2,048 rows (16,384 parameters, under SQLite's limit of 32,766 since 3.32; 999 before, where
# it holds 64). Its rows are a power of two: a prepared statement of 2,000 rows takes about 2 MB,
# and the sqlite3 module caches 128 of them per connection, so batches of every size would hold
# hundreds of MB. The rest of a batch is padded up to the next power of two with copies of its
# last row, which the unique key skips: SQLite's work, done without the GIL, for one statement
# instead of several.
_SQLITE_ROWS = 2048


def _padded(rows: int) -> int:
    """The statement size for ``rows`` rows: the next power of two."""
    return 1 << (rows - 1).bit_length()


@functools.lru_cache(maxsize=16)  # powers of two up to 2,048: twelve texts
def _sqlite_statement(rows: int) -> str:
    return (
        "INSERT INTO trades (exchange, symbol, trade_id, price, size, side, time, received_at) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
        + " ON CONFLICT (exchange, symbol, trade_id) DO NOTHING"
    )


_SECONDS = SecondText(" ")


def _utc_text(moment: datetime) -> str:
    """Naive UTC text with six fraction digits: what SQLAlchemy's SQLite DateTime stores (so reads
    see no difference) and what the PostgreSQL staging table reads."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    micro = moment.microsecond
    return _SECONDS(moment) + "." + THREE_DIGITS[micro // 1000] + THREE_DIGITS[micro % 1000]


def _text_rows(batch: Sequence[Trade], zone: str = "") -> list[tuple[str, ...]]:
    """The trade columns as text: decimals without exponents and times as naive UTC text with six
    fraction digits, which is what SQLAlchemy writes to SQLite and what PostgreSQL parses, with
    ``zone`` after them."""
    rows: list[tuple[str, ...]] = []
    received_at, received = None, ""
    for t in batch:
        if t.received_at is not received_at:  # a frame's trades share it
            received_at, received = t.received_at, _utc_text(t.received_at) + zone
        # str() is a third of format(, "f") and equal to it unless it chose an exponent.
        price, size = str(t.price), str(t.size)
        if "E" in price:
            price = format(t.price, "f")
        if "E" in size:
            size = format(t.size, "f")
        rows.append((t.exchange, t.symbol, t.trade_id, price, size, t.side, _utc_text(t.time) + zone, received))
    return rows


def _sqlite_insert(conn: sa.Connection, batch: Sequence[Trade], per_statement: int) -> set[tuple[str, str, str]] | None:
    raw = conn.connection.driver_connection
    assert raw is not None
    before = raw.total_changes
    rows = _text_rows(batch)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start:start + per_statement]
        size = _padded(len(chunk))
        chunk += [chunk[-1]] * (size - len(chunk))  # copies the unique key skips
        conn.exec_driver_sql(_sqlite_statement(size), tuple(itertools.chain.from_iterable(chunk)))
    added = raw.total_changes - before
    if added == len(batch):
        return None
    if not added:
        return set()
    # This transaction has held SQLite's write lock since its first insert, and new rows get
    # ids above every existing one: the newest ``added`` rows are exactly the ones inserted.
    newest = conn.exec_driver_sql(
        "SELECT exchange, symbol, trade_id FROM trades ORDER BY id DESC LIMIT ?", (added,))
    return {(r[0], r[1], r[2]) for r in newest}


_PG_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS bitty_incoming (n integer, exchange text, symbol text, trade_id text, "
    "price numeric, size numeric, side text, time timestamp, received_at timestamp) ON COMMIT DELETE ROWS"
)
_PG_INSERT = (
    "INSERT INTO trades (exchange, symbol, trade_id, price, size, side, time, received_at) "
    "SELECT exchange, symbol, trade_id, price, size, side, time AT TIME ZONE 'UTC', received_at AT TIME ZONE 'UTC' "
    "FROM bitty_incoming ORDER BY n "
    "ON CONFLICT (exchange, symbol, trade_id) DO NOTHING RETURNING exchange, symbol, trade_id"
)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_PG_COPY = "COPY trades (exchange, symbol, trade_id, price, size, side, time, received_at) FROM STDIN"


def _copy_text(rows: list[tuple[str, ...]], numbered: bool) -> str:
    """Rows in COPY's text format, numbered (to keep their order through the staging table) or
    not: one write for the whole batch instead of adapting each value in Python."""
    prefixes = [f"{n}\t" for n in range(len(rows))] if numbered else [""] * len(rows)
    text = "".join([prefix + "\t".join(row) + "\n" for prefix, row in zip(prefixes, rows, strict=True)])
    tabs = (len(rows[0]) - 1 + numbered) * len(rows) if rows else 0  # rows are all as wide
    if text.count("\t") != tabs or text.count("\n") != len(rows) or "\\" in text or "\r" in text:
        # a value holds a tab, a line break or a backslash: escape them all
        text = "".join([prefix + "\t".join(v.translate(_COPY_ESCAPES) for v in row) + "\n"
                        for prefix, row in zip(prefixes, rows, strict=True)])
    return text


def _postgresql_insert(conn: sa.Connection, batch: Sequence[Trade], direct: bool) -> set[tuple[str, str, str]] | None:
    import psycopg  # the driver of this path

    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cursor:
        if direct:
            # COPY straight into the table: about a quarter of the server's work per row less
            # than staging. A trade already stored (or twice in the batch) violates the unique
            # key, which undoes the COPY back to the savepoint; then the batch is staged.
            cursor.execute("SAVEPOINT bitty_copy")
            try:
                with cursor.copy(_PG_COPY) as copy:
                    copy.write(_copy_text(_text_rows(batch, "+00"), numbered=False))
            except psycopg.errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT bitty_copy")
            else:
                cursor.execute("RELEASE SAVEPOINT bitty_copy")
                return None
        cursor.execute(_PG_STAGE)
        with cursor.copy("COPY bitty_incoming FROM STDIN") as copy:
            copy.write(_copy_text(_text_rows(batch), numbered=True))
        cursor.execute(_PG_INSERT)
        # The staged rows go at commit (ON COMMIT DELETE ROWS) or with a rollback.
        return None if cursor.rowcount == len(batch) else {tuple(r) for r in cursor.fetchall()}


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).strip().splitlines()[0]
