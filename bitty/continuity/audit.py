"""``bitty audit``: how complete the data of a time window is, per exchange and symbol.

Reads (never writes) the trade database and the coverage ledger: trades stored, gaps open /
closed / unrecoverable, duplicates ignored, quarantined frames, and coverage (the share of the
window the stream was connected, and the share held once closed gaps are counted).

Trades are counted per minute (per hour past two days) by the database (``strftime`` on SQLite,
``date_trunc`` on PostgreSQL), not row by row here. Coverage is recorded in the collector's
clock and trades carry the exchange's: each connected interval is moved into the exchange's
clock by the delay between a trade's time and its receipt, so a replay of old trades is
compared with the trades it stored. ``bitty.continuity.chart`` renders the ``Report`` (a text
table, an HTML page of SVG charts, a PNG).
"""

from __future__ import annotations

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
