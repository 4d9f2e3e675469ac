"""Where collected trades go: one small interface, several outputs.

A sink is ``open()``, ``write(batch, quarantined) -> the trades that were new``, ``close()``:

- the database (SQLite, PostgreSQL): ``bitty.storage.store.Store`` is a sink as it is;
- ``nats`` a NATS JetStream stream, read back into a database by ``bitty sink``.

``write`` is synchronous: the writer calls it from its worker thread, retries it with backoff
when it raises ``SinkUnavailable`` (or a database error), and spills to disk past its buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa

from bitty.trade import Quarantined, Trade


class SinkUnavailable(sa.exc.SQLAlchemyError):
    """A sink cannot take writes now (a broker away); the writer retries with backoff. It is
    a SQLAlchemy error only so that the writer's retry path, written for databases, takes it."""


class Sink(Protocol):
    def open(self) -> None: ...

    def write(self, batch: Sequence[Trade], quarantined: Sequence[Quarantined] = ()) -> list[Trade]: ...

    def close(self) -> None: ...


class Fanout:
    """Several sinks as one (``--db`` and ``--nats``): a batch is written to each in turn and
    counts as written once all took it. Every sink is idempotent (unique keys, JetStream's
    duplicate window), so a batch retried after a partial failure is stored once. The trades
    reported new are the first sink's."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        assert sinks
        self.sinks = list(sinks)

    def open(self) -> None:
        for sink in self.sinks:
            sink.open()

    def write(self, batch: Sequence[Trade], quarantined: Sequence[Quarantined] = ()) -> list[Trade]:
        first = self.sinks[0].write(batch, quarantined)
        for sink in self.sinks[1:]:
            sink.write(batch, quarantined)
        return first

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
