"""The sinks: the message format, the NATS JetStream sink and `bitty sink`, against the real NATS and databases."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import nats
import pytest
import sqlalchemy as sa

from bitty.commands.sink import SinkOptions, drain
from bitty.errors import SinkError
from bitty.storage.sinks import Fanout
from bitty.storage.sinks import message as fmt
from bitty.storage.sinks.nats import NatsSink, StreamSettings
from bitty.storage.store import Store
from bitty.storage.tables import quarantine
from bitty.trade import Quarantined, Trade
from tests.fleet.natsfix import nats_url, stream_names

__all__ = ["nats_url", "stream_names"]
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def trade(n: int, symbol: str = "BTC-USD") -> Trade:
    return Trade("testex", symbol, str(n), Decimal("37021.4700"), Decimal("0.00150000"), "buy", T0, T0)


def test_message_round_trip_keeps_exact_decimals_times_and_ids() -> None:
    """A trade published and read back is the same trade: decimals as sent, UTC times, the exchange's id."""
    original = Trade("kraken", "XBT/USD.d", "abc-1", Decimal("1E-8"), Decimal("12.3400"), "sell", T0, T0)
    decoded = fmt.decode({fmt.FORMAT: fmt.TRADE}, fmt.encode_trade(original))
    assert decoded.trade == original
    assert str(decoded.trade.size) == "12.3400"
    assert fmt.trade_subject("bitty", original) == "bitty.trades.kraken.XBT~2FUSD~2Ed"
    assert fmt.trade_id(original) == "kraken/XBT/USD.d/abc-1"


@pytest.mark.parametrize("name", ["BTC-USD", "a.b", "x*y", "p>q", "sp ace", "ü", "a~b"])
def test_subject_tokens_are_safe_and_distinct(name: str) -> None:
    """A symbol becomes one subject token with no '.', '*', '>' or space, and two names never share one."""
    tok = fmt.token(name)
    assert not set(tok) & set(".*> \t") and tok.isascii()
    assert fmt.token(name + "x") != tok


@pytest.mark.parametrize(("headers", "data", "why"), [
    (None, b'{"v":1}', "no Bitty-Format header"),
    ({fmt.FORMAT: fmt.TRADE}, b"not json", "not JSON"),
    ({fmt.FORMAT: fmt.TRADE}, b'{"v":2}', "version 1"),
    ({fmt.FORMAT: fmt.TRADE}, b'{"v":1,"exchange":"x"}', "missing"),
    ({fmt.FORMAT: fmt.TRADE}, b'{"v":1,"exchange":"x","symbol":"s","trade_id":"1","price":"nan","size":"1",'
                              b'"side":"buy","time":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}',
     "not finite"),
    ({fmt.FORMAT: fmt.EVENT}, b'{"v":1,"kind":"lease_stolen"}', "unknown kind 'lease_stolen'"),
    ({fmt.FORMAT: fmt.EVENT}, b'{"v":1,"kind":"gap_bounded","key":"r/1"}', "a gap_bounded event without to_time, to_id"),
    ({fmt.FORMAT: fmt.EVENT}, b'{"v":1,"kind":"connected","run":"r","exchange":"x","symbol":"s","at":"noon"}',
     "at of a connected event is not an ISO-8601 time: 'noon'"),
])
def test_foreign_messages_are_named_with_the_reason(headers: dict[str, str] | None, data: bytes, why: str) -> None:
    """A message that is not bitty's is refused with a reason, never half-read."""
    with pytest.raises(fmt.Foreign, match=why):
        fmt.decode(headers, data)


async def _sink(url: str, names: tuple[str, str], **kwargs: object) -> NatsSink:
    sink = NatsSink(url, StreamSettings(name=names[0], prefix=names[1], **kwargs))  # type: ignore[arg-type]
    await sink.aopen()
    return sink


def test_redundant_publishes_are_dropped_by_the_duplicate_window(nats_url: str,
                                                                        stream_names: tuple[str, str]) -> None:
    """Two collectors publishing the same trades: JetStream keeps one copy of each (Nats-Msg-Id)."""
    asyncio.run(_redundant_publishes_are_dropped_by_the_duplicate_window(nats_url, stream_names))


async def _redundant_publishes_are_dropped_by_the_duplicate_window(nats_url: str,
                                                                        stream_names: tuple[str, str]) -> None:
    first, second = await _sink(nats_url, stream_names), await _sink(nats_url, stream_names)
    try:
        batch = [trade(n) for n in range(50)]
        assert await first.publish(batch) == batch
        assert await second.publish(batch + [trade(50)]) == [trade(50)]
        info = await first._js.stream_info(stream_names[0])  # type: ignore[union-attr]
        assert info.state.messages == 51
    finally:
        await first.aclose()
        await second.aclose()


def test_an_existing_stream_with_other_settings_is_a_clear_error(nats_url: str,
                                                                       stream_names: tuple[str, str]) -> None:
    """A stream of bitty's name with another duplicate window is refused, naming the setting."""
    asyncio.run(_an_existing_stream_with_other_settings_is_a_clear_error(nats_url, stream_names))


async def _an_existing_stream_with_other_settings_is_a_clear_error(nats_url: str,
                                                                       stream_names: tuple[str, str]) -> None:
    sink = await _sink(nats_url, stream_names, duplicate_window=30.0)
    await sink.aclose()
    with pytest.raises(SinkError, match=r"duplicate_window is 30.0, bitty needs 120.0"):
        await _sink(nats_url, stream_names)


def test_nats_unreachable_at_start_is_a_clear_error() -> None:
    """No NATS at the URL: one line saying so, no traceback."""
    asyncio.run(_nats_unreachable_at_start_is_a_clear_error())


async def _nats_unreachable_at_start_is_a_clear_error() -> None:
    with pytest.raises(SinkError, match=r"cannot reach NATS at nats://127.0.0.1:1"):
        await NatsSink("nats://127.0.0.1:1").aopen()


def test_sink_stores_each_trade_once_and_quarantines_foreign_messages(
        nats_url: str, stream_names: tuple[str, str], db_url: str) -> None:
    """bitty sink drains trades published twice (beyond the duplicate window) and a foreign message:
    each trade stored once, the foreign message in quarantine with its reason, the sink still running."""
    asyncio.run(_sink_stores_each_trade_once_and_quarantines_foreign_messages(nats_url, stream_names, db_url))


async def _sink_stores_each_trade_once_and_quarantines_foreign_messages(
        nats_url: str, stream_names: tuple[str, str], db_url: str) -> None:
    name, prefix = stream_names
    sink = await _sink(nats_url, stream_names)
    try:
        await sink.publish([trade(n) for n in range(20)],
                           [Quarantined("testex", 1, "no rule matched", '{"x": 1}', T0)])
        nc = await nats.connect(nats_url)
        # the same trades again under other message ids (as after the duplicate window): the database drops them
        for n in range(10):
            await nc.jetstream().publish(f"{prefix}.trades.testex.BTC-USD", fmt.encode_trade(trade(n)),
                                         headers={fmt.FORMAT: fmt.TRADE, "Nats-Msg-Id": f"late/{n}"})
        await nc.jetstream().publish(f"{prefix}.trades.testex.BTC-USD", b"hello from somebody else")
        await nc.close()
    finally:
        await sink.aclose()
    stats = await drain(SinkOptions(nats=nats_url, db=db_url, name="t", stream=StreamSettings(name=name, prefix=prefix),
                                    idle_exit=1.0, progress_interval=0.2))
    assert (stats.stored, stats.duplicates, stats.quarantined, stats.foreign) == (20, 10, 1, 1)
    store = Store(db_url)
    try:
        assert sorted(int(t.trade_id) for t in store.read_trades()) == list(range(20))
        with store.engine.connect() as conn:
            reasons = sorted(r.reason for r in conn.execute(sa.select(quarantine.c.reason)))
    finally:
        store.close()
    assert reasons[0] == "no rule matched"
    assert reasons[1].startswith(f"not a bitty message on {prefix}.trades.testex.BTC-USD: no Bitty-Format header")


def test_sink_retries_a_database_that_cannot_write_and_loses_nothing(
        nats_url: str, stream_names: tuple[str, str], tmp_path: Path) -> None:
    """A database locked by another process: the sink retries with backoff, acks nothing meanwhile, then stores all."""
    asyncio.run(_sink_retries_a_database_that_cannot_write_and_loses_nothing(nats_url, stream_names, tmp_path))


async def _sink_retries_a_database_that_cannot_write_and_loses_nothing(
        nats_url: str, stream_names: tuple[str, str], tmp_path: Path) -> None:
    name, prefix = stream_names
    url = f"sqlite:///{tmp_path}/sink.db"
    Store(url).open()
    sink = await _sink(nats_url, stream_names)
    try:
        await sink.publish([trade(n) for n in range(30)])
    finally:
        await sink.aclose()
    lock = sqlite3.connect(tmp_path / "sink.db", timeout=0, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")

    class Release(logging.Handler):
        """Unlocks the database once the sink said its write failed (and so will retry)."""

        def emit(self, record: logging.LogRecord) -> None:
            if "database write failed" in record.getMessage() and lock.in_transaction:
                lock.rollback()

    handler = Release()
    logging.getLogger("bitty.sink").addHandler(handler)
    options = SinkOptions(nats=nats_url, db=url, name="t", stream=StreamSettings(name=name, prefix=prefix),
                          idle_exit=2.0, progress_interval=0.2, backoff_initial=0.1)
    try:
        stats = await drain(options)
    finally:
        logging.getLogger("bitty.sink").removeHandler(handler)
        lock.close()
    assert stats.write_errors >= 1
    assert stats.stored == 30
    store = Store(url)
    try:
        assert store.count() == 30
    finally:
        store.close()
    await asyncio.sleep(0)


def test_fanout_writes_the_database_and_nats_both(nats_url: str, stream_names: tuple[str, str], tmp_path: Path) -> None:
    """--db with --nats: a batch reaches the database and the stream, and the trades reported new are the database's."""
    asyncio.run(_fanout(nats_url, stream_names, tmp_path))


async def _fanout(nats_url: str, stream_names: tuple[str, str], tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/both.db")
    store.open()
    publisher = await _sink(nats_url, stream_names)
    try:
        both = Fanout([store, publisher])
        batch = [trade(n) for n in range(5)]
        assert await asyncio.to_thread(both.write, batch) == batch
        assert await asyncio.to_thread(both.write, batch[:2]) == []  # known to the database
        assert store.count() == 5
        info = await publisher._js.stream_info(stream_names[0])  # type: ignore[union-attr]
        assert info.state.messages == 5
    finally:
        await publisher.aclose()
        store.close()


def test_collect_with_a_bad_deployment_file_exits_1_with_the_reason(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`bitty collect --config` with a typo: exit 1 and one line naming the key."""
    from bitty.cli import main

    path = tmp_path / "deploy.yaml"
    path.write_text("nats: nats://127.0.0.1:4222\nexchanges: {coinbase: []}\nshard: 0/2\nnmae: a\n")
    assert main(["collect", "--config", str(path)]) == 1
    assert "$.nmae: unknown key" in capsys.readouterr().err


def test_a_batch_of_trades_and_ledger_events_commits_as_one_transaction(tmp_path: Path) -> None:
    """bitty sink writes a batch's trades and its ledger events in one transaction: an event the
    database refuses leaves none of the batch's trades behind, and the retried batch stores all."""
    from bitty.commands.sink import _Batch, _write
    from bitty.storage.tables import coverage

    url = f"sqlite:///{tmp_path}/sink.db"
    store = Store(url)
    store.open()
    try:
        with store.engine.begin() as conn:  # the database refuses coverage rows for now
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON coverage BEGIN SELECT RAISE(ABORT, 'refused'); END")
        event = {"v": 1, "kind": "connected", "run": "r1", "exchange": "testex", "symbol": "BTC-USD", "at": T0.isoformat()}
        batch = _Batch(trades=[trade(n) for n in range(5)], events=[(None, event)])  # type: ignore[list-item]
        with pytest.raises(sa.exc.IntegrityError, match="refused"):
            _write(store, batch)
        assert store.count() == 0  # before: the trades committed, the events failed, and half the batch was acked
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse")
        stored, later = _write(store, batch)
        assert (len(stored), later, store.count(), store.count(coverage)) == (5, [], 5, 1)
    finally:
        store.close()


def test_a_redelivered_run_counts_event_is_stored_once(nats_url: str, stream_names: tuple[str, str], db_url: str) -> None:
    """A run's counts published twice (a redelivery, a copy past the duplicate window) make one run_counts row."""
    asyncio.run(_a_redelivered_run_counts_event_is_stored_once(nats_url, stream_names, db_url))


async def _a_redelivered_run_counts_event_is_stored_once(nats_url: str, stream_names: tuple[str, str],
                                                         db_url: str) -> None:
    from bitty.storage.sinks.events import EventLedger
    from bitty.storage.tables import run_counts

    name, prefix = stream_names
    sink = await _sink(nats_url, stream_names)
    try:
        counts = {"received": 7, "stored": 6, "duplicates": 1, "quarantined": 0}
        for _copy in range(2):
            ledger = EventLedger(sink, "run-a")
            ledger._numbers = iter([_copy + 1])  # type: ignore[assignment]  # another message id: JetStream keeps both
            await asyncio.to_thread(ledger.record_run, "testex", T0, T0, counts)
    finally:
        await sink.aclose()
    stats = await drain(SinkOptions(nats=nats_url, db=db_url, name="t", stream=StreamSettings(name=name, prefix=prefix),
                                    idle_exit=1.0, progress_interval=0.2))
    assert stats.events == 2
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(run_counts.c.key, run_counts.c.received)).all()
    finally:
        store.close()
    assert [tuple(r) for r in rows] == [("run-a/testex", 7)]


def test_sink_reads_the_fleets_deployment_file(nats_url: str, stream_names: tuple[str, str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`bitty sink --config deploy.yaml` takes the collectors' NATS, database and stream settings: it drains a
    stream made with non-default settings, which the command-line defaults refuse with the reason."""
    from bitty.cli import main

    name, prefix = stream_names

    async def publish() -> None:
        sink = await _sink(nats_url, stream_names, duplicate_window=60.0)  # as deploy.yaml's collectors made it
        try:
            await sink.publish([trade(n) for n in range(12)])
        finally:
            await sink.aclose()

    asyncio.run(publish())
    db = tmp_path / "fleet.db"
    path = tmp_path / "deploy.yaml"
    path.write_text(f"nats: {nats_url}\ndatabase: sqlite:///{db}\nstream: {{name: {name}, prefix: {prefix}, "
                    f"duplicate_window: 60}}\nexchanges: {{coinbase: []}}\n")
    assert main(["sink", "--config", str(path), "--name", "t", "--idle-exit", "1"]) == 0
    store = Store(f"sqlite:///{db}")
    assert store.count() == 12
    store.close()
    assert main(["sink", "--nats", nats_url, "--db", f"sqlite:///{db}", "--nats-stream", name, "--nats-prefix", prefix,
                 "--idle-exit", "1"]) == 1
    assert "duplicate_window is 60.0, bitty needs 120.0" in capsys.readouterr().err
    assert main(["sink", "--db", f"sqlite:///{db}"]) == 1
    assert "bitty sink: give --nats (or nats: in the --config file)" in capsys.readouterr().err
