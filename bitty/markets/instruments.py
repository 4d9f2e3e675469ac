"""The instruments an exchange lists: spot pairs, perpetuals, dated futures and options, read from
the REST endpoint(s) its spec declares (``symbols.list``), named by the scheme of
``bitty.spec.symbols`` and kept in the ``instruments`` table (``bitty symbols`` shows them).

Sizes are stored exactly as the exchange publishes them; ``size_unit`` says whether that is base
units, contracts or quote units (Deribit's inverse `amount` in USD), and ``base_size`` turns them
into base units where it can: ``size * contract_size`` for a linear contract (its contract size
is in base units), ``size * contract_size / price`` for an inverse one (contract size in quote
units, e.g. 100 USD), ``size / price`` for a size in quote units.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import sqlalchemy as sa

from bitty.errors import BittyError
from bitty.lang.expr import Expr, evaluate_safely
from bitty.lang.functions import iso_time, to_decimal, to_text
from bitty.mapping import codec
from bitty.spec.load import Spec
from bitty.spec.symbols import KINDS, RIGHTS, SymbolRules, guess, instrument_name, parse_date, parse_name
from bitty.storage import tables

logger = logging.getLogger("bitty.markets")
UNITS = ("base", "contracts", "quote")


@dataclass(frozen=True)
class Instrument:
    native: str
    normalized: str | None
    kind: str = "spot"  # spot | perpetual | future | option
    base: str | None = None
    quote: str | None = None
    settle: str | None = None  # settlement asset; the quote when the listing does not say
    expiry: date | None = None
    strike: Decimal | None = None
    right: str | None = None  # C | P
    contract_size: Decimal | None = None
    inverse: bool = False
    size_unit: str = "base"  # base | contracts | quote
    source: str = "listing"  # listing | guess (named by rules, no listing reached)

    def as_dict(self) -> dict[str, Any]:
        return {"native": self.native, "normalized": self.normalized, "kind": self.kind, "base": self.base,
                "quote": self.quote, "settle": self.settle,
                "expiry": self.expiry.isoformat() if self.expiry else None,
                "strike": _plain(self.strike), "right": self.right, "contract_size": _plain(self.contract_size),
                "inverse": self.inverse, "size_unit": self.size_unit, "source": self.source}


def base_size(size: Decimal, price: Decimal, instrument: Instrument) -> Decimal | None:
    """The base quantity of a trade of ``size`` (as published) at ``price``; None when unknown."""
    if instrument.size_unit == "base":
        return size
    if instrument.size_unit == "quote":
        return size / price if price else None
    if instrument.contract_size is None:
        return None
    if instrument.inverse:
        return size * instrument.contract_size / price if price else None
    return size * instrument.contract_size


def unlisted(native: str, name: str, rules: SymbolRules | None = None) -> Instrument:
    """An instrument no listing described, from the parts of its (rule-given) name; the unit of its
    sizes from the spec's ``symbols.size_units`` (base when it names none)."""
    parsed = parse_name(name)
    if parsed is None:
        return Instrument(native, name, size_unit=rules.size_unit("spot", None) if rules else "base", source="guess")
    unit = rules.size_unit(parsed.kind, parsed.quote) if rules else "base"
    return Instrument(native, name, parsed.kind, parsed.base, parsed.quote, parsed.quote, parsed.expiry,
                      to_decimal(parsed.strike) if parsed.strike else None, parsed.right, size_unit=unit,
                      source="guess")


def save_instruments(engine: sa.Engine, exchange: str, listed: list[Instrument]) -> None:
    """Replace the exchange's rows of the ``instruments`` table with ``listed``.

    A symbol collected earlier under a name the general rules gave (no listing reached) and now
    listed under another name has its stored trades, coverage and gaps renamed, with a warning.
    """
    now = datetime.now(UTC)
    table = tables.instruments
    natives = [i.native for i in listed]
    with engine.begin() as conn:
        if any(i.source == "listing" for i in listed):
            names = {i.native: i.normalized for i in listed if i.normalized}
            guesses = conn.execute(sa.select(table.c.native, table.c.symbol).where(
                table.c.exchange == exchange, table.c.source == "guess")).all()
            for native, old in guesses:
                new = names.get(native)
                if new and new != old:
                    for renamed in (tables.trades, tables.coverage, tables.gaps):
                        conn.execute(renamed.update().where(renamed.c.exchange == exchange,
                                                            renamed.c.symbol == old).values(symbol=new))
                    logger.warning("%s: %s was collected as %s (no listing then); the listing names it %s: "
                                   "its stored trades are renamed", exchange, native, old, new)
        if all(i.source == "guess" for i in listed):
            # Rule-given rows never replace what a listing said (contract sizes, expiries).
            known = set(conn.execute(sa.select(table.c.native).where(
                table.c.exchange == exchange, table.c.source == "listing")).scalars())
            listed = [i for i in listed if i.native not in known]
            natives = [i.native for i in listed]
        for start in range(0, len(natives), 500):
            conn.execute(table.delete().where(table.c.exchange == exchange,
                                              table.c.native.in_(natives[start:start + 500])))
        rows = [{"exchange": exchange, "native": i.native, "symbol": i.normalized or i.native, "kind": i.kind,
                 "base": i.base, "quote": i.quote, "settle": i.settle, "expiry": i.expiry, "strike": i.strike,
                 "option_right": i.right, "contract_size": i.contract_size, "inverse": i.inverse,
                 "size_unit": i.size_unit, "source": i.source, "updated_at": now} for i in listed]
        if rows:
            conn.execute(table.insert(), rows)


def read_instruments(engine: sa.Engine, exchange: str | None = None) -> list[Instrument]:
    """The ``instruments`` table's rows (of one exchange)."""
    table = tables.instruments
    query = sa.select(table).order_by(table.c.exchange, table.c.symbol)
    if exchange:
        query = query.where(table.c.exchange == exchange)
    with engine.connect() as conn:
        return [Instrument(r.native, r.symbol, r.kind, r.base, r.quote, r.settle, r.expiry, r.strike,
                           r.option_right, r.contract_size, r.inverse, r.size_unit, r.source)
                for r in conn.execute(query)]


def _plain(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _value(expr: Expr | None, record: Any) -> Any:
    return None if expr is None else evaluate_safely(expr.fn, record)[0]


def _expiry(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date()
    text = to_text(value)
    if not text:
        return None
    day = parse_date(text.upper())
    if day is not None:
        return day
    moment = iso_time(text)
    return moment.date() if moment else None


def parse_listing(spec: Spec, body: Any) -> list[Instrument]:
    """Instruments of one decoded symbol-list response, named with the spec's rules.

    A record the listing describes badly (a future with no expiry, a contract size of zero) is a
    warning naming the exchange and symbol; the instrument is still listed, under the name the
    general rules give its native symbol.
    """
    listing = spec.symbol_list
    if listing is None:
        raise BittyError(f"{spec.name}: the spec declares no symbols.list endpoint")
    records, error = evaluate_safely(listing.records.fn, body)
    if error or not isinstance(records, list):
        raise BittyError(f"{spec.name}: symbols.list.records did not give a list ({error or type(records).__name__}): "
                         "the listing changed shape or is an error answer")
    out: list[Instrument] = []
    named: dict[str, str] = {}
    unnamed = 0
    for record in records:
        if listing.filter is not None and not evaluate_safely(listing.filter.fn, record)[0]:
            continue
        native = to_text(_value(listing.native, record))
        if not native:
            unnamed += 1
            continue
        instrument = _instrument(spec, record, native)
        name = instrument.normalized
        if name is not None and name in named and named[name] != native:
            logger.warning("%s: %s and %s would both be named %s; %s keeps its native name",
                           spec.name, named[name], native, name, native)
            instrument = replace(instrument, normalized=native.upper())
        named.setdefault(instrument.normalized or native, native)
        out.append(instrument)
    if unnamed:
        logger.warning("%s: %d listed records give no native symbol (symbols.list.native): the listing may have "
                       "changed shape", spec.name, unnamed)
    return out


def _instrument(spec: Spec, record: Any, native: str) -> Instrument:
    listing, rules = spec.symbol_list, spec.symbols
    assert listing is not None
    base = to_text(_value(listing.base, record))
    quote = to_text(_value(listing.quote, record))
    base = rules.aliases.get(base.upper(), base.upper()) if base else None
    quote = rules.aliases.get(quote.upper(), quote.upper()) if quote else None
    settle = to_text(_value(listing.settle, record))
    settle = rules.aliases.get(settle.upper(), settle.upper()) if settle else quote
    kind = to_text(_value(listing.kind, record)) if listing.kind else None
    if kind is not None and kind not in KINDS:
        logger.warning("%s: %s: symbols.list.kind gave %r, not one of %s; taken as spot",
                       spec.name, native, kind, ", ".join(KINDS))
        kind = "spot"
    expiry = _expiry(_value(listing.expiry, record)) if kind in ("future", "option", None) else None
    strike = to_decimal(_value(listing.strike, record))
    strike = strike.normalize() if strike is not None else None
    right_text = to_text(_value(listing.right, record))
    right = RIGHTS.get(right_text.upper()) if right_text else None
    contract = to_decimal(_value(listing.contract_size, record)) if listing.contract_size else None
    unit = to_text(_value(listing.size_unit, record)) or ("contracts" if listing.contract_size else "base")
    if unit not in UNITS:
        logger.warning("%s: %s: symbols.list.size_unit gave %r, not one of %s; taken as contracts",
                       spec.name, native, unit, ", ".join(UNITS))
        unit = "contracts"
    if contract is not None and contract <= 0:
        logger.warning("%s: %s: contract size %s is not positive: sizes are kept in contracts, the base "
                       "quantity cannot be derived", spec.name, native, contract)
        contract = None
    inverse = bool(_value(listing.inverse, record))
    name: str | None = None
    if native in rules.explicit:
        name = rules.explicit[native]
    elif kind in ("future", "option") and expiry is None:
        name, _how = guess(native, rules)
        logger.warning("%s: %s: a %s with no expiry in the listing: named %s from its native symbol",
                       spec.name, native, kind, name)
    elif kind == "option" and (strike is None or right is None):
        name, _how = guess(native, rules)
        logger.warning("%s: %s: an option without strike or call/put in the listing: named %s from its "
                       "native symbol", spec.name, native, name)
    elif base and quote and kind is not None:
        name = instrument_name(base, quote, kind, expiry, _plain(strike), right)
    elif base and quote:
        name = f"{base}-{quote}" + (f"-{rules.suffix}" if rules.suffix else "")
    if name is None:
        name = rules.to_normalized(native)
    if kind is None:
        parsed = parse_name(name) if name else None
        kind = parsed.kind if parsed else ("perpetual" if rules.suffix == "PERP" else "spot")
    return Instrument(native, name, kind, base, quote, settle, expiry, strike, right, contract, inverse, unit)


async def fetch_listing(spec: Spec, url: str | None = None, timeout: float = 15,
                        origin: str | None = None) -> list[Instrument]:
    """Every instrument of the spec's listing URL(s); ``url`` replaces them, ``origin`` (scheme and
    host, ``--rest-url``) redirects each of them, keeping its path and query."""
    listing = spec.symbol_list
    if listing is None:
        raise BittyError(f"{spec.name}: the spec declares no symbols.list endpoint")
    targets = [url] if url else [redirect(u, origin) for u in (listing.urls or (listing.url,))]
    out: list[Instrument] = []
    async with aiohttp.ClientSession() as session:
        for target in targets:
            try:
                async with session.get(target, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                    if response.status >= 400:
                        raise BittyError(f"{spec.name}: GET {target}: HTTP {response.status}")
                    body = codec.loads(await response.read())  # contract sizes and strikes keep their digits
            except (aiohttp.ClientError, TimeoutError, codec.DecodeError) as exc:
                raise BittyError(f"{spec.name}: GET {target}: {type(exc).__name__}: {exc}") from None
            out += parse_listing(spec, body)
    unique = {i.native: i for i in reversed(out)}  # an instrument listed twice (overlapping answers): the first
    return [i for i in out if unique[i.native] is i]


def redirect(url: str, origin: str | None) -> str:
    """``url`` sent to ``origin`` (scheme and host of ``--rest-url``), keeping its path and query."""
    if not origin:
        return url
    base, parts = urlsplit(origin), urlsplit(url)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, ""))
