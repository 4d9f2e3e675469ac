"""Native exchange symbols <-> normalized instrument names.

The naming scheme (the same on every exchange; README "Instruments and names"):

    BTC-USDT                     spot: BASE-QUOTE
    BTC-USDT-PERP                perpetual swap (linear or inverse: the settlement asset says which)
    BTC-USD-20251226             dated future, expiry date YYYYMMDD
    BTC-USD-20251226-100000-C    option: expiry, strike, C (call) or P (put)

Each spec says how its native symbols are written; this module turns those rules into the two
directions and keeps the answers cached (symbols repeat on every frame). When neither the rules
nor the exchange's listing can read a native symbol, ``guess`` names it by general rules.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from bitty.errors import SymbolError

logger = logging.getLogger("bitty.symbols")

NORMALIZED = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+(-[A-Z0-9.]+)*$")
PLAIN = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+(-[A-Z0-9]+)?$")  # BASE-QUOTE, optionally one suffix
KINDS = ("spot", "perpetual", "future", "option")
# Quote assets tried (after the spec's own ``quotes``) to split a native symbol with no separator.
COMMON_QUOTES = ("FDUSD", "USDT", "USDC", "USDE", "BUSD", "TUSD", "USDP", "EURT", "EURC", "DAI", "UST",
                 "USD", "EUR", "GBP", "JPY", "KRW", "TRY", "BRL", "AUD", "CAD", "CHF", "PLN", "XBT", "BTC",
                 "ETH", "BNB", "SOL")
PERPETUAL_MARKERS = {"PERP", "PERPETUAL", "SWAP", "PERPS"}
RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}
MONTHS = {m: i + 1 for i, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))}
_DMY = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$")  # 27DEC24 (Deribit)
_STRIKE = re.compile(r"^\d+(\.\d+)?$")


@dataclass(frozen=True)
class Name:
    """The parts of a normalized instrument name."""

    base: str
    quote: str
    kind: str = "spot"  # spot | perpetual | future | option
    expiry: date | None = None
    strike: str | None = None
    right: str | None = None  # C | P

    def __str__(self) -> str:
        return instrument_name(self.base, self.quote, self.kind, self.expiry, self.strike, self.right)


def instrument_name(base: str, quote: str, kind: str = "spot", expiry: date | None = None,
                    strike: str | None = None, right: str | None = None) -> str:
    """The normalized name of an instrument (see the module docstring)."""
    name = f"{base.upper()}-{quote.upper()}"
    if kind == "perpetual":
        return name + "-PERP"
    if kind in ("future", "option") and expiry is not None:
        name += f"-{expiry:%Y%m%d}"
    if kind == "option" and strike is not None:
        name += f"-{strike}-{right or '?'}"
    return name


def parse_date(token: str) -> date | None:
    """An expiry date written as YYMMDD, YYYYMMDD or DDMMMYY (``251226``, ``20251226``, ``26DEC25``)."""
    try:
        if token.isdigit() and len(token) == 6:
            return date(2000 + int(token[:2]), int(token[2:4]), int(token[4:]))
        if token.isdigit() and len(token) == 8 and token.startswith("20"):
            return date(int(token[:4]), int(token[4:6]), int(token[6:]))
        found = _DMY.match(token)
        if found and found.group(2) in MONTHS:
            return date(2000 + int(found.group(3)), MONTHS[found.group(2)], int(found.group(1)))
    except ValueError:
        return None
    return None


def parse_name(name: str) -> Name | None:
    """The parts of a normalized name, or None when ``name`` is not one."""
    parts = name.split("-")
    if len(parts) < 2 or not NORMALIZED.match(name):
        return None
    base, quote, rest = parts[0], parts[1], parts[2:]
    if not rest:
        return Name(base, quote)
    if rest == ["PERP"]:
        return Name(base, quote, "perpetual")
    expiry = parse_date(rest[0]) if len(rest[0]) == 8 else None
    if expiry is None:
        return None
    if len(rest) == 1:
        return Name(base, quote, "future", expiry)
    if len(rest) == 3 and rest[2] in ("C", "P"):
        return Name(base, quote, "option", expiry, rest[1], rest[2])
    return None


class SymbolRules:
    """How one exchange writes symbols natively; converts both ways, with a cache."""

    def __init__(self, native_format: str, case: str = "upper", aliases: Mapping[str, str] | None = None,
                 quotes: tuple[str, ...] = (), suffix: str | None = None,
                 explicit: Mapping[str, str] | None = None, size_units: Mapping[str, str] | None = None) -> None:
        self.native_format = native_format
        # The unit of sizes of instruments no listing described: "kind" or "kind/QUOTE" -> unit.
        self.size_units = dict(size_units or {})
        self.case = case
        self.aliases = dict(aliases or {})
        self.quotes = quotes
        self.suffix = suffix
        self.explicit = dict(explicit or {})
        self._pattern = self._build_pattern()
        self._cache: dict[str, str | None] = {}
        self._reverse_alias: dict[str, str] = {}
        for native, normalized in self.aliases.items():
            self._reverse_alias.setdefault(normalized, native)
        self._reverse_explicit = {v: k for k, v in self.explicit.items()}

    def size_unit(self, kind: str, quote: str | None) -> str:
        """The unit (base, contracts, quote) of trade sizes of an unlisted instrument."""
        return self.size_units.get(f"{kind}/{quote}") or self.size_units.get(kind) or "base"

    def learn(self, native: str, normalized: str) -> None:
        """Remember a pair the exchange listed (its symbol list beats the rules)."""
        self.explicit[native] = normalized
        self._reverse_explicit[normalized] = native
        self._cache.pop(native, None)

    def _build_pattern(self) -> re.Pattern[str]:
        out = []
        for piece in re.split(r"(\{base\}|\{quote\}|\{suffix\})", self.native_format):
            if piece == "{base}":
                out.append(r"(?P<base>[A-Za-z0-9]+?)")
            elif piece == "{quote}":
                if self.quotes:
                    alternatives = "|".join(re.escape(q) for q in sorted(self.quotes, key=len, reverse=True))
                    out.append(f"(?P<quote>{alternatives})")
                else:
                    out.append(r"(?P<quote>[A-Za-z0-9]+?)")
            elif piece == "{suffix}":
                out.append(r"(?P<suffix>[A-Za-z0-9]+)")
            else:
                out.append(re.escape(piece))
        return re.compile("^" + "".join(out) + "$", re.IGNORECASE)

    def _case(self, text: str) -> str:
        if self.case == "lower":
            return text.lower()
        if self.case == "upper":
            return text.upper()
        return text

    def to_native(self, normalized: str) -> str:
        """Native symbol of a normalized one; a symbol that is not normalized is taken as native."""
        if normalized in self._reverse_explicit:
            return self._reverse_explicit[normalized]
        if not NORMALIZED.match(normalized):
            return normalized
        parts = normalized.split("-")
        base, quote = parts[0], parts[1]
        suffix = parts[2] if len(parts) > 2 else ""
        alias = self._reverse_alias
        text = (
            self.native_format.replace("{base}", alias.get(base, base))
            .replace("{quote}", alias.get(quote, quote))
            .replace("{suffix}", suffix)
        )
        return self._case(text)

    def to_normalized(self, native: str) -> str | None:
        """Normalized symbol of a native one, or None when the rules cannot read it."""
        cache = self._cache
        found = cache.get(native)
        if found is not None or native in cache:
            return found
        result = self._normalize(native)
        if len(cache) < 100_000:
            cache[native] = result
        return result

    def _normalize(self, native: str) -> str | None:
        if native in self.explicit:
            return self.explicit[native]
        if not isinstance(native, str):
            return None
        found = self._pattern.match(native)
        if found is None:
            return None
        base = found.group("base").upper()
        quote = found.group("quote").upper()
        base = self.aliases.get(base, base)
        quote = self.aliases.get(quote, quote)
        symbol = f"{base}-{quote}"
        suffix = self.suffix
        if suffix:
            symbol += f"-{suffix}"
        return symbol if NORMALIZED.match(symbol) else None


def guess(native: str, rules: SymbolRules) -> tuple[str, str]:
    """A best-effort normalized name for a native symbol neither the rules nor a listing read,
    and how it was found (for the warning). The rules, in order (README "Names without a listing"):

    1. upper-case; drop the spec's literal prefix (``t`` of ``t{base}{quote}``);
    2. split on ``-``, ``_``, ``/`` and ``:``; a token of 1-2 letters before the assets is a
       market prefix (Kraken Futures ``PF_``) and is dropped;
    3. ``PERP``/``PERPETUAL``/``SWAP`` make a perpetual; a date (YYMMDD, YYYYMMDD, DDMMMYY) a
       dated future; a date, a number and C/P/CALL/PUT an option;
    4. two asset tokens are base and quote; one is split at a quote asset ending it (the spec's
       ``quotes`` first, then common ones; the longest that leaves a base of 3+ characters); if
       that fails, the quote of another symbol of the same base this exchange names (its ``map``);
    5. the spec's aliases apply (``XBT`` -> ``BTC``); a spec ``suffix`` marks its undated symbols;
    6. when no base and quote can be found, the name is the native symbol upper-cased, with its
       separators written ``-``.
    """
    text = native.strip().upper()
    prefix = rules.native_format.split("{")[0].upper()
    if prefix and text.startswith(prefix) and len(text) > len(prefix):
        text = text[len(prefix):]
    tokens = [t for t in re.split(r"[-_/:]", text) if t]
    fallback = "-".join(tokens) or text
    kind, expiry, strike, right = "spot", None, None, None
    assets: list[str] = []
    for token in tokens:
        day = parse_date(token) if expiry is None else None
        if token in PERPETUAL_MARKERS:
            kind = "perpetual"
        elif day is not None:
            kind, expiry = "future", day
        elif expiry is not None and strike is None and _STRIKE.match(token):
            strike = token
        elif expiry is not None and strike is not None and token in RIGHTS:
            kind, right = "option", RIGHTS[token]
        elif expiry is None:
            assets.append(token)
        else:
            return fallback, "an unknown part after the expiry"
    if len(assets) > 1 and len(assets[0]) <= 2 and assets[0].isalpha():
        assets = assets[1:]
    if kind == "future" and strike is not None:
        return fallback, "a strike without call/put"
    pair = _pair(assets, rules)
    if pair is None:
        return fallback, "no base and quote found"
    base, quote, how = pair
    base, quote = rules.aliases.get(base, base), rules.aliases.get(quote, quote)
    if kind == "spot" and rules.suffix:
        name = f"{base}-{quote}-{rules.suffix}"
    else:
        name = instrument_name(base, quote, kind, expiry, strike, right)
    return name, f"{kind}, {how}"


def _pair(assets: list[str], rules: SymbolRules) -> tuple[str, str, str] | None:
    if len(assets) == 2:
        return assets[0], assets[1], "base and quote as written"
    if len(assets) != 1:
        return None
    token = assets[0]
    for quotes, how in (([q.upper() for q in rules.quotes], "quote from the spec"),
                        (list(COMMON_QUOTES), "a common quote asset")):
        # A base of 3+ letters beats a longer quote: XBTUSD is XBT-USD, not XB-TUSD.
        fits = [q for q in quotes if token.endswith(q) and len(token) > len(q)]
        if fits:
            quote = max(fits, key=lambda q: (len(token) - len(q) >= 3, len(q)))
            return token[:-len(quote)], quote, how
    base = rules.aliases.get(token, token)
    for name in rules.explicit.values():
        parsed = parse_name(name)
        if parsed is not None and parsed.base == base:
            return token, parsed.quote, f"quote of {name}"
    return None


def resolve(rules: SymbolRules, requested: Iterable[str], known: Iterable[str] | None = None,
            exchange: str = "") -> list[str]:
    """Normalized names for what a user asked for (native or normalized).

    With ``known`` (names the exchange lists), an unknown symbol is an error naming the exchange
    and the closest listed ones. Without it a native symbol is never refused: one the rules
    cannot read is named by ``guess``, remembered, and a warning says so.
    """
    out: list[str] = []
    known_set = set(known) if known is not None else None
    where = f"{exchange}: " if exchange else ""
    for item in requested:
        item = item.strip()
        if not item:
            continue
        upper = item.upper()
        symbol = rules.explicit.get(item) or rules.to_normalized(item) or rules.to_normalized(rules._case(item))
        if known_set is not None:
            if symbol not in known_set:
                symbol = upper if upper in known_set else symbol
            if symbol not in known_set:
                close = difflib.get_close_matches(symbol or upper, sorted(known_set), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise SymbolError(f"{where}unknown symbol {item!r}: the exchange does not list it{hint}")
        elif symbol is None:
            if PLAIN.match(upper) and (upper.count("-") == 1 or upper.endswith(f"-{rules.suffix}")):
                symbol = upper
            else:
                symbol, how = guess(item, rules)
                rules.learn(item, symbol)
                logger.warning("%snative symbol %r is not readable by the spec's rules and no listing was fetched: "
                               "collected as %r (%s); the exchange's listing corrects the name when reachable",
                               where, item, symbol, how)
        if symbol not in out:
            out.append(symbol)
    return out
