"""Run records: who collects (host, pid, ``--name``), since when, and a lease renewed while alive.

Many collectors may share one database (a standby pair, shards on several machines). A run is
declared crashed only when its lease expired (a SIGKILL, a power loss: nobody renewed it) or,
on the same machine, its process no longer exists; never because another collector started.
Its coverage then ends at its last renewal, not at whatever stops later; the interval it left
is reported (another collector may have covered it: ``bitty audit`` merges them).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bitty.storage.store import Store
from bitty.storage.tables import coverage, runs

logger = logging.getLogger(__name__)
UTC = UTC
LEASE = 30.0  # seconds a renewal holds; collectors renew every LEASE / 6


@dataclass(frozen=True)
class Identity:
    """Who a run is: ``key`` is unique (it names the run in the database and on NATS)."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    name: str | None = None
    shard: str | None = None
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def label(self) -> str:
        return self.name or f"{self.host}:{self.pid}"


@dataclass(frozen=True)
class Uncovered:
    run_id: int
    exchanges: str
    since: datetime
    until: datetime

    def __str__(self) -> str:
        return (f"run {self.run_id} ({self.exchanges}) stopped without a clean shutdown "
                f"(its lease expired or its process is gone): it collected nothing from "
                f"{self.since:%Y-%m-%d %H:%M:%S} UTC to {self.until:%Y-%m-%d %H:%M:%S} UTC "
                f"(trades received in its last seconds may be missing; `bitty audit` shows whether another "
                f"collector covered it)")


def lease_end(row: sa.Row[tuple[object, ...]] | object) -> datetime:
    """When a run's lease ends (runs recorded before leases: LEASE after its last sign of life)."""
    until = getattr(row, "lease_until", None)
    alive_at: datetime = getattr(row, "alive_at")  # noqa: B009
    return until if isinstance(until, datetime) else alive_at + timedelta(seconds=LEASE)


def _gone(host: str, pid: int) -> bool:
    """A process of this machine that no longer exists (killed: nobody needs to wait for its lease).
    A pid reused by another process counts as alive: then the lease decides."""
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, another user's
        return False
    return False


def expire(conn: sa.Connection, now: datetime) -> list[Uncovered]:
    """Mark crashed the running runs whose lease expired, or whose process on this machine is
    gone; their open coverage ends at their last renewal."""
    out = []
    for row in conn.execute(sa.select(runs).where(runs.c.status == "running")):
        if lease_end(row) >= now and not _gone(row.host, row.pid):
            continue
        out.append(Uncovered(row.id, row.exchanges, row.alive_at, now))
        conn.execute(runs.update().where(runs.c.id == row.id).values(status="crashed", stopped_at=row.alive_at))
        if row.key is not None:
            conn.execute(coverage.update().where(coverage.c.run_key == row.key, coverage.c.ended_at.is_(None))
                         .values(ended_at=row.alive_at, end_reason="run crashed: lease expired"))
    return out


def start(store: Store, exchanges: list[str], identity: Identity | None = None,
          lease: float = LEASE) -> tuple[int, list[Uncovered]]:
    """Record a new run; mark crashed the runs whose lease expired, returning what they left uncovered."""
    me = identity or Identity()
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        uncovered = expire(conn, now)
        others = conn.execute(sa.select(runs).where(runs.c.status == "running")).all()
        inserted = conn.execute(runs.insert().values(
            host=me.host, pid=me.pid, exchanges=",".join(exchanges), started_at=now, alive_at=now, status="running",
            key=me.key, name=me.name, shard=me.shard, lease_until=now + timedelta(seconds=lease),
        )).inserted_primary_key
        assert inserted is not None
        run_id = inserted[0]
    for gap in uncovered:
        logger.warning("%s", gap)
    for row in others:
        logger.info("run %d (%s, %s pid %d) is collecting too, lease until %s", row.id, row.name or "no name",
                    row.host, row.pid, f"{lease_end(row):%H:%M:%S} UTC")
    return int(run_id), uncovered


def alive(store: Store, run_id: int, lease: float = LEASE) -> None:
    """Renew the lease."""
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == run_id)
                     .values(alive_at=now, lease_until=now + timedelta(seconds=lease)))


def stop(store: Store, run_id: int) -> None:
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == run_id)
                     .values(alive_at=now, stopped_at=now, lease_until=now, status="stopped"))


def upsert(conn: sa.Connection, fields: dict[str, object]) -> None:
    """Apply a run's state published over NATS (``bitty sink``), keyed by ``key``; idempotent."""
    key = fields["key"]
    values = {k: fields[k] for k in ("host", "pid", "name", "shard", "exchanges", "started_at", "alive_at",
                                     "stopped_at", "status", "lease_until") if k in fields}
    found = conn.execute(sa.select(runs.c.id, runs.c.alive_at).where(runs.c.key == key)).first()
    if found is None:
        conn.execute(runs.insert().values(key=key, **values))
    elif values.get("alive_at") is None or found.alive_at is None or values["alive_at"] >= found.alive_at:
        conn.execute(runs.update().where(runs.c.id == found.id).values(**values))
