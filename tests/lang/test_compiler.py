"""The expression compiler agrees with the jmespath interpreter, on random data, for every
expression in every bundled spec and for generated expressions."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jmespath
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bitty.lang.compiler import compile_ast, compile_record
from bitty.lang.expr import Expr, compile_expression
from bitty.lang.functions import OPTIONS
from bitty.spec.load import load_spec
from tests.conftest import EXCHANGES

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _gather(node: Any, out: dict[str, Expr], seen: set[int]) -> None:
    if id(node) in seen or isinstance(node, (str, bytes, int, float, type(None))):
        return
    seen.add(id(node))
    if isinstance(node, Expr):
        out[node.source] = node
    elif isinstance(node, (list, tuple, set, frozenset)):
        for item in node:
            _gather(item, out, seen)
    elif isinstance(node, dict):
        for item in node.values():
            _gather(item, out, seen)
    elif type(node).__module__.startswith("bitty."):
        if dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                _gather(getattr(node, f.name), out, seen)
        for name in getattr(type(node), "__slots__", ()):
            _gather(getattr(node, name, None), out, seen)
        for item in getattr(node, "__dict__", {}).values():
            _gather(item, out, seen)


def _spec_expressions_of(path: Path) -> dict[str, Expr]:
    out: dict[str, Expr] = {}
    _gather(load_spec(path), out, set())
    return out


def _spec_expressions() -> dict[str, Expr]:
    out: dict[str, Expr] = {}
    for path in sorted(EXCHANGES.glob("*.yaml")):
        out.update(_spec_expressions_of(path))
    return out


SPEC_EXPRESSIONS = _spec_expressions()


def _names(ast: dict[str, Any], fields: set[str], strings: set[str]) -> None:
    if ast["type"] in ("field", "key_val_pair"):
        fields.add(ast["value"])
    if ast["type"] == "literal" and isinstance(ast["value"], str):
        strings.add(ast["value"])
    for child in ast.get("children", []):
        if isinstance(child, dict):
            _names(child, fields, strings)


BASE_STRINGS = ["", "1.5", "2023-11-20T14:02:11.512367Z", "BTC-USD", "b", "s", "true", "0", "null", "buy"]


EDGES = [None, True, False, 0, 1, -1, 0.0, 1.5, 10**13, "", [], {}]


def _json(keys: list[str], strings: list[str]) -> st.SearchStrategy[Any]:
    """JSON objects that use ``keys`` and whose strings are often ``strings``: data an
    expression actually walks into, with JMESPath's edge values (``''``, ``0``, ``[]``) common."""
    scalars = st.one_of(st.sampled_from(EDGES), st.sampled_from(strings), st.integers(),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3))
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4)
        | st.fixed_dictionaries({}, optional=dict.fromkeys(keys, inner)),
        max_leaves=12,
    )
    top = st.sampled_from(EDGES) | st.sampled_from(strings) | values
    return st.one_of(st.fixed_dictionaries(dict.fromkeys(keys, top)),
                     st.fixed_dictionaries({}, optional=dict.fromkeys(keys, top)), values)


@functools.cache
def _strategy(sources: tuple[str, ...]) -> st.SearchStrategy[Any]:
    fields: set[str] = {"record", "frame"}
    strings = set(BASE_STRINGS)
    for source in sources:
        _names(compile_expression(source).ast, fields, strings)
    return _json(sorted(fields), sorted(strings))


def _outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        return "value", fn(value)
    except Exception as exc:
        return "error", (type(exc).__name__, str(exc))


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``1 == True`` is not the same)."""
    if type(a) is not type(b):
        return type(a).__name__ == type(b).__name__ == "_Expression" and a.expression == b.expression
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _check(expr: Expr, value: Any) -> None:
    got, expected = _outcome(expr.fn, value), _outcome(expr.interpret, value)
    assert got[0] == expected[0] and _same(got[1], expected[1]), (expr.source, value, got, expected)


def test_every_spec_expression_is_compiled() -> None:
    """Every bundled spec's expressions compile to generated code, none left to the interpreter."""
    assert len(SPEC_EXPRESSIONS) > 100
    for expr in SPEC_EXPRESSIONS.values():
        assert expr.fn.__name__ != "<lambda>", expr.source


SPEC_GROUPS = sorted({tuple(sorted(e.source for e in _spec_expressions_of(path).values()))
                      for path in sorted(EXCHANGES.glob("*.yaml"))})


@SETTINGS
@given(data=st.data())
def test_spec_expressions_agree_with_the_interpreter(data: st.DataObject) -> None:
    """Compiled and interpreted results (or errors) match for every spec expression, on random
    frames shaped from the names its spec's expressions use."""
    group = data.draw(st.sampled_from(SPEC_GROUPS))
    frame = data.draw(_strategy(group))
    for source in group:
        _check(SPEC_EXPRESSIONS[source], frame)


RECORD_GROUPS = [tuple(e for e in group if "record" in e or "frame" in e) for group in SPEC_GROUPS]


@functools.cache
def _record_function(group: tuple[str, ...]) -> Any:
    return compile_record([SPEC_EXPRESSIONS[e].ast for e in group], ("record", "frame"))


@SETTINGS
@given(data=st.data())
def test_record_functions_agree_with_the_interpreter(data: st.DataObject) -> None:
    """A spec's field expressions compiled into one function of (record, frame) match the
    interpreter on the ``{"record": ..., "frame": ...}`` object."""
    group = data.draw(st.sampled_from([g for g in RECORD_GROUPS if g]))
    values = _strategy(group)
    record, frame = data.draw(values), data.draw(values)
    root = {"record": record, "frame": frame}
    kind, got = _outcome(lambda _: _record_function(group)(record, frame), None)
    if kind == "value":
        for source, value in zip(group, got, strict=True):
            assert _same(value, SPEC_EXPRESSIONS[source].interpret(root)), source
    else:
        assert any(_outcome(SPEC_EXPRESSIONS[e].interpret, root)[0] == "error" for e in group)


# --- generated expressions ----------------------------------------------------------------

identifiers = st.sampled_from(["a", "b", "c", "type", "data", "record", '"e-x"', "p"])
literals = st.sampled_from(["`1`", "`0`", "`-2`", "`1.5`", "'a'", "''", "`null`", "`true`", "`false`", "`[]`",
                            "`{}`", "`[1, \"a\"]`", "`{\"a\": 1}`", "'b'"])
FUNCTIONS = {
    1: ["length", "to_number", "to_string", "type", "keys", "values", "not_null", "to_array", "abs", "sum", "max",
        "min", "sort", "reverse", "floor", "avg", "decimal", "str", "lower", "upper", "iso_time", "epoch_ms"],
    2: ["contains", "starts_with", "ends_with", "join", "not_null", "lookup", "concat", "split", "merge", "regex"],
}


def _expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, identifiers).map(lambda t: f"({t[0]}).{t[1]}"),
            st.tuples(identifiers, identifiers).map(lambda t: f"{t[0]}.{t[1]}"),
            st.tuples(inner, st.integers(-3, 3)).map(lambda t: f"({t[0]})[{t[1]}]"),
            st.tuples(identifiers, st.integers(-3, 3)).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.tuples(identifiers, inner).map(lambda t: f"{t[0]}[*].({t[1]})"),
            st.tuples(identifiers, inner).map(lambda t: f"{t[0]}.*.({t[1]})"),
            st.tuples(identifiers, inner, inner).map(lambda t: f"{t[0]}[?{t[1]}].({t[2]})"),
            identifiers.map(lambda i: f"{i}[]"),
            st.tuples(identifiers, st.sampled_from(["1:", ":2", "::-1", "-2:"])).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.tuples(inner, st.sampled_from(["||", "&&", "==", "!=", "<", "<=", ">", ">=", "|"]), inner)
            .map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
            inner.map(lambda e: f"!({e})"),
            st.lists(inner, min_size=1, max_size=3).map(lambda xs: "[" + ", ".join(f"({x})" for x in xs) + "]"),
            st.lists(st.tuples(identifiers, inner), min_size=1, max_size=3)
            .map(lambda kv: "{" + ", ".join(f"{k}: ({v})" for k, v in kv) + "}"),
            st.tuples(st.sampled_from(FUNCTIONS[1]), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(FUNCTIONS[2]), inner, inner).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
            st.tuples(st.sampled_from(["map", "sort_by", "max_by"]), inner, inner)
            .map(lambda t: f"map(&({t[1]}), {t[2]})" if t[0] == "map" else f"{t[0]}({t[2]}, &({t[1]}))"),
            st.tuples(st.sampled_from(FUNCTIONS[1]), inner, inner).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        )

    return st.recursive(identifiers | literals | st.just("@"), extend, max_leaves=8)


def _logic_expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["||", "&&", "==", "!=", "<", "<=", ">", ">="]), inner)
            .map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
            inner.map(lambda e: f"!({e})"),
            st.tuples(identifiers, inner).map(lambda t: f"{t[0]}[?{t[1]}]"),
            st.tuples(identifiers, st.integers(-2, 2)).map(lambda t: f"{t[0]}[{t[1]}]"),
        )

    return st.recursive(identifiers | literals | st.just("@"), extend, max_leaves=5)


GENERATED_DATA = _json(["a", "b", "c", "type", "data", "record", "e-x", "p"], [*BASE_STRINGS, "a"])


@SETTINGS
@given(source=_logic_expressions(), value=GENERATED_DATA)
def test_generated_logic_agrees_with_the_interpreter(source: str, value: Any) -> None:
    """Random ``||``, ``&&``, ``!``, comparisons and filters: JMESPath truthiness and comparability."""
    _check(compile_expression(source), value)


@SETTINGS
@given(source=_expressions(), value=GENERATED_DATA)
def test_generated_expressions_agree_with_the_interpreter(source: str, value: Any) -> None:
    """Random expressions over random data: same result or same error as the interpreter."""
    try:
        expr = compile_expression(source)
    except ValueError:
        assume(False)
        raise
    _check(expr, value)


@pytest.mark.parametrize("source", ["a.b.c", "a[?b > `1`].c", "*.a", "a[].b", "{x: a, y: [b, c]}",
                                    "map(&a, b)", "a | [0]", "!a || b && c", "length(a) >= `2`"])
def test_common_forms_are_compiled(source: str) -> None:
    """The common node types become generated code rather than interpreter calls."""
    fn = compile_ast(jmespath.compile(source).parsed)
    assert fn.__name__ != "<lambda>"
    assert "_interp" not in fn.__code__.co_freevars


def test_deep_expressions_still_agree() -> None:
    """Very deep nesting (split into several functions) gives the interpreter's result."""
    source = " || ".join(f"a{i}" for i in range(300)) + " || 'end'"
    expr = compile_expression(source)
    assert expr.fn({"a250": 5}) == jmespath.search(source, {"a250": 5}, options=OPTIONS) == 5
    assert expr.fn({}) == "end"



def test_identifiers_and_literals_never_become_code(tmp_path: Path) -> None:
    """A quoted identifier or literal that looks like Python stays data in the compiled function."""
    from bitty.lang.expr import compile_expression

    marker = tmp_path / "pwned"
    code = "\"]'); __import__('pathlib').Path('" + str(marker) + "').touch() #"
    quoted = code.replace("\\", "\\\\").replace('"', '\\"')
    expression = compile_expression('"' + quoted + '" || `"' + quoted + '"`')
    assert expression.fn({}) == code
    assert expression.fn({code: 5}) == 5
    assert not marker.exists()
