"""What a person watching ``bitty collect`` sees: a live table on a terminal, progress lines otherwise.

Rates are trades received over the interval since the previous report (the first one: since
the start), so a line never says 0.0/s while trades flow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from rich.table import Table

from bitty.ops.status import CONNECTED, FAILED, Snapshot, Source

logger = logging.getLogger("bitty.collect")


@dataclass
class Row:
    exchange: str
    state: str  # "2/2 connected"
    received: int
    rate: float
    stored: int
    duplicates: int
    quarantined: int
    reconnects: int
    gaps: int  # symbols in a gap now
    elapsed: float
    level: str = "ok"  # ok (all connected), partial (some connecting), down (a stream failed)


class Progress:
    """Per exchange rows, each with its rate over the interval since the previous ``rows()``."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.started = time.monotonic()
        self._last: dict[str, tuple[float, int]] = {}

    def rows(self, snapshot: Snapshot | None = None, advance: bool = True) -> list[Row]:
        """One row per exchange; ``advance``: the next rates count from now."""
        snap = snapshot or self.source.snapshot()
        now = time.monotonic()
        out = []
        names = sorted(set(snap.exchanges) | {s.exchange for s in snap.streams})
        for name in names:
            exchange = snap.exchanges.get(name)
            received = exchange.received if exchange else 0
            then, before = self._last.get(name, (self.started, 0))
            rate = (received - before) / (now - then) if now > then else 0.0
            if advance:
                self._last[name] = (now, received)
            streams = [s for s in snap.streams if s.exchange == name]
            up = sum(s.state == CONNECTED for s in streams)
            state = f"{up}/{len(streams)} connected" if up or len(streams) != 1 else streams[0].state
            level = "ok" if up == len(streams) else "down" if any(s.state == FAILED for s in streams) else "partial"
            out.append(Row(name, state, received, rate, exchange.stored if exchange else 0,
                           exchange.duplicates if exchange else 0, exchange.quarantined if exchange else 0,
                           sum(s.reconnects for s in streams),
                           sum(1 for s in snap.symbols if s.exchange == name and s.gap_open), now - self.started, level))
        return out

    def log(self, final: bool = False) -> None:
        for row in self.rows():
            average = f", {row.received / row.elapsed:.1f}/s over {_elapsed(row.elapsed)}" if final and row.elapsed else ""
            logger.info("%s: %d trades received (%.1f/s), %d stored, %d duplicates, %d quarantined, %s, "
                        "%d reconnects, %d in a gap, up %s%s",
                        row.exchange, row.received, row.rate, row.stored, row.duplicates, row.quarantined, row.state,
                        row.reconnects, row.gaps, _elapsed(row.elapsed), f" (final{average})" if final else "")


def _elapsed(seconds: float) -> str:
    s = int(seconds)
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def table(rows: list[Row]) -> Table:
    """The rows as a rich table."""
    grid = Table(title="bitty collect", title_justify="left", expand=False)
    for name, justify in (("exchange", "left"), ("state", "left"), ("trades", "right"), ("rate", "right"),
                          ("stored", "right"), ("duplicates", "right"), ("quarantined", "right"),
                          ("reconnects", "right"), ("gaps", "right"), ("elapsed", "right")):
        grid.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        colour = {"ok": "green", "partial": "yellow"}.get(row.level, "red")
        grid.add_row(row.exchange, f"[{colour}]{row.state}[/]", str(row.received), f"{row.rate:.1f}/s", str(row.stored),
                     str(row.duplicates), str(row.quarantined), str(row.reconnects),
                     f"[red]{row.gaps}[/]" if row.gaps else "0", _elapsed(row.elapsed))
    return grid


async def run(progress: Progress, interval: float, live: bool) -> None:
    """Report every ``interval`` seconds until cancelled: log lines, or (``live``, on a terminal)
    a table redrawn in place, with log lines printed above it."""
    if not live:
        while True:
            await asyncio.sleep(interval)
            progress.log()
    from rich.console import Console
    from rich.live import Live

    tick = min(interval, 1.0)
    with Live(table(progress.rows()), console=Console(stderr=True), auto_refresh=False,
              redirect_stderr=True, redirect_stdout=False, transient=False) as view:
        try:
            while True:
                await asyncio.sleep(tick)
                view.update(table(progress.rows()), refresh=True)
        finally:  # the table left on screen shows the end, not the last tick
            view.update(table(progress.rows(advance=False)), refresh=True)
