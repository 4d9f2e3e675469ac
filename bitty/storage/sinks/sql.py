"""The SQL sink: today's ``Store`` (SQLite, PostgreSQL) behind the sink interface."""

from __future__ import annotations

from collections.abc import Sequence

from bitty.storage.store import Store
from bitty.trade import Quarantined, Trade


class SqlSink:
    """Trades into a database; a known ``(exchange, symbol, trade_id)`` is skipped and counted."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)

    def open(self) -> None:
        self.store.open()

    def write(self, batch: Sequence[Trade], quarantined: Sequence[Quarantined] = ()) -> list[Trade]:
        return self.store.write(batch, quarantined)

    def close(self) -> None:
        self.store.close()
