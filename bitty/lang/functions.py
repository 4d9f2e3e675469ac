"""bitty's JMESPath functions: exact decimals, timestamps, lookups and text helpers.

They are registered on every compiled expression. Each one is total: bad input gives ``None``
(which the mapper reports as a missing field) rather than an exception, except where the input
is so wrong that the expression itself is at fault.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jmespath.functions

UTC = UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO_FRACTION = re.compile(r"(\.\d{1,6})\d*")


# The most significant digits a price or size may have (bitty.mapping.bounds); the inline
# ``decimal`` of the mapper's fast path holds to it, so the fast path need not count digits.
DECIMAL_DIGITS = 40


def to_decimal(value: Any) -> Decimal | None:
    """Exact decimal of a JSON string or number; floats go through their shortest repr."""
    if type(value) is str:  # the common case first: exchanges send prices as text
        try:
            result = Decimal(value)
        except (InvalidOperation, ValueError):
            return None
        return result if result.is_finite() else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):  # a JSON number, decoded from its own digits
        return value if value.is_finite() else None
    if isinstance(value, (int, str)):
        text = value if isinstance(value, str) else str(value)
    elif isinstance(value, float):
        text = repr(value)
    else:
        return None
    try:
        result = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def to_text(value: Any) -> str | None:
    """Text of a scalar: ints without a fraction, floats by repr, strings as they are."""
    if type(value) is str:
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    return None


# Plain digit text below 4e9 seconds (at most ten integer digits, the tenth 0-3; at most six
# fraction digits for seconds), whose float, divided by the unit, lies within a quarter
# microsecond of the instant it names, a whole microsecond: fromtimestamp, rounding to the
# nearest microsecond, gives exactly that instant (tests/test_functions.py holds it to the
# Decimal way). The generated fast path (bitty.lang.compiler) reads epoch text by these same patterns.
PLAIN_EPOCH = {1: re.compile(r"[0-3]?[0-9]{1,9}(?:\.[0-9]{1,6})?"), 1_000: re.compile(r"[0-3]?[0-9]{1,12}"),
               1_000_000: re.compile(r"[0-3]?[0-9]{1,15}")}


def from_epoch(value: Any, per_second: int) -> datetime | None:
    """UTC datetime of an epoch count in units of 1/per_second seconds, exact to the microsecond."""
    if type(value) is int and per_second <= 1_000_000:  # integer arithmetic is exact here
        try:
            return EPOCH + timedelta(microseconds=value * (1_000_000 // per_second))
        except OverflowError:
            return None
    if type(value) is str and per_second in PLAIN_EPOCH and PLAIN_EPOCH[per_second].fullmatch(value):
        return datetime.fromtimestamp(float(value) / per_second, UTC)
    number = to_decimal(value)
    if number is None:
        return None
    micros = int(number * 1_000_000 / per_second)
    try:
        return EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        return None


class NoZone(ValueError):
    """An ISO time without a zone, read by an ``iso_time`` that names none: the spec must say
    which zone the exchange means rather than have bitty guess UTC."""


_OFFSET = re.compile(r"([+-])([01][0-9]|2[0-3]):?([0-5][0-9])")


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The zone ``name`` names: ``UTC``, an offset (``+09:00``) or an IANA name (``Asia/Seoul``)."""
    if name in ("UTC", "Z", "z"):
        return UTC
    offset = _OFFSET.fullmatch(name)
    if offset is not None:
        sign, hours, minutes = offset.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: give an IANA name (Asia/Seoul), UTC or an offset (+09:00)") from None


def iso_time(value: Any, zone_name: Any = None) -> datetime | None:
    """UTC datetime of an ISO-8601 text; more than six fraction digits are truncated.

    A text without a zone is read in ``zone_name`` (``iso_time(x, 'Asia/Seoul')``); without
    one it raises ``NoZone`` (its record is quarantined), never taken as UTC.
    """
    if not isinstance(value, str):
        return None
    text = _ISO_FRACTION.sub(r"\1", value.strip(), count=1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if zone_name is None:
            raise NoZone(f"time {value!r} has no zone: name the exchange's, e.g. iso_time(x, 'UTC'), "
                         "iso_time(x, '+09:00') or iso_time(x, 'Asia/Seoul')")
        if not isinstance(zone_name, str):
            return None
        parsed = parsed.replace(tzinfo=zone(zone_name))
    return parsed.astimezone(UTC)


def call_problems(ast: dict[str, Any]) -> list[str]:
    """What is wrong with the calls of bitty's functions in an expression that the JMESPath
    signatures cannot say: ``iso_time``'s arity and a literal zone that does not exist."""
    problems: list[str] = []
    if ast.get("type") == "function_expression" and ast.get("value") == "iso_time":
        args = ast.get("children", [])
        if len(args) > 2:
            problems.append(f"iso_time() takes a text and optionally a zone, not {len(args)} arguments")
        elif len(args) == 2 and args[1].get("type") == "literal":
            name = args[1].get("value")
            if not isinstance(name, str):
                problems.append(f"iso_time()'s zone must be a text such as 'Asia/Seoul' or '+09:00', not {name!r}")
            else:
                try:
                    zone(name)
                except ValueError as exc:
                    problems.append(str(exc))
    for child in ast.get("children", []):
        if isinstance(child, dict):
            problems += call_problems(child)
    return problems


def lookup(value: Any, mapping: Any) -> Any:
    if not isinstance(mapping, dict):
        return None
    key = to_text(value)
    return None if key is None else mapping.get(key)


def decimal_abs(value: Any) -> Decimal | None:
    number = to_decimal(value)
    return None if number is None else number.copy_abs()  # abs() would round to 28 digits


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def regex(value: Any, pattern: str) -> str | None:
    if not isinstance(value, str):
        return None
    found = _pattern(pattern).search(value)
    if found is None:
        return None
    return found.group(1) if found.re.groups else found.group(0)


def split(value: Any, sep: str) -> list[str] | None:
    return value.split(sep) if isinstance(value, str) else None


def replace(value: Any, old: str, new: str) -> str | None:
    return value.replace(old, new) if isinstance(value, str) else None


def lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


def upper(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) else None


def concat(*values: Any) -> str | None:
    parts = [to_text(v) for v in values]
    if any(p is None for p in parts):
        return None
    return "".join(parts)  # type: ignore[arg-type]


# name -> (python callable, JMESPath signature). The registry the JMESPath class and the
# expression compiler are both built from.
REGISTRY: dict[str, Any] = {
    "decimal": (to_decimal, [{"types": []}]),
    "abs": (decimal_abs, [{"types": []}]),
    "iso_time": (iso_time, [{"types": [], "variadic": True}]),  # (text[, zone]): see call_problems
    "epoch_s": (lambda v: from_epoch(v, 1), [{"types": []}]),
    "epoch_ms": (lambda v: from_epoch(v, 1_000), [{"types": []}]),
    "epoch_us": (lambda v: from_epoch(v, 1_000_000), [{"types": []}]),
    "epoch_ns": (lambda v: from_epoch(v, 1_000_000_000), [{"types": []}]),
    "lookup": (lookup, [{"types": []}, {"types": []}]),
    "lower": (lower, [{"types": []}]),
    "upper": (upper, [{"types": []}]),
    "split": (split, [{"types": []}, {"types": ["string"]}]),
    "replace": (replace, [{"types": []}, {"types": ["string"]}, {"types": ["string"]}]),
    "regex": (regex, [{"types": []}, {"types": ["string"]}]),
    "str": (to_text, [{"types": []}]),
    "concat": (concat, [{"types": []}, {"types": [], "variadic": True}]),
}


def _make_method(name: str, func: Any, signature: list[dict[str, Any]]) -> Any:
    def method(self: Any, *args: Any) -> Any:
        return func(*args)

    method.signature = signature  # type: ignore[attr-defined]
    method.__name__ = f"_func_{name}"
    return method


class DecimalFunctions(jmespath.functions.Functions):
    """JMESPath's standard functions, with a ``Decimal`` (how frames decode JSON numbers) a
    number like any other: ``type`` says number, ``max``/``sum``/``sort`` take it, and
    ``to_number``/``to_string`` keep its digits."""

    def _get_allowed_pytypes(self, types: Any) -> Any:
        allowed, subtypes = super()._get_allowed_pytypes(types)
        if "float" in allowed:
            allowed = [*allowed, "Decimal"]
        return allowed, [(*sub, "Decimal") if "float" in sub else sub for sub in subtypes]

    def _convert_to_jmespath_type(self, pyobject: Any) -> Any:
        return "number" if pyobject == "Decimal" else super()._convert_to_jmespath_type(pyobject)

    @jmespath.functions.signature({"types": []})
    def _func_type(self, arg: Any) -> Any:
        return "number" if isinstance(arg, Decimal) else super()._func_type(arg)

    @jmespath.functions.signature({"types": []})
    def _func_to_number(self, arg: Any) -> Any:
        return arg if isinstance(arg, Decimal) else super()._func_to_number(arg)

    @jmespath.functions.signature({"types": []})
    def _func_to_string(self, arg: Any) -> Any:
        return str(arg) if isinstance(arg, Decimal) else super()._func_to_string(arg)


BittyFunctions = type(
    "BittyFunctions",
    (DecimalFunctions,),
    {f"_func_{name}": _make_method(name, f, sig) for name, (f, sig) in REGISTRY.items()},
)

OPTIONS = jmespath.Options(custom_functions=BittyFunctions())
