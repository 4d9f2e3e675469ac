"""Checking a spec's shape against the JSON Schema, and locating every problem at
``file:line:col: $.path`` through the node marks of ``yaml.compose``."""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import yaml

from bitty.errors import Problem
from bitty.spec import files as paths


class Locator:
    """Maps a JSON path (list of keys/indexes) to the line and column of its YAML node."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def node(self, path: list[Any], key: bool = False) -> yaml.Node | None:
        node = self.root
        for i, step in enumerate(path):
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == step:
                        node = k if key and i == len(path) - 1 else v
                        break
                else:
                    return node
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = node.value[step]
            else:
                return node
        return node

    def where(self, path: list[Any], key: bool = False) -> tuple[int, int]:
        node = self.node(path, key)
        if node is None:
            return 1, 1
        return node.start_mark.line + 1, node.start_mark.column + 1


def json_path(path: list[Any]) -> str:
    out = "$"
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif not isinstance(step, str):
            out += f"[{step!r}]"
        elif step.replace("_", "").replace("-", "").isalnum():
            out += f".{step}"
        else:
            out += f"[{step!r}]"
    return out


class Report:
    def __init__(self, file: str, locator: Locator) -> None:
        self.file = file
        self.locator = locator
        self.problems: list[Problem] = []

    def add(self, path: list[Any], message: str, key: bool = False) -> None:
        line, col = self.locator.where(path, key)
        self.problems.append(Problem(self.file, line, col, json_path(path), message))


_validator: jsonschema.protocols.Validator | None = None


def schema() -> dict[str, Any]:
    return validator().schema


def validator() -> jsonschema.protocols.Validator:
    global _validator
    if _validator is None:
        document = json.loads(paths.schema_file().read_text())
        cls = jsonschema.validators.validator_for(document)
        cls.check_schema(document)
        _validator = cls(document)
    return _validator


def shape_problems(data: Any, report: Report) -> None:
    """Add every schema violation of ``data`` to ``report``."""
    errors = sorted(validator().iter_errors(data), key=lambda e: (list(e.absolute_path), e.message))
    for error in errors:
        for path, message, at_key in _explain(error, data):
            report.add(path, message, key=at_key)


def _explain(error: jsonschema.ValidationError, data: Any) -> Iterator[tuple[list[Any], str, bool]]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        for key in error.instance:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            expected = f"; expected one of: {', '.join(sorted(allowed))}" if not close else ""
            yield path + [key], f"unknown key {key!r}{hint}{expected}", True
        return
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield path, f"missing required key {missing!r}", False
        return
    if error.validator == "enum":
        options = ", ".join(repr(o) for o in error.validator_value)
        yield path, f"{error.instance!r} is not one of {options}", False
        return
    if error.validator == "const":
        return  # reported through the message kind's `type` enum
    if error.validator == "pattern":
        description = error.schema.get("description", "")
        yield path, f"{error.instance!r} does not match {error.validator_value!r}. {description}".strip(), False
        return
    yield path, error.message, False


def locate(file: str, root: yaml.Node | None) -> Report:
    """A report for one spec file, locating paths in its composed YAML."""
    return Report(file, Locator(root))


def fill_defaults(data: Any) -> None:
    """Fill every absent property that has a ``default`` in the schema, in place.

    The schema is the one place defaults live: the loader reads ``raw["idle_timeout"]``, and the
    model's dataclasses carry none. Followed: ``$ref``, ``allOf``, ``if``/``then``/``else`` (the
    branch the instance takes), ``properties``, ``additionalProperties`` and ``items``. A default
    of ``{}`` is filled before its own properties, so nested defaults arrive too. Values of the
    wrong type are left alone (the shape check has reported them).
    """
    _fill(data, schema())


def _fill(instance: Any, sub: Any) -> None:
    if not isinstance(sub, dict):
        return
    if "$ref" in sub:
        _fill(instance, _resolve(sub["$ref"]))
    for part in sub.get("allOf", []):
        _fill(instance, part)
    if "if" in sub:
        branch = "then" if validator().evolve(schema=sub["if"]).is_valid(instance) else "else"
        _fill(instance, sub.get(branch))
    if isinstance(instance, dict):
        properties = sub.get("properties", {})
        for name, prop in properties.items():
            if name not in instance and isinstance(prop, dict) and "default" in prop:
                instance[name] = copy.deepcopy(prop["default"])
            if name in instance:
                _fill(instance[name], prop)
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict):
            for name, value in instance.items():
                if name not in properties:
                    _fill(value, extra)
    elif isinstance(instance, list) and isinstance(sub.get("items"), dict):
        for item in instance:
            _fill(item, sub["items"])


def _resolve(ref: str) -> Any:
    node: Any = schema()
    for step in ref.removeprefix("#/").split("/"):
        node = node[step]
    return node


def defaults() -> dict[str, Any]:
    """Every default the schema declares, by JSON path (``$.connection.max_frame_bytes``); a
    ``$defs`` entry is named by the paths that reach it (``$.messages.*.fatal``)."""
    found: dict[str, Any] = {}

    def walk(sub: Any, path: str, seen: frozenset[str]) -> None:
        if not isinstance(sub, dict):
            return
        if "$ref" in sub and sub["$ref"] not in seen:
            walk(_resolve(sub["$ref"]), path, seen | {sub["$ref"]})
        for part in sub.get("allOf", []):
            walk(part, path, seen)
        for key in ("then", "else"):
            walk(sub.get(key), path, seen)
        for name, prop in sub.get("properties", {}).items():
            if isinstance(prop, dict) and "default" in prop:
                found[f"{path}.{name}"] = prop["default"]
            walk(prop, f"{path}.{name}", seen)
        if isinstance(sub.get("additionalProperties"), dict):
            walk(sub["additionalProperties"], f"{path}.*", seen)
        if isinstance(sub.get("items"), dict):
            walk(sub["items"], f"{path}[*]", seen)

    walk(schema(), "$", frozenset())
    return found
