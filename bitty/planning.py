"""Planning a collect run: the specs with their parameters, the symbols of each connection
(listings, markets, shards), and the instruments recorded for the run."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from bitty.errors import BittyError, SymbolError
from bitty.markets.instruments import Instrument, fetch_listing, save_instruments, unlisted
from bitty.spec import files as paths
from bitty.spec.load import Spec, check_unique_names, load_spec, spec_paths
from bitty.spec.symbols import KINDS, parse_name, resolve
from bitty.storage.store import Store

logger = logging.getLogger("bitty.collect")


def load_specs(targets: Sequence[str], dirs: list[str],
               params: dict[str, dict[str, str]] | None = None) -> list[Spec]:
    """The specs of ``targets`` with the chosen parameters (``params[""]`` applies to every spec
    declaring them, ``params[exchange]`` to one)."""
    params = params or {}
    every = params.get("", {})
    files = spec_paths(targets, paths.spec_dirs(dirs))
    specs = [load_spec(path, params={**every, **params.get(path.stem, {})}, optional=frozenset(every))
             for path in files]
    unknown = sorted(set(params) - {""} - {p.stem for p in files} - {s.name for s in specs})
    if unknown:
        raise BittyError(f"-p {unknown[0]}.…: {unknown[0]!r} is not among the exchanges collected")
    for name in every:
        if not any(name in dict(s.params) for s in specs):
            raise BittyError(f"-p {name}=…: no exchange collected declares the parameter {name!r}")
    check_unique_names(specs)  # two files with one exchange name: refuse, never collect both
    return specs


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 <= i < n) as (i, n)."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise BittyError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    return int(index), int(count)


def shard_of(exchange: str, symbol: str, count: int) -> int:
    """The shard of an (exchange, symbol) stream: a stable hash (SHA-256, not Python's salted
    hash()), so every collector on every machine agrees."""
    digest = hashlib.sha256(f"{exchange}\0{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def plan(specs: list[Spec], symbols: list[str] | None,
         listings: dict[str, list[Instrument]] | None = None,
         exchange_symbols: dict[str, list[str]] | None = None,
         markets: list[str] | None = None,
         shard: tuple[int, int] | None = None) -> list[tuple[Spec, list[str]]]:
    """(spec, symbols of one connection) for every connection to open. ``exchange_symbols``
    (per exchange) beats ``symbols`` (every exchange); ``markets`` adds every listed instrument of
    those kinds. With an exchange's listing, unknown symbols are rejected with a suggestion;
    without one, native symbols are named by the general rules (``bitty.spec.symbols.guess``).
    With a shard, only its streams."""
    out = []
    per = exchange_symbols or {}
    unknown = sorted(set(per) - {s.name for s in specs})
    if unknown:
        raise SymbolError(f"--symbols {unknown[0]}:...: {unknown[0]!r} is not among the exchanges collected "
                          f"({', '.join(s.name for s in specs)})")
    for kind in markets or ():
        if kind not in KINDS:
            raise SymbolError(f"--markets {kind!r}: expected one of {', '.join(KINDS)}")
    today = datetime.now(UTC).date()
    for spec in specs:
        listing = (listings or {}).get(spec.name)
        known = [i.normalized for i in listing if i.normalized] if listing else None
        requested = per.get(spec.name, symbols)
        chosen = resolve(spec.symbols, requested, known, exchange=spec.name) if requested else []
        if markets:
            if listing is None:
                raise SymbolError(f"{spec.name}: --markets {','.join(markets)} needs the exchange's listing, "
                                  "which was not fetched (see the warning above); name the symbols with --symbols")
            chosen += [i.normalized for i in listing
                       if i.normalized and i.kind in markets and i.normalized not in chosen]
        elif not requested:
            chosen = list(spec.default_symbols)
        for symbol in chosen:
            parsed = parse_name(symbol)
            if parsed is not None and parsed.expiry is not None and parsed.expiry < today:
                logger.warning("%s: %s expired on %s: the exchange will probably send no trades for it",
                               spec.name, symbol, parsed.expiry.isoformat())
        if shard is not None:
            chosen = [s for s in chosen if shard_of(spec.name, s, shard[1]) == shard[0]]
        size = spec.max_symbols or len(chosen) or 1
        for i in range(0, len(chosen), size):
            out.append((spec, chosen[i:i + size]))
    return out


async def fetch_listings(specs: list[Spec], urls: dict[str, str],
                         origins: dict[str, str] | None = None) -> dict[str, list[Instrument]]:
    """Symbol lists of the exchanges that declare one; an unreachable list is a warning, not an
    error (symbols are then taken as given). ``origins`` (``--rest-url``) redirects every URL
    of an exchange's listing."""
    out: dict[str, list[Instrument]] = {}
    for spec in specs:
        if spec.symbol_list is None:
            continue
        try:
            listing = await fetch_listing(spec, urls.get(spec.name), origin=(origins or {}).get(spec.name))
        except BittyError as exc:
            logger.warning("%s: cannot check symbols against the exchange's list: %s", spec.name, exc)
            continue
        for instrument in listing:
            if instrument.normalized:
                spec.symbols.learn(instrument.native, instrument.normalized)
        out[spec.name] = listing
    return out


def record_instruments(store: Store, connections: list[tuple[Spec, list[str]]],
                       listings: dict[str, list[Instrument]]) -> None:
    """Fill the ``instruments`` table: an exchange's listing when fetched, else the instruments
    collected, named by the general rules (``source = guess``), so sizes keep a unit."""
    for spec in {id(s): s for s, _ in connections}.values():
        listing = listings.get(spec.name)
        if listing is None:
            listing = [unlisted(spec.symbols.to_native(symbol), symbol, spec.symbols)
                       for c, symbols in connections if c is spec for symbol in symbols]
        try:
            save_instruments(store.engine, spec.name, listing)
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("%s: cannot record the instruments: %s", spec.name, exc)
