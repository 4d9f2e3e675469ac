"""Compiling JMESPath expressions once, when a spec loads.

``compile_expression`` returns an ``Expr``: a plain callable over decoded JSON that carries its
source text. ``root_names`` lists the names an expression reads from its root, which is how the
loader checks that a template only uses variables that exist.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import exceptions as jmespath_exceptions

from bitty.lang.compiler import compile_ast
from bitty.lang.functions import OPTIONS, REGISTRY

_BUILTIN_FUNCTIONS = {
    name[len("_func_"):]
    for name in dir(jmespath.functions.Functions)
    if name.startswith("_func_")
}
KNOWN_FUNCTIONS = frozenset(_BUILTIN_FUNCTIONS | set(REGISTRY))


MAX_CHARS = 4096  # the longest bundled expression is under 200 characters
MAX_NESTING = 40  # brackets and parentheses open at once; the parser recurses on each
# Nodes on the longest path of the syntax tree (`a || b || ...` nests one per term). The
# interpreter recurses twice per level and Python stops at 1,000 frames: 600 terms fail.
MAX_DEPTH = 320


class ExpressionError(ValueError):
    """An expression that does not compile, or calls an unknown function."""


class Expr:
    """A compiled expression: ``expr(data)`` evaluates it."""

    __slots__ = ("_parsed", "fn", "interpret", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        _check_size(source)
        try:
            self._parsed = jmespath.compile(source)
        except jmespath_exceptions.ParseError as exc:
            where = f" at column {exc.lex_position + 1}" if exc.lex_position is not None else ""
            token = f" near {exc.token_value!r}" if exc.token_value not in (None, "") else ""
            incomplete = isinstance(exc, jmespath_exceptions.IncompleteExpressionError)
            what = "incomplete expression" if incomplete else exc.msg.lower()
            raise ExpressionError(f"invalid expression {source!r}: {what}{where}{token}") from None
        except jmespath_exceptions.JMESPathError as exc:
            raise ExpressionError(f"invalid expression {source!r}: {_first_line(str(exc))}") from None
        except RecursionError:  # bounded by _check_size; never a traceback
            raise ExpressionError(f"expression nests too deeply; keep under {MAX_NESTING} levels") from None
        depth = _depth(self._parsed.parsed)
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression is {depth} operations deep, over the limit of {MAX_DEPTH}; "
                                  "split it, or move the work into a hooks class")
        unknown = sorted(_function_names(self._parsed.parsed) - KNOWN_FUNCTIONS)
        if unknown:
            raise ExpressionError(unknown_function(unknown[0]))
        # ``interpret`` is the jmespath interpreter bound to bitty's functions; ``fn``, what hot
        # paths call, is the same expression compiled to Python (see bitty.lang.compiler).
        self.interpret: Callable[[Any], Any] = functools.partial(self._parsed.search, options=OPTIONS)
        try:
            self.fn: Callable[[Any], Any] = compile_ast(self._parsed.parsed)
        except RecursionError:
            raise ExpressionError(f"expression nests too deeply; keep under {MAX_NESTING} levels") from None

    def __call__(self, data: Any) -> Any:
        return self.fn(data)

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"

    @property
    def ast(self) -> dict[str, Any]:
        return self._parsed.parsed


def compile_expression(source: str) -> Expr:
    return Expr(source)


def _check_size(source: str) -> None:
    if len(source) > MAX_CHARS:
        raise ExpressionError(f"expression is {len(source):,} characters, over the limit of {MAX_CHARS:,}; "
                              "split it, or move the work into a hooks class")
    depth = deepest = 0
    for char in source:  # quotes are not tracked: a bracket inside a string only counts higher
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    if deepest > MAX_NESTING:
        raise ExpressionError(f"expression nests {deepest} brackets deep, over the limit of {MAX_NESTING}; "
                              "flatten it")


def _depth(ast: dict[str, Any]) -> int:
    """Nodes on the longest path from the root, counted without recursing."""
    deepest = 0
    stack = [(ast, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in node.get("children", []) if isinstance(child, dict))
    return deepest


def unknown_function(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(KNOWN_FUNCTIONS), n=1)
    hint = f" (did you mean {close[0]}()?)" if close else ""
    return (f"unknown function {name}(){hint}; the functions are the standard JMESPath ones and "
            f"bitty's: {', '.join(sorted(KNOWN_FUNCTIONS))}")


def suspicious(expr: Expr) -> list[str]:
    """Mistakes that compile but cannot be meant: a comparison with a bare identifier, which
    JMESPath reads as a field (``"trade"`` in double quotes too), where a string was meant."""
    found = []
    stack = [expr.ast]
    while stack:
        node = stack.pop()
        children = [c for c in node.get("children", []) if isinstance(c, dict)]
        if node["type"] == "comparator" and node["value"] in ("eq", "ne") and len(children) == 2:
            left, right = children
            # ``x != null`` reads the (absent) field ``null``, which is null: it works as meant.
            if right["type"] == "field" and left["type"] != "literal" and right["value"] != "null":
                name = right["value"]
                literal = f"`{name}`" if name in ("true", "false") else f"'{name}'"
                found.append(f"`{expr.source}` compares with the field {name!r} (a bare or double-quoted name "
                             f"reads a field in JMESPath); write {literal} for the value, or @.{name} for the field")
        stack.extend(children)
    return sorted(set(found))


def side_table_problems(expr: Expr) -> list[str]:
    """Values a ``side`` expression's ``lookup`` table gives that are not 'buy' or 'sell'."""
    found = []
    stack = [expr.ast]
    while stack:
        node = stack.pop()
        if node["type"] == "or_expression":
            stack.extend(node["children"])
        if node["type"] != "function_expression" or node["value"] != "lookup" or len(node["children"]) != 2:
            continue
        table = node["children"][1]
        if table["type"] == "literal" and isinstance(table["value"], dict):
            pairs = [(key, {"type": "literal", "value": value}) for key, value in table["value"].items()]
        elif table["type"] == "multi_select_dict":
            pairs = [(pair["value"], pair["children"][0]) for pair in table["children"]]
        else:
            continue
        for key, value in pairs:
            if value["type"] == "field":
                found.append(f"the side lookup maps {key!r} to the field {value['value']!r}, which is null; "
                             f"write '{value['value']}' for the text")
            elif value["type"] == "literal" and value["value"] not in ("buy", "sell"):
                found.append(f"the side lookup maps {key!r} to {value['value']!r}; a side is 'buy' or 'sell': "
                             "map each key to one of them")
    return found


def evaluate_safely(expr: Callable[[Any], Any], data: Any) -> tuple[Any, str | None]:
    """Evaluate, turning a runtime error (wrong types in the frame) into a reason."""
    try:
        return expr(data), None
    except (jmespath_exceptions.JMESPathError, TypeError, ValueError, AttributeError) as exc:
        return None, f"{type(exc).__name__}: {_first_line(str(exc))}"


def root_names(ast: dict[str, Any]) -> set[str]:
    """Names an expression reads from the object it is evaluated on."""
    kind = ast["type"]
    children = ast.get("children", [])
    if kind == "field":
        return {ast["value"]}
    if kind in ("subexpression", "index_expression", "projection", "value_projection",
                "filter_projection", "flatten", "pipe"):
        return root_names(children[0]) if children else set()
    if kind == "expref":
        return set()
    names: set[str] = set()
    for child in children:
        if isinstance(child, dict):
            names |= root_names(child)
    return names


def _function_names(ast: dict[str, Any]) -> set[str]:
    names = {ast["value"]} if ast["type"] == "function_expression" else set()
    for child in ast.get("children", []):
        if isinstance(child, dict):
            names |= _function_names(child)
    return names


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
