"""The exchange's tradable symbols, from the REST endpoint its spec declares (``bitty symbols``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from bitty.errors import BittyError
from bitty.lang.expr import evaluate_safely
from bitty.lang.functions import to_text
from bitty.spec.load import Spec


@dataclass(frozen=True)
class Instrument:
    native: str
    normalized: str | None


def parse_listing(spec: Spec, body: Any) -> list[Instrument]:
    """Instruments of a decoded symbol-list response, normalized with the spec's rules."""
    listing = spec.symbol_list
    if listing is None:
        raise BittyError(f"{spec.name}: the spec declares no symbols.list endpoint")
    records, error = evaluate_safely(listing.records.fn, body)
    if error or not isinstance(records, list):
        raise BittyError(f"{spec.name}: symbols.list.records did not give a list ({error or type(records).__name__})")
    rules = spec.symbols
    out = []
    for record in records:
        if listing.filter is not None and not evaluate_safely(listing.filter.fn, record)[0]:
            continue
        native = to_text(evaluate_safely(listing.native.fn, record)[0])
        if not native:
            continue
        normalized = None
        if listing.base is not None and listing.quote is not None:
            base = to_text(evaluate_safely(listing.base.fn, record)[0])
            quote = to_text(evaluate_safely(listing.quote.fn, record)[0])
            if base and quote:
                base, quote = base.upper(), quote.upper()
                normalized = f"{rules.aliases.get(base, base)}-{rules.aliases.get(quote, quote)}"
                if rules.suffix:
                    normalized += f"-{rules.suffix}"
        if native in rules.explicit:
            normalized = rules.explicit[native]
        out.append(Instrument(native, normalized or rules.to_normalized(native)))
    return out


async def fetch_listing(spec: Spec, url: str | None = None, timeout: float = 15) -> list[Instrument]:
    listing = spec.symbol_list
    if listing is None:
        raise BittyError(f"{spec.name}: the spec declares no symbols.list endpoint")
    target = url or listing.url
    try:
        async with aiohttp.ClientSession() as session, session.get(
                target, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status >= 400:
                raise BittyError(f"{spec.name}: GET {target}: HTTP {response.status}")
            body = orjson.loads(await response.read())
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        raise BittyError(f"{spec.name}: GET {target}: {type(exc).__name__}: {exc}") from None
    return parse_listing(spec, body)
