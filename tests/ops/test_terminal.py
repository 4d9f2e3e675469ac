"""What `bitty collect` prints: progress lines with honest rates and UTC times, JSON logs, a live table on a terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from bitty.ops.logs import JsonFormatter, TextFormatter
from tests.conftest import ROOT
from tests.ops.helpers import exchange


def collect_args(url: str, tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bitty", *extra[:2], "collect", "coinbase", "--url", url, "--db",
            f"sqlite:///{tmp_path}/t.db", "--spill-dir", str(tmp_path / "spill"), "--no-backfill", *extra[2:]]


def test_progress_lines_rate_over_the_interval_in_utc(tmp_path: Path) -> None:
    """Every progress line, the first and the final one included, has a non-zero rate while trades
    flow, an elapsed time, and a UTC timestamp."""
    with exchange(tmp_path, seconds=20, per_second=40) as (url, _count):
        proc = subprocess.run(collect_args(url, tmp_path, "--log-format", "text", "--duration", "2.5",
                                           "--progress-interval", "1"),
                              cwd=ROOT, capture_output=True, text=True, timeout=40, env={**os.environ, "LOG_LEVEL": "info"})
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "trades received (" in line]
    assert len(lines) >= 3 and "(final, " in lines[-1], proc.stderr
    for line in lines:
        rate = float(re.search(r"trades received \((\d+\.\d)/s\)", line).group(1))  # type: ignore[union-attr]
        assert rate > 0, line
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO ", line), line
        assert re.search(r", up \d", line)


def test_json_log_format(tmp_path: Path) -> None:
    """--log-format json writes every log line as one JSON object with a UTC time."""
    with exchange(tmp_path, seconds=10, per_second=20) as (url, _count):
        proc = subprocess.run(collect_args(url, tmp_path, "--log-format", "json", "--duration", "1.5",
                                           "--progress-interval", "1"),
                              cwd=ROOT, capture_output=True, text=True, timeout=40, env={**os.environ, "LOG_LEVEL": "info"})
    assert proc.returncode == 0, proc.stderr
    logged = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert len(logged) >= 3
    assert all(set(e) >= {"time", "level", "logger", "message"} and e["time"].endswith("Z") for e in logged)
    assert any(e["logger"] == "bitty.collect" and "trades received" in e["message"] for e in logged)
    others = [line for line in proc.stderr.splitlines() if not line.startswith("{")]
    assert all(line.startswith("collected ") for line in others), others


def test_formatters_use_utc() -> None:
    """Both log formats stamp records in UTC, whatever the local zone."""
    import logging

    record = logging.LogRecord("bitty.x", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    record.created, record.msecs = 0.25, 250.0
    assert TextFormatter().format(record) == "1970-01-01T00:00:00.250Z WARNING bitty.x: hello there"
    assert json.loads(JsonFormatter().format(record)) == {
        "time": "1970-01-01T00:00:00.250Z", "level": "warning", "logger": "bitty.x", "message": "hello there"}


def test_live_table_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal, collect draws a table per exchange: state, trades, rate, duplicates,
    quarantined, reconnects, gaps, elapsed."""
    with exchange(tmp_path, seconds=20, per_second=40) as (url, _count):
        master, slave = pty.openpty()
        env = {**os.environ, "LOG_LEVEL": "info", "TERM": "xterm", "COLUMNS": "160", "LINES": "40"}
        proc = subprocess.Popen(collect_args(url, tmp_path, "--log-format", "text", "--duration", "2.5",
                                             "--progress-interval", "1"),
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        chunks = []
        try:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the process ended
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(master)
            proc.wait(30)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert proc.returncode == 0, screen
    for header in ("exchange", "state", "trades", "rate", "duplicates", "quarantined", "reconnects", "gaps", "elapsed"):
        assert header in screen, screen
    assert re.search(r"coinbase\s*│\s*1/1 connected\s*│\s*\d+\s*│\s*\d+\.\d/s", screen), screen
    assert "connecting to ws://127.0.0.1" in screen  # log lines still show, above the table
