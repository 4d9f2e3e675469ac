"""The ``bitty`` command line. Exit codes: 0 ok, 1 expected errors, 2 usage, 130 Ctrl-C, 3 bugs."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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
    from bitty.spec.zones import zone_warnings

    problems: list[Problem] = []
    warnings: list[Problem] = []  # printed, never failing the check
    files = spec_paths(args.paths, paths.spec_dirs(args.exchanges_dir))
    choices = _params(args.param)
    every = choices.get("", {})
    loaded = []
    for file in files:
        try:
            loaded.append(load_spec(file, params={**every, **choices.get(file.stem, {})}, optional=frozenset(every)))
        except SpecError as exc:
            problems += exc.problems
        else:
            warnings += zone_warnings(file)
    problems += name_clashes(loaded)
    if args.format == "json":
        print(orjson.dumps({"files": [str(f) for f in files], "errors": [p.as_dict() for p in problems],
                            "warnings": [w.as_dict() for w in warnings]},
                           option=orjson.OPT_INDENT_2).decode())
    else:
        for problem in problems + warnings:
            print(problem)
        bad = len({p.file for p in problems})
        counted = f", {len(warnings)} warnings" if warnings else ""
        print(f"{len(files) - bad} of {len(files)} specs valid, {len(problems)} errors{counted}", file=sys.stderr)
    return 1 if problems else 0


def cmd_collect(args: argparse.Namespace) -> int:
    from bitty.commands.collect import run
    from bitty.pipeline import CollectOptions
    from bitty.storage.sinks.nats import StreamSettings

    symbols, per_exchange = _symbols(args.symbols)
    urls, url = _per_exchange(args.url)
    rest_urls, rest_url = _per_exchange(args.rest_url)
    if rest_url is not None:
        raise BittyError(f"--rest-url {rest_url!r}: expected EXCHANGE=URL")
    db = args.db or (None if args.nats else os.environ.get("BITTY_DB", "sqlite:///bitty.db"))
    options = CollectOptions(
        exchanges=args.exchanges, symbols=symbols, url=url, db=db, output=args.output,
        duration=args.duration, max_trades=args.max_trades, exchanges_dirs=args.exchanges_dir,
        progress_interval=args.progress_interval, spill_dir=args.spill_dir,
        backfill=not args.no_backfill, rest_urls=rest_urls, urls=urls, exchange_symbols=per_exchange,
        markets=[m.strip() for m in args.markets.split(",") if m.strip()] if args.markets else None,
        params=_params(args.param), rest_url=rest_url, close_timeout=args.close_timeout,
        status_addr=args.status_addr, health_limit=args.health_limit,
        live=sys.stderr.isatty() and getattr(args, "log_format", "text") == "text",
        nats=args.nats, shard=args.shard, name=args.name, max_pending=args.buffer,
        nats_stream=StreamSettings(name=args.nats_stream, prefix=args.nats_prefix),
    )
    if args.config:
        from bitty.commands.deploy import load

        deployed, per_exchange = load(args.config)
        # the file describes the fleet; the command line may still point it elsewhere (tests, a replay)
        options.exchanges, options.exchange_symbols = deployed.exchanges, per_exchange
        options.db = args.db or deployed.db
        options.nats = args.nats or deployed.nats
        options.shard, options.name = args.shard or deployed.shard, args.name or deployed.name
        options.nats_stream = deployed.nats_stream
        if args.spill_dir == "bitty-spill":
            options.spill_dir = deployed.spill_dir
    return run(options)


def cmd_sink(args: argparse.Namespace) -> int:
    from bitty.commands.sink import SinkOptions, run
    from bitty.storage.sinks.nats import StreamSettings

    nats, db, stream = args.nats, args.db, StreamSettings(name=args.nats_stream, prefix=args.nats_prefix)
    if args.config:  # the fleet's file: the same NATS, database and stream settings as its collectors
        from bitty.commands.deploy import load

        deployed, _symbols = load(args.config)
        nats, db, stream = nats or deployed.nats, db or deployed.db, deployed.nats_stream
    if not nats or not db:
        raise BittyError(f"bitty sink: give --{'nats' if not nats else 'db'} (or "
                         f"{'nats' if not nats else 'database'}: in the --config file)")
    return run(SinkOptions(nats=nats, db=db, name=args.name, progress_interval=args.progress_interval,
                           stream=stream,
                           idle_exit=args.idle_exit, ack_wait=args.ack_wait, status_addr=args.status_addr,
                           health_limit=args.health_limit))


def _exchange_prefix(value: str) -> tuple[str | None, str]:
    """``binance:BTCUSDT`` -> ("binance", "BTCUSDT"); an exchange name is lower case, so native
    symbols with a colon (Bitfinex ``tTESTBTC:TESTUSD``) are not split."""
    name, sep, rest = value.partition(":")
    if sep and re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name) and not rest.startswith("//"):
        return name, rest
    return None, value


def _symbols(values: list[str] | None) -> tuple[list[str] | None, dict[str, list[str]]]:
    """--symbols A,B (every exchange) and --symbols EXCHANGE:A,B (one), repeatable."""
    every: list[str] = []
    per: dict[str, list[str]] = {}
    for value in values or []:
        name, rest = _exchange_prefix(value)
        items = [s.strip() for s in rest.split(",") if s.strip()]
        if name is None:
            every += items
        else:
            per.setdefault(name, []).extend(items)
    return every or None, per


def _per_exchange(values: list[str] | None) -> tuple[dict[str, str], str | None]:
    """``EXCHANGE=URL`` pairs and one bare URL for every exchange."""
    per: dict[str, str] = {}
    bare = None
    for value in values or []:
        name, sep, url = value.partition("=")
        if sep and re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
            per[name] = url
        else:
            bare = value
    return per, bare


def _params(values: list[str] | None) -> dict[str, dict[str, str]]:
    """``-p name=value`` (every exchange declaring it) and ``-p exchange.name=value``; "" keys the former."""
    out: dict[str, dict[str, str]] = {}
    for value in values or []:
        key, sep, choice = value.partition("=")
        if not sep or not key or not choice:
            raise BittyError(f"-p {value!r}: expected NAME=VALUE or EXCHANGE.NAME=VALUE")
        exchange, dot, name = key.rpartition(".")
        out.setdefault(exchange if dot else "", {})[name] = choice
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
    from bitty.markets.instruments import fetch_listing, save_instruments
    from bitty.spec.load import find_spec, load_spec
    from bitty.storage.store import Store

    choices = _params(args.param)
    spec = load_spec(find_spec(args.exchange, paths.spec_dirs(args.exchanges_dir)),
                     params={**choices.get("", {}), **choices.get(args.exchange, {})})
    instruments = asyncio.run(fetch_listing(spec, args.url, origin=args.rest_url))
    if args.markets:
        kinds = {k.strip() for k in args.markets.split(",")}
        instruments = [i for i in instruments if i.kind in kinds]
    if args.db:
        store = Store(args.db)
        try:
            store.open()
            save_instruments(store.engine, spec.name, instruments)
        finally:
            store.close()
    if args.format == "json":
        print(orjson.dumps([i.as_dict() for i in instruments], option=orjson.OPT_INDENT_2).decode())
    else:
        columns = ("native", "normalized", "kind", "settle", "expiry", "contract_size", "size_unit")
        rows = [[str(i.as_dict()[c] if i.as_dict()[c] is not None else "") for c in columns] for i in instruments]
        widths = [max([len(c)] + [len(r[n]) for r in rows]) for n, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in rows:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    saved = f", saved to the instruments table of {args.db}" if args.db else ""
    print(f"{len(instruments)} instruments{saved}", file=sys.stderr)
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

    from bitty.continuity.audit import audit, open_store
    from bitty.continuity.chart import page, png, table
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
                              args.exchanges_dir, args.rest_url))


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
    p.add_argument("-p", "--param", action="append", default=[], metavar="[EXCHANGE.]NAME=VALUE",
                   help="check the specs with this parameter choice")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--exchanges-dir", action="append", default=[], help=dirs_help)
    p.set_defaults(func=cmd_validate)

    p = add("collect", "collect trades into a database",
            "bitty collect coinbase kraken --symbols BTC-USD,ETH-USD",
            "bitty collect binance --db postgresql://bitty@localhost/bitty --status-addr 127.0.0.1:9108",
            "bitty --log-format json collect coinbase 2>> bitty.log")
    p.add_argument("exchanges", nargs="*", help="exchange names or spec files (default: every spec)")
    p.add_argument("--symbols", action="append", metavar="[EXCHANGE:]A,B",
                   help="comma-separated symbols, native or normalized (BTC-USD); EXCHANGE: limits them to one "
                        "exchange; repeatable")
    p.add_argument("--markets", metavar="KIND,...",
                   help="also collect every listed instrument of these kinds: spot, perpetual, future, option")
    p.add_argument("-p", "--param", action="append", default=[], metavar="[EXCHANGE.]NAME=VALUE",
                   help="a spec parameter's choice, e.g. -p stream=aggTrade (a spec's `params` list its choices)")
    p.add_argument("--url", action="append", metavar="[EXCHANGE=]URL",
                   help="websocket URL replacing the spec's (an origin alone keeps the spec's path); "
                        "EXCHANGE= for one exchange; repeatable")
    p.add_argument("--db", help="SQLAlchemy database URL (default: sqlite:///bitty.db, or $BITTY_DB; none with --nats)")
    p.add_argument("--nats", metavar="URL", help="publish to NATS JetStream (nats://HOST:PORT) instead of a database, "
                   "or as well if --db is given")
    p.add_argument("--nats-stream", default="BITTY", help="JetStream stream name (default BITTY)")
    p.add_argument("--nats-prefix", default="bitty", help="subject prefix (default bitty: bitty.trades.<exchange>.<symbol>)")
    p.add_argument("--shard", metavar="I/N", help="collect only the (exchange, symbol) streams of shard I of N")
    p.add_argument("--name", help="this collector's name in the runs table and audit (default host:pid)")
    p.add_argument("--buffer", type=int, default=200_000,
                   help="trades held in memory while the output is away before spilling to disk (default 200000)")
    p.add_argument("--config", metavar="DEPLOY.yaml", help="a deployment file: exchanges, symbols, shard, outputs "
                   "(docs/deploy.md)")
    p.add_argument("--output", help="also write stored trades as JSON lines: jsonl:PATH or - for stdout")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--max-trades", type=int, help="stop after this many trades received")
    p.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--no-backfill", action="store_true",
                   help="record gaps but do not fetch their trades through the spec's rest.trades endpoint")
    p.add_argument("--rest-url", action="append", default=[], metavar="EXCHANGE=URL",
                   help="origin replacing every HTTP endpoint of an exchange: bootstrap, symbol list and "
                        "rest.trades (a local replay, a proxy); repeatable")
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

    p = add("sink", "drain the NATS JetStream stream into a database",
            "bitty sink --nats nats://127.0.0.1:4222 --db postgresql://postgres@127.0.0.1/bitty",
            "bitty sink --nats nats://127.0.0.1:4222 --db sqlite:///catchup.db --idle-exit 30")
    p.add_argument("--nats", metavar="URL", help="nats://HOST:PORT (or nats: in --config)")
    p.add_argument("--db", help="SQLAlchemy database URL (or database: in --config)")
    p.add_argument("--config", metavar="DEPLOY.yaml",
                   help="the fleet's deployment file: its nats, database and stream settings (docs/deploy.md)")
    p.add_argument("--name", default="bitty-sink", help="durable consumer name: sinks of one name share the work")
    p.add_argument("--nats-stream", default="BITTY", help="JetStream stream name (default BITTY)")
    p.add_argument("--nats-prefix", default="bitty", help="subject prefix (default bitty)")
    p.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--ack-wait", type=float, default=30.0,
                   help="seconds before a message taken by a sink that died is redelivered (default 30)")
    p.add_argument("--idle-exit", type=float, help="stop after this many seconds without a message (catch-up jobs)")
    p.add_argument("--status-addr", type=_status_addr, metavar="HOST:PORT",
                   help="serve the live status page (/), /metrics (Prometheus), /healthz and /status here")
    p.add_argument("--health-limit", type=float, default=60.0, metavar="SECONDS",
                   help="how long NATS or the database may be away before /healthz says 503 (default 60)")
    p.set_defaults(func=cmd_sink)

    p = add("test", "replay a spec's fixtures and compare with its golden rows", "bitty test", "bitty test kraken --update")
    p.add_argument("targets", nargs="*", help="exchange names or spec files (default: every spec)")
    p.add_argument("--update", action="store_true", help="rewrite the golden rows from the replay")
    p.add_argument("--exchanges-dir", action="append", default=[], help=dirs_help)
    p.set_defaults(func=cmd_test)

    p = add("symbols", "list an exchange's tradable symbols, native and normalized", "bitty symbols kraken",
            "bitty symbols binance --format json")
    p.add_argument("exchange")
    p.add_argument("--url", help="symbol list URL replacing the spec's")
    p.add_argument("--rest-url", metavar="URL", help="origin replacing the host of every symbol list URL")
    p.add_argument("--markets", metavar="KIND,...", help="only these kinds: spot, perpetual, future, option")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="a spec parameter's choice")
    p.add_argument("--db", help="also save the instruments to this database's instruments table")
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
    p.add_argument("--rest-url", help="origin replacing the spec's HTTP endpoints (bootstrap, listing)")
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
