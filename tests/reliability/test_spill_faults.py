"""The spill folder under fault: a full disk, unreadable files, two collectors, kills and stops
while the database is away. Nothing received is lost without being said."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp import web

from bitty.errors import SinkError
from bitty.storage import spill, tables
from bitty.storage.store import Store
from bitty.storage.writer import Writer
from tests.conftest import ROOT
from tests.reliability.proxy import Proxy
from tests.reliability.test_storage_faults import trade, wait_for

# A Coinbase-style exchange without heartbeats or trade timeouts: a quiet feed is never restarted,
# so every trade the test server sends reaches the collector on one connection.
SPEC = """\
name: quiet
url: ws://127.0.0.1:1/feed
symbols:
  default: [BTC-USD]
  native: "{base}-{quote}"
subscribe:
  messages:
    - {type: subscribe, product_ids: "${symbols}"}
idle_timeout: 600
messages:
  trade:
    type: trade
    match: type == 'match'
    fields:
      symbol: record.product_id
      trade_id: str(record.trade_id)
      price: decimal(record.price)
      size: decimal(record.size)
      side: record.side
      time: iso_time(record.time)
"""


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs for the spill folder: room for about 300 trades."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs as a full disk")
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class Feed:
    """A websocket server in its own thread that sends trades only once ``go`` is called (at
    ``rate`` a second, up to ``total``), plus a TCP proxy to PostgreSQL on the same loop."""

    def __init__(self, total: int, rate: int) -> None:
        self.total, self.rate, self.sent = total, rate, 0
        self.halted = False
        self.loop = asyncio.new_event_loop()
        self.proxy = Proxy("127.0.0.1", 5432)
        self.proxy_port = 0
        self._go: asyncio.Event | None = None
        self._closed: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.url = self._call(self._start())

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> str:
        self._go, self._closed = asyncio.Event(), asyncio.Event()
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"ws://127.0.0.1:{port}/feed"

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # the subscription
        assert self._go is not None
        await self._go.wait()
        step = max(1, self.rate // 100)
        while self.sent < self.total and not self.halted and not ws.closed:
            for _ in range(min(step, self.total - self.sent)):
                await ws.send_str(json.dumps({
                    "type": "match", "trade_id": self.sent, "product_id": "BTC-USD", "price": "100.5",
                    "size": "0.25", "side": "buy", "time": "2024-01-02T03:04:05.123456Z"}))
                self.sent += 1
            await asyncio.sleep(0.01)
        assert self._closed is not None
        await self._closed.wait()  # hold the connection open
        await ws.close()
        return ws

    def go(self) -> None:
        self.loop.call_soon_threadsafe(self._go.set)  # type: ignore[union-attr]

    def halt(self) -> int:
        """Stop sending; the number of trades sent."""
        async def stop() -> int:
            self.halted = True
            return self.sent
        return int(self._call(stop()))

    def pg_proxy(self) -> int:
        self.proxy_port = self._call(self.proxy.start())
        return self.proxy_port

    def cut(self) -> None:
        self._call(self.proxy.cut())

    def restore(self) -> None:
        self._call(self.proxy.start())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self.proxy.cut())
        with contextlib.suppress(Exception):
            self.loop.call_soon_threadsafe(self._closed.set)  # type: ignore[union-attr]
            self._call(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def collector(tmp_path: Path, feed: Feed, db: str, spill_dir: Path, *extra: str) -> subprocess.Popen[str]:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    (specs / "quiet.yaml").write_text(SPEC)
    return subprocess.Popen(
        [sys.executable, "-m", "bitty.collect", "quiet", "--exchanges-dir", str(specs), "--url", feed.url,
         "--db", db, "--spill-dir", str(spill_dir), "--progress-interval", "0.2", *extra],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "LOG_LEVEL": "info"})


def read_until(proc: subprocess.Popen[str], done: Callable[[str], bool], seconds: float = 30) -> list[str]:
    """The collector's log lines up to the first one ``done`` accepts; fails past the deadline."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if done(line):
            return lines
    proc.kill()
    raise AssertionError("the collector never logged what was expected:\n" + "".join(lines[-30:]))


def received(line: str) -> int:
    """N from a progress line 'quiet: N trades received ...' (-1 for other lines)."""
    head = line.partition("quiet: ")[2]
    return int(head.split()[0]) if "trades received" in head else -1


def uncaught(log: str) -> list[str]:
    """Tracebacks in a collector's log other than those the gap keeper logs with its ledger
    writes that fail while the database is away (logged, not raised)."""
    out, record = [], ""
    for line in log.splitlines():
        if line[:2] == "20" and line[4:5] == "-":  # a log record: "2026-..."
            record = line
        elif line.startswith("Traceback") and "ledger write failed" not in record:
            out.append(record)
    return out


def stored_count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(tables.trades)).scalar_one())
    finally:
        engine.dispose()


def drain(spill_dir: Path, url: str) -> Writer:
    """What a next run does first: write the spill folder back to the database."""
    async def main() -> Writer:
        store = Store(url)
        await asyncio.to_thread(store.open)
        writer = Writer(store, flush_interval=0.05, spill_dir=spill_dir)
        writer.start()
        await wait_for(lambda: not writer._spilled(), timeout=30)
        await writer.close()
        await asyncio.to_thread(store.close)
        return writer

    return asyncio.run(main())


def locked(db: Path) -> sqlite3.Connection:
    """Another process holding the SQLite database: every write fails."""
    holder = sqlite3.connect(db, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_full_spill_disk_keeps_trades_in_memory_and_loses_none(tiny_disk: Path, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Database away and the spill disk full: trades stay in memory (said loudly), no half-written
    file is left, and every trade is stored once the database is back."""
    db = tmp_path / "away.db"
    setup = Store(f"sqlite:///{db}")
    setup.open()
    setup.close()
    holder = locked(db)

    async def main() -> tuple[Writer, list[str]]:
        store = Store(f"sqlite:///{db}?timeout=0.05")
        writer = Writer(store, batch_size=100, flush_interval=0.05, max_pending=400, max_memory=5000, spill_dir=tiny_disk,
                        sync_interval=0.05)
        writer.start()
        try:
            for n in range(3000):
                writer.put(trade(n))
                if n % 100 == 0:
                    await asyncio.sleep(0.01)
            await wait_for(lambda: writer._disk_error is not None and writer.pending + writer.stats.spilled == 3000)
            files = sorted(p.name for p in tiny_disk.iterdir())
            for path in spill.pending(tiny_disk):  # complete lines only: every failed append was undone
                assert not spill.read_back(path).bad
        finally:
            holder.rollback()
            holder.close()
        await wait_for(lambda: writer.stats.stored == 3000, timeout=30)
        await writer.close()
        count = await asyncio.to_thread(store.count)
        store.close()
        assert count == 3000
        return writer, files

    with caplog.at_level(logging.INFO, logger="bitty"):
        writer, files = asyncio.run(main())
    assert not [name for name in files if name.endswith(".part")]
    assert writer.stats.lost == 0 and writer.stats.duplicates == 0 and 0 < writer.stats.spilled < 3000
    assert any(r.levelno == logging.ERROR and "cannot spill to" in r.getMessage() for r in caplog.records)
    assert spill.pending(tiny_disk) == []


def test_full_spill_disk_at_stop_reports_the_loss_and_exits_non_zero(tiny_disk: Path, tmp_path: Path) -> None:
    """Stopped while the database is away and the spill disk is full: the summary says how many
    trades were lost and the exit code is 1; what the disk took is written back by the next run."""
    db = tmp_path / "away.db"
    feed = Feed(total=3000, rate=3000)
    try:
        proc = collector(tmp_path, feed, f"sqlite:///{db}?timeout=0.05", tiny_disk, "--close-timeout", "0.5")
        read_until(proc, lambda line: received(line) == 0)
        holder = locked(db)
        try:
            feed.go()
            before = read_until(proc, lambda line: received(line) == 3000)
            proc.send_signal(signal.SIGTERM)
            log = "".join(before) + proc.communicate(timeout=30)[1]
        finally:
            holder.rollback()
            holder.close()
    finally:
        feed.close()
    assert proc.returncode == 1, log
    assert not uncaught(log) and "cannot spill to" in log
    summary = [line for line in log.splitlines() if line.startswith("collected ")][-1]
    lost = int(summary.split(", ")[-1].split()[0])
    assert summary.endswith(" LOST") and 0 < lost < 3000
    assert not [p for p in tiny_disk.iterdir() if p.name.endswith(".part")]
    writer = drain(tiny_disk, f"sqlite:///{db}")
    assert stored_count(f"sqlite:///{db}") == writer.stats.unspilled == 3000 - lost


def test_unreadable_spill_files_are_set_aside_and_writing_goes_on(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A spill file cut short, one corrupt and one foreign at start: their readable trades are
    stored, the rest is moved aside with a clear message, and new trades keep being stored."""
    folder = tmp_path / "spill"
    folder.mkdir()
    lines = [json.dumps(trade(n).as_json()).encode() for n in range(10)]
    (folder / "bitty-spill-1-truncated.jsonl").write_bytes(b"\n".join(lines[:5]) + b"\n" + lines[5][:30])
    (folder / "bitty-spill-2-corrupt.jsonl").write_bytes(b"\x00\xff garbage \x9c" * 20)
    (folder / "bitty-spill-3-foreign.jsonl").write_bytes(b'{"hello": "world"}\n[1, 2]\n' + lines[6] + b"\n")

    async def main() -> tuple[Writer, int]:
        store = Store(f"sqlite:///{tmp_path}/db.sqlite")
        await asyncio.to_thread(store.open)
        writer = Writer(store, flush_interval=0.05, spill_dir=folder)
        writer.start()
        for n in range(100, 150):
            writer.put(trade(n))
        await wait_for(lambda: writer.stats.stored == 56)
        await writer.close()
        count = store.count()
        store.close()
        return writer, count

    with caplog.at_level(logging.INFO, logger="bitty"):
        writer, count = asyncio.run(main())
    assert count == 56 and writer.failure is None
    assert spill.pending(folder) == []
    aside = sorted(p.name for p in folder.glob(f"{spill.PREFIX_UNREADABLE}*"))
    assert "bitty-unreadable-bitty-spill-2-corrupt.jsonl" in aside and len(aside) == 3
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.endswith("bitty-spill-1-truncated.jsonl has 1 lines that cannot be read back (line 6: incomplete "
                          "last line); its 5 readable trades are stored; the file is kept as "
                          "bitty-unreadable-bitty-spill-1-truncated.jsonl and not written back") for m in messages)


def test_two_collectors_on_one_spill_folder_the_second_is_refused(tmp_path: Path) -> None:
    """A spill folder belongs to one collector: a second one sharing it is refused with a clear
    error before it starts, and the folder is free again once the first stops."""
    folder = tmp_path / "spill"

    async def main() -> str:
        first = Writer(Store(f"sqlite:///{tmp_path}/a.db"), spill_dir=folder)
        second = Writer(Store(f"sqlite:///{tmp_path}/b.db"), spill_dir=folder)
        first.start()
        with pytest.raises(SinkError) as refused:
            second.start()
        await first.close()
        second.start()  # free again
        await second.close()
        return str(refused.value)

    message = asyncio.run(main())
    assert f"spill folder {folder} is in use by another collector (pid {os.getpid()})" in message
    assert "--spill-dir" in message


def test_a_failing_writer_stops_the_run_and_spills_what_it_holds(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A writer whose task fails (a bug, not a database error) announces it, and closing it puts
    every trade it holds in the spill folder, where the next run stores them."""
    class Broken(Store):
        def write(self, batch, quarantined=()):  # type: ignore[no-untyped-def]
            raise RuntimeError("a bug in the store")

    url = f"sqlite:///{tmp_path}/db.sqlite"

    async def main() -> Writer:
        store = Broken(url)
        await asyncio.to_thread(store.open)
        writer = Writer(store, flush_interval=0.05, spill_dir=tmp_path / "spill")
        writer.start()
        for n in range(500):
            writer.put(trade(n))
        await asyncio.wait_for(writer.failed.wait(), 10)
        for n in range(500, 600):  # readers do not know yet
            writer.put(trade(n))
        await writer.close()
        store.close()
        return writer

    with caplog.at_level(logging.INFO, logger="bitty"):
        writer = asyncio.run(main())
    assert writer.failure == "writing to the database failed: RuntimeError: a bug in the store"
    assert writer.stats.spilled == 600 and writer.stats.lost == 0
    assert any("the writer stopped" in r.getMessage() for r in caplog.records)
    assert drain(tmp_path / "spill", url).stats.stored == 600


def test_sigterm_while_postgresql_is_away_spills_and_exits_cleanly(pg_url: str, tmp_path: Path) -> None:
    """SIGTERM while PostgreSQL is unreachable: everything received is spilled, the exit code is 0
    with no traceback, the unrecorded stop is said; the next run stores every trade."""
    feed = Feed(total=2000, rate=2000)
    try:
        port = feed.pg_proxy()
        url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
        proc = collector(tmp_path, feed, url, tmp_path / "spill", "--close-timeout", "0.5")
        read_until(proc, lambda line: received(line) == 0)
        feed.cut()
        feed.go()
        read_until(proc, lambda line: received(line) == 2000)
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=30)[1]
        feed.restore()
        assert proc.returncode == 0, log
        assert not uncaught(log), log
        assert "cannot record the end of this run, the database is away" in log
        writer = drain(tmp_path / "spill", url)
        assert writer.stats.stored == 2000 and stored_count(url) == 2000
    finally:
        feed.close()


def test_sigkill_during_a_postgresql_outage_loses_at_most_about_a_second(pg_url: str, tmp_path: Path) -> None:
    """kill -9 while PostgreSQL is unreachable and trades pour in at 1,000 a second: the journal
    holds all but the last moments, and the next run stores them (none twice)."""
    feed = Feed(total=1_000_000, rate=1000)
    try:
        port = feed.pg_proxy()
        url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
        proc = collector(tmp_path, feed, url, tmp_path / "spill")
        read_until(proc, lambda line: received(line) == 0)
        feed.cut()
        feed.go()
        read_until(proc, lambda line: received(line) >= 4000)
        proc.kill()
        sent = feed.halt()
        proc.communicate(timeout=10)
        writer = drain(tmp_path / "spill", pg_url)
    finally:
        feed.close()
    stored = stored_count(pg_url)
    assert stored == writer.stats.stored and writer.stats.duplicates == 0
    assert sent >= 4000 and sent - stored <= 1500, (sent, stored)


def test_a_run_whose_writer_fails_stops_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer failing mid-run (a bug in the store) stops the run with the failure among its
    errors, and every trade received is in the spill folder: it never goes on collecting into nothing."""
    from bitty import pipeline

    class Broken(Store):
        def write(self, batch, quarantined=()):  # type: ignore[no-untyped-def]
            raise RuntimeError("a bug in the store")

    monkeypatch.setattr(pipeline, "Store", Broken)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "quiet.yaml").write_text(SPEC)
    feed = Feed(total=500, rate=5000)
    feed.go()
    try:
        options = pipeline.CollectOptions(exchanges=["quiet"], exchanges_dirs=[str(specs)], url=feed.url,
                                          db=f"sqlite:///{tmp_path}/db.sqlite", spill_dir=str(tmp_path / "spill"),
                                          progress_interval=60)  # no duration: only the failure stops it
        result = asyncio.run(pipeline.collect(options))
    finally:
        feed.close()
    assert result.failures == ["writer: writing to the database failed: RuntimeError: a bug in the store"]
    spilled = sum(len(spill.read(p)) for p in spill.pending(tmp_path / "spill"))
    assert result.received > 0 and spilled == result.received and result.lost == 0


def test_a_second_sigterm_while_the_database_is_away_spills_and_exits_without_traceback(tmp_path: Path) -> None:
    """A second SIGTERM during the stop's wait for an away database aborts the wait: every trade
    received is in the journal (the next run stores them), exit 1, no traceback."""
    db = tmp_path / "away.db"
    feed = Feed(total=2000, rate=4000)
    try:
        proc = collector(tmp_path, feed, f"sqlite:///{db}?timeout=0.05", tmp_path / "spill")
        read_until(proc, lambda line: received(line) == 0)
        holder = locked(db)
        try:
            feed.go()
            before = read_until(proc, lambda line: received(line) == 2000)
            proc.send_signal(signal.SIGTERM)
            before += read_until(proc, lambda line: "flushing and stopping" in line)
            proc.send_signal(signal.SIGTERM)
            log = "".join(before) + proc.communicate(timeout=30)[1]
        finally:
            holder.rollback()
            holder.close()
    finally:
        feed.close()
    assert proc.returncode == 1 and not uncaught(log), log
    assert "stopped before everything was written" in log
    assert drain(tmp_path / "spill", f"sqlite:///{db}").stats.stored == 2000


def test_a_spill_folder_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    """A spill folder path taken by a file: the writer refuses to start with a one-line error."""
    (tmp_path / "taken").write_text("not a folder")
    writer = Writer(Store(f"sqlite:///{tmp_path}/db.sqlite"), spill_dir=tmp_path / "taken")

    async def main() -> None:
        writer.start()

    with pytest.raises(SinkError, match=r"cannot use spill folder .*taken: File exists"):
        asyncio.run(main())
    writer.store.close()
