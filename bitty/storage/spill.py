"""Spill files: trades that could not be written to the database yet, kept on local disk.

When the database is away long enough that the writer's buffer fills, the oldest trades are
moved to a spill file (JSON lines, one trade per line, decimals as text) instead of being
dropped. Spill files are written back to the database as soon as it accepts writes again,
including by the next run after a crash, and deleted only once all their trades are stored.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bitty.trade import Trade

PREFIX = "bitty-spill-"
PREFIX_REFUSED = "bitty-refused-"  # rows the database refuses: kept, never written back


def write(folder: Path, trades: Iterable[Trade]) -> Path:
    """Write trades to a new spill file, durably (fsync) and atomically (rename)."""
    return _write_lines(folder, PREFIX, (trade.as_json() for trade in trades))


def refused(folder: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Keep rows the database refuses (a value it cannot hold) in a file of their own, which
    ``pending`` does not list: writing them again would fail again."""
    return _write_lines(folder, PREFIX_REFUSED, rows)


def _write_lines(folder: Path, prefix: str, rows: Iterable[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}{datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.jsonl"
    final = folder / name
    partial = folder / (name + ".part")
    with partial.open("wb") as file:
        for row in rows:
            file.write(orjson.dumps(row) + b"\n")
        file.flush()
        os.fsync(file.fileno())
    partial.rename(final)
    return final


def pending(folder: Path) -> list[Path]:
    """Complete spill files waiting to be written, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{PREFIX}*.jsonl"))


def read(path: Path) -> list[Trade]:
    out = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        row = orjson.loads(line)
        out.append(Trade(
            row["exchange"], row["symbol"], row["trade_id"], Decimal(row["price"]), Decimal(row["size"]),
            row["side"], _time(row["time"]), _time(row["received_at"]),
        ))
    return out


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
