"""Compiling JMESPath expressions once, when a spec loads.

``compile_expression`` returns an ``Expr``: a plain callable over decoded JSON that carries its
source text. ``root_names`` lists the names an expression reads from its root, which is how the
loader checks that a template only uses variables that exist.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jmespath
from jmespath import exceptions as jmespath_exceptions

from bitty.lang.compiler import compile_ast
from bitty.lang.functions import OPTIONS, REGISTRY, call_problems

_BUILTIN_FUNCTIONS = {
    name[len("_func_"):]
    for name in dir(jmespath.functions.Functions)
    if name.startswith("_func_")
}
KNOWN_FUNCTIONS = frozenset(_BUILTIN_FUNCTIONS | set(REGISTRY))


class ExpressionError(ValueError):
    """An expression that does not compile, or calls an unknown function."""


class Expr:
    """A compiled expression: ``expr(data)`` evaluates it."""

    __slots__ = ("_parsed", "fn", "interpret", "source")

    def __init__(self, source: str) -> None:
        self.source = source
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
        unknown = sorted(_function_names(self._parsed.parsed) - KNOWN_FUNCTIONS)
        if unknown:
            raise ExpressionError(f"unknown function {unknown[0]}()")
        for problem in call_problems(self._parsed.parsed):
            raise ExpressionError(f"invalid expression {source!r}: {problem}")
        # ``interpret`` is the jmespath interpreter bound to bitty's functions; ``fn``, what hot
        # paths call, is the same expression compiled to Python (see bitty.lang.compiler).
        self.interpret: Callable[[Any], Any] = functools.partial(self._parsed.search, options=OPTIONS)
        self.fn: Callable[[Any], Any] = compile_ast(self._parsed.parsed)

    def __call__(self, data: Any) -> Any:
        return self.fn(data)

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"

    @property
    def ast(self) -> dict[str, Any]:
        return self._parsed.parsed


def compile_expression(source: str) -> Expr:
    return Expr(source)


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
