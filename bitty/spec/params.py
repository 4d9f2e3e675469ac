"""Spec parameters: named choices a spec declares, chosen on the command line (``-p stream=aggTrade``).

    params:
      stream:
        description: Which trade stream.
        default: trade
        values:
          trade: {description: one event per fill, set: {exchange: binance, trade_id: str(record.t)}}
          aggTrade: {description: one event per taker order and price, set: {...}}

Every ``{{name}}`` in the spec's strings is replaced before the spec is checked: by the chosen
value of a parameter, or by a variable the chosen value ``set``s. A string that is only
``{{name}}`` takes the variable's value whatever its type (a number, a mapping); a null removes
the key it stands for. A spec file that
is only ``alias: binance`` and ``params: {stream: aggTrade}`` is that spec with those choices
(``binance-aggtrade`` stays a name users can collect).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class ParamError(ValueError):
    """A choice that is not declared, or a spec whose params are inconsistent; carries the path."""

    def __init__(self, path: list[Any], message: str) -> None:
        super().__init__(message)
        self.path = path


def choose(raw: Mapping[str, Any], chosen: Mapping[str, str], exchange: str,
           optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The variables of the chosen values (defaults where not chosen); raises ParamError.
    Choices named in ``optional`` (given for every exchange) are skipped where not declared."""
    declared = _declared(raw)
    chosen = {k: v for k, v in chosen.items() if k in declared or k not in optional}
    for name, value in chosen.items():
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(declared) or "none"
            raise ParamError(["params"], f"{exchange}: unknown parameter {name!r}{hint}; parameters: {known}")
        values = _values(declared[name])
        if value not in values:
            raise ParamError(["params", name], f"{exchange}: {name}={value}: expected one of {', '.join(values)}")
    variables: dict[str, Any] = {}
    for name, param in declared.items():
        choice: Any = chosen.get(name, param.get("default"))
        variables[name] = choice
        entry = _values(param).get(choice) if isinstance(choice, str) else None
        if isinstance(entry, dict) and isinstance(entry.get("set"), dict):
            variables.update(entry["set"])
    return variables


def _declared(raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The well-formed declarations of ``params`` (the schema reports the others)."""
    declared = raw.get("params")
    if not isinstance(declared, dict):
        return {}
    return {str(k): v for k, v in declared.items() if isinstance(v, dict)}


def _values(param: dict[str, Any]) -> dict[str, Any]:
    values = param.get("values")
    return values if isinstance(values, dict) else {}


def check(raw: Mapping[str, Any]) -> list[tuple[list[Any], str]]:
    """Problems of a spec's ``params``: a default that is not a value, values that set different
    variables (a choice must not leave a placeholder unfilled)."""
    problems: list[tuple[list[Any], str]] = []
    for name, param in _declared(raw).items():
        values = _values(param)
        default = param.get("default")
        if not isinstance(default, str) or default not in values:
            problems.append((["params", name, "default"],
                             f"default {default!r} is not one of the values: {', '.join(map(str, values))}"))
        sets = {v: set(e["set"]) if isinstance(e, dict) and isinstance(e.get("set"), dict) else set()
                for v, e in values.items()}
        every = set().union(*sets.values()) if sets else set()
        for value, names in sets.items():
            missing = sorted(every - names)
            if missing:
                problems.append((["params", name, "values", value],
                                 f"sets no {', '.join(missing)} (other values of {name} do)"))
    return problems


def substitute(data: Any, variables: Mapping[str, Any], path: list[Any] | None = None,
               problems: list[tuple[list[Any], str]] | None = None) -> Any:
    """``data`` with every ``{{name}}`` replaced; unknown names are recorded in ``problems``."""
    path = path or []
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            value = v if (not path and k == "params") else substitute(v, variables, path + [k], problems)
            if value is None and v is not None:
                continue  # a placeholder whose variable is null removes its key
            out[k] = value
        return out
    if isinstance(data, list):
        return [substitute(v, variables, path + [i], problems) for i, v in enumerate(data)]
    if not isinstance(data, str) or "{{" not in data:
        return data
    whole = PLACEHOLDER.fullmatch(data.strip())
    if whole and whole.group(1) in variables:
        return variables[whole.group(1)]

    def one(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in variables:
            if problems is not None:
                known = ", ".join(variables) or "none (the spec declares no params)"
                problems.append((path, f"unknown parameter {{{{{name}}}}}; known here: {known}"))
            return found.group(0)
        return str(variables[name])

    return PLACEHOLDER.sub(one, data)
