"""`bitty collect`, `bitty test` and `bitty demo` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from bitty.cli import main
from bitty.commands.replay import ReplayServer, load_session
from bitty.storage.store import Store
from tests.conftest import EXCHANGES, ROOT

COINBASE_SESSION = EXCHANGES / "fixtures" / "coinbase" / "session.jsonl"


def golden(name: str) -> list[dict[str, str]]:
    path = EXCHANGES / "fixtures" / name / "golden.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def serve_in_thread(session: Path, **kwargs: object) -> tuple[str, object]:
    """A replay server running in its own thread (the CLI runs its own event loop)."""
    import threading

    ready = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        async def serve() -> None:
            server = ReplayServer(load_session(session), **kwargs)  # type: ignore[arg-type]
            box["url"] = await server.start()
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = stop = asyncio.Event()
            ready.set()
            await stop.wait()
            await server.close()

        asyncio.run(serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(5)

    def stop() -> None:
        box["loop"].call_soon_threadsafe(box["stop"].set)  # type: ignore[attr-defined]
        thread.join(5)

    return str(box["url"]), stop


def start_collector(*args: str) -> subprocess.Popen[str]:
    """`python -m bitty.collect ARGS` in a subprocess, logging at info level to a pipe."""
    return subprocess.Popen([sys.executable, "-m", "bitty.collect", *args], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "LOG_LEVEL": "info"})


def signal_when(proc: subprocess.Popen[str], done: Callable[[str], bool], sig: int, stop: Callable[[], None],
                timeout: float) -> tuple[list[str], str]:
    """Send ``sig`` to the collector once a log line satisfies ``done``; the log lines up to it
    and the rest of the log. The replay server ``stop``s either way, and a collector still
    running after ``timeout`` seconds is killed."""
    try:
        lines = read_log_until(proc, done)
        proc.send_signal(sig)
        rest = proc.communicate(timeout=timeout)[1]
    finally:
        stop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return lines, rest


def read_log_until(proc: subprocess.Popen[str], done: Callable[[str], bool], seconds: float = 20) -> list[str]:
    """The collector's log lines up to the first for which ``done`` is true (or the deadline)."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if done(line) or not line:
            break
    return lines


def test_collect_into_sqlite_with_jsonl_output(tmp_path: Path, capsys: object) -> None:
    """collect --url --db --output --max-trades stores the golden rows and mirrors them as JSON lines."""
    url, stop = serve_in_thread(COINBASE_SESSION, hold=True)
    db = f"sqlite:///{tmp_path}/out.db"
    out = tmp_path / "trades.jsonl"
    try:
        code = main(["collect", "coinbase", "--url", url, "--db", db, "--output", f"jsonl:{out}",
                     "--max-trades", "6", "--duration", "20"])
    finally:
        stop()  # type: ignore[operator]
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: r[k] for k in golden("coinbase")[0]} for r in rows] == golden("coinbase")
    assert set(rows[0]) == {"exchange", "symbol", "trade_id", "price", "size", "side", "time", "received_at"}
    assert rows[0]["received_at"].endswith("Z") and len(rows[0]["received_at"]) == 27
    store = Store(db)
    assert store.count() == 6
    store.close()


def test_collect_into_postgresql(pg_url: str) -> None:
    """The same run stores exact rows in the real PostgreSQL."""
    url, stop = serve_in_thread(COINBASE_SESSION, hold=True)
    try:
        assert main(["collect", "coinbase", "--url", url, "--db", pg_url, "--max-trades", "6", "--duration", "20"]) == 0
    finally:
        stop()  # type: ignore[operator]
    store = Store(pg_url)
    rows = [{k: v for k, v in t.as_json(received_at=False).items()} for t in store.read_trades()]
    store.close()
    assert rows == golden("coinbase")


def test_collect_symbols_native_or_normalized(tmp_path: Path) -> None:
    """--symbols takes native or normalized names and subscribes to exactly those."""
    url, stop = serve_in_thread(EXCHANGES / "fixtures" / "binance" / "session.jsonl", hold=True)
    db = f"sqlite:///{tmp_path}/b.db"
    try:
        assert main(["collect", "binance", "--symbols", "btcusdt,ETH-USDT", "--url", url, "--db", db,
                     "--duration", "1"]) == 0
    finally:
        stop()  # type: ignore[operator]
    store = Store(db)
    symbols = {t.symbol for t in store.read_trades()}
    store.close()
    assert symbols == {"BTC-USDT", "ETH-USDT"}


def test_unknown_exchange_is_a_clear_error(capsys: object) -> None:
    """A misspelt exchange name exits 1 with a suggestion."""
    assert main(["collect", "coinbas", "--duration", "1"]) == 1
    assert "did you mean coinbase" in capsys.readouterr().err  # type: ignore[attr-defined]


def test_sigterm_flushes_everything_received(tmp_path: Path) -> None:
    """SIGTERM during collection exits 0 after every received trade is in the database."""
    url, stop = serve_in_thread(COINBASE_SESSION, hold=True)
    db = tmp_path / "sig.db"
    proc = start_collector("coinbase", "--url", url, "--db", f"sqlite:///{db}", "--progress-interval", "0.2")
    lines, rest = signal_when(proc, lambda line: "6 trades received" in line, signal.SIGTERM, stop,  # type: ignore[arg-type]
                              timeout=15)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "received SIGTERM" in rest
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from trades")).scalar_one() == 6
    engine.dispose()


def test_bitty_test_command_passes_and_detects_drift(tmp_path: Path, capsys: object) -> None:
    """`bitty test` passes on a bundled spec and fails when the golden rows disagree."""
    assert main(["test", "coinbase"]) == 0
    spec_dir = tmp_path / "specs"
    fixtures = spec_dir / "fixtures" / "coinbase"
    fixtures.mkdir(parents=True)
    (spec_dir / "coinbase.yaml").write_text((EXCHANGES / "coinbase.yaml").read_text())
    (fixtures / "session.jsonl").write_text(COINBASE_SESSION.read_text())
    drifted = (EXCHANGES / "fixtures" / "coinbase" / "golden.jsonl").read_text().replace('"sell"', '"buy"', 1)
    (fixtures / "golden.jsonl").write_text(drifted)
    assert main(["test", str(spec_dir / "coinbase.yaml")]) == 1
    assert "rows differ from golden" in capsys.readouterr().out  # type: ignore[attr-defined]
    assert main(["test", "--update", str(spec_dir / "coinbase.yaml")]) == 0
    assert main(["test", str(spec_dir / "coinbase.yaml")]) == 0


def test_demo_runs_offline(tmp_path: Path, capsys: object) -> None:
    """`bitty demo` replays bundled sessions, stores them in SQLite and prints the result."""
    db = f"sqlite:///{tmp_path}/demo.db"
    assert main(["demo", "--db", db]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "coinbase" in out and "binance" in out and "new rows stored" in out
    store = Store(db)
    assert store.count() == sum(len(golden(n)) for n in ("coinbase", "binance", "kraken", "bitstamp"))
    store.close()


def test_rest_url_option_is_checked(capsys: object) -> None:
    """--rest-url takes EXCHANGE=URL; anything else is a clear error."""
    assert main(["collect", "coinbase", "--rest-url", "http://127.0.0.1:1", "--duration", "1"]) == 1
    assert "expected EXCHANGE=URL" in capsys.readouterr().err  # type: ignore[attr-defined]
