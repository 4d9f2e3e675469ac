"""``bitty audit``: how complete the data of a time window is, per exchange and symbol.

Reads (never writes) the trade database and the coverage ledger: trades stored, gaps open /
closed / unrecoverable, duplicates ignored, quarantined frames, and coverage (the share of the
window the stream was connected, and the share held once closed gaps are counted).

Trades are counted per minute (per hour past two days) by the database (``strftime`` on SQLite,
``date_trunc`` on PostgreSQL), not row by row here. Coverage is recorded in the collector's
clock and trades carry the exchange's: each connected interval is moved into the exchange's
clock by the delay between a trade's time and its receipt, so a replay of old trades is
compared with the trades it stored. Renders a text table and a self-contained HTML page, one
SVG chart per symbol with a labelled time axis, and the time not covered and every gap (however
short) marked; a PNG too when matplotlib is installed.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bitty.errors import BittyError
from bitty.storage.ledger import Gap
from bitty.storage.runs import lease_end
from bitty.storage.store import Store
from bitty.storage.tables import coverage, gaps, quarantine, run_counts, runs, trades

GAP_COLORS = {"open": "#f0ad4e", "closed": "#5cb85c", "unrecoverable": "#d9534f"}
UNCOVERED_COLORS = {"not running": "#d6d6d6", "disconnected": "#ecd9f7"}
Interval = tuple[datetime, datetime]


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
    per_minute: Counter[datetime] = field(default_factory=Counter)  # trades per bucket (Report.bucket)
    gaps: list[Gap] = field(default_factory=list)
    uncovered: list[tuple[datetime, datetime, str]] = field(default_factory=list)  # (from, to, why)


@dataclass
class Report:
    since: datetime
    until: datetime
    lines: list[Line]
    duplicates: dict[str, int]
    quarantined: dict[str, int]
    bucket: timedelta = timedelta(minutes=1)


def open_store(url: str) -> Store:
    """The database to audit, or a one-line ``BittyError``: a SQLite path that does not exist
    is never created, and a database without bitty's tables is named as such."""
    parsed = sa.engine.make_url(url) if "://" in url else None
    if parsed is None:
        raise BittyError(f"--db {url!r}: expected a database URL, e.g. sqlite:///bitty.db or postgresql://host/db")
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:" \
            and not parsed.database.startswith("file:") and not Path(parsed.database).is_file():
        raise BittyError(f"no database at {parsed.database}: the file does not exist (check --db)")
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            found = sa.inspect(conn).has_table("trades")
    except sa.exc.SQLAlchemyError as exc:
        store.close()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise BittyError(f"cannot open database {store.engine.url!r}: {reason[0] if reason else type(exc).__name__}") \
            from None
    if not found:
        store.close()
        raise BittyError(f"{store.engine.url!r} holds no trades table: not a bitty database?")
    return store


def _union(intervals: list[Interval], since: datetime, until: datetime) -> list[Interval]:
    """The union of intervals clipped to the window, sorted and disjoint."""
    out: list[Interval] = []
    for a, b in sorted((max(a, since), min(b, until)) for a, b in intervals if b > since and a < until):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _seconds(intervals: list[Interval]) -> float:
    return sum((b - a).total_seconds() for a, b in intervals)


def _minus(window: Interval, covered: list[Interval]) -> list[Interval]:
    """The parts of ``window`` outside the disjoint sorted ``covered``."""
    out, start = [], window[0]
    for a, b in covered:
        if a > start:
            out.append((start, min(a, window[1])))
        start = max(start, b)
    if start < window[1]:
        out.append((start, window[1]))
    return [(a, b) for a, b in out if b > a]


def _bucket_expr(dialect: str, hourly: bool) -> Any:
    if dialect == "postgresql":
        return sa.func.date_trunc("hour" if hourly else "minute", sa.func.timezone("UTC", trades.c.time))
    return sa.func.strftime("%Y-%m-%d %H:00:00" if hourly else "%Y-%m-%d %H:%M:00", trades.c.time)


def _moment(value: Any) -> datetime:
    """A bucket or time as the database returns it (text on SQLite) -> aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def audit(store: Store, since: datetime, until: datetime, exchanges: list[str] | None = None,
          symbols: list[str] | None = None) -> Report:
    try:
        return _audit(store, since, until, exchanges, symbols)
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise BittyError(f"cannot read {store.engine.url!r}: {reason[0] if reason else type(exc).__name__}") from None


def _audit(store: Store, since: datetime, until: datetime, exchanges: list[str] | None,
           symbols: list[str] | None) -> Report:
    now = datetime.now(UTC)
    span = max((until - since).total_seconds(), 1e-9)
    hourly = span > 2 * 86400
    lines: dict[tuple[str, str], Line] = {}

    def allowed(exchange: str, symbol: str) -> bool:
        return not ((exchanges and exchange not in exchanges) or (symbols and symbol not in symbols))

    def line(exchange: str, symbol: str) -> Line | None:
        if not allowed(exchange, symbol):
            return None
        key = (exchange, symbol)
        if key not in lines:
            lines[key] = Line(exchange, symbol)
        return lines[key]

    def chosen(query: Any, table: sa.Table) -> Any:
        if exchanges:
            query = query.where(table.c.exchange.in_(exchanges))
        if symbols and "symbol" in table.c:
            query = query.where(table.c.symbol.in_(symbols))
        return query

    in_window = sa.and_(trades.c.time >= since, trades.c.time < until)
    bucket = _bucket_expr(store.dialect, hourly).label("bucket")
    with store.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        for exchange, symbol, at, count in conn.execute(chosen(
                sa.select(trades.c.exchange, trades.c.symbol, bucket, sa.func.count()).where(in_window)
                .group_by(trades.c.exchange, trades.c.symbol, bucket), trades)):
            found = line(exchange, symbol)
            if found is not None:
                found.trades += count
                found.per_minute[_moment(at)] += count
        # The delay between the exchange's clock and bitty's, per minute of receipt.
        received = (sa.func.strftime("%Y-%m-%d %H:%M:00", trades.c.received_at) if store.dialect == "sqlite" else
                    sa.func.date_trunc("minute", sa.func.timezone("UTC", trades.c.received_at))).label("received")
        delays: dict[tuple[str, str], list[tuple[datetime, datetime, datetime, datetime]]] = {}
        for exchange, symbol, _minute, first_time, last_time, first_seen, last_seen in conn.execute(chosen(
                sa.select(trades.c.exchange, trades.c.symbol, received, sa.func.min(trades.c.time),
                          sa.func.max(trades.c.time), sa.func.min(trades.c.received_at),
                          sa.func.max(trades.c.received_at)).where(in_window)
                .group_by(trades.c.exchange, trades.c.symbol, received), trades)):
            delays.setdefault((exchange, symbol), []).append(
                (_moment(first_seen), _moment(last_seen), _moment(first_time), _moment(last_time)))
        # Every collector's coverage, merged: a stream is connected wherever any collector of it
        # was. Coverage left open by a run that is gone (stopped, crashed, lease expired) ends at
        # its last sign of life, not now nor at whatever stopped later.
        every_run = list(conn.execute(sa.select(runs))) if "runs" in tables else []
        who = {r.key: r for r in every_run if r.key is not None}
        connected: dict[tuple[str, str], list[Interval]] = {}
        per_collector: dict[tuple[str, str], dict[str, list[Interval]]] = {}
        if "coverage" in tables:
            for exchange, symbol, start, end, run_key in conn.execute(chosen(
                    sa.select(coverage.c.exchange, coverage.c.symbol, coverage.c.started_at, coverage.c.ended_at,
                              coverage.c.run_key), coverage)):
                if not allowed(exchange, symbol):
                    continue
                run = who.get(run_key)
                if end is None:
                    gone = run is not None and (run.status != "running" or lease_end(run) < now)
                    end = max(start, run.alive_at) if gone and run is not None else now
                mapped = _in_trade_clock(start, end, delays.get((exchange, symbol), []))
                if mapped[1] > since and mapped[0] < until:
                    line(exchange, symbol)
                    connected.setdefault((exchange, symbol), []).append(mapped)
                    if run is not None:  # coverage of runs from before collectors had identities: no name
                        label = run.name or f"{run.host}:{run.pid}"
                        per_collector.setdefault((exchange, symbol), {}).setdefault(label, []).append(mapped)
        running: dict[str, list[Interval]] = {}
        for run in every_run:
            alive = run.status == "running" and (run.key is None or lease_end(run) >= now)
            end = now if alive else run.stopped_at or run.alive_at
            for name in run.exchanges.split(","):
                running.setdefault(name, []).append((run.started_at, end))
        duplicates: dict[str, Any] = {}
        if "run_counts" in tables:
            duplicates = dict(conn.execute(chosen(
                sa.select(run_counts.c.exchange, sa.func.sum(run_counts.c.duplicates))
                .where(run_counts.c.started_at < until, run_counts.c.ended_at > since)
                .group_by(run_counts.c.exchange), run_counts)).all())
        quarantined: dict[str, Any] = dict(conn.execute(chosen(
            sa.select(quarantine.c.exchange, sa.func.count())
            .where(quarantine.c.received_at >= since, quarantine.c.received_at < until)
            .group_by(quarantine.c.exchange), quarantine)).all())
        found_gaps: list[Gap] = []
        if "gaps" in tables:
            query = sa.select(*(gaps.c[f] for f in Gap.__dataclass_fields__)).order_by(gaps.c.from_time, gaps.c.id) \
                .where(gaps.c.from_time < until, sa.or_(gaps.c.to_time.is_(None), gaps.c.to_time > since))
            found_gaps = [Gap(**row._mapping) for row in conn.execute(chosen(query, gaps))]
    recovered: dict[tuple[str, str], list[Interval]] = {}
    for gap in found_gaps:
        found = line(gap.exchange, gap.symbol)
        if found is None:
            continue
        found.gaps.append(gap)
        setattr(found, f"gaps_{gap.status}", getattr(found, f"gaps_{gap.status}") + 1)
        duplicates[gap.exchange] = int(duplicates.get(gap.exchange) or 0) + gap.duplicates
        if gap.status == "closed":
            recovered.setdefault((gap.exchange, gap.symbol), []).append((gap.from_time, gap.to_time or now))
    for key, found in lines.items():
        live = _union(connected.get(key, []), since, until)
        found.connected = _seconds(live) / span
        # A closed gap recovered every trade of the time its stream was blind: the holes in the
        # coverage it overlaps count as complete, whole (not only from the trade before to the
        # one after).
        closed = recovered.get(key, [])
        healed = [h for h in _minus((since, until), live) if any(a <= h[1] and b >= h[0] for a, b in closed)]
        found.complete = _seconds(_union(live + closed + healed, since, until)) / span
        found.collectors = {name: _seconds(_union(spans, since, until)) / span
                            for name, spans in sorted(per_collector.get(key, {}).items())}
        ran = _union(running.get(key[0], []), since, until)
        for a, b in _minus((since, until), live):
            # within a run: the stream was down; outside every run: bitty was not running
            inside = _union([(max(a, x), min(b, y)) for x, y in ran if y > a and x < b], a, b)
            found.uncovered += [(x, y, "disconnected") for x, y in inside]
            found.uncovered += [(x, y, "not running") for x, y in _minus((a, b), inside)]
        found.uncovered.sort()
    ordered = [lines[k] for k in sorted(lines)]
    return Report(since, until, ordered, {k: int(v or 0) for k, v in duplicates.items()},
                  {k: int(v) for k, v in quarantined.items()}, timedelta(hours=1) if hourly else timedelta(minutes=1))


def _in_trade_clock(start: datetime, end: datetime,
                    delays: list[tuple[datetime, datetime, datetime, datetime]]) -> Interval:
    """A connected interval in bitty's clock moved into the exchange's, by the delay of the
    first and the last trade received in it (unchanged when none was)."""
    inside = [d for d in delays if d[1] >= start and d[0] <= end]
    if not inside:
        return start, end
    first = min(inside, key=lambda d: d[0])
    last = max(inside, key=lambda d: d[1])
    a, b = start - (first[0] - first[2]), end - (last[1] - last[3])
    return (a, b) if b >= a else (b, a)


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


_STEPS = [timedelta(seconds=s) for s in (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
                                         86400, 172800, 604800)]


def ticks(since: datetime, until: datetime, most: int = 10) -> list[tuple[datetime, str]]:
    """Round times for a time axis, at most ``most`` of them, each with its label (the date
    with the first tick and wherever the day changes)."""
    span = until - since
    step = next((s for s in _STEPS if span / s <= most), _STEPS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + step * -(-(since - epoch) // step)  # the first multiple of step at or after since
    out: list[tuple[datetime, str]] = []
    day = None
    moment = first
    while moment <= until:
        fmt = "%H:%M:%S" if step < timedelta(minutes=1) else "%H:%M"
        label = moment.strftime(fmt) if moment.date() == day else moment.strftime(f"%Y-%m-%d {fmt}")
        day = moment.date()
        out.append((moment, label))
        moment += step
    return out


def svg(report: Report, line: Line, width: int = 960, height: int = 170) -> str:
    """Trades per minute as bars over a labelled time axis; time not covered shaded; every gap a
    band of at least 3 px with a marker above it (colour by status)."""
    left, right, top_pad, plot_h = 56, 12, 18, height
    plot_w = width - left - right
    span = max((report.until - report.since).total_seconds(), 1.0)

    def x(moment: datetime) -> float:
        return left + max(0.0, min(plot_w, (moment - report.since).total_seconds() / span * plot_w))

    top = max(line.per_minute.values(), default=0)
    scale = max(top, 1)
    base = top_pad + plot_h
    unit = "hour" if report.bucket >= timedelta(hours=1) else "minute"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{base + 40}" font-family="sans-serif" '
             f'role="img" aria-label="{html.escape(line.exchange)} {html.escape(line.symbol)} trades per {unit}">',
             f'<rect x="{left}" y="{top_pad}" width="{plot_w}" height="{plot_h}" fill="#fcfcfc" stroke="#bbb"/>']
    for moment, label in ticks(report.since, report.until):
        at = x(moment)
        anchor = "start" if at - left < 40 else "end" if left + plot_w - at < 40 else "middle"
        parts.append(f'<line x1="{at:.1f}" y1="{top_pad}" x2="{at:.1f}" y2="{base + 4}" stroke="#e2e2e2"/>'
                     f'<text x="{at:.1f}" y="{base + 16}" font-size="11" text-anchor="{anchor}" fill="#444">'
                     f"{label}</text>")
    bar = max(plot_w * report.bucket.total_seconds() / span - 0.3, 1.0)
    for minute, count in sorted(line.per_minute.items()):
        h = count / scale * (plot_h - 6)
        parts.append(f'<rect x="{x(minute):.1f}" y="{base - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                     f'fill="#3366cc"><title>{minute:%Y-%m-%d %H:%M} UTC: {count} trades</title></rect>')
    for a, b, why in line.uncovered:  # over the bars: trades stored while not covered came from backfill
        parts.append(f'<rect class="uncovered" x="{x(a):.1f}" y="{top_pad}" width="{max(x(b) - x(a), 1.0):.1f}" '
                     f'height="{plot_h}" fill="{UNCOVERED_COLORS[why]}" opacity="0.75"><title>{why}: '
                     f'{a:%Y-%m-%d %H:%M:%S} .. {b:%H:%M:%S} UTC</title></rect>')
    for gap in line.gaps:
        start, end = x(max(gap.from_time, report.since)), x(gap.to_time or report.until)
        colour = GAP_COLORS.get(gap.status, "#999")
        tip = html.escape(f"{gap.cause} gap {gap.status}: {gap.from_time:%Y-%m-%d %H:%M:%S} .. "
                          f"{gap.to_time:%H:%M:%S} UTC" if gap.to_time else f"{gap.cause} gap {gap.status}: from "
                          f"{gap.from_time:%Y-%m-%d %H:%M:%S} UTC") + html.escape(f" ({gap.reason})" if gap.reason else "")
        middle = (start + max(end, start + 3)) / 2
        parts.append(f'<g class="gap" data-status="{gap.status}"><title>{tip}</title>'
                     f'<rect x="{min(start, middle - 1.5):.1f}" y="{top_pad}" width="{max(end - start, 3.0):.1f}" '
                     f'height="{plot_h}" '
                     f'fill="{colour}" opacity="0.55"/>'
                     f'<path d="M{middle - 5:.1f},{top_pad - 10} L{middle + 5:.1f},{top_pad - 10} L{middle:.1f},{top_pad - 1} Z" '
                     f'fill="{colour}"/></g>')
    parts.append(f'<text x="{left - 6}" y="{top_pad + 10}" font-size="11" text-anchor="end" fill="#444">{top}</text>'
                 f'<text x="{left - 6}" y="{base}" font-size="11" text-anchor="end" fill="#444">0</text>'
                 f'<text x="12" y="{top_pad + plot_h / 2:.0f}" font-size="11" fill="#444" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top_pad + plot_h / 2:.0f})">trades/{unit}</text>'
                 f'<text x="{left + plot_w / 2:.0f}" y="{base + 32}" font-size="11" text-anchor="middle" fill="#444">'
                 "time (UTC)</text>"
                 "</svg>")
    return "".join(parts)


def page(report: Report) -> str:
    """A self-contained HTML report: the table and one chart per symbol, no external assets."""
    swatch = '<span style="display:inline-block;width:12px;height:12px;background:{};margin:0 4px 0 12px"></span>{}'
    legend = "".join([swatch.format("#3366cc", "trades"),
                      *(swatch.format(c, s) for s, c in UNCOVERED_COLORS.items()),
                      *(swatch.format(c, f"{s} gap (marked &#9660;)") for s, c in GAP_COLORS.items())])
    charts = "".join(
        f'<section class="symbol"><h2>{html.escape(x.exchange)} {html.escape(x.symbol)}</h2>'
        f'<p class="facts">{x.trades} trades, connected {x.connected:.1%}, complete {x.complete:.1%}, '
        f"gaps: {x.gaps_open} open, {x.gaps_closed} closed, {x.gaps_unrecoverable} unrecoverable</p>"
        f"{svg(report, x)}</section>" for x in report.lines)
    empty = "" if report.lines else "<p>No trades, coverage or gaps in this window.</p>"
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bitty audit</title><style>'
            "body{font-family:system-ui,sans-serif;margin:20px 28px;color:#222}h1{font-size:22px;margin:0 0 4px}"
            "h2{font-size:16px;margin:18px 0 2px}.facts{margin:0 0 4px;color:#555}pre{background:#f6f6f6;padding:8px}"
            "</style></head><body>"
            f"<h1>bitty audit</h1><p>{report.since:%Y-%m-%d %H:%M:%S} .. {report.until:%Y-%m-%d %H:%M:%S} UTC</p>"
            f"<pre>{html.escape(table(report))}</pre><p>{legend}</p>{empty}{charts}</body></html>")


def png(report: Report, path: str) -> bool:
    """Write the charts as a PNG if matplotlib is installed; False if it is not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(max(len(report.lines), 1), 1, figsize=(11, 2.4 * max(len(report.lines), 1)), squeeze=False)
    for ax, x in zip(axes[:, 0], report.lines, strict=False):
        for a, b, why in x.uncovered:
            ax.axvspan(a, b, color=UNCOVERED_COLORS[why], alpha=0.8, lw=0)
        minutes = sorted(x.per_minute)
        ax.bar(minutes, [x.per_minute[m] for m in minutes], width=report.bucket, align="edge", color="#3366cc")
        for gap in x.gaps:
            colour = GAP_COLORS.get(gap.status, "#999")
            ax.axvspan(gap.from_time, gap.to_time or report.until, color=colour, alpha=0.55)
            ax.axvline(gap.from_time, color=colour, lw=1.5)  # a gap of any length stays visible
        ax.set_xlim(report.since, report.until)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        ax.set_ylabel("trades/" + ("hour" if report.bucket >= timedelta(hours=1) else "minute"))
        ax.set_title(f"{x.exchange} {x.symbol}: connected {x.connected:.1%}, complete {x.complete:.1%}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
