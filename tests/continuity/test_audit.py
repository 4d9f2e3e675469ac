"""`bitty audit`: counts in SQL, coverage in the trades' clock, a chart with a time axis where
every gap shows, and one-line errors for a database it cannot open."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bitty.cli import main
from bitty.continuity.audit import audit
from bitty.continuity.chart import page
from bitty.storage import tables
from bitty.storage.ledger import Ledger
from bitty.storage.store import Store
from bitty.trade import Trade
from tests.conftest import ROOT

T0 = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def make_trades(symbol: str, start: datetime, end: datetime, every: float, skip: list[tuple[datetime, datetime]] = (),  # type: ignore[assignment]
                received: Any = None) -> list[Trade]:
    out, moment, n = [], start, 0
    while moment < end:
        if not any(a <= moment < b for a, b in skip):
            n += 1
            seen = received(n) if received else moment + timedelta(milliseconds=40)
            out.append(Trade("acme", symbol, str(n), Decimal("100.5"), Decimal("0.1"), "buy", moment, seen))
        moment += timedelta(seconds=every)
    return out


def run_row(start: datetime, stop: datetime) -> dict[str, Any]:
    return {"host": "h", "pid": 1, "exchanges": "acme,other", "started_at": start, "alive_at": stop,
            "stopped_at": stop, "status": "stopped"}


def collected(db: str) -> int:
    """Two hours of acme BTC-USD: bitty not running 10:40-10:55, a 6-second gap at 11:30."""
    store = Store(db)
    store.open()
    ledger = Ledger(store.engine)
    ledger.open()
    btc = make_trades("BTC-USD", at(0), at(120), 5, skip=[(at(40), at(55)), (at(90), at(90.1))])
    store.write(btc)
    ledger.connected("acme", ["BTC-USD"], at(0))
    ledger.disconnected("acme", ["BTC-USD"], at(40), "stopped")
    ledger.connected("acme", ["BTC-USD"], at(55))
    ledger.disconnected("acme", ["BTC-USD"], at(90), "server closed")
    ledger.connected("acme", ["BTC-USD"], at(90.1))
    ledger.disconnected("acme", ["BTC-USD"], at(120), "stopped")
    restart = ledger.open_gap("acme", "BTC-USD", at(40), "restart", "480", at(55), at(55), "481")
    ledger.settle(restart, "unrecoverable", "no rest.trades", at(55))
    short = ledger.open_gap("acme", "BTC-USD", at(90), "disconnect", "1080", at(90.1), at(90.1), "1081")
    ledger.settle(short, "closed", "backfilled", at(90.2))
    with store.engine.begin() as conn:
        conn.execute(tables.runs.insert(), [run_row(at(-1), at(40)), run_row(at(55), at(121))])
    store.close()
    return len(btc)


def test_audit_counts_in_sql_and_draws_every_gap(tmp_path: Path, db_url: str, capsys: Any) -> None:
    """Trades per minute are counted by the database; the page has a labelled time axis, the time
    bitty was not running shaded, and a 6-second gap in a 2-hour window drawn at least 3 px wide
    with a marker (SQLite and PostgreSQL)."""
    count = collected(db_url)
    store = Store(db_url)
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    report = audit(store, at(0), at(120))
    store.close()
    counting = [s for s in statements if ("strftime" in s or "date_trunc" in s) and "GROUP BY" in s]
    assert counting, statements
    assert not any(re.search(r"SELECT trades\.exchange, trades\.symbol, trades\.time\s+FROM", s) for s in statements)
    [line] = report.lines
    assert line.trades == count and sum(line.per_minute.values()) == count
    assert len(line.per_minute) == 120 - 15  # one bucket per minute with trades
    assert line.per_minute[at(0)] == 12
    assert line.connected == pytest.approx((40 + 35 - 0.1 + 29.9) / 120, abs=0.01)
    # coverage moved into the exchange's clock by the trades' 40 ms delay
    [(a, b)] = [(a, b) for a, b, why in line.uncovered if why == "not running"]
    assert abs((a - at(40)).total_seconds()) < 1 and abs((b - at(55)).total_seconds()) < 1
    assert any(why == "disconnected" and abs((a - at(90)).total_seconds()) < 1 for a, b, why in line.uncovered)

    text = page(report)
    assert re.search(r'<g class="gap" data-status="closed"><title>disconnect gap closed: 2024-05-14 11:30:00', text)
    closed = text[text.index('data-status="closed"'):]
    width = float(re.search(r'<rect x="[\d.]+" y="\d+" width="([\d.]+)"', closed).group(1))  # type: ignore[union-attr]
    assert width >= 3.0 and "<path d=" in closed.split("</g>")[0]
    assert ">2024-05-14 10:00</text>" in text and ">10:15</text>" in text and ">11:45</text>" in text
    assert "trades/minute" in text and "time (UTC)" in text
    assert 'class="uncovered"' in text and "not running: 2024-05-14 10:40:00 .. 10:54:59 UTC" in text

    assert main(["audit", "--db", db_url, "--since", "2024-05-14T10:00:00Z", "--until", "2024-05-14T12:00:00Z"]) == 0
    row = next(x.split() for x in capsys.readouterr().out.splitlines() if x.startswith("acme"))
    assert row == ["acme", "BTC-USD", str(count), "0", "1", "1", "87.4%", "87.5%", "-"]  # no collector named


def test_audit_page_in_chromium(tmp_path: Path) -> None:
    """The audit page as a browser shows it: one chart per symbol with its axis, gaps and legend."""
    from tests.ops.chromium import chromium, render

    chromium()
    db = f"sqlite:///{tmp_path}/a.db"
    collected(db)
    store = Store(db)
    store.write(make_trades("ETH-USD", at(0), at(120), 20, skip=[(at(70), at(71))]))
    Ledger(store.engine).open_gap("acme", "ETH-USD", at(70), "sequence", "10", at(71), at(71), "12")
    store.close()
    html_file = tmp_path / "audit.html"
    assert main(["audit", "--db", db, "--since", "2024-05-14T10:00:00Z", "--until", "2024-05-14T12:00:00Z",
                 "--html", str(html_file)]) == 0
    shot = tmp_path / "audit.png"
    dom = render(html_file.as_uri(), tmp_path, shot, size="1040,1000", budget_ms=500)
    assert dom.count("<svg") == 2 and "acme BTC-USD" in dom and "acme ETH-USD" in dom
    assert 'data-status="open"' in dom and 'data-status="closed"' in dom and 'data-status="unrecoverable"' in dom
    assert "open gap (marked" in dom


def test_coverage_in_the_trades_clock_after_a_replay(tmp_path: Path, capsys: Any) -> None:
    """Trades replayed from 2024 into a run today: the window of their exchange time shows them
    covered, not 'connected 0.0%'."""
    db = f"sqlite:///{tmp_path}/r.db"
    store = Store(db)
    store.open()
    ledger = Ledger(store.engine)
    ledger.open()
    wall = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    replayed = make_trades("BTC-USD", at(0), at(5), 1, received=lambda n: wall + timedelta(seconds=1 + n / 100))
    store.write(replayed)
    ledger.connected("acme", ["BTC-USD"], wall)
    ledger.disconnected("acme", ["BTC-USD"], wall + timedelta(seconds=5), "stopped")
    store.close()
    assert main(["audit", "--db", db, "--since", "2024-05-14T10:00:00Z", "--until", "2024-05-14T10:10:00Z"]) == 0
    row = next(x.split() for x in capsys.readouterr().out.splitlines() if x.startswith("acme"))
    assert row[2] == "300"
    connected = float(row[6].rstrip("%"))
    assert 50.0 <= connected <= 51.0  # 10:00:00 .. 10:05:0x of a 10-minute window


def audit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bitty", "audit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


def test_mistyped_sqlite_path_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    """A SQLite path that does not exist: one error line, exit 1, and no file appears."""
    missing = tmp_path / "bity.db"
    proc = audit_cli("--db", f"sqlite:///{missing}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: no database at {missing}: the file does not exist (check --db)"]
    assert not missing.exists() and list(tmp_path.iterdir()) == []


def test_unopenable_databases_are_one_line(tmp_path: Path) -> None:
    """A file that is not a database, a database without bitty's tables, and an unreachable server:
    one error line each, exit 1."""
    junk = tmp_path / "notes.db"
    junk.write_text("not a database\n" * 100)
    empty = tmp_path / "empty.db"
    sa.create_engine(f"sqlite:///{empty}").connect().close()
    import sqlite3

    sqlite3.connect(empty).execute("CREATE TABLE other (x)").connection.close()
    cases = {f"sqlite:///{junk}": "file is not a database", f"sqlite:///{empty}": "holds no trades table",
             "postgresql://postgres@127.0.0.1:1/test": "cannot open database"}
    for url, words in cases.items():
        proc = audit_cli("--db", url)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], \
            (url, proc.stderr)


def test_empty_window_is_refused() -> None:
    """--since after --until is a one-line error."""
    proc = audit_cli("--since", "2024-05-14T12:00:00Z", "--until", "2024-05-14T10:00:00Z")
    assert proc.returncode == 1 and proc.stderr.startswith("error: the window is empty")
