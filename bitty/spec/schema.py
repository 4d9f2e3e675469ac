"""Checking a spec's shape against the JSON Schema, and locating every problem at
``file:line:col: $.path`` through the node marks of ``yaml.compose``."""

from __future__ import annotations

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
