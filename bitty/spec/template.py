"""Payload and URL templates: JSON values whose strings may hold ``${expression}`` placeholders.

A string that is exactly one placeholder is replaced by the value with its type (a list stays a
list); placeholders inside a longer string are replaced by their text. Expressions are JMESPath
evaluated over the variables of the context, so a template can compute but never execute code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bitty.lang.expr import Expr, ExpressionError, compile_expression, root_names
from bitty.lang.functions import to_text

_QUOTES = {"'", '"', "`"}


def _split(text: str) -> list[str | Expr]:
    """Split a string into literal parts and compiled placeholders."""
    parts: list[str | Expr] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            if end < 0:
                raise ExpressionError(f"unclosed '${{' at column {i + 1} of {text!r}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(compile_expression(text[i + 2:end].strip()))
            i = end + 1
        else:
            literal.append(text[i])
            i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    quote = ""
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in _QUOTES:
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return -1


@dataclass(frozen=True)
class Template:
    """A compiled template. ``render(variables)`` gives the value to send."""

    source: Any
    _compiled: Any

    @classmethod
    def compile(cls, source: Any) -> Template:
        return cls(source, _compile(source))

    def render(self, variables: dict[str, Any]) -> Any:
        return _render(self._compiled, variables)

    def render_text(self, variables: dict[str, Any]) -> str:
        """Render to the exact text sent on the wire (strings as text, anything else as JSON)."""
        value = self.render(variables)
        if isinstance(value, str):
            return value
        return orjson.dumps(value, default=_json_default).decode()

    def variables(self) -> set[str]:
        """Names the template reads from its variables."""
        return _names(self._compiled)


class _Interpolated:
    __slots__ = ("parts",)

    def __init__(self, parts: list[str | Expr]) -> None:
        self.parts = parts


def _compile(source: Any) -> Any:
    if isinstance(source, str):
        parts = _split(source)
        if len(parts) == 1 and isinstance(parts[0], Expr):
            return parts[0]
        if all(isinstance(p, str) for p in parts):
            return source
        return _Interpolated(parts)
    if isinstance(source, dict):
        return {k: _compile(v) for k, v in source.items()}
    if isinstance(source, list):
        return [_compile(v) for v in source]
    return source


def _render(node: Any, variables: dict[str, Any]) -> Any:
    if isinstance(node, Expr):
        return node(variables)
    if isinstance(node, _Interpolated):
        out = []
        for part in node.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                text = to_text(part(variables))
                out.append("" if text is None else text)
        return "".join(out)
    if isinstance(node, dict):
        return {k: _render(v, variables) for k, v in node.items()}
    if isinstance(node, list):
        return [_render(v, variables) for v in node]
    return node


def _names(node: Any) -> set[str]:
    if isinstance(node, Expr):
        return root_names(node.ast)
    if isinstance(node, _Interpolated):
        return set().union(*(root_names(p.ast) for p in node.parts if isinstance(p, Expr)))
    if isinstance(node, dict):
        return set().union(set(), *(_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(set(), *(_names(v) for v in node))
    return set()


def _json_default(value: Any) -> Any:
    text = to_text(value)
    if text is None:
        raise TypeError(f"cannot send {type(value).__name__} as JSON")
    return text
