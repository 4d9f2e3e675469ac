"""The ledger journal: writes a stopped run could not make are written back in order by the next
run, and a replay cut short keeps what is left, its gaps named by their new ids."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bitty.storage import ledger as journal
from bitty.storage.ledger import Ledger
from bitty.storage.store import Store

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = datetime(2024, 1, 2, 3, 5, 0, tzinfo=UTC)


def records() -> list[dict]:  # type: ignore[type-arg]
    return [
        {"op": "disconnected", "exchange": "x", "symbols": ["A"], "at": T0, "reason": "closed", "since": None},
        {"op": "open_gap", "key": "g1", "exchange": "x", "symbol": "A", "from_time": T0, "cause": "disconnect",
         "from_id": "3", "at": T0, "to_time": None, "to_id": None},
        {"op": "bound_gap", "gap": {"key": "g1"}, "to_time": T1, "to_id": "7"},
        {"op": "settle", "gap": {"key": "g1"}, "status": "closed", "reason": "backfilled", "at": T1,
         "backfilled": 3, "duplicates": 0},
    ]


def test_journal_is_written_back_in_order(tmp_path: Path) -> None:
    """A gap opened, bounded and settled in the journal ends as one closed gap row; the journal goes."""
    store = Store(f"sqlite:///{tmp_path}/bitty.db")
    store.open()
    journal.save_journal(tmp_path / "spill", records())
    assert journal.replay(Ledger(store.engine), tmp_path / "spill") == 4
    [gap] = Ledger(store.engine).gaps("x")
    assert (gap.from_id, gap.to_id, gap.status, gap.backfilled) == ("3", "7", "closed", 3)
    assert gap.to_time is not None and gap.to_time.replace(tzinfo=UTC) == T1
    assert not (tmp_path / "spill" / journal.JOURNAL).exists()
    store.close()


def test_a_replay_cut_short_keeps_the_rest_with_new_ids(tmp_path: Path) -> None:
    """A record that fails stops the replay: it and those after it stay journaled, naming the gap
    the replay opened by its id, so the next try does not open it twice."""
    store = Store(f"sqlite:///{tmp_path}/bitty.db")
    store.open()
    broken = records()
    broken.insert(2, {"op": "no_such_write"})
    journal.save_journal(tmp_path / "spill", broken)
    with pytest.raises(ValueError, match="no_such_write"):
        journal.replay(Ledger(store.engine), tmp_path / "spill")
    [gap] = Ledger(store.engine).gaps("x")
    left = journal.load_journal(tmp_path / "spill")
    assert [r["op"] for r in left] == ["no_such_write", "bound_gap", "settle"]
    assert left[1]["gap"] == {"id": gap.id}
    store.close()
