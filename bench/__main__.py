"""``python -m bench [--quick]``: mapping, end to end (SQLite, PostgreSQL, floor) and scale.

Every end-to-end run is a fresh process (its own CPU time and peak RSS) against a flooding
server in another process. Targets are reported, not asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _in_process(fn: Callable[..., Any], *args: Any) -> Any:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(fn, args)


class _Server:
    def __init__(self, frames: dict[str, int], per_symbol: int = 0, per_second: float = 0.0) -> None:
        from bench.server import serve
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(frames, child, per_symbol, per_second), daemon=True)
        self.process.start()
        self.ports: dict[str, int] = self.pipe.recv()

    def close(self) -> None:
        self.pipe.send("stop")
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()


def _pg_schema() -> tuple[str, str, Callable[[], None]] | None:
    """A fresh schema in the local PostgreSQL: bitty's URL and the floor's conninfo for it, and
    the function that drops it; None when PostgreSQL is unreachable."""
    try:
        import sqlalchemy as sa
        engine = sa.create_engine(PG_URL, pool_pre_ping=True, connect_args={"connect_timeout": 3})
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

    conninfo = f"host=127.0.0.1 port=5432 dbname=test user=postgres options=-csearch_path={schema}"
    return f"{PG_URL}?options=-csearch_path%3D{schema}", conninfo, drop


def _row(name: str, r: dict[str, Any], floor: dict[str, Any] | None) -> str:
    rate = r["trades"] / r["seconds"]
    cpu = r["cpu"] / max(r["trades"], 1) * 100_000
    ratio = f"{rate / (floor['trades'] / floor['seconds']):.2f}" if floor else "1.00"
    return (f"{name:<24} {r['frames'] / r['seconds']:>10,.0f} {rate:>10,.0f} {cpu:>9.2f} {r['rss_mb']:>8.0f}"
            f" {ratio:>8}")


def _warn(name: str, r: dict[str, Any]) -> None:
    """A line for what would make a run's numbers wrong: restarted connections (a restart
    floods again), quarantined frames, trades spilled to disk (the writer fell behind), trades
    missing."""
    if r["reconnects"] or r["quarantined"] or r["spilled"] or r["trades"] != r["expected"]:
        print(f"  WARNING {name}: {r['reconnects']} reconnects, {r['quarantined']} frames quarantined, "
              f"{r['spilled']:,} trades spilled, {r['trades']:,} of {r['expected']:,} trades stored")


def _end_to_end(tmp: Path, frames: int) -> None:
    """Each of binance, coinbase and kraken alone: the floor, then bitty into SQLite and PostgreSQL."""
    from bench.endtoend import run_bitty as _bitty
    from bench.endtoend import run_floor as _floor
    from bench.frames import EXCHANGES

    server = _Server({exchange: frames for exchange in EXCHANGES})
    pg = _pg_schema()
    try:
        print(f"\nEnd to end, {frames:,} frames per run (targets: SQLite >= 150k, PostgreSQL >= 100k trades/s)")
        print(f"{'run':<24} {'msgs/s':>10} {'trades/s':>10} {'cpu/100k':>9} {'rss MB':>8} {'vs floor':>8}")
        for exchange in EXCHANGES:
            floor = _in_process(_floor, exchange, server.ports[exchange], str(tmp / f"floor-{exchange}.db"), frames)
            print(_row(f"floor {exchange} sqlite", floor, None))
            result = _in_process(_bitty, [exchange], server.ports, f"sqlite:///{tmp}/bitty-{exchange}.db", 0, frames)
            print(_row(f"bitty {exchange} sqlite", result, floor))
            _warn(f"bitty {exchange} sqlite", result)
            if pg is not None:
                pg_floor = _in_process(_floor, exchange, server.ports[exchange], pg[1], frames)
                print(_row(f"floor {exchange} postgres", pg_floor, None))
                result = _in_process(_bitty, [exchange], server.ports, pg[0], 0, frames)
                print(_row(f"bitty {exchange} postgres", result, pg_floor))
                _warn(f"bitty {exchange} postgres", result)
    finally:
        server.close()
        if pg is not None:
            pg[2]()


def _scale(tmp: Path, sizes: Sequence[int], per_symbol: int, per_second: float) -> None:
    """Every scale exchange at once in one process, ``n`` symbols each over the connections its
    spec's limits require, each symbol trading ``per_second`` frames a second until it has had
    ``per_symbol``: the cost of a trade and of a symbol should not change with ``n``."""
    from bench.endtoend import largest_connection
    from bench.endtoend import run_bitty as _bitty
    from bench.frames import SCALE_EXCHANGES

    frames = {e: per_symbol * largest_connection(e, max(sizes)) for e in SCALE_EXCHANGES}
    server = _Server(frames, per_symbol, per_second)
    try:
        print(f"\nScale: {len(SCALE_EXCHANGES)} exchanges at once ({', '.join(SCALE_EXCHANGES)}), n symbols each "
              f"over the connections the specs' limits require; every symbol gets {per_symbol} frames, "
              f"{per_second:g} a second")
        print(f"{'n':>5} {'symbols':>8} {'conns':>6} {'trades':>9} {'seconds':>8} {'us/trade':>9} {'rss MB':>7} "
              f"{'KB/symbol':>10} {'reconnects':>11}")
        rows = []
        for n in sizes:
            r = _in_process(_bitty, list(SCALE_EXCHANGES), server.ports, f"sqlite:///{tmp}/scale-{n}.db", n,
                            per_symbol, True)
            r["us"] = r["cpu"] / max(r["trades"], 1) * 1e6
            r["kb"] = (r["run_rss_mb"] - r["idle_rss_mb"]) * 1024 / r["symbols"]
            rows.append(r)
            print(f"{n:>5,} {r['symbols']:>8,} {r['connections']:>6} {r['trades']:>9,} {r['seconds']:>8.1f} "
                  f"{r['us']:>9.1f} {r['run_rss_mb']:>7.0f} {r['kb']:>10.1f} {r['reconnects']:>11}")
            _warn(f"{r['symbols']:,} symbols", r)
    finally:
        server.close()
    small, large = rows[0], rows[-1]
    cpu, memory = large["us"] / small["us"], large["kb"] / max(small["kb"], 0.1)
    added = (large["run_rss_mb"] - small["run_rss_mb"]) * 1024 / (large["symbols"] - small["symbols"])
    verdict = "linear or better" if cpu <= 1.25 and memory <= 1.25 else "WORSE than linear"
    print(f"{large['symbols'] // small['symbols']}x the symbols: CPU per trade x{cpu:.2f}, memory per symbol x{memory:.2f} "
          f"(1.00 is linear, more is worse; noise about 25%): {verdict}; each symbol past the first "
          f"{small['symbols']:,} adds {added:.1f} KB")


def _fleet(tmp: Path, frames: int, nats_url: str = "nats://127.0.0.1:4222") -> None:
    """collector -> JetStream -> bitty sink -> PostgreSQL, as a ratio to collector -> PostgreSQL in the same run."""
    import socket

    from bench.endtoend import run_bitty as _bitty
    from bench.fleet import run_nats

    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            pass
    except OSError:
        print(f"\nNATS path skipped: {nats_url} is unreachable")
        return
    exchange = "coinbase"
    server = _Server({exchange: frames})
    pg = _pg_schema()
    try:
        if pg is None:
            return
        direct = _in_process(_bitty, [exchange], server.ports, pg[0], 0, frames)
        # a second schema: the path through NATS starts from an empty table too
        pg2 = _pg_schema()
        assert pg2 is not None
        try:
            via = _in_process(run_nats, exchange, server.ports, pg2[0], frames, nats_url)
        finally:
            pg2[2]()
        d_rate, v_rate = direct["trades"] / direct["seconds"], via["trades"] / via["seconds"]
        print(f"\nNATS path ({exchange}, {frames:,} frames): direct to PostgreSQL {d_rate:,.0f} trades/s; "
              f"collector -> JetStream -> sink -> PostgreSQL {v_rate:,.0f} trades/s; ratio {v_rate / d_rate:.2f}"
              f" ({via['trades']:,} of {via['expected']:,} stored)")
    finally:
        server.close()
        if pg is not None:
            pg[2]()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, about 40 s")
    parser.add_argument("--fleet-only", action="store_true", help="only the NATS path against the direct path")
    args = parser.parse_args(argv)
    if args.fleet_only:
        tmp = Path(tempfile.mkdtemp(prefix="bitty-bench-"))
        try:
            _fleet(tmp, 20_000 if args.quick else 100_000)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    frames = 30_000 if args.quick else 150_000

    from bench import mapping, reference
    print("\nMapping, decode + map, messages/s (target >= 400k for binance and coinbase)")
    print(f"{'exchange':<16} {'spec mapper':>12} {'exact path':>11} {'hand-written':>13} {'jmespath.search':>16}"
          f" {'cryptofeed':>11} {'vs hand-written':>16} {'vs cryptofeed':>14} {'vs orjson floats':>17}")
    for r in mapping.run(seconds=0.5 if args.quick else 1.5, frames_per_exchange=20_000):
        cf = r["cryptofeed"]
        cryptofeed, ratio = (f"{cf:,.0f}", f"{r['spec mapper'] / cf:.2f}") if cf else ("-", "-")
        print(f"{r['exchange']:<16} {r['spec mapper']:>12,.0f} {r['exact path']:>11,.0f} {r['hand-written']:>13,.0f}"
              f" {r['jmespath.search']:>16,.0f} {cryptofeed:>11} {r['spec mapper'] / r['hand-written']:>16.2f} {ratio:>14}"
              f" {r['exact decode'] / r['orjson decode']:>17.2f}")
    print("vs orjson floats: the spec mapper decoding numbers to exact Decimals (msgspec), against the same "
          "mapper decoding with orjson (numbers to floats), in the same run")
    print(reference.NOTE if reference.FEEDS else reference.MISSING)

    tmp = Path(tempfile.mkdtemp(prefix="bitty-bench-"))
    try:
        _end_to_end(tmp, frames)
        _scale(tmp, (100, 1000) if args.quick else (100, 300, 1000), 10 if args.quick else 20, per_second=2)
        _fleet(tmp, frames)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
