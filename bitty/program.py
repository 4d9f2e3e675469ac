"""A spec's trade frames as one generated function: the mapper's fast path.

``Mapper.handle`` walks the spec for every frame: a call per match expression, one for the
records, one per record, then the checks of each field in Python. For the frame that arrives
most, a frame of good trades, that walk is the same every time, so it is generated once per
mapper as one function: the matches in spec order, the fields of every record inline (with the
common functions inline too), the checks, and the Trade rows.

The function returns the trade ``Outcome`` only when every record of the frame became a trade.
Anything else gives None and the mapper takes its exact path, which stays the reference: a
frame of another kind, a rejected record, a symbol not learned yet, a value the inline code
leaves alone, any exception. So the program never returns what the exact path would not, and
``tests/test_program.py`` checks that on every bundled fixture and on random mutations.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from bitty.compiler import _FALSY, _Body, _Codegen
from bitty.functions import to_text
from bitty.model import MessageKind, Spec
from bitty.trade import Trade

Program = Callable[[Any, datetime, "dict[str, str] | None"], Any]

_TRADE_FIELDS = ("price", "size", "side", "time")


def compile_program(spec: Spec, exchange: str, known: dict[str, str], outcome: type, sides: dict[str, str],
                    derive: Callable[..., str]) -> Program | None:
    """The fast path for ``spec``'s trade kinds, or None when no kind can take it.

    ``known`` (native -> normalized symbol) is read on every call, so symbols learned later count.
    """
    kinds = [kind for kind in spec.messages if _eligible(kind)]
    if not kinds:
        return None
    try:
        return _compile(spec, kinds, exchange, known, outcome, sides, derive)
    except (SyntaxError, RecursionError, MemoryError):  # too deep or too big to compile: exact path only
        return None


def _compile(spec: Spec, kinds: list[MessageKind], exchange: str, known: dict[str, str], outcome: type,
             sides: dict[str, str], derive: Callable[..., str]) -> Program:
    gen = _Codegen(inline=True)
    gen.consts.update(_known=known, _exchange=exchange, _Outcome=outcome, _SIDES=sides, _derive=derive,
                      _Trade=Trade, _DecimalType=Decimal, _ZERO=Decimal(0), _datetime=datetime, _to_text=to_text)
    lines = ["def _program(frame, received_at, channels):", "    try:"]
    checks: list[tuple[Any, MessageKind | None]] = []
    if spec.pong is not None:
        checks.append((spec.pong.match, None))
    if spec.heartbeat is not None:
        checks.append((spec.heartbeat.match, None))
    checks += [(kind.match, kind if any(kind is k for k in kinds) else None) for kind in spec.messages]
    for match, kind in checks:
        body = _Body(gen, None)
        value = body.emit(match.ast, "frame", 2)
        lines += body.lines
        lines.append(f"        if not {_FALSY.format(value)}:")
        if kind is None:
            lines.append("            return None")
        else:
            lines += _trade_code(gen, kind)
    lines += ["        return None", "    except Exception:", "        return None"]
    gen.functions.append("\n".join(lines))
    return gen.build("_program")


def _eligible(kind: MessageKind) -> bool:
    names = {name for name, _ in kind.fields}
    has_symbol = "symbol" in names or kind.channel is not None
    return kind.type == "trade" and has_symbol and all(n in names for n in _TRADE_FIELDS)


def _trade_code(gen: _Codegen, kind: MessageKind) -> list[str]:
    """Statements (at depth 3) turning the frame's records into the trade Outcome, or returning None."""
    lines: list[str] = []

    def line(text: str, depth: int = 3) -> None:
        lines.append("    " * depth + text)

    if kind.records is None:
        line("records = [frame]")
    else:
        body = _Body(gen, None)
        value = body.emit(kind.records.ast, "frame", 3)
        lines.extend(body.lines)
        line(f"records = {value}")
        line("if type(records) is not list:")
        line("if records is None:", 4)
        line("return None", 5)
        line("records = [records]", 4)
    if kind.channel is not None:  # the symbol the channel was assigned when subscribed
        body = _Body(gen, None)
        value = body.emit(kind.channel.ast, "frame", 3)
        lines.extend(body.lines)
        line(f"channel = {value} if type({value}) is str else _to_text({value})")
        line("channel_symbol = channels.get(channel or '') if channels is not None else None")
        line("if channel_symbol is None:")
        line("return None", 4)
    fields = dict(kind.fields)
    derived = "trade_id" not in fields
    line("out = []")
    line("seen = {}")
    line("for record in records:")
    at: dict[str, str] = {}
    for name, expr in kind.fields:
        body = _Body(gen, {"record": "record", "frame": "frame"})
        at[name] = body.emit(expr.ast, "", 4)
        lines.extend(body.lines)
    # The checks of Mapper._trade, in its order; any failure leaves the frame to it.
    native = at.get("symbol", "channel_symbol")
    line(f"symbol = _known.get({native}) if type({native}) is str else None", 4)
    line("if symbol is None:", 4)
    line("return None", 5)
    for name in ("price", "size"):
        value = at[name]
        line(f"if type({value}) is not _DecimalType or not {value}.is_finite() or {value} <= _ZERO:", 4)
        line("return None", 5)
    line(f"side = _SIDES.get({at['side']}) if type({at['side']}) is str else None", 4)
    line("if side is None:", 4)
    line("return None", 5)
    line(f"if not isinstance({at['time']}, _datetime):", 4)
    line("return None", 5)
    derive = (f"key = (symbol, {at['time']}, {at['price']}, {at['size']}, side)",
              "seen[key] = n = seen.get(key, 0) + 1",
              f"trade_id = _derive({at['time']}, {at['price']}, {at['size']}, side, n)")
    if derived:
        for text in derive:
            line(text, 4)
    else:
        raw = at["trade_id"]
        line(f"if {raw} is None:", 4)
        for text in derive:
            line(text, 5)
        line("else:", 4)
        line(f"trade_id = {raw} if type({raw}) is str else _to_text({raw})", 5)
        line("if not trade_id:", 5)
        line("return None", 6)
    line(f"out.append(_Trade(_exchange, symbol, trade_id, {at['price']}, {at['size']}, side, {at['time']}, "
         "received_at))", 4)
    line(f"return _Outcome('trade', out, [], None, None, None, '', False, {gen.const(kind.name)})")
    return lines
