"""Run records: when each ``bitty collect`` run started, was last alive, and stopped.

A run that was killed (SIGKILL, power loss) never records its stop. The next run finds it and
reports the interval nobody collected: from the killed run's last sign of life to now.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from bitty.storage.store import Store
from bitty.storage.tables import runs

logger = logging.getLogger(__name__)
UTC = UTC

@dataclass(frozen=True)
class Uncovered:
    run_id: int
    exchanges: str
    since: datetime
    until: datetime

    def __str__(self) -> str:
        return (f"run {self.run_id} ({self.exchanges}) stopped without a clean shutdown: nothing was "
                f"collected from {self.since:%Y-%m-%d %H:%M:%S} UTC to {self.until:%Y-%m-%d %H:%M:%S} UTC "
                f"(trades received in its last seconds may be missing)")


def start(store: Store, exchanges: list[str]) -> tuple[int, list[Uncovered]]:
    """Record a new run; close earlier runs that never stopped, returning what they left uncovered."""
    now = datetime.now(UTC)
    uncovered = []
    with store.engine.begin() as conn:
        for row in conn.execute(sa.select(runs).where(runs.c.status == "running")):
            uncovered.append(Uncovered(row.id, row.exchanges, row.alive_at, now))
            conn.execute(runs.update().where(runs.c.id == row.id).values(status="crashed", stopped_at=row.alive_at))
        inserted = conn.execute(runs.insert().values(
            host=socket.gethostname(), pid=os.getpid(), exchanges=",".join(exchanges),
            started_at=now, alive_at=now, status="running",
        )).inserted_primary_key
        assert inserted is not None
        run_id = inserted[0]
    for gap in uncovered:
        logger.warning("%s", gap)
    return int(run_id), uncovered


def alive(store: Store, run_id: int) -> None:
    with store.engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == run_id).values(alive_at=datetime.now(UTC)))


def stop(store: Store, run_id: int) -> None:
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == run_id).values(alive_at=now, stopped_at=now, status="stopped"))
