"""``bitty audit``: how complete the data of a time window is, per exchange and symbol.

Reads the trade database and the coverage ledger: trades stored, gaps open / closed /
unrecoverable, duplicates ignored, quarantined frames, and coverage (the share of the window
the stream was connected, and the share held once closed gaps are counted). Renders a text
table and a self-contained HTML page with one inline SVG chart per symbol (trades per minute,
gaps shaded); a PNG too when matplotlib is installed.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bitty.storage.ledger import Gap, Ledger
from bitty.storage.runs import lease_end
from bitty.storage.store import Store
from bitty.storage.tables import coverage, quarantine, run_counts, runs, trades

GAP_COLORS = {"open": "#f0ad4e", "closed": "#9fd49f", "unrecoverable": "#e06666"}


@dataclass
class Line:
    exchange: str
    symbol: str
    trades: int = 0
    gaps_open: int = 0
    gaps_closed: int = 0
    gaps_unrecoverable: int = 0
    connected: float = 0.0  # share of the window, 0..1
    complete: float = 0.0  # connected or recovered by backfill
    collectors: dict[str, float] = field(default_factory=dict)  # collector -> share of the window it was connected
    per_minute: Counter[datetime] = field(default_factory=Counter)
    gaps: list[Gap] = field(default_factory=list)


@dataclass
class Report:
    since: datetime
    until: datetime
    lines: list[Line]
    duplicates: dict[str, int]
    quarantined: dict[str, int]


def _union(intervals: list[tuple[datetime, datetime]], since: datetime, until: datetime) -> float:
    """Seconds covered by the union of intervals, clipped to the window."""
    clipped = sorted((max(a, since), min(b, until)) for a, b in intervals if b > since and a < until)
    total, end = 0.0, since
    for a, b in clipped:
        if b <= end:
            continue
        total += (b - max(a, end)).total_seconds()
        end = b
    return total


def _holes(intervals: list[tuple[datetime, datetime]], since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """The parts of the window no interval covers."""
    out, end = [], since
    for a, b in sorted(intervals):
        if a > end:
            out.append((end, min(a, until)))
        end = max(end, b)
    if end < until:
        out.append((end, until))
    return [(a, b) for a, b in out if b > a]


def audit(store: Store, since: datetime, until: datetime, exchanges: list[str] | None = None,
          symbols: list[str] | None = None) -> Report:
    ledger = Ledger(store.engine)
    ledger.open()
    now = datetime.now(UTC)
    span = max((until - since).total_seconds(), 1e-9)
    lines: dict[tuple[str, str], Line] = {}

    def line(exchange: str, symbol: str) -> Line | None:
        if (exchanges and exchange not in exchanges) or (symbols and symbol not in symbols):
            return None
        key = (exchange, symbol)
        if key not in lines:
            lines[key] = Line(exchange, symbol)
        return lines[key]

    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(trades.c.exchange, trades.c.symbol, trades.c.time)
                            .where(trades.c.time >= since, trades.c.time < until))
        for exchange, symbol, moment in rows:
            found = line(exchange, symbol)
            if found is not None:
                found.trades += 1
                found.per_minute[moment.replace(second=0, microsecond=0)] += 1
        # Every collector's coverage, merged: a stream is connected wherever any collector of it
        # was. Coverage left open by a run that is gone (stopped, crashed, lease expired) ends at
        # its last sign of life, not now nor at whatever stopped later.
        who = {r.key: r for r in conn.execute(sa.select(runs).where(runs.c.key.is_not(None)))}
        connected: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}
        per_collector: dict[tuple[str, str], dict[str, list[tuple[datetime, datetime]]]] = {}
        for exchange, symbol, start, end, run_key in conn.execute(
                sa.select(coverage.c.exchange, coverage.c.symbol, coverage.c.started_at, coverage.c.ended_at,
                          coverage.c.run_key).where(coverage.c.started_at < until)):
            if line(exchange, symbol) is None:
                continue
            run = who.get(run_key)
            if end is None:
                gone = run is not None and (run.status != "running" or lease_end(run) < now)
                end = max(start, run.alive_at) if gone and run is not None else now
            connected.setdefault((exchange, symbol), []).append((start, end))
            label = (run.name or f"{run.host}:{run.pid}") if run is not None else "unknown"
            per_collector.setdefault((exchange, symbol), {}).setdefault(label, []).append((start, end))
        duplicates: dict[str, Any] = dict(conn.execute(
            sa.select(run_counts.c.exchange, sa.func.sum(run_counts.c.duplicates))
            .where(run_counts.c.started_at < until, run_counts.c.ended_at > since)
            .group_by(run_counts.c.exchange)).all())
        quarantined: dict[str, Any] = dict(conn.execute(
            sa.select(quarantine.c.exchange, sa.func.count())
            .where(quarantine.c.received_at >= since, quarantine.c.received_at < until)
            .group_by(quarantine.c.exchange)).all())
    recovered: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}
    for gap in ledger.gaps(since=since, until=until):
        found = line(gap.exchange, gap.symbol)
        if found is None:
            continue
        found.gaps.append(gap)
        setattr(found, f"gaps_{gap.status}", getattr(found, f"gaps_{gap.status}") + 1)
        duplicates[gap.exchange] = int(duplicates.get(gap.exchange) or 0) + gap.duplicates
        if gap.status == "closed":
            recovered.setdefault((gap.exchange, gap.symbol), []).append((gap.from_time, gap.to_time or now))
    for key, found in lines.items():
        live = connected.get(key, [])
        found.connected = _union(live, since, until) / span
        # A closed gap recovered every trade of the time its stream was blind: the holes in the
        # coverage it overlaps count as complete, whole (not only from the trade before to the
        # one after).
        closed = recovered.get(key, [])
        healed = [h for h in _holes(live, since, until) if any(a <= h[1] and b >= h[0] for a, b in closed)]
        found.complete = _union(live + closed + healed, since, until) / span
        found.collectors = {name: _union(spans, since, until) / span
                            for name, spans in sorted(per_collector.get(key, {}).items())}
    ordered = [lines[k] for k in sorted(lines)]
    return Report(since, until, ordered, {k: int(v or 0) for k, v in duplicates.items()},
                  {k: int(v) for k, v in quarantined.items()})


def table(report: Report) -> str:
    head = ("exchange", "symbol", "trades", "gaps open", "closed", "unrecoverable", "connected", "complete", "collectors")
    rows = [head] + [(x.exchange, x.symbol, str(x.trades), str(x.gaps_open), str(x.gaps_closed),
                      str(x.gaps_unrecoverable), f"{x.connected:.1%}", f"{x.complete:.1%}",
                      " ".join(f"{name} {share:.0%}" for name, share in x.collectors.items()) or "-")
                     for x in report.lines]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = [f"window {report.since:%Y-%m-%d %H:%M:%S} .. {report.until:%Y-%m-%d %H:%M:%S} UTC"]
    out += ["  ".join(c.ljust(w) if i < 2 or i == 8 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]
    for name in sorted(set(report.duplicates) | set(report.quarantined)):
        out.append(f"{name}: {report.duplicates.get(name, 0)} duplicates ignored, "
                   f"{report.quarantined.get(name, 0)} frames quarantined")
    return "\n".join(out)


def svg(report: Report, line: Line, width: int = 900, height: int = 160) -> str:
    """Trades per minute as bars, gaps as shaded bands (colour by status)."""
    span = max((report.until - report.since).total_seconds(), 1.0)

    def x(moment: datetime) -> float:
        return max(0.0, min(width, (moment - report.since).total_seconds() / span * width))

    top = max(line.per_minute.values(), default=1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}" '
             f'role="img" aria-label="{html.escape(line.exchange)} {html.escape(line.symbol)}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" stroke="#ccc"/>']
    for gap in line.gaps:
        a, b = x(gap.from_time), x(gap.to_time or report.until)
        tip = html.escape(f"{gap.cause} gap {gap.status}: {gap.reason}")
        parts.append(f'<rect x="{a:.1f}" y="0" width="{max(b - a, 1.5):.1f}" height="{height}" '
                     f'fill="{GAP_COLORS.get(gap.status, "#ccc")}" opacity="0.6"><title>{tip}</title></rect>')
    bar = max(width * 60 / span, 1.0)
    for minute, count in sorted(line.per_minute.items()):
        h = count / top * (height - 10)
        parts.append(f'<rect x="{x(minute):.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                     f'fill="#3366cc"><title>{minute:%H:%M} {count} trades</title></rect>')
    parts.append(f'<text x="2" y="{height + 15}" font-size="11">{report.since:%Y-%m-%d %H:%M}</text>')
    parts.append(f'<text x="{width - 2}" y="{height + 15}" font-size="11" text-anchor="end">'
                 f'{report.until:%Y-%m-%d %H:%M} UTC (peak {top}/min)</text></svg>')
    return "".join(parts)


def page(report: Report) -> str:
    """A self-contained HTML report: the table and one chart per symbol, no external assets."""
    legend = " ".join(f'<span style="background:{c};padding:0 6px">{s} gap</span>' for s, c in GAP_COLORS.items())
    charts = "".join(f"<h2>{html.escape(x.exchange)} {html.escape(x.symbol)}</h2>{svg(report, x)}"
                     for x in report.lines)
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>bitty audit</title></head>'
            f'<body style="font-family:sans-serif"><h1>bitty audit</h1><pre>{html.escape(table(report))}</pre>'
            f"<p>Trades per minute; {legend}</p>{charts}</body></html>")


def png(report: Report, path: str) -> bool:
    """Write the charts as a PNG if matplotlib is installed; False if it is not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(max(len(report.lines), 1), 1, figsize=(10, 2.2 * max(len(report.lines), 1)), squeeze=False)
    for ax, x in zip(axes[:, 0], report.lines, strict=False):
        minutes = sorted(x.per_minute)
        ax.bar(minutes, [x.per_minute[m] for m in minutes], width=timedelta(minutes=1), color="#3366cc")
        for gap in x.gaps:
            ax.axvspan(gap.from_time, gap.to_time or report.until, color=GAP_COLORS.get(gap.status, "#ccc"), alpha=0.6)
        ax.set_xlim(report.since, report.until)
        ax.set_title(f"{x.exchange} {x.symbol}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
