"""Reading a spec's YAML safely: bounded in size, depth and alias expansion, with duplicate keys
and syntax errors reported at ``file:line:col: $.path``.

A spec is untrusted text. PyYAML composes nodes recursively and aliases let 5 KB describe a
document of billions of nodes (the "billion laughs"), which every later walk (schema check,
compile) would pay for. So the event stream is scanned first, iteratively, for depth; the
composed tree is then measured as if its aliases were expanded, without expanding them; only a
document inside every bound is constructed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from bitty.errors import Problem
from bitty.spec.schema import json_path

MAX_BYTES = 1024 * 1024  # the largest bundled spec is under 10 KB
MAX_DEPTH = 50  # bundled specs nest 6 deep
MAX_NODES = 50_000  # nodes after alias expansion; bundled specs have under 1,000


class SourceError(Exception):
    """The text cannot be turned into a document; ``problems`` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def read(text: str, file: str) -> tuple[yaml.Node | None, Any, list[Problem]]:
    """The composed root node, the constructed document, and problems that do not stop loading
    (duplicate keys). Raises SourceError for text that cannot be safely loaded."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise SourceError([Problem(file, 1, 1, "$", f"the file is {size:,} bytes, over the limit of "
                                   f"{MAX_BYTES:,}; a spec describes one exchange and needs far less")])
    try:
        _check_depth(text, file)
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None, None, []
            _check_expansion(root, file)
            duplicates = list(_duplicate_keys(root, file))
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise SourceError([_syntax_problem(exc, text, file)]) from None
    except RecursionError:  # a bound above is missing; never a traceback
        raise SourceError([Problem(file, 1, 1, "$", "the document nests too deeply to load; "
                                   f"keep nesting under {MAX_DEPTH} levels")]) from None
    return root, data, duplicates


def _check_depth(text: str, file: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, found on the event stream (PyYAML parses
    iteratively; only composing recurses), locating it at the JSON path reached."""
    stack: list[list[Any]] = []  # [path, is_mapping, expecting_key, key or next index]
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            here = _child_path(stack)
            if len(stack) >= MAX_DEPTH:
                line, col = _where(event.start_mark)
                raise SourceError([Problem(file, line, col, json_path(here),
                                           f"nested more than {MAX_DEPTH} levels deep; a spec needs a "
                                           "handful: flatten this value")])
            stack.append([here, isinstance(event, yaml.MappingStartEvent), True, 0])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            stack.pop()
            _advance(stack, None)
        elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
            _advance(stack, event.value if isinstance(event, yaml.ScalarEvent) else None)


def _child_path(stack: list[list[Any]]) -> list[Any]:
    if not stack:
        return []
    parent, _, _, step = stack[-1]  # a mapping's current key, or a sequence's next index
    return [*parent, step]


def _advance(stack: list[list[Any]], scalar: str | None) -> None:
    """Move the innermost container past one child (for mappings: a key, then its value)."""
    if not stack:
        return
    top = stack[-1]
    if top[1]:
        if top[2]:
            top[3] = scalar if scalar is not None else "?"
        top[2] = not top[2]
    else:
        top[3] += 1


def _check_expansion(root: yaml.Node, file: str) -> None:
    """Measure the document as if aliases were expanded (shared nodes counted each time they
    are used), iteratively, and refuse it beyond MAX_NODES nodes or MAX_DEPTH levels."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, depth) when expanded
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in measured:
            continue
        children = _children(node)
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in measured)
            continue
        nodes = 1 + sum(measured[id(c)][0] for c in children)
        depth = 1 + max((measured[id(c)][1] for c in children), default=0)
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            line, col = _where(node.start_mark)
            what = f"{nodes:,} values" if nodes > MAX_NODES else f"{depth} levels deep"
            raise SourceError([Problem(file, line, col, "$",
                                       f"aliases (*name) expand this document to over {what} (limit "
                                       f"{MAX_NODES:,} values, {MAX_DEPTH} levels); write the values "
                                       "out or use fewer aliases")])
        measured[id(node)] = (nodes, depth)


def _where(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _duplicate_keys(root: yaml.Node, file: str) -> Iterator[Problem]:
    """Every key given twice in one mapping: YAML silently keeps the last value."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, list[Any]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name != "<<":
                    if name in first:
                        line = first[name].start_mark.line + 1
                        col = first[name].start_mark.column + 1
                        mark = key.start_mark
                        yield Problem(file, mark.line + 1, mark.column + 1, json_path(path + [name]),
                                      f"duplicate key {name!r}, also at line {line}:{col}; YAML keeps only "
                                      "the last value: remove or rename one of them")
                    else:
                        first[name] = key
                stack.append((value, path + [name if name is not None else "?"]))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, path + [i]) for i, child in enumerate(node.value))


def _syntax_problem(exc: yaml.YAMLError, text: str, file: str) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = getattr(exc, "problem", None) or str(exc)
    if "\t" in problem or "'\\t'" in problem:
        hint = "YAML indents with spaces, never tabs: replace the tab with spaces"
    elif "constructor" in type(exc).__name__.lower() or "tag" in problem:
        hint = "tags (!!python/..., !name) are not allowed in a spec: remove the tag"
    elif "mapping values are not allowed" in problem:
        hint = "a value holding ': ' must be quoted, or the line is indented wrongly"
    elif "could not find expected ':'" in problem or "expected <block end>" in problem:
        hint = "check this line's indentation against the lines above it"
    elif "expected ',' or ']'" in problem or "expected ',' or '}'" in problem:
        hint = "a [list] or {mapping} is not closed, or a value in it needs quotes"
    elif "found undefined alias" in problem:
        hint = "define the anchor (&name) before using the alias (*name)"
    else:
        hint = "check the quoting and indentation here"
    return Problem(file, line, col, "$", f"invalid YAML: {problem}; {hint}")
