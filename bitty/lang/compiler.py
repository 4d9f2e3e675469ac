"""Compiling a JMESPath AST into a plain Python function.

The jmespath interpreter walks the AST for every frame: a method lookup, a dict lookup and a
call per node. Here each AST is turned once into Python source for one function (plus one per
projection body or ``&expref``), so ``record.p`` becomes two ``dict.get`` calls.

Only the AST's fixed node types become code. Every value taken from the expression (field
names, literals, indexes, function names) reaches the generated code as a closure constant,
never as source text. A node type this module does not know is evaluated by the interpreter,
and an expression that fails to compile at all falls back to the interpreter as a whole.

Semantics are the interpreter's, and ``tests/test_compiler.py`` checks that on random data:
fields of non-objects are null, ``||``/``&&`` use JMESPath falsiness, ordering comparisons
are null unless both sides are numbers or strings, functions type-check their arguments (a
fast check inline; anything it does not accept goes through ``call_function`` so the error
is the interpreter's own).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from numbers import Number
from typing import Any

from jmespath.visitor import TreeInterpreter, _equals

from bitty.lang.functions import DECIMAL_DIGITS, EPOCH, OPTIONS, PLAIN_EPOCH, REGISTRY, to_decimal

_FUNCTIONS = OPTIONS.custom_functions
_TABLE: dict[str, dict[str, Any]] = _FUNCTIONS.FUNCTION_TABLE
_INTERPRETER = TreeInterpreter(OPTIONS)
_FAST_COMPARABLE = frozenset({int, float, str})
_LITERAL_PLAIN_EQ = (str, type(None), list, dict)  # literals for which _equals is plain ==


class _Expression:
    """What ``&expr`` evaluates to; named like the interpreter's so type checks agree."""

    __slots__ = ("expression", "fn")

    def __init__(self, expression: dict[str, Any], fn: Callable[[Any], Any]) -> None:
        self.expression = expression
        self.fn = fn

    def visit(self, node: Any, value: Any) -> Any:
        return self.fn(value)


_PYTYPES = {
    "bool": bool, "list": list, "dict": dict, "NoneType": type(None), "str": str, "float": float,
    "int": int, "OrderedDict": collections.OrderedDict, "_Expression": _Expression, "Decimal": Decimal,
}
_JMES_TYPES = {
    "boolean": ("bool",), "array": ("list",), "object": ("dict", "OrderedDict"), "null": ("NoneType",),
    "string": ("str",), "number": ("float", "int", "Decimal"), "expref": ("_Expression",),
}


def _field(value: Any, name: str) -> Any:
    try:
        return value.get(name)
    except AttributeError:
        return None


def _comparable(value: Any) -> bool:
    return isinstance(value, str) or (not isinstance(value, bool) and isinstance(value, Number))


def _not(value: Any) -> bool:
    if not isinstance(value, bool) and isinstance(value, Number) and value == 0:
        return False
    return not value


def _call(name: str, args: list[Any]) -> Any:
    return _FUNCTIONS.call_function(name, args)


def _all_str(items: list[Any]) -> bool:
    return all(type(item) is str for item in items)


_ORDER = {"lt": "<", "gt": ">", "lte": "<=", "gte": ">="}
# JMESPath's false values: null, false, '', [] and {} (0 is true). Only a value Python finds false
# can be one, so the usual true value costs three tests.
FALSY = "({0} is None or {0} is False or (not {0} and ({0} == '' or {0} == [] or {0} == {{}})))"
_MAX_DEPTH = 40  # deeper subtrees become their own function, keeping indentation shallow
_CHAINS = ("subexpression", "index_expression", "pipe")


class Codegen:
    """Source for a set of functions sharing one closure of constants.

    ``inline`` code (for ``bitty.mapping.program``) may raise where the exact code would return a value
    for unusual input; its caller then evaluates the frame the exact way. It never returns a
    value the exact code would not.
    """

    def __init__(self, inline: bool = False) -> None:
        self.inline = inline
        # variable -> (function, lookup table) for results of inline calls, whose values are
        # known: decimal a finite Decimal, str a str, the times a datetime, lookup a table
        # value; or None.
        self.shapes: dict[str, tuple[str, dict[str, Any]]] = {}
        self.consts: dict[str, Any] = {
            "_field": _field, "_comparable": _comparable, "_not": _not, "_call": _call,
            "_equals": _equals, "_all_str": _all_str, "_interp": _INTERPRETER.visit,
            "_Expression": _Expression, "_FAST_COMPARABLE": _FAST_COMPARABLE,
        }
        if inline:
            self.consts.update(_Decimal=Decimal, _int_str=str, _fromts=datetime.fromtimestamp, _UTC=UTC,
                               _fromiso=datetime.fromisoformat, _Refused=Refused, _second=_Seconds(),
                               _MS=_MILLISECONDS, _short_decimal=_short_decimal, **_EPOCH_TEXT)
        self.functions: list[str] = []
        self.exprefs: list[str] = []
        self._ids = 0

    def const(self, value: Any) -> str:
        name = f"_k{len(self.consts)}"
        self.consts[name] = value
        return name

    def fresh(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids}"

    def function(self, node: dict[str, Any], params: tuple[str, ...] = ("v",),
                 roots: dict[str, str] | None = None) -> str:
        """Define a function evaluating ``node`` and return its name."""
        name = self.fresh("_f")
        body = Body(self, roots)
        result = body.emit(node, params[0] if roots is None else "", 1)
        lines = [f"def {name}({', '.join(params)}):", *body.lines, f"    return {result}"]
        self.functions.append("\n".join(lines))
        return name

    def build(self, main: str) -> Callable[..., Any]:
        names = list(self.consts)
        source = "\n".join([
            f"def _factory({', '.join(names)}):",
            *("    " + line for text in self.functions for line in text.splitlines()),
            *("    " + line for line in self.exprefs),
            f"    return {main}",
        ])
        namespace: dict[str, Any] = {}
        exec(compile(source, "<jmespath>", "exec"), namespace)  # source built from AST node types only
        return namespace["_factory"](*self.consts.values())


class Body:
    """Statements of one generated function. ``emit`` returns a name holding the result."""

    def __init__(self, gen: Codegen, roots: dict[str, str] | None, memo: dict[Any, str] | None = None,
                 memo_depth: int = 0, dicts: frozenset[str] = frozenset()) -> None:
        self.gen = gen
        self.lines: list[str] = []
        self.roots = roots  # field name -> parameter, when the root is an implicit object
        # Results of nodes evaluated unconditionally at ``memo_depth``, shared between bodies
        # that run one after the other: an expression repeated there is computed once.
        self.memo = memo
        self.memo_depth = memo_depth
        self.dicts = dicts  # variables known to hold a dict

    def line(self, text: str, depth: int) -> None:
        self.lines.append("    " * depth + text)

    def var(self) -> str:
        return self.gen.fresh("t")

    def root_value(self, depth: int) -> str:
        """The root object, built only when an expression reads it as a whole."""
        assert self.roots is not None
        items = ", ".join(f"{self.gen.const(key)}: {param}" for key, param in self.roots.items())
        out = self.var()
        self.line(f"{out} = {{{items}}}", depth)
        return out

    def emit(self, node: dict[str, Any], src: str, depth: int) -> str:
        if depth > _MAX_DEPTH:
            if src == "":
                src = self.root_value(depth)
            out = self.var()
            self.line(f"{out} = {self.gen.function(node)}({src})", depth)
            return out
        if self.memo is not None and depth == self.memo_depth:
            key = (repr(node), src)
            found = self.memo.get(key)
            if found is None:
                found = self.memo[key] = self._emit(node, src, depth)
            return found
        return self._emit(node, src, depth)

    def _emit(self, node: dict[str, Any], src: str, depth: int) -> str:
        kind = node["type"]
        if src == "" and not (kind == "field" or kind in _CHAINS or kind in ("literal", "function_expression")
                              or kind in ("comparator", "or_expression", "and_expression", "not_expression")):
            src = self.root_value(depth)
        method = getattr(self, "_" + kind, None)
        if method is None:
            return self._fallback(node, src, depth)
        return method(node, src, depth)

    def _fallback(self, node: dict[str, Any], src: str, depth: int) -> str:
        if src == "":
            src = self.root_value(depth)
        out = self.var()
        self.line(f"{out} = _interp({self.gen.const(node)}, {src})", depth)
        return out

    def _field(self, node: dict[str, Any], src: str, depth: int) -> str:
        if src == "":
            assert self.roots is not None
            param = self.roots.get(node["value"])
            return param if param is not None else "None"
        key = self.gen.const(node["value"])
        out = self.var()
        if src in self.dicts:
            self.line(f"{out} = {src}.get({key})", depth)
        else:
            self.line(f"{out} = {src}.get({key}) if type({src}) is dict else _field({src}, {key})", depth)
        return out

    def _subexpression(self, node: dict[str, Any], src: str, depth: int) -> str:
        for child in node["children"]:
            src = self.emit(child, src, depth)
        return src

    _index_expression = _subexpression
    _pipe = _subexpression

    def _current(self, node: dict[str, Any], src: str, depth: int) -> str:
        return src

    _identity = _current

    def _literal(self, node: dict[str, Any], src: str, depth: int) -> str:
        return self.gen.const(node["value"])

    def _index(self, node: dict[str, Any], src: str, depth: int) -> str:
        index = node["value"]
        if type(index) is not int:
            return self._fallback(node, src, depth)
        at = self.gen.const(index)
        out = self.var()
        exact = f"{src}[{at}] if isinstance({src}, list) and -len({src}) <= {at} < len({src}) else None"
        if self.gen.inline:  # an index out of range raises IndexError, leaving the frame to the exact path
            self.line(f"{out} = {src}[{at}] if type({src}) is list else ({exact})", depth)
        else:
            self.line(f"{out} = {exact}", depth)
        return out

    def _slice(self, node: dict[str, Any], src: str, depth: int) -> str:
        try:
            part = slice(*node["children"])
        except TypeError:
            return self._fallback(node, src, depth)
        out = self.var()
        self.line(f"{out} = {src}[{self.gen.const(part)}] if isinstance({src}, list) else None", depth)
        return out

    def _comparator(self, node: dict[str, Any], src: str, depth: int) -> str:
        op = node["value"]
        left_node, right_node = node["children"]
        left = self.emit(left_node, src, depth)
        right = self.emit(right_node, src, depth)
        out = self.var()
        if op in ("eq", "ne"):
            plain = any(n["type"] == "literal" and isinstance(n["value"], _LITERAL_PLAIN_EQ)
                        for n in (left_node, right_node))
            test = f"{left} == {right}" if plain else f"_equals({left}, {right})"
            self.line(f"{out} = {test}" if op == "eq" else f"{out} = not ({test})", depth)
            return out
        if op not in _ORDER:
            return self._fallback(node, src, depth)
        self.line(f"{out} = ({left} {_ORDER[op]} {right}) if (type({left}) in _FAST_COMPARABLE and "
                  f"type({right}) in _FAST_COMPARABLE) or (_comparable({left}) and _comparable({right})) "
                  f"else None", depth)
        return out

    def _or_expression(self, node: dict[str, Any], src: str, depth: int) -> str:
        return self._logic(node, src, depth, "")

    def _and_expression(self, node: dict[str, Any], src: str, depth: int) -> str:
        return self._logic(node, src, depth, "not ")

    def _logic(self, node: dict[str, Any], src: str, depth: int, negate: str) -> str:
        left = self.emit(node["children"][0], src, depth)
        out = self.var()
        self.line(f"{out} = {left}", depth)
        self.line(f"if {negate}{FALSY.format(out)}:", depth)
        right = self.emit(node["children"][1], src, depth + 1)
        self.line(f"{out} = {right}", depth + 1)
        return out

    def _not_expression(self, node: dict[str, Any], src: str, depth: int) -> str:
        value = self.emit(node["children"][0], src, depth)
        out = self.var()
        self.line(f"{out} = _not({value})", depth)
        return out

    def _multi_select_list(self, node: dict[str, Any], src: str, depth: int) -> str:
        return self._multi_select(node, src, depth, False)

    def _multi_select_dict(self, node: dict[str, Any], src: str, depth: int) -> str:
        return self._multi_select(node, src, depth, True)

    def _multi_select(self, node: dict[str, Any], src: str, depth: int, as_dict: bool) -> str:
        out = self.var()
        self.line(f"if {src} is None:", depth)
        self.line(f"{out} = None", depth + 1)
        self.line("else:", depth)
        parts = []
        for child in node["children"]:
            if as_dict:
                value = self.emit(child["children"][0], src, depth + 1)
                parts.append(f"{self.gen.const(child['value'])}: {value}")
            else:
                parts.append(self.emit(child, src, depth + 1))
        text = ", ".join(parts)
        self.line(f"{out} = {{{text}}}" if as_dict else f"{out} = [{text}]", depth + 1)
        return out

    def _flatten(self, node: dict[str, Any], src: str, depth: int) -> str:
        base = self.emit(node["children"][0], src, depth)
        out, item = self.var(), self.var()
        self.line(f"if isinstance({base}, list):", depth)
        self.line(f"{out} = []", depth + 1)
        self.line(f"for {item} in {base}:", depth + 1)
        self.line(f"{out}.extend({item}) if isinstance({item}, list) else {out}.append({item})", depth + 2)
        self.line("else:", depth)
        self.line(f"{out} = None", depth + 1)
        return out

    def _projection(self, node: dict[str, Any], src: str, depth: int) -> str:
        return self._project(node, src, depth, "list")

    def _value_projection(self, node: dict[str, Any], src: str, depth: int) -> str:
        return self._project(node, src, depth, "values")

    def _filter_projection(self, node: dict[str, Any], src: str, depth: int) -> str:
        return self._project(node, src, depth, "filter")

    def _project(self, node: dict[str, Any], src: str, depth: int, how: str) -> str:
        base = self.emit(node["children"][0], src, depth)
        right = node["children"][1]
        body = None if right["type"] in ("identity", "current") else self.gen.function(right)
        test = self.gen.function(node["children"][2]) if how == "filter" else None
        out, item, value = self.var(), self.var(), self.var()
        if how == "values":
            values = self.var()
            self.line(f"if type({base}) is dict:", depth)
            self.line(f"{values} = {base}.values()", depth + 1)
            self.line("else:", depth)
            self.line("try:", depth + 1)
            self.line(f"{values} = {base}.values()", depth + 2)
            self.line("except AttributeError:", depth + 1)
            self.line(f"{values} = None", depth + 2)
            base = values
            self.line(f"if {base} is not None:", depth)
        else:
            self.line(f"if isinstance({base}, list):", depth)
        self.line(f"{out} = []", depth + 1)
        self.line(f"for {item} in {base}:", depth + 1)
        inner = depth + 2
        if test is not None:
            flag = self.var()
            self.line(f"{flag} = {test}({item})", inner)
            self.line(f"if {FALSY.format(flag)}:", inner)
            self.line("continue", inner + 1)
        self.line(f"{value} = {body}({item})" if body else f"{value} = {item}", inner)
        self.line(f"if {value} is not None:", inner)
        self.line(f"{out}.append({value})", inner + 1)
        self.line("else:", depth)
        self.line(f"{out} = None", depth + 1)
        return out

    def _function_expression(self, node: dict[str, Any], src: str, depth: int) -> str:
        name = node["value"]
        if self.gen.inline and name in _INLINE:
            inlined = self._inline_call(name, node["children"], src, depth)
            if inlined is not None:
                return inlined
        args = []
        for child in node["children"]:
            if child["type"] == "expref":
                fn = self.gen.function(child["children"][0])
                ref = self.gen.fresh("_e")
                self.gen.exprefs.append(f"{ref} = _Expression({self.gen.const(child['children'][0])}, {fn})")
                args.append(ref)
            else:
                args.append(self.emit(child, src, depth))
        out = self.var()
        slow = f"_call({self.gen.const(name)}, [{', '.join(args)}])"
        fast = self._fast_call(name, args)
        if fast is None:
            self.line(f"{out} = {slow}", depth)
        elif fast[0]:
            self.line(f"{out} = {fast[1]} if {fast[0]} else {slow}", depth)
        else:
            self.line(f"{out} = {fast[1]}", depth)
        return out

    def _inline_call(self, name: str, children: list[dict[str, Any]], src: str, depth: int) -> str | None:
        """The common cases of bitty's functions as expressions, the rest through the function."""
        mapping: dict[str, Any] = {}
        if name == "lookup":
            if len(children) != 2:
                return None
            constant = _constant_mapping(children[1], src == "" and self.roots is not None)
            if constant is None:
                return None
            mapping = constant
        elif len(children) != 1:
            return None
        value = self.emit(children[0], src, depth)
        if value == "None":  # a root name that does not exist; the forms below index a variable
            value = self.var()
            self.line(f"{value} = None", depth)
        out = self.var()
        exact = self.gen.const(REGISTRY[name][0])
        self.gen.shapes[out] = (name, mapping)
        if name == "lookup":
            table, yes, no = (self.gen.const(v) for v in (mapping, mapping.get("true"), mapping.get("false")))
            self.line(f"{out} = {table}.get({value}) if type({value}) is str else {yes} if {value} is True "
                      f"else {no} if {value} is False else {exact}({value}, {table})", depth)
        else:
            for text in _INLINE[name].format(out=out, v=value, exact=exact).splitlines():
                self.line(text, depth)
        return out

    def _fast_call(self, name: str, args: list[str]) -> tuple[str, str] | None:
        """(type check, direct call) for a function, or None to always use ``call_function``."""
        spec = _TABLE.get(name)
        if spec is None:
            return None
        signature = spec["signature"]
        variadic = bool(signature) and signature[-1].get("variadic")
        if len(args) < len(signature) if variadic else len(args) != len(signature):
            return None
        checks = []
        if name == "join":
            checks.append(f"type({args[0]}) is str and type({args[1]}) is list and _all_str({args[1]})")
            return " and ".join(checks), f"{args[0]}.join({args[1]})"
        for arg, declared in zip(args, signature, strict=False):
            if not declared["types"]:
                continue
            if any("-" in t for t in declared["types"]):
                return None
            allowed = frozenset(_PYTYPES[p] for t in declared["types"] for p in _JMES_TYPES[t])
            checks.append(f"type({arg}) in {self.gen.const(allowed)}")
        if name in REGISTRY:
            call = f"{self.gen.const(REGISTRY[name][0])}({', '.join(args)})"
        else:
            call = f"{self.gen.const(spec['function'])}({', '.join(['_self', *args])})"
            self.gen.consts["_self"] = _FUNCTIONS
        return " and ".join(checks), call


# Inline forms of bitty's functions (statements setting {out} from {v}, with {exact} the
# function itself). Each equals the function wherever it does not raise:
# - Decimal() of text is what ``decimal`` computes, and its only other outcome, a NaN or an
#   infinity, is refused (``decimal`` gives null for those). Inline, a decimal has at most
#   DECIMAL_DIGITS digits (a text that long holds no more; a longer one, or a JSON number whose
#   text is longer, is refused): so the mapper's fast path need not count them again.
# - Whole non-negative epoch seconds and milliseconds below 4e9 seconds are the instant of
#   their whole second (``_second``, built once per second) plus the milliseconds: exact, in
#   half the time of fromtimestamp. For whole microseconds the float quotient is within a
#   quarter microsecond of the exact instant, and fromtimestamp rounds to the nearest
#   microsecond: the exact instant. ``tests/test_program.py`` checks the edges.
# - Epoch text of plain digits below 4e9 seconds (``functions.PLAIN_EPOCH``) is what
#   ``from_epoch`` reads through a float, by the same patterns, float and fromtimestamp.
# - fromisoformat() of a text ending in Z parses what ``iso_time`` parses after its own clean-up
#   (which only matters for text fromisoformat refuses); a result not in UTC is refused.
_INLINE = {
    "decimal": "{out} = _Decimal({v}) if type({v}) is str and len({v}) <= " + str(DECIMAL_DIGITS)
               + " else _short_decimal({v})\n"
               "if {out} is not None and not {out}.is_finite(): raise _Refused",
    "str": "{out} = {v} if type({v}) is str else _int_str({v}) if type({v}) is int else {exact}({v})",
    "epoch_s": "{out} = _second[{v}] if type({v}) is int and 0 <= {v} < 4_000_000_000 "
               "else _fromts(float({v}), _UTC) if type({v}) is str and _text_s({v}) is not None else {exact}({v})",
    "epoch_ms": "{out} = _second[{v} // 1_000] + _MS[{v} % 1_000] if type({v}) is int and 0 <= {v} < 4_000_000_000_000 "
                "else _fromts(float({v}) / 1_000, _UTC) if type({v}) is str and _text_ms({v}) is not None "
                "else {exact}({v})",
    "epoch_us": "{out} = _fromts({v} / 1_000_000, _UTC) if type({v}) is int and 0 <= {v} < 4_000_000_000_000_000 "
                "else _fromts(float({v}) / 1_000_000, _UTC) if type({v}) is str and _text_us({v}) is not None "
                "else {exact}({v})",
    "iso_time": "{out} = _fromiso({v}) if type({v}) is str and {v}[-1:] == 'Z' else {exact}({v})\n"
                "if {out} is not None and {out}.tzinfo is not _UTC: raise _Refused",
    "lookup": "",
}


_EPOCH_TEXT = {"_text_s": PLAIN_EPOCH[1].fullmatch, "_text_ms": PLAIN_EPOCH[1_000].fullmatch,
               "_text_us": PLAIN_EPOCH[1_000_000].fullmatch}


class _Seconds(dict[int, datetime]):
    """Whole epoch second -> its UTC datetime, built on first use; at most 100,000 are kept."""

    def __missing__(self, second: int) -> datetime:
        if len(self) >= 100_000:
            self.clear()
        moment = self[second] = EPOCH + timedelta(seconds=second)
        return moment


_MILLISECONDS = [timedelta(milliseconds=n) for n in range(1000)]


class Refused(Exception):
    """Inline code met a value it leaves to the exact evaluation."""


def _short_decimal(value: Any) -> Decimal | None:
    """``decimal`` of a value, refused when its text is longer than DECIMAL_DIGITS."""
    number = to_decimal(value)
    if number is not None and len(str(number)) > DECIMAL_DIGITS:
        raise Refused
    return number


def _constant_mapping(node: dict[str, Any], root_is_object: bool) -> dict[str, Any] | None:
    """The mapping of ``lookup(x, {a: 'b'})`` or ``lookup(x, `{"a": "b"}`)`` when it is constant."""
    if node["type"] == "literal":
        return node["value"] if isinstance(node["value"], dict) else None
    # A multi-select is null on a null current node: constant only where that is an object.
    if node["type"] != "multi_select_dict" or not root_is_object:
        return None
    pairs = [(child["value"], child["children"][0]) for child in node["children"]]
    if any(value["type"] != "literal" for _, value in pairs):
        return None
    return {key: value["value"] for key, value in pairs}


def compile_ast(ast: dict[str, Any]) -> Callable[[Any], Any]:
    """A function of one value, equal to ``TreeInterpreter(OPTIONS).visit(ast, value)``."""
    try:
        gen = Codegen()
        return gen.build(gen.function(ast))
    except Exception:  # anything it cannot express stays with the interpreter
        return lambda value: _INTERPRETER.visit(ast, value)


def compile_record(asts: list[dict[str, Any]], roots: tuple[str, ...]) -> Callable[..., tuple[Any, ...]]:
    """One function of the ``roots`` values returning the tuple of every expression's result, as
    if each was evaluated on ``{roots[0]: arg0, ...}``: the mapper's fields, without that dict."""
    params = tuple(f"a{i}" for i in range(len(roots)))
    try:
        gen = Codegen()
        names = dict(zip(roots, params, strict=True))
        lines = [f"def _record({', '.join(params)}):"]
        results = []
        for ast in asts:
            body = Body(gen, names)
            results.append(body.emit(ast, "", 1))
            lines += body.lines
        lines.append(f"    return ({''.join(result + ', ' for result in results)})")
        gen.functions.append("\n".join(lines))
        return gen.build("_record")
    except Exception:  # anything it cannot express stays with the interpreter

        def interpreted(*values: Any) -> tuple[Any, ...]:
            root = dict(zip(roots, values, strict=True))
            return tuple(_INTERPRETER.visit(ast, root) for ast in asts)

        return interpreted
