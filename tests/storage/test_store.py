"""Storage on SQLite and the real PostgreSQL: exact decimals, UTC times, idempotent inserts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bitty.storage.store import Store
from bitty.storage.tables import quarantine, trades
from bitty.storage.writer import Writer
from bitty.trade import Quarantined, Trade

UTC = UTC
T0 = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def trade(n: int, price: str = "37021.47000001", size: str = "0.00000001", symbol: str = "BTC-USD") -> Trade:
    return Trade("testex", symbol, str(n), Decimal(price), Decimal(size), "buy" if n % 2 else "sell",
                 T0 + timedelta(microseconds=n), T0)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """An open store on SQLite and on PostgreSQL, closed after the test."""
    opened = Store(db_url)
    opened.open()
    yield opened
    opened.close()


def test_decimals_and_times_round_trip_exactly(store: Store) -> None:
    """Prices and sizes come back digit for digit; times come back as the same UTC instant."""
    original = [trade(1, "123456789012345.123456789012345678", "0.000000000000000001"), trade(2, "0.1", "3")]
    assert store.write(original) == original
    back = store.read_trades()
    assert [(t.price, t.size, t.time) for t in back] == [(t.price, t.size, t.time) for t in original]
    assert str(back[0].price) == "123456789012345.123456789012345678"
    assert back[0].time.tzinfo is not None and back[0].time.utcoffset() == timedelta(0)


def test_sqlite_text_is_what_sqlalchemy_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The driver-level SQLite insert formats decimals and times itself; the stored text is what
    SQLAlchemy's own types write, for exponents, whole seconds, other zones and old dates."""
    store = Store(f"sqlite:///{tmp_path}/t.db")
    store.open()
    try:
        zone = timezone(timedelta(hours=-5))
        times = [T0, T0.replace(microsecond=0), T0.replace(microsecond=999_999), datetime(1969, 12, 31, 23, 59, 59, 5, UTC),
                 datetime(2024, 1, 2, 3, 4, 5, 600, zone), datetime(2024, 2, 29, 0, 0, 0, 1, UTC)]
        prices = ["1E-8", "1E+2", "0.00000100", "0.000000001", "123456789012345.123456789012345678", "5"]
        batch = [Trade("testex", "BTC-USD", str(n), Decimal(p), Decimal(p), "buy", moment, moment)
                 for n, (p, moment) in enumerate(zip(prices, times, strict=True))]
        store.write(batch)
        with store.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT price, size, time, received_at FROM trades ORDER BY id").all()
        dialect = store.engine.dialect
        price_type, time_type = (c.type.dialect_impl(dialect) for c in (trades.c.price, trades.c.time))
        text, time_text = price_type.bind_processor(dialect), time_type.bind_processor(dialect)
        assert stored == [(text(t.price), text(t.size), time_text(t.time), time_text(t.received_at)) for t in batch]
        assert [(t.price, t.time) for t in store.read_trades()] == [(t.price, t.time) for t in batch]
    finally:
        store.close()


def test_duplicates_are_ignored_and_reported(store: Store) -> None:
    """(exchange, symbol, trade_id) is unique: repeats, within and across batches, are skipped."""
    assert len(store.write([trade(1), trade(2), trade(1)])) == 2
    assert [t.trade_id for t in store.write([trade(2), trade(3)])] == ["3"]
    assert len(store.write([trade(3, symbol="ETH-USD")])) == 1  # same id, other symbol: a new trade
    assert store.count() == 4


def test_large_batches_report_exactly_the_new_trades(store: Store) -> None:
    """Batches span several multi-row statements; duplicates inside a batch, across statements
    and against stored rows are skipped, and the new trades come back in order."""
    assert len(store.write([trade(n) for n in range(0, 6000, 3)])) == 2000
    batch = [trade(n) for n in range(5234)] + [trade(7), trade(3000)]
    new = store.write(batch)
    assert [t.trade_id for t in new] == [str(n) for n in range(5234) if n % 3]
    assert store.count() == 2000 + len(new)
    assert store.write([trade(n) for n in range(5234)]) == []


def test_any_text_in_a_trade_id_is_stored_as_is(store: Store) -> None:
    """Ids and symbols are exchange data: tabs, line breaks and backslashes survive the bulk paths."""
    odd = ["a\tb", "c\nd", "e\\f", "g\rh", "\\N", "ü€𝄞", "plain"]
    batch = [Trade("testex", "BTC\t-USD", tid, Decimal("1"), Decimal("2"), "buy", T0, T0) for tid in odd]
    assert store.write(batch) == batch
    assert [(t.symbol, t.trade_id) for t in store.read_trades()] == [("BTC\t-USD", tid) for tid in odd]


def test_sqlite_rows_go_many_per_statement(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The sqlite3 module releases the GIL around each statement step, and a writer thread needs
    it back after each one, waiting up to a switch interval behind a busy reader thread: 5,000
    trades go in three statements (2,048 rows at most), not 5,000 steps of an executemany.
    Statements have a power of two of rows (the last padded with copies the unique key skips),
    so a connection caches a dozen of them, not one per batch size (2 MB each at 2,000 rows)."""
    store = Store(f"sqlite:///{tmp_path}/t.db")
    store.open()
    inserts: list[bool] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO trades"):
            inserts.append((executemany, len(parameters) // 8))

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        assert len(store.write([trade(n) for n in range(5000)])) == 5000
        assert inserts == [(False, 2048), (False, 2048), (False, 1024)]
        assert store.count() == 5000
        inserts.clear()
        start = 5000
        for size in range(1, 300):  # every batch size: a handful of statement sizes
            assert len(store.write([trade(n) for n in range(start, start + size)])) == size
            start += size
        assert store.count() == start
        assert {rows for _, rows in inserts} == {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}
    finally:
        store.close()


def test_postgresql_copies_new_trades_straight_in_and_stages_known_ones(pg_url: str) -> None:
    """New trades are copied straight into the table, their times read as UTC whatever the
    session's time zone; a batch holding a stored trade or one trade twice is undone to a
    savepoint and staged, and reports exactly its new trades."""
    store = Store(pg_url)
    store.open()
    sa.event.listen(store.engine, "connect", lambda dbapi, _: dbapi.execute("SET TIME ZONE 'Asia/Kolkata'"))
    store.engine.dispose()  # connections from here on have that time zone

    def staged() -> bool:
        with store.engine.connect() as conn:  # the pool's one connection: the writes' session
            return bool(conn.exec_driver_sql("SELECT to_regclass('pg_temp.bitty_incoming') IS NOT NULL").scalar())

    try:
        first = [trade(n) for n in range(10)]
        assert store.write(first) == first
        assert not staged()
        assert [(t.trade_id, t.time, t.received_at) for t in store.read_trades()] == \
            [(t.trade_id, t.time, t.received_at) for t in first]
        new = store.write([trade(n) for n in range(5, 15)] + [trade(12)])
        assert [t.trade_id for t in new] == [str(n) for n in range(10, 15)]
        assert staged()
        assert store.write([trade(n) for n in range(15, 20)]) == [trade(n) for n in range(15, 20)]
        assert store.write([trade(20), trade(20)]) == [trade(20)]
        assert store.count() == 21
    finally:
        store.close()


def test_a_driver_error_on_the_copy_path_is_a_database_error(pg_url: str) -> None:
    """COPY goes through psycopg's own cursor; its errors reach the writer as SQLAlchemy errors
    (the kind it retries), and the failed batch writes nothing. PostgreSQL text cannot hold NUL."""
    store = Store(pg_url)
    store.open()
    try:
        with pytest.raises(sa.exc.DBAPIError, match="0x00"):
            store.write([trade(1), Trade("testex", "BTC-USD", "a\x00b", Decimal(1), Decimal(1), "buy", T0, T0)])
        assert store.count() == 0
        assert store.write([trade(1)]) == [trade(1)]
    finally:
        store.close()


def test_quarantine_is_stored_with_the_trades(store: Store) -> None:
    """Quarantined frames are written in the same transaction as the batch."""
    store.write([trade(1)], [Quarantined("testex", 3, "no message kind matches", '{"x":1}', T0)])
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(quarantine)).one()
    assert (row.exchange, row.spec_version, row.reason, row.frame) == ("testex", 3, "no message kind matches", '{"x":1}')


def test_writer_batches_and_flushes_everything_on_close(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The writer accepts trades without blocking and close() leaves nothing unwritten."""
    async def main() -> tuple[int, int, int]:
        store = Store(db_url)
        store.open()
        stored: list[Trade] = []
        writer = Writer(store, batch_size=100, flush_interval=10, on_stored=stored.extend, spill_dir=tmp_path)
        writer.start()
        for n in range(1050):
            writer.put(trade(n))
        for n in range(50):
            writer.put(trade(n))  # replayed: duplicates
        await writer.close()
        count = store.count()
        store.close()
        return count, len(stored), writer.stats.duplicates

    count, stored, duplicates = asyncio.run(main())
    assert (count, stored, duplicates) == (1050, 1050, 50)


def test_a_writer_behind_catches_up_in_bigger_transactions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A write costs mostly per transaction, so a backlog goes up to ten batches at a time."""
    async def main() -> list[int]:
        store = Store(f"sqlite:///{tmp_path}/w.db")
        store.open()
        writes: list[int] = []
        writer = Writer(store, batch_size=10, flush_interval=10, on_stored=lambda t: writes.append(len(t)),
                        spill_dir=tmp_path / "spill")
        for n in range(250):  # arrived before the writer runs: 25 batches behind
            writer.put(trade(n))
        writer.start()
        await writer.close()
        assert store.count() == 250
        store.close()
        return writes

    assert asyncio.run(main()) == [100, 100, 50]


def test_a_failing_output_does_not_stop_the_writer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An on_stored mirror that raises (disk full) is logged; every trade still reaches the database."""
    def broken(trades: list[Trade]) -> None:
        raise OSError("No space left on device")

    async def main() -> int:
        store = Store(f"sqlite:///{tmp_path}/w.db")
        store.open()
        writer = Writer(store, batch_size=10, flush_interval=0.01, on_stored=broken, spill_dir=tmp_path / "spill")
        writer.start()
        for n in range(25):
            writer.put(trade(n))
            await asyncio.sleep(0)
        await writer.close()
        count = store.count()
        store.close()
        return count

    assert asyncio.run(main()) == 25
