"""A spec's trade frames as one generated function: the mapper's fast path.

``Mapper.handle`` walks the spec for every frame: a call per match expression, one for the
records, one per record, then the checks of each field in Python. For the frame that arrives
most, a frame of good trades, that walk is the same every time, so it is generated once per
mapper as one function: the matches in spec order, the fields of every record inline (with the
common functions inline too), the checks, and the Trade rows.

The function returns ``(kind name, trades)`` only when every record of the frame became a trade.
Anything else gives None and the mapper takes its exact path, which stays the reference: a
frame of another kind, a rejected record, a symbol not learned yet, a value the inline code
leaves alone, any exception. So the program never returns what the exact path would not, and
``tests/test_program.py`` checks that on every bundled fixture and on random mutations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from bitty.lang.compiler import FALSY, Body, Codegen
from bitty.lang.expr import root_names
from bitty.lang.functions import to_text
from bitty.mapping.bounds import AHEAD, EARLIEST, LARGEST, MAX_DIGITS, SMALLEST
from bitty.spec.model import MessageKind, Spec
from bitty.trade import Trade

# (frame, received_at, channels) -> (kind name, trades), or None: the exact path decides
Program = Callable[[Any, datetime, "dict[str, str] | None"], "tuple[str, list[Trade]] | None"]

_TRADE_FIELDS = ("price", "size", "side", "time")
_RECORD = re.compile(r"\brecord\b")
_TIMES = ("epoch_s", "epoch_ms", "epoch_us", "iso_time")  # inline forms giving a datetime or None
# Nodes whose children all see the parent's current value.
_SAME_CURRENT = {"or_expression", "and_expression", "not_expression", "comparator", "multi_select_list",
                 "multi_select_dict", "key_val_pair", "function_expression", "flatten"}
# Chains: the first child sees the parent's current value, the others what came before them.
_PASS_ON = {"subexpression", "index_expression", "pipe", "projection", "value_projection", "filter_projection"}


def compile_program(spec: Spec, exchange: str, known: dict[str, str], sides: dict[str, str],
                    trade_text: Callable[..., str], derived_id: Callable[[str, int], str]) -> Program | None:
    """The fast path for ``spec``'s trade kinds, or None when no kind can take it.

    ``known`` (native -> normalized symbol) is read on every call, so symbols learned later count.
    """
    kinds = [kind for kind in spec.messages if _eligible(kind)]
    if not kinds:
        return None
    try:
        return _compile(spec, kinds, exchange, known, sides, trade_text, derived_id)
    except (SyntaxError, RecursionError, MemoryError):  # too deep or too big to compile: exact path only
        return None


def _compile(spec: Spec, kinds: list[MessageKind], exchange: str, known: dict[str, str], sides: dict[str, str],
             trade_text: Callable[..., str], derived_id: Callable[[str, int], str]) -> Program:
    gen = Codegen(inline=True)
    gen.consts.update(_known=known, _exchange=exchange, _SIDES=sides, _trade_text=trade_text, _derived_id=derived_id,
                      _Trade=Trade, _DecimalType=Decimal, _ZERO=Decimal(0), _datetime=datetime, _to_text=to_text,
                      _SMALLEST=SMALLEST, _LARGEST=LARGEST, _EARLIEST=EARLIEST, _AHEAD=AHEAD)
    lines = ["def _program(frame, received_at, channels):", "    try:", "        latest = received_at + _AHEAD"]
    checks: list[tuple[Any, MessageKind | None]] = []
    if spec.pong is not None:
        checks.append((spec.pong.match, None))
    if spec.heartbeat is not None:
        checks.append((spec.heartbeat.match, None))
    checks += [(kind.match, kind if any(kind is k for k in kinds) else None) for kind in spec.messages]
    memo: dict[Any, str] = {}  # what the matches computed, reused by later matches and the records
    for match, kind in checks:
        body = Body(gen, None, memo, 2)
        value = body.emit(match.ast, "frame", 2)
        lines += body.lines
        lines.append(f"        if not {FALSY.format(value)}:")
        if kind is None:
            lines.append("            return None")
        else:
            lines += _trade_code(gen, kind, dict(memo))
    lines += ["        return None", "    except Exception:", "        return None"]
    gen.functions.append("\n".join(lines))
    return gen.build("_program")


def _eligible(kind: MessageKind) -> bool:
    names = {name for name, _ in kind.fields}
    has_symbol = "symbol" in names or kind.channel is not None
    return kind.type == "trade" and has_symbol and all(n in names for n in _TRADE_FIELDS)


def _trade_code(gen: Codegen, kind: MessageKind, memo: dict[Any, str]) -> list[str]:
    """Statements (at depth 3) turning the frame's records into (kind name, trades), or returning None."""
    lines: list[str] = []

    def line(text: str, depth: int = 3) -> None:
        lines.append("    " * depth + text)

    if kind.channel is not None:  # the symbol the channel was assigned when subscribed
        body = Body(gen, None, memo, 3)
        value = body.emit(kind.channel.ast, "frame", 3)
        lines.extend(body.lines)
        line(f"channel = {value} if type({value}) is str else _to_text({value})")
        line("channel_symbol = channels.get(channel or '') if channels is not None else None")
        line("if channel_symbol is None:")
        line("return None", 4)
    done = f"return ({gen.const(kind.name)}, {{}})"
    if kind.records is None:  # the frame is the record
        line("record = frame")
        lines.extend(_record_code(gen, kind, 3, done.format("[{}]"), single=True))
        return lines
    body = Body(gen, None, memo, 3)
    value = body.emit(kind.records.ast, "frame", 3)
    lines.extend(body.lines)
    line(f"records = {value}")
    line("if type(records) is dict:")  # one record: no list and no loop
    line("record = records", 4)
    lines.extend(_record_code(gen, kind, 4, done.format("[{}]"), single=True))
    line("if type(records) is not list:")
    line("if records is None:", 4)
    line("return None", 5)
    line("records = [records]", 4)
    line("out = []")
    line("seen = {}")
    per_frame: list[str] = []  # fields that read only the frame, computed once before the loop
    per_record = _record_code(gen, kind, 4, "out.append({})", per_frame)
    lines.extend(per_frame)
    line("for record in records:")
    lines.extend(per_record)
    line(done.format("out"))
    return lines


def _record_code(gen: Codegen, kind: MessageKind, depth: int, finish: str, per_frame: list[str] | None = None,
                 single: bool = False) -> list[str]:
    """Statements at ``depth`` mapping ``record`` to a Trade, then ``finish`` formatted with it;
    any check that fails returns None. Fields that do not read the record go to ``per_frame``
    (one level up) when it is given. The only record of its frame (``single``) is the first of
    its kind there, and needs no count of the trades seen before it."""
    lines: list[str] = []

    def line(text: str, extra: int = 0) -> None:
        lines.append("    " * (depth + extra) + text)

    at: dict[str, str] = {}
    # A root read only as ``root.name`` gives nothing but nulls unless it is an object: there it
    # is read without the type test, and an exception leaves the frame to the exact path.
    dicts = frozenset(root for root in ("record", "frame")
                      if all(_only_fields(expr.ast, root) for _, expr in kind.fields))
    record_memo: dict[Any, str] = {}
    roots = {"record": "record", "frame": "frame"}
    for name, expr in kind.fields:
        if per_frame is not None and root_names(expr.ast) <= {"frame"}:
            body = Body(gen, roots, {}, depth - 1, dicts)
            value = body.emit(expr.ast, "", depth - 1)
            if not any(_RECORD.search(text) for text in body.lines):  # not the root object as a whole
                per_frame.extend(body.lines)
                at[name] = value
                continue
        body = Body(gen, roots, record_memo, depth, dicts)
        at[name] = body.emit(expr.ast, "", depth)
        lines.extend(body.lines)
    # The checks of Mapper._trade, in its order; any failure leaves the frame to it.
    native = at.get("symbol", "channel_symbol")
    line(f"symbol = _known.get({native}) if type({native}) is str else None")
    line("if symbol is None:")
    line("return None", 1)
    shape = {name: gen.shapes.get(value, ("", {}))[0] for name, value in at.items()}
    # bitty.mapping.bounds, cheaper: at or above the smallest bound is positive, and str()
    # holds every digit of a Decimal, so a text of at most MAX_DIGITS characters has no more
    # digits; a longer one is left to the exact check. The inline decimal() already holds to it.
    for name in ("price", "size"):
        value = at[name]
        bounded = f"not _SMALLEST <= {value} < _LARGEST"
        if shape[name] == "decimal":  # a finite Decimal of at most MAX_DIGITS digits, or None
            line(f"if {value} is None or {bounded}:")
        else:
            line(f"if type({value}) is not _DecimalType or not {value}.is_finite() or {bounded} "
                 f"or len(str({value})) > {MAX_DIGITS}:")
        line("return None", 1)
    table = gen.shapes.get(at["side"], ("", {}))[1]
    if shape["side"] == "lookup" and all(v in ("buy", "sell") for v in table.values()):
        line(f"side = {at['side']}")  # a table value, already buy or sell, or None
    else:
        line(f"side = _SIDES.get({at['side']}) if type({at['side']}) is str else None")
    line("if side is None:")
    line("return None", 1)
    if shape["time"] in _TIMES:
        line(f"if {at['time']} is None:")
    else:
        line(f"if not isinstance({at['time']}, _datetime):")
    line("return None", 1)
    line(f"if not _EARLIEST <= {at['time']} <= latest:")  # raises for a naive time: the exact path says why
    line("return None", 1)
    derive: tuple[str, ...] = (f"text = _trade_text({at['time']}, {at['price']}, {at['size']}, side)",
                               "seen[symbol, text] = n = seen.get((symbol, text), 0) + 1",
                               "trade_id = _derived_id(text, n)")
    if single:
        derive = (derive[0], "trade_id = _derived_id(text, 1)")
    if "trade_id" not in at:
        for text in derive:
            line(text)
    else:  # a record without its id is the exact path's to quarantine: none is made up
        raw = at["trade_id"]
        if shape["trade_id"] == "str":
            line(f"trade_id = {raw}")
        else:
            line(f"trade_id = {raw} if type({raw}) is str else _to_text({raw})")
        line("if not trade_id:")
        line("return None", 1)
    line(finish.format(f"_Trade(_exchange, symbol, trade_id, {at['price']}, {at['size']}, side, {at['time']}, "
                       "received_at)"))
    return lines


def _only_fields(node: dict[str, Any], root: str, at_root: bool = True) -> bool:
    """Whether ``root``, where the expression reads it from the root object, is only ever read
    as ``root.name`` (so it must be an object for the expression to find anything)."""
    kind = node["type"]
    children = [c for c in node.get("children", []) if isinstance(c, dict)]
    if at_root and kind == "field" and node["value"] == root:
        return False  # read as a whole
    if at_root and kind in ("current", "identity"):
        return False  # the root object as a whole, root included
    if kind in _PASS_ON and children:
        head, rest = children[0], children[1:]
        if (at_root and kind == "subexpression" and head["type"] == "field" and head["value"] == root
                and rest and rest[0]["type"] == "field"):
            return all(_only_fields(c, root, False) for c in rest)
        return _only_fields(head, root, at_root) and all(_only_fields(c, root, False) for c in rest)
    if kind == "expref":
        return all(_only_fields(c, root, False) for c in children)
    same = at_root and kind in _SAME_CURRENT
    return all(_only_fields(c, root, same) for c in children)
