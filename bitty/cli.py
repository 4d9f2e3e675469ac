"""The ``bitty`` command line. Exit codes: 0 ok, 1 expected errors, 2 usage, 130 Ctrl-C, 3 bugs."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import orjson

from bitty.errors import BittyError, Problem, SpecError
from bitty.spec import files as paths


def _setup_logging(fmt: str = "text") -> None:
    from bitty.ops import logs

    logs.setup(fmt)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bitty")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _status_addr(value: str) -> str:
    from bitty.ops.server import parse_addr

    try:
        parse_addr(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def cmd_validate(args: argparse.Namespace) -> int:
    from bitty.spec.load import load_spec, name_clashes, spec_paths

    problems: list[Problem] = []
    files = spec_paths(args.paths, paths.spec_dirs(args.exchanges_dir))
    loaded = []
    for file in files:
        try:
            loaded.append(load_spec(file))
        except SpecError as exc:
            problems += exc.problems
    problems += name_clashes(loaded)
    if args.format == "json":
        print(orjson.dumps({"files": [str(f) for f in files], "errors": [p.as_dict() for p in problems]},
                           option=orjson.OPT_INDENT_2).decode())
    else:
        for problem in problems:
            print(problem)
        bad = len({p.file for p in problems})
        print(f"{len(files) - bad} of {len(files)} specs valid, {len(problems)} errors", file=sys.stderr)
    return 1 if problems else 0


def cmd_collect(args: argparse.Namespace) -> int:
    from bitty.commands.collect import run
    from bitty.pipeline import CollectOptions

    symbols = [s for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    options = CollectOptions(
        exchanges=args.exchanges, symbols=symbols, url=args.url, db=args.db, output=args.output,
        duration=args.duration, max_trades=args.max_trades, exchanges_dirs=args.exchanges_dir,
        progress_interval=args.progress_interval, spill_dir=args.spill_dir,
        backfill=not args.no_backfill, rest_urls=dict(_pairs(args.rest_url, "--rest-url")),
        close_timeout=args.close_timeout,
        status_addr=args.status_addr, health_limit=args.health_limit,
        live=sys.stderr.isatty() and getattr(args, "log_format", "text") == "text",
    )
    return run(options)


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name or not url:
            raise BittyError(f"{option} {value!r}: expected EXCHANGE=URL")
        out.append((name, url))
    return out


def cmd_test(args: argparse.Namespace) -> int:
    from bitty.commands.test import check
    from bitty.spec.load import load_spec, spec_paths

    failed = 0
    files = spec_paths(args.targets, paths.spec_dirs(args.exchanges_dir))
    for file in files:
        try:
            spec = load_spec(file)
        except SpecError as exc:
            print(f"FAIL {file}\n{exc}")
            failed += 1
            continue
        result = asyncio.run(check(spec, update=args.update))
        status = "ok  " if result.ok else "FAIL"
        extra = " (golden rewritten)" if result.updated else ""
        print(f"{status} {spec.name}: {len(result.rows)} trades{extra}")
        for problem in result.problems:
            print("     " + problem.replace("\n", "\n     "))
        failed += not result.ok
    print(f"{len(files) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_symbols(args: argparse.Namespace) -> int:
    from bitty.markets.instruments import fetch_listing
    from bitty.spec.load import find_spec, load_spec

    spec = load_spec(find_spec(args.exchange, paths.spec_dirs(args.exchanges_dir)))
    instruments = asyncio.run(fetch_listing(spec, args.url))
    if args.format == "json":
        print(orjson.dumps([{"native": i.native, "normalized": i.normalized} for i in instruments],
                           option=orjson.OPT_INDENT_2).decode())
    else:
        width = max([len(i.native) for i in instruments] + [6])
        print(f"{'native':<{width}}  normalized")
        for instrument in instruments:
            print(f"{instrument.native:<{width}}  {instrument.normalized or '(cannot normalize)'}")
    print(f"{len(instruments)} symbols", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bitty.commands.demo import demo

    return asyncio.run(demo(args.db, args.exchanges or None))


def cmd_replay(args: argparse.Namespace) -> int:
    from bitty.commands.replay import ReplayServer, load_session

    async def serve() -> None:
        server = ReplayServer(load_session(Path(args.file)), speed=args.speed, hold=True)
        url = await server.start(port=args.port)
        print(f"replaying {args.file} on {url} (Ctrl-C to stop)", file=sys.stderr)
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from bitty.continuity.audit import audit, open_store, page, png, table
    from bitty.lang.functions import iso_time

    def moment(text: str | None, default: datetime) -> datetime:
        if text is None:
            return default
        value = iso_time(text)
        if value is None:
            raise BittyError(f"cannot read time {text!r}: use ISO-8601, e.g. 2024-05-14T09:00:00Z")
        return value

    until = moment(args.until, datetime.now(UTC))
    since = moment(args.since, until - timedelta(hours=args.hours))
    if since >= until:
        raise BittyError(f"the window is empty: --since {since:%Y-%m-%dT%H:%M:%SZ} is not before --until "
                         f"{until:%Y-%m-%dT%H:%M:%SZ}")
    store = open_store(args.db)
    try:
        symbols = [s for s in args.symbols.split(",") if s] if args.symbols else None
        report = audit(store, since, until, args.exchanges or None, symbols)
    finally:
        store.close()
    print(table(report))
    if args.html:
        Path(args.html).write_text(page(report), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if args.png and not png(report, args.png):
        print("--png needs matplotlib (pip install matplotlib); skipped", file=sys.stderr)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from bitty.commands.record import record

    return asyncio.run(record(args.exchange, Path(args.out), args.symbols, args.url, args.duration,
                              args.exchanges_dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitty", description="Collect live trades from exchanges over websockets.",
        epilog="example: bitty collect coinbase --symbols BTC-USD --status-addr 127.0.0.1:9108\n"
               "exit codes: 0 ok, 1 error (message on stderr), 2 usage, 3 bug (traceback), 130 Ctrl-C",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bitty {_version()}")
    parser.add_argument("--log-format", choices=["text", "json"], default=argparse.SUPPRESS,
                        help="log lines as text (UTC times) or one JSON object per line (default: text)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, *examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                              epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    dirs_help = "an extra folder of exchange specs (repeatable); its specs override bundled ones of the same name"

    p = add("validate", "check exchange specs", "bitty validate", "bitty validate exchanges.d/kraken.yaml --format json")
    p.add_argument("paths", nargs="*", help="spec files, folders or exchange names (default: every spec)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--exchanges-dir", action="append", default=[], help=dirs_help)
    p.set_defaults(func=cmd_validate)

    p = add("collect", "collect trades into a database",
            "bitty collect coinbase kraken --symbols BTC-USD,ETH-USD",
            "bitty collect binance --db postgresql://bitty@localhost/bitty --status-addr 127.0.0.1:9108",
            "bitty --log-format json collect coinbase 2>> bitty.log")
    p.add_argument("exchanges", nargs="*", help="exchange names or spec files (default: every spec)")
    p.add_argument("--symbols", help="comma-separated symbols, native or normalized (BTC-USD)")
    p.add_argument("--url", help="websocket URL replacing the spec's (an origin alone keeps the spec's path)")
    p.add_argument("--db", default=os.environ.get("BITTY_DB", "sqlite:///bitty.db"),
                   help="SQLAlchemy database URL (default: sqlite:///bitty.db, or $BITTY_DB)")
    p.add_argument("--output", help="also write stored trades as JSON lines: jsonl:PATH or - for stdout")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--max-trades", type=int, help="stop after this many trades received")
    p.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--no-backfill", action="store_true",
                   help="record gaps but do not fetch their trades through the spec's rest.trades endpoint")
    p.add_argument("--rest-url", action="append", default=[], metavar="EXCHANGE=URL",
                   help="origin replacing an exchange's rest.trades URL (a local replay, a proxy); repeatable")
    p.add_argument("--spill-dir", default="bitty-spill",
                   help="folder for trades waiting while the database is away (default: ./bitty-spill)")
    p.add_argument("--close-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long a stop waits for an away database before spilling what is left (default: 30)")
    p.add_argument("--exchanges-dir", action="append", default=[], help=dirs_help)
    p.add_argument("--status-addr", type=_status_addr, metavar="HOST:PORT",
                   help="serve the live status page (/), /metrics (Prometheus), /healthz and /status here")
    p.add_argument("--health-limit", type=float, default=60.0, metavar="SECONDS",
                   help="how long a stream may reconnect or the database refuse writes before /healthz says 503 (default 60)")
    p.add_argument("--log-format", choices=["text", "json"], default=argparse.SUPPRESS,
                   help="log lines as text (UTC times) or one JSON object per line; text on a terminal shows a live table")
    p.set_defaults(func=cmd_collect)

    p = add("test", "replay a spec's fixtures and compare with its golden rows", "bitty test", "bitty test kraken --update")
    p.add_argument("targets", nargs="*", help="exchange names or spec files (default: every spec)")
    p.add_argument("--update", action="store_true", help="rewrite the golden rows from the replay")
    p.add_argument("--exchanges-dir", action="append", default=[], help=dirs_help)
    p.set_defaults(func=cmd_test)

    p = add("symbols", "list an exchange's tradable symbols, native and normalized", "bitty symbols kraken",
            "bitty symbols binance --format json")
    p.add_argument("exchange")
    p.add_argument("--url", help="symbol list URL replacing the spec's")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--exchanges-dir", action="append", default=[], help=dirs_help)
    p.set_defaults(func=cmd_symbols)

    p = add("demo", "run the whole pipeline offline on bundled recordings", "bitty demo", "bitty demo kraken --db sqlite:///demo.db")
    p.add_argument("exchanges", nargs="*", help="exchanges to replay (default: coinbase, binance, kraken, bitstamp)")
    p.add_argument("--db", default="sqlite:///bitty-demo.db", help="database URL (default: sqlite:///bitty-demo.db)")
    p.set_defaults(func=cmd_demo)

    p = add("replay", "serve a recorded session as a local websocket exchange",
            "bitty replay session.jsonl --port 8765 --speed 1  # then: bitty collect coinbase --url ws://127.0.0.1:8765")
    p.add_argument("file", help="session file (JSON lines, see `bitty record`)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--speed", type=float, help="replay at recorded pace times this factor (default: as fast as possible)")
    p.set_defaults(func=cmd_replay)

    p = add("record", "record raw frames of a live connection to a session file",
            "bitty record coinbase --symbols BTC-USD --duration 30 --out session.jsonl")
    p.add_argument("exchange")
    p.add_argument("--out", required=True, help="session file to write")
    p.add_argument("--symbols", help="comma-separated symbols")
    p.add_argument("--url", help="websocket URL replacing the spec's")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to record (default 60)")
    p.add_argument("--exchanges-dir", action="append", default=[], help=dirs_help)
    p.set_defaults(func=cmd_record)

    p = add("audit", "report how complete the stored trades of a time window are",
            "bitty audit --hours 6 --html audit.html",
            "bitty audit coinbase --symbols BTC-USD --since 2024-05-14T09:00:00Z --until 2024-05-14T12:00:00Z --png audit.png")
    p.add_argument("exchanges", nargs="*", help="exchanges to report (default: all in the database)")
    p.add_argument("--symbols", help="comma-separated normalized symbols (default: all)")
    p.add_argument("--db", default=os.environ.get("BITTY_DB", "sqlite:///bitty.db"), help="database URL")
    p.add_argument("--since", help="window start, ISO-8601 UTC (default: --hours before --until)")
    p.add_argument("--until", help="window end, ISO-8601 UTC (default: now)")
    p.add_argument("--hours", type=float, default=24.0, help="window length when --since is not given (default 24)")
    p.add_argument("--html", help="also write a self-contained HTML report with charts to this file")
    p.add_argument("--png", help="also write the charts as PNG (needs matplotlib)")
    p.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "log_format", "text"))
    try:
        return int(args.func(args))
    except BittyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception:
        traceback.print_exc()
        return 3
