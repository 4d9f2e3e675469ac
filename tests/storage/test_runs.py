"""Run identities and leases, and the coverage ledger merged over collectors (what `bitty audit` reports)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from bitty.continuity.audit import audit
from bitty.continuity.chart import table
from bitty.storage import runs
from bitty.storage.ledger import Ledger
from bitty.storage.store import Store
from bitty.storage.tables import coverage
from bitty.storage.tables import runs as runs_table

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(db_url: str) -> Store:
    s = Store(db_url)
    s.open()
    yield s  # type: ignore[misc]
    s.close()


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_second_collector_does_not_declare_the_first_crashed(store: Store) -> None:
    """Two runs on one database: the second starts while the first holds its lease; nobody is marked crashed."""
    first, _ = runs.start(store, ["coinbase"], runs.Identity(name="a"))
    second, uncovered = runs.start(store, ["coinbase"], runs.Identity(name="b"))
    assert uncovered == []
    with store.engine.connect() as conn:
        status = dict(conn.execute(sa.select(runs_table.c.name, runs_table.c.status)).all())
    assert status == {"a": "running", "b": "running"}
    assert first != second


def test_a_run_whose_lease_expired_is_crashed_and_its_coverage_ends_at_its_last_renewal(store: Store) -> None:
    """A killed run (lease expired) is declared crashed by the next start; its coverage ends at its last
    renewal, and a later run's stop does not close it."""
    killed = runs.Identity(name="killed")
    run_id, _ = runs.start(store, ["coinbase"], killed)
    Ledger(store.engine, killed.key).connected("coinbase", ["BTC-USD"], _at(0))
    with store.engine.begin() as conn:  # it renewed at +10 s, then was killed long ago
        conn.execute(runs_table.update().where(runs_table.c.id == run_id)
                     .values(alive_at=_at(10), lease_until=_at(10 + runs.LEASE)))
    later = runs.Identity(name="later")
    later_id, uncovered = runs.start(store, ["coinbase"], later)
    assert [u.run_id for u in uncovered] == [run_id]
    ledger = Ledger(store.engine, later.key)
    ledger.connected("coinbase", ["BTC-USD"], _at(100))
    ledger.disconnected("coinbase", ["BTC-USD"], _at(200), "stopped")
    runs.stop(store, later_id)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(coverage.c.run_key, coverage.c.ended_at).order_by(coverage.c.started_at)).all()
        status = conn.execute(sa.select(runs_table.c.status).where(runs_table.c.id == run_id)).scalar_one()
    assert status == "crashed"
    assert [(r.run_key, r.ended_at) for r in rows] == [(killed.key, _at(10)), (later.key, _at(200))]


def test_audit_merges_collectors_and_names_who_covered_what(store: Store) -> None:
    """A stream is connected wherever any collector of it was: a standby covering a killed collector's
    time leaves no hole; audit names each collector's share, and a killed run's open coverage ends at its lease."""
    a, b = runs.Identity(name="a"), runs.Identity(name="b")
    a_id, _ = runs.start(store, ["x"], a)
    runs.start(store, ["x"], b)
    Ledger(store.engine, a.key).connected("x", ["S-T"], _at(0))  # a was killed at +30 s: its row stays open
    with store.engine.begin() as conn:
        conn.execute(runs_table.update().where(runs_table.c.id == a_id)
                     .values(alive_at=_at(30), lease_until=_at(30 + runs.LEASE)))
    ledger_b = Ledger(store.engine, b.key)
    ledger_b.connected("x", ["S-T"], _at(20))
    ledger_b.disconnected("x", ["S-T"], _at(100), "stopped")
    report = audit(store, _at(0), _at(100))
    (line,) = report.lines
    assert line.connected == pytest.approx(1.0)
    assert line.collectors == {"a": pytest.approx(0.3), "b": pytest.approx(0.8)}
    assert "a 30% b 80%" in table(report)


def test_audit_counts_a_closed_gap_over_the_whole_time_disconnected(store: Store) -> None:
    """A gap closed by backfill makes the whole disconnected interval complete, even where the trade before
    and the one after (exchange times) do not span it."""
    me = runs.Identity(name="a")
    runs.start(store, ["x"], me)
    ledger = Ledger(store.engine, me.key)
    ledger.connected("x", ["S-T"], _at(0))
    ledger.disconnected("x", ["S-T"], _at(40), "reset")
    ledger.connected("x", ["S-T"], _at(60))
    ledger.disconnected("x", ["S-T"], _at(100), "stopped")
    gap = ledger.open_gap("x", "S-T", _at(35), "disconnect", "7", _at(40), _at(50), "9")
    ledger.settle(gap, "closed", "backfilled", _at(70), backfilled=1)
    (line,) = audit(store, _at(0), _at(100)).lines
    assert line.connected == pytest.approx(0.8)
    assert line.complete == pytest.approx(1.0)


def test_audit_does_not_count_an_unrecovered_hole_as_complete(store: Store) -> None:
    """A hole with only an unrecoverable gap stays incomplete."""
    me = runs.Identity(name="a")
    runs.start(store, ["x"], me)
    ledger = Ledger(store.engine, me.key)
    ledger.connected("x", ["S-T"], _at(0))
    ledger.disconnected("x", ["S-T"], _at(40), "reset")
    ledger.connected("x", ["S-T"], _at(60))
    ledger.disconnected("x", ["S-T"], _at(100), "stopped")
    gap = ledger.open_gap("x", "S-T", _at(35), "disconnect", "7", _at(40), _at(50), "9")
    ledger.settle(gap, "unrecoverable", "no rest", _at(70))
    (line,) = audit(store, _at(0), _at(100)).lines
    assert line.complete == pytest.approx(0.8)


def test_a_killed_run_on_this_machine_is_crashed_without_waiting_for_its_lease(store: Store) -> None:
    """A run whose process on this machine no longer exists is crashed at once, its lease notwithstanding."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = runs.Identity(name="dead", pid=int(gone.stdout))
    run_id, _ = runs.start(store, ["x"], dead)
    _, uncovered = runs.start(store, ["x"], runs.Identity(name="next"))
    assert [u.run_id for u in uncovered] == [run_id]
