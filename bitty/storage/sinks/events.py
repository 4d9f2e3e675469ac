"""The coverage ledger and run leases over NATS: a collector without a database publishes what
it would have written (``EventLedger``), and ``bitty sink`` applies it to its database (``apply``).

Events are keyed (run key, gap key, message ids from a per-run counter) so that applying one
twice changes nothing, and the copies a publish retry sends are dropped by JetStream.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bitty.backoff import backoff
from bitty.storage.ledger import Gap
from bitty.storage.runs import upsert
from bitty.storage.sinks import SinkUnavailable
from bitty.storage.sinks.message import token
from bitty.storage.sinks.nats import NatsSink
from bitty.storage.tables import coverage, gaps, run_counts

logger = logging.getLogger(__name__)
_TIMES = ("at", "since", "from_time", "to_time", "started_at", "ended_at", "alive_at", "stopped_at", "lease_until")


class EventLedger:
    """The ``Ledger`` calls the gap keeper makes, published as events instead of written."""

    def __init__(self, sink: NatsSink, run_key: str, give_up_after: float = 120.0) -> None:
        self.sink = sink
        self.run_key = run_key
        self.give_up_after = give_up_after
        self._numbers = itertools.count(1)
        self._gaps: dict[int, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def _publish(self, subject: str, kind: str, fields: dict[str, Any]) -> None:
        with self._lock:
            msg_id = f"{self.run_key}/{next(self._numbers)}"
        delays = backoff(0.2, cap=5.0)
        deadline = time.monotonic() + self.give_up_after
        while True:
            try:
                self.sink.event(f"{self.sink.settings.prefix}.{subject}", kind, fields, msg_id)
                return
            except SinkUnavailable as exc:
                if time.monotonic() > deadline:
                    logger.error("ledger event %s lost: NATS away for %gs: %s", kind, self.give_up_after, exc)
                    return
                time.sleep(next(delays))

    def open(self) -> None:
        pass

    def connected(self, exchange: str, symbols: list[str], at: datetime) -> None:
        for symbol in symbols:
            self._publish(f"coverage.{token(exchange)}.{token(symbol)}", "connected",
                          {"run": self.run_key, "exchange": exchange, "symbol": symbol, "at": at})

    def disconnected(self, exchange: str, symbols: list[str], at: datetime, reason: str,
                     since: datetime | None = None) -> None:
        for symbol in symbols:
            self._publish(f"coverage.{token(exchange)}.{token(symbol)}", "disconnected",
                          {"run": self.run_key, "exchange": exchange, "symbol": symbol, "at": at, "reason": reason,
                           "since": since})

    def last_coverage_end(self, exchange: str, symbol: str) -> datetime | None:
        return None  # no database here: a restart gap is not known to this collector

    def last_trade(self, exchange: str, symbol: str) -> tuple[str, datetime] | None:
        return None

    def gaps(self, *args: Any, **kwargs: Any) -> list[Gap]:
        return []

    def open_gap(self, exchange: str, symbol: str, from_time: datetime, cause: str, from_id: str | None,
                 at: datetime, to_time: datetime | None = None, to_id: str | None = None) -> int:
        with self._lock:
            number = len(self._gaps) + 1
            self._gaps[number] = (exchange, symbol)
        self._publish(f"gaps.{token(exchange)}.{token(symbol)}", "gap_opened", {
            "key": f"{self.run_key}/{number}", "exchange": exchange, "symbol": symbol, "from_time": from_time,
            "cause": cause, "from_id": from_id, "at": at, "to_time": to_time, "to_id": to_id})
        return number

    def bound_gap(self, gap_id: int, to_time: datetime, to_id: str | None) -> None:
        exchange, symbol = self._gaps[gap_id]
        self._publish(f"gaps.{token(exchange)}.{token(symbol)}", "gap_bounded",
                      {"key": f"{self.run_key}/{gap_id}", "to_time": to_time, "to_id": to_id})

    def settle(self, gap_id: int, status: str, reason: str, at: datetime, backfilled: int = 0,
               duplicates: int = 0) -> None:
        exchange, symbol = self._gaps[gap_id]
        self._publish(f"gaps.{token(exchange)}.{token(symbol)}", "gap_settled", {
            "key": f"{self.run_key}/{gap_id}", "status": status, "reason": reason, "at": at,
            "backfilled": backfilled, "duplicates": duplicates})

    def record_run(self, exchange: str, started_at: datetime, ended_at: datetime, counts: dict[str, Any]) -> None:
        self._publish(f"runs.{token(self.run_key)}", "run_counts", {
            "key": f"{self.run_key}/{exchange}", "run": self.run_key, "exchange": exchange,
            "started_at": started_at, "ended_at": ended_at,
            **{k: int(counts.get(k, 0)) for k in ("received", "stored", "duplicates", "quarantined")}})

    def run(self, fields: dict[str, Any]) -> None:
        """A run's state: started, lease renewed, stopped."""
        self._publish(f"runs.{token(self.run_key)}", "run", {"key": self.run_key, **fields})


def apply(conn: sa.Connection, event: dict[str, Any]) -> bool:
    """Apply one event in the sink's transaction; False when it refers to one not applied yet
    (another sink holds it): the caller retries it later."""
    e: dict[str, Any] = {k: (datetime.fromisoformat(v) if k in _TIMES and isinstance(v, str) else v) for k, v in event.items()}
    kind = e["kind"]
    if kind == "run":
        upsert(conn, e)
    elif kind == "connected":
        where = [coverage.c.run_key == e["run"], coverage.c.exchange == e["exchange"], coverage.c.symbol == e["symbol"],
                 coverage.c.started_at == e["at"]]
        if conn.execute(sa.select(coverage.c.id).where(*where)).first() is None:
            conn.execute(coverage.insert().values(exchange=e["exchange"], symbol=e["symbol"], started_at=e["at"],
                                                  run_key=e["run"]))
    elif kind == "disconnected":
        where = [coverage.c.run_key == e["run"], coverage.c.exchange == e["exchange"], coverage.c.symbol == e["symbol"],
                 coverage.c.ended_at.is_(None)]
        if e.get("since") is not None:
            where.append(coverage.c.started_at <= e["since"])
        conn.execute(coverage.update().where(*where).values(ended_at=e["at"], end_reason=e["reason"]))
    elif kind == "gap_opened":
        if conn.execute(sa.select(gaps.c.id).where(gaps.c.key == e["key"])).first() is None:
            conn.execute(gaps.insert().values(
                key=e["key"], exchange=e["exchange"], symbol=e["symbol"], from_time=e["from_time"], to_time=e["to_time"],
                cause=e["cause"], from_id=e["from_id"], to_id=e["to_id"], status="open", reason="", backfilled=0,
                duplicates=0, opened_at=e["at"]))
    elif kind in ("gap_bounded", "gap_settled"):
        if conn.execute(sa.select(gaps.c.id).where(gaps.c.key == e["key"])).first() is None:
            return False
        if kind == "gap_bounded":
            values = {"to_time": e["to_time"], "to_id": e["to_id"]}
        else:
            values = {"status": e["status"], "reason": e["reason"], "closed_at": e["at"] if e["status"] != "open" else None,
                      "backfilled": e["backfilled"], "duplicates": e["duplicates"]}
        conn.execute(gaps.update().where(gaps.c.key == e["key"]).values(**values))
    elif kind == "run_counts":
        # keyed <run key>/<exchange> (a run reports each exchange once): a redelivered report
        # is a no-op. Reports of collectors older than the key carry none and are inserted.
        key = e.get("key")
        if key is None or conn.execute(sa.select(run_counts.c.id).where(run_counts.c.key == key)).first() is None:
            conn.execute(run_counts.insert().values(
                exchange=e["exchange"], started_at=e["started_at"], ended_at=e["ended_at"], key=key,
                **{k: int(e[k]) for k in ("received", "stored", "duplicates", "quarantined")}))
    else:
        raise ValueError(f"unknown event kind {kind!r}")
    return True
