"""Warnings for ``iso_time(x)`` without a zone where the spec's own material shows zone-less times.

At runtime a time text without a zone read by ``iso_time(x)`` quarantines its record (never taken
as UTC). ``bitty validate`` warns before that where it can tell: the spec's fixture frames
(``fixtures/<name>/session.jsonl``, REST pages under ``fixtures/<name>/rest/``) carry a zone-less
text in the field ``x`` reads, or the field's name says local time (``local``, ``kst``, ...).
Warnings never fail validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bitty.errors import Problem
from bitty.lang.expr import ExpressionError, compile_expression
from bitty.spec import source as yaml_source
from bitty.spec.load import _display
from bitty.spec.schema import locate

_LOCAL_NAME = re.compile(r"local|(?:^|_)(?:kst|jst|hkt|sgt)(?:_|$)", re.IGNORECASE)
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_FIX = "name the exchange's zone: iso_time({arg}, 'Asia/Seoul'), or an offset like iso_time({arg}, '+09:00')"


def zone_warnings(path: Path, file: str | None = None) -> list[Problem]:
    """Warnings (``file:line:col: $.path: ...``) for zone-less ``iso_time`` calls in one spec."""
    file = file or _display(path)  # as the loader names it
    try:
        root, data, _ = yaml_source.read(path.read_text(encoding="utf-8"), file)
    except (OSError, UnicodeDecodeError, yaml_source.SourceError):
        return []  # the loader reports these
    if not isinstance(data, dict):
        return []
    report = locate(file, root)
    fixtures = path.parent / "fixtures" / path.stem
    seen: dict[str, list[str]] | None = None
    for where, source in _strings(data, []):
        if "iso_time" not in source:
            continue
        try:
            ast = compile_expression(source).ast
        except ExpressionError:
            continue  # the loader reports it
        for arg, name in _zoneless_calls(ast, source):
            if seen is None:
                seen = _fixture_texts(fixtures)
            example = next((v for v in seen.get(name, []) if _no_zone(v)), None)
            fix = _FIX.format(arg=arg)
            if example is not None:
                report.add(where, f"warning: iso_time({arg}) reads {name!r}, which has no zone in the fixture "
                                  f"frames ({example!r}): every such record is quarantined; {fix}")
            elif _LOCAL_NAME.search(name):
                report.add(where, f"warning: iso_time({arg}) reads {name!r}, by its name a local time without "
                                  f"a zone: such records are quarantined; {fix}")
    return report.problems


def _strings(value: Any, path: list[Any]) -> Iterator[tuple[list[Any], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, path + [key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, path + [i])


def _zoneless_calls(ast: dict[str, Any], source: str) -> Iterator[tuple[str, str]]:
    """(argument text, the field name it ends in) of each one-argument ``iso_time`` call."""
    if ast.get("type") == "function_expression" and ast.get("value") == "iso_time" and len(ast["children"]) == 1:
        name = _last_field(ast["children"][0])
        if name is not None:
            match = re.search(r"iso_time\(\s*([^()]*?)\s*\)", source)
            yield (match.group(1) if match else name), name
    for child in ast.get("children", []):
        if isinstance(child, dict):
            yield from _zoneless_calls(child, source)


def _last_field(ast: dict[str, Any]) -> str | None:
    if ast.get("type") == "field":
        return str(ast["value"])
    if ast.get("type") in ("subexpression", "index_expression") and ast.get("children"):
        return _last_field(ast["children"][-1])
    return None


def _fixture_texts(folder: Path) -> dict[str, list[str]]:
    """Every string value in the fixture frames and REST pages, by the key it is under."""
    out: dict[str, list[str]] = {}
    bodies: list[Any] = []
    session = folder / "session.jsonl"
    if session.is_file():
        for line in session.read_bytes().splitlines():
            try:
                step = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # comments, blank lines
            if isinstance(step, dict):
                bodies += [step.get("recv"), _json(step.get("recv_text"))]
    for page in sorted((folder / "rest").glob("*.json")) if (folder / "rest").is_dir() else []:
        bodies.append(_json(page.read_bytes()))
    for body in bodies:
        _collect(body, out)
    return out


def _json(text: Any) -> Any:
    if not isinstance(text, str | bytes):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _collect(value: Any, out: dict[str, list[str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                out.setdefault(str(key), []).append(item)
            else:
                _collect(item, out)
    elif isinstance(value, list):
        for item in value:
            _collect(item, out)


def _no_zone(text: str) -> bool:
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip(), count=1)  # as iso_time reads it
    if not _ISO.match(text):
        return False
    try:
        return datetime.fromisoformat(text).tzinfo is None
    except ValueError:
        return False
