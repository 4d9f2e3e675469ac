"""Native exchange symbols <-> normalized ``BASE-QUOTE`` symbols.

Normalized symbols are upper case ``BASE-QUOTE`` (``BTC-USD``), with a suffix for derivatives
(``BTC-USDT-PERP``). Each spec says how its native symbols are written; this module turns those
rules into the two directions and keeps the answers cached (symbols repeat on every frame).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from bitty.errors import SymbolError

NORMALIZED = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+(-[A-Z0-9]+)?$")


class SymbolRules:
    """How one exchange writes symbols natively; converts both ways, with a cache."""

    def __init__(self, native_format: str, case: str = "upper", aliases: Mapping[str, str] | None = None,
                 quotes: tuple[str, ...] = (), suffix: str | None = None,
                 explicit: Mapping[str, str] | None = None) -> None:
        self.native_format = native_format
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


def resolve(rules: SymbolRules, requested: Iterable[str], known: Iterable[str] | None = None) -> list[str]:
    """Normalized symbols for what a user asked for (native or normalized).

    With ``known`` (normalized symbols the exchange lists), an unknown symbol is an error that
    suggests the closest known ones.
    """
    out: list[str] = []
    known_set = set(known) if known is not None else None
    for item in requested:
        item = item.strip()
        if not item:
            continue
        symbol = item.upper() if NORMALIZED.match(item.upper()) and "-" in item else None
        if symbol is None or (known_set is not None and symbol not in known_set):
            symbol = rules.to_normalized(item) or rules.to_normalized(rules._case(item)) or symbol
        if symbol is None:
            raise SymbolError(f"cannot read symbol {item!r}: not BASE-QUOTE and not a native symbol of this exchange")
        if known_set is not None and symbol not in known_set:
            close = difflib.get_close_matches(symbol, sorted(known_set), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SymbolError(f"unknown symbol {item!r}{hint}")
        if symbol not in out:
            out.append(symbol)
    return out
