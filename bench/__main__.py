"""``python -m bench [--quick]``: mapping, end to end (SQLite, PostgreSQL, floor) and scale.

Every end-to-end run is a fresh process (its own CPU time and peak RSS) against a flooding
server in another process. Targets are reported, not asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
EXCHANGES = ("binance", "coinbase", "kraken")


def _in_process(fn: Callable[..., Any], *args: Any) -> Any:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)


class _Server:
    def __init__(self, frames: int) -> None:
        from bench.server import serve
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(frames, child), daemon=True)
        self.process.start()
        self.ports: dict[str, int] = self.pipe.recv()

    def close(self) -> None:
        self.pipe.send("stop")
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()


def _pg_schema() -> tuple[str, Callable[[], None]] | None:
    try:
        import sqlalchemy as sa
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except Exception as exc:
        print(f"PostgreSQL skipped: {PG_URL} is unreachable ({type(exc).__name__})")
        return None

    def drop() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()

    return f"{PG_URL}?options=-csearch_path%3D{schema}", drop


def _row(name: str, r: dict[str, Any], floor: dict[str, Any] | None) -> str:
    rate = r["trades"] / r["seconds"]
    cpu = r["cpu"] / max(r["trades"], 1) * 100_000
    ratio = f"{rate / (floor['trades'] / floor['seconds']):.2f}" if floor else "1.00"
    return (f"{name:<24} {r['frames'] / r['seconds']:>10,.0f} {rate:>10,.0f} {cpu:>9.2f} {r['rss_mb']:>8.0f}"
            f" {ratio:>8}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, about 40 s")
    args = parser.parse_args(argv)
    frames = 30_000 if args.quick else 150_000
    scale_frames = 300 if args.quick else 1_500

    from bench import mapping
    from bench.endtoend import run_bitty as _bitty
    from bench.endtoend import run_floor as _floor
    print("\nMapping, decode + map, messages/s (target >= 400k for binance and coinbase)")
    print(f"{'exchange':<10} {'spec mapper':>12} {'hand-written':>13} {'jmespath.search':>16}")
    for r in mapping.run(seconds=0.5 if args.quick else 1.5, frames_per_exchange=20_000):
        print(f"{r['exchange']:<10} {r['spec mapper']:>12,.0f} {r['hand-written']:>13,.0f} {r['jmespath.search']:>16,.0f}")

    server = _Server(frames)
    pg = _pg_schema()
    tmp = Path(tempfile.mkdtemp(prefix="bitty-bench-"))
    try:
        print(f"\nEnd to end, {frames:,} frames per run (targets: SQLite >= 150k, PostgreSQL >= 100k trades/s)")
        print(f"{'run':<24} {'msgs/s':>10} {'trades/s':>10} {'cpu/100k':>9} {'rss MB':>8} {'vs floor':>8}")
        for exchange in EXCHANGES:
            floor = _in_process(_floor, exchange, server.ports[exchange], str(tmp / f"floor-{exchange}.db"), frames)
            print(_row(f"floor {exchange}", floor, None))
            result = _in_process(_bitty, [exchange], server.ports, f"sqlite:///{tmp}/bitty-{exchange}.db", 0, frames)
            print(_row(f"bitty {exchange} sqlite", result, floor))
            if pg is not None:
                result = _in_process(_bitty, [exchange], server.ports, pg[0], 0, frames)
                print(_row(f"bitty {exchange} postgres", result, floor))
    finally:
        server.close()

    server = _Server(scale_frames)
    try:
        print(f"\nScale: 1,000 symbols per exchange, {', '.join(EXCHANGES)} at once, {scale_frames:,} frames per connection")
        r = _in_process(_bitty, list(EXCHANGES), server.ports, f"sqlite:///{tmp}/scale.db", 1000, scale_frames)
        print(f"  {r['trades']:,} of {r['expected']:,} trades in {r['seconds']:.1f}s; "
              f"CPU {r['cpu'] / max(r['trades'], 1) * 1e6:.1f} us per trade; peak RSS {r['rss_mb']:.0f} MB, "
              f"{(r['rss_mb'] - r['rss_before_mb']) * 1024 / r['symbols']:.1f} KB per symbol above the idle process")
    finally:
        server.close()
        if pg is not None:
            pg[1]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
