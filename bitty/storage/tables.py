"""Every table bitty keeps, on one ``MetaData``: trades, quarantine, runs, the coverage ledger, and
the instruments each exchange lists.

Prices and sizes are exact: NUMERIC on PostgreSQL, decimal text on SQLite (whose NUMERIC is a
float). Times are UTC on every database: ``timestamp with time zone`` on PostgreSQL, and on
SQLite one sortable text form, ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC, six fraction digits always).

This is the schema the migrations (``migrations/versions/``) lead to: a change here needs a
migration too (docs/storage.md), and a test checks that the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class ExactDecimal(sa.types.TypeDecorator[Decimal]):
    """NUMERIC where the database has an exact one; decimal text on SQLite."""

    impl = sa.Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String())
        return dialect.type_descriptor(sa.Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value)) if not isinstance(value, Decimal) else value


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

# 64-bit ids: BIGINT (BIGSERIAL) on PostgreSQL; on SQLite INTEGER, whose INTEGER PRIMARY KEY is
# the 64-bit rowid already (a BIGINT key there would not be the rowid, and not autoincrement).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column[int]:
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


trades = sa.Table(
    "trades", metadata,
    _id(),
    sa.Column("exchange", sa.String(64), nullable=False),
    sa.Column("symbol", sa.String(64), nullable=False),
    sa.Column("trade_id", sa.String(128), nullable=False),
    sa.Column("price", ExactDecimal(), nullable=False),
    sa.Column("size", ExactDecimal(), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("time", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("exchange", "symbol", "trade_id", name="trades_exchange_symbol_trade_id"),
    sa.Index("trades_exchange_symbol_time", "exchange", "symbol", "time"),
)

quarantine = sa.Table(
    "quarantine", metadata,
    _id(),
    sa.Column("exchange", sa.String(64), nullable=False),
    sa.Column("spec_version", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("frame", sa.Text, nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
)

runs = sa.Table(
    "runs", metadata,
    _id(),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("exchanges", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("alive_at", UTCDateTime(), nullable=False),
    sa.Column("stopped_at", UTCDateTime(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # running | stopped | crashed
    # identity and lease (many collectors): crashed only once the lease expired
    sa.Column("key", sa.String(64), nullable=True),  # uuid, also in NATS events
    sa.Column("name", sa.String(255), nullable=True),  # --name
    sa.Column("shard", sa.String(16), nullable=True),  # i/n
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("key", name="runs_key"),
)

coverage = sa.Table(
    "coverage", metadata,
    _id(),
    sa.Column("exchange", sa.String(64), nullable=False),
    sa.Column("symbol", sa.String(64), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),  # null while connected (or after a crash)
    sa.Column("end_reason", sa.Text, nullable=True),
    sa.Column("run_key", sa.String(64), nullable=True),  # the collector run that was connected
    sa.Index("coverage_exchange_symbol_started", "exchange", "symbol", "started_at"),
)

gaps = sa.Table(
    "gaps", metadata,
    _id(),
    sa.Column("exchange", sa.String(64), nullable=False),
    sa.Column("symbol", sa.String(64), nullable=False),
    sa.Column("from_time", UTCDateTime(), nullable=False),
    sa.Column("to_time", UTCDateTime(), nullable=True),  # null until the stream is back
    sa.Column("cause", sa.String(16), nullable=False),  # disconnect | watchdog | restart | sequence
    sa.Column("from_id", sa.String(128), nullable=True),  # last trade held before the gap
    sa.Column("to_id", sa.String(128), nullable=True),  # first trade after it
    sa.Column("status", sa.String(16), nullable=False),  # open | closed | unrecoverable
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("backfilled", sa.Integer, nullable=False, default=0),  # new trades stored by backfill
    sa.Column("duplicates", sa.Integer, nullable=False, default=0),  # fetched trades already held
    sa.Column("opened_at", UTCDateTime(), nullable=False),
    sa.Column("closed_at", UTCDateTime(), nullable=True),
    sa.Column("key", sa.String(96), nullable=True),  # run key/number: gaps arriving over NATS
    sa.UniqueConstraint("key", name="gaps_key"),
    sa.Index("gaps_exchange_symbol_from", "exchange", "symbol", "from_time"),
)

run_counts = sa.Table(
    "run_counts", metadata,
    _id(),
    sa.Column("exchange", sa.String(64), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=False),
    sa.Column("received", sa.Integer, nullable=False),
    sa.Column("stored", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("key", sa.String(160), nullable=True),  # run key/exchange: counts arriving over NATS
    sa.UniqueConstraint("key", name="run_counts_key"),
)

instruments = sa.Table(
    # What an exchange lists (bitty.markets.instruments): one row per native symbol, replaced
    # when the listing is fetched again. ``size_unit`` says how the trades' sizes are counted.
    "instruments", metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("exchange", sa.String(64), nullable=False),
    sa.Column("native", sa.String(128), nullable=False),
    sa.Column("symbol", sa.String(64), nullable=False),  # the normalized name trades are stored under
    sa.Column("kind", sa.String(16), nullable=False),  # spot | perpetual | future | option
    sa.Column("base", sa.String(32), nullable=True),
    sa.Column("quote", sa.String(32), nullable=True),
    sa.Column("settle", sa.String(32), nullable=True),
    sa.Column("expiry", sa.Date, nullable=True),
    sa.Column("strike", ExactDecimal(), nullable=True),
    sa.Column("option_right", sa.String(1), nullable=True),  # C | P
    sa.Column("contract_size", ExactDecimal(), nullable=True),
    sa.Column("inverse", sa.Boolean, nullable=False, default=False),
    sa.Column("size_unit", sa.String(16), nullable=False),  # base | contracts | quote
    sa.Column("source", sa.String(8), nullable=False),  # listing | guess
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("exchange", "native", name="instruments_exchange_native"),
    sa.Index("instruments_exchange_symbol", "exchange", "symbol"),
)
