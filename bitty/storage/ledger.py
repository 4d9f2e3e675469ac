"""The coverage ledger: when each stream was connected and subscribed (``coverage``), every
interval it was not or that lost trades (``gaps``), and what each collect run counted per exchange (``run_counts``).

A gap is ``open`` until backfill recovers it (``closed``) or gives up with the reason
(``unrecoverable``). ``from``/``to`` bound the blind interval: the last trade held before it and
the first trade after it, when known. Synchronous SQLAlchemy Core; callers run it off the loop.

Ledger writes that could not reach the database before a run stopped are kept as records in a
small journal in the spill folder (``bitty-ledger-journal.jsonl``: one ``{"op": ..., ...}`` per
line, in order) and written back first by the next run (``replay``). A gap opened in the journal
has a ``key``; later records name it by ``{"key": k}`` until it has a database ``{"id": n}``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bitty.storage import migrate
from bitty.storage.tables import coverage, gaps, quarantine, run_counts, trades

CAUSES = ("disconnect", "watchdog", "restart", "sequence")
JOURNAL = "bitty-ledger-journal.jsonl"
_TIMES = ("at", "since", "from_time", "to_time", "started_at", "ended_at")

logger = logging.getLogger(__name__)


@dataclass
class Gap:
    id: int
    exchange: str
    symbol: str
    from_time: datetime
    to_time: datetime | None
    cause: str
    from_id: str | None
    to_id: str | None
    status: str
    reason: str
    backfilled: int = 0
    duplicates: int = 0


class Ledger:
    """Coverage and gaps in the trade database (its own tables, brought up to date on ``open``)."""

    def __init__(self, engine: sa.engine.Engine, run_key: str | None = None) -> None:
        self.engine = engine
        # The run whose coverage this ledger records: a disconnect ends only that run's
        # coverage, never a killed run's (its ends at its last lease renewal) or another
        # collector's of the same stream.
        self.run_key = run_key

    def open(self) -> None:
        migrate.upgrade(self.engine)  # a no-op after Store.open

    # --- coverage ---

    def connected(self, exchange: str, symbols: list[str], at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(coverage.insert(), [{"exchange": exchange, "symbol": s, "started_at": at, "run_key": self.run_key}
                                             for s in symbols])

    def disconnected(self, exchange: str, symbols: list[str], at: datetime, reason: str,
                     since: datetime | None = None) -> None:
        """End the open coverage of these symbols; with ``since`` (when the ending connection
        connected), only coverage that started by then: a connection that took over first
        keeps its own."""
        where = [coverage.c.exchange == exchange, coverage.c.symbol.in_(symbols), coverage.c.ended_at.is_(None)]
        if since is not None:
            where.append(coverage.c.started_at <= since)
        if self.run_key is not None:
            where.append(coverage.c.run_key == self.run_key)
        with self.engine.begin() as conn:
            conn.execute(coverage.update().where(*where).values(ended_at=at, end_reason=reason))

    def last_coverage_end(self, exchange: str, symbol: str) -> datetime | None:
        """When the last recorded coverage of a symbol ended (its start if it never ended: a crash)."""
        query = (sa.select(coverage.c.started_at, coverage.c.ended_at)
                 .where(coverage.c.exchange == exchange, coverage.c.symbol == symbol)
                 .order_by(coverage.c.started_at.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else row.ended_at or row.started_at

    def last_trade(self, exchange: str, symbol: str) -> tuple[str, datetime] | None:
        """The latest stored trade of a symbol: (trade_id, time)."""
        query = (sa.select(trades.c.trade_id, trades.c.time)
                 .where(trades.c.exchange == exchange, trades.c.symbol == symbol)
                 .order_by(trades.c.time.desc(), trades.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.trade_id, row.time)

    # --- gaps ---

    def open_gap(self, exchange: str, symbol: str, from_time: datetime, cause: str, from_id: str | None,
                 at: datetime, to_time: datetime | None = None, to_id: str | None = None) -> int:
        assert cause in CAUSES, cause
        with self.engine.begin() as conn:
            result = conn.execute(gaps.insert().values(
                exchange=exchange, symbol=symbol, from_time=from_time, to_time=to_time, cause=cause,
                from_id=from_id, to_id=to_id, status="open", reason="", backfilled=0, duplicates=0,
                opened_at=at))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def bound_gap(self, gap_id: int, to_time: datetime, to_id: str | None) -> None:
        """The stream is back: the first trade after the gap."""
        with self.engine.begin() as conn:
            conn.execute(gaps.update().where(gaps.c.id == gap_id).values(to_time=to_time, to_id=to_id))

    def settle(self, gap_id: int, status: str, reason: str, at: datetime, backfilled: int = 0,
               duplicates: int = 0) -> None:
        assert status in ("closed", "unrecoverable", "open"), status
        with self.engine.begin() as conn:
            conn.execute(gaps.update().where(gaps.c.id == gap_id).values(
                status=status, reason=reason, closed_at=at if status != "open" else None,
                backfilled=gaps.c.backfilled + backfilled, duplicates=gaps.c.duplicates + duplicates))

    def gaps(self, exchange: str | None = None, symbol: str | None = None, status: str | None = None,
             since: datetime | None = None, until: datetime | None = None) -> list[Gap]:
        query = sa.select(*(gaps.c[f] for f in Gap.__dataclass_fields__)).order_by(gaps.c.from_time, gaps.c.id)
        if exchange:
            query = query.where(gaps.c.exchange == exchange)
        if symbol:
            query = query.where(gaps.c.symbol == symbol)
        if status:
            query = query.where(gaps.c.status == status)
        if until is not None:
            query = query.where(gaps.c.from_time < until)
        if since is not None:
            query = query.where(sa.or_(gaps.c.to_time.is_(None), gaps.c.to_time > since))
        with self.engine.connect() as conn:
            return [Gap(**row._mapping) for row in conn.execute(query)]

    # --- runs ---

    def record_run(self, exchange: str, started_at: datetime, ended_at: datetime, counts: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(run_counts.insert().values(
                exchange=exchange, started_at=started_at, ended_at=ended_at,
                **{k: int(counts.get(k, 0)) for k in ("received", "stored", "duplicates", "quarantined")}))


# --- the journal of writes a stopped run could not make ---

def save_journal(folder: Path, records: list[dict[str, Any]]) -> Path:
    """Write ``records`` (after any already journaled) to the folder's ledger journal, fsynced."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / JOURNAL
    earlier = load_journal(folder)
    part = path.with_name(path.name + ".part")
    with part.open("wb") as file:
        file.write(b"".join(orjson.dumps(r) + b"\n" for r in earlier + records))
        file.flush()
        os.fsync(file.fileno())
    part.replace(path)
    return path


def load_journal(folder: Path) -> list[dict[str, Any]]:
    """The journaled records, times as datetimes; a torn last line (a crash while writing) is skipped."""
    path = folder / JOURNAL
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            logger.error("%s:%d: not a ledger record, skipped: %r", path, n, line[:200])
            continue
        for name in _TIMES:
            if isinstance(record.get(name), str):
                record[name] = datetime.fromisoformat(record[name])
        out.append(record)
    return out


def replay(ledger: Ledger, folder: Path) -> int:
    """Write the folder's journal to the ledger, in order, then remove it. If the database fails
    part way, what is left is journaled again (gaps it opened named by their new ids) and the
    error raised. Returns how many records were written."""
    records = load_journal(folder)
    ids: dict[str, int] = {}
    for done, record in enumerate(records):
        try:
            _apply(ledger, record, ids)
        except Exception:
            left = [_resolved(r, ids) for r in records[done:]]
            (folder / JOURNAL).unlink()
            save_journal(folder, left)
            raise
    (folder / JOURNAL).unlink(missing_ok=True)
    return len(records)


def _apply(ledger: Ledger, record: dict[str, Any], ids: dict[str, int]) -> None:
    args = {k: v for k, v in record.items() if k not in ("op", "key", "gap")}
    op = record["op"]
    if op == "open_gap":
        ids[record["key"]] = ledger.open_gap(**args)
        return
    if op in ("bound_gap", "settle"):
        ref = record["gap"]
        gap_id = ref.get("id", ids.get(ref.get("key", "")))
        if gap_id is None:
            logger.error("ledger journal: %s of a gap never opened, skipped: %s", op, record)
            return
        getattr(ledger, op)(gap_id, **args)
        return
    if op not in ("connected", "disconnected", "record_run"):
        raise ValueError(f"ledger journal: unknown operation {op!r}")
    getattr(ledger, op)(**args)


def _resolved(record: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    ref = record.get("gap")
    if isinstance(ref, dict) and ref.get("key") in ids:
        return {**record, "gap": {"id": ids[ref["key"]]}}
    return record


__all__ = ["CAUSES", "JOURNAL", "Gap", "Ledger", "coverage", "gaps", "load_journal", "quarantine", "replay",
           "run_counts", "save_journal", "trades"]
