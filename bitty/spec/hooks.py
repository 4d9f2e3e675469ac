"""Python hooks for exchanges the spec language cannot express, and the one place they are found.

A spec names a ``Hooks`` subclass with ``hooks: package.module.Class``. Override one to three
methods; every default does nothing, so the spec keeps doing the rest.

Where the module may come from: the spec's own folder first, then installed packages (``sys.path``
without the current directory). The current directory is never searched implicitly: run as
``python -m bitty``, it heads ``sys.path``, and any module lying there would be imported and run.
``check_hooks`` (what ``bitty validate`` calls) finds the module and reads its source with ``ast``:
nothing is imported or executed. Only ``hooks_class`` (collect, test) imports.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitty.errors import BittyError

if TYPE_CHECKING:
    from bitty.spec.model import Spec

MAX_SOURCE_BYTES = 1024 * 1024
_HOOKS_HOMES = ("bitty.hooks", "bitty.spec.hooks")


class Hooks:
    """Per-connection hooks. One instance is created for every connection."""

    def __init__(self, spec: Spec, symbols: list[str]) -> None:
        self.spec = spec
        self.symbols = symbols

    def decode(self, frame: Any) -> Any:
        """Rewrite a decoded frame before it is matched against the message kinds."""
        return frame

    def subscribe_messages(self, messages: list[Any]) -> list[Any]:
        """Rewrite the rendered subscribe messages (values sent as JSON, strings as text)."""
        return messages

    def url(self, url: str) -> str:
        """Rewrite the rendered websocket URL."""
        return url


class HooksError(BittyError):
    """A spec's ``hooks:`` names nothing usable; the message says what to change."""


def installed_path() -> list[str]:
    """``sys.path`` without the entry Python adds implicitly for the current directory: ``''`` or
    ``.``, and a first entry that is the current directory (``python -m``). The same folder
    added on purpose later (``PYTHONPATH``, an editable install's ``.pth``) stays."""
    cwd = os.path.realpath(os.getcwd())
    entries = list(sys.path)
    if entries and os.path.realpath(entries[0] or ".") == cwd:
        entries = entries[1:]
    return [p for p in entries if p not in ("", ".")]


def find_module(module: str, spec_dir: Path) -> list[ModuleSpec]:
    """The import specs of ``module`` and each package above it, found in the spec's folder or
    an installed package without importing anything; raises HooksError."""
    parts = module.split(".")
    chain_roots_first = [str(spec_dir)]
    for roots in (chain_roots_first, installed_path()):
        chain: list[ModuleSpec] = []
        search: list[str] | None = roots
        for i in range(len(parts)):
            name = ".".join(parts[: i + 1])
            found = PathFinder.find_spec(name, search) if search is not None else None
            if found is None and i == 0 and roots is not chain_roots_first:
                found = _meta_find(name)
            if found is None:
                break
            chain.append(found)
            search = list(found.submodule_search_locations or []) or None
        else:
            return chain
    where = f"the spec's folder ({spec_dir}) or an installed package"
    if PathFinder.find_spec(parts[0], [os.getcwd()]) is not None:
        raise HooksError(f"module {module!r} is only in the current directory, which is never searched "
                         f"(it would run whatever lies there); move {parts[0]} next to the spec, or install it")
    raise HooksError(f"cannot find module {module!r} in {where}; put {parts[0]}.py next to the spec "
                     "or install its package")


def _meta_find(name: str) -> ModuleSpec | None:
    """A top-level module found by an installer's own finder (editable installs map package
    names to their folders this way); these finders never search the current directory."""
    for finder in sys.meta_path:
        if finder is PathFinder or not hasattr(finder, "find_spec"):
            continue
        try:
            found = finder.find_spec(name, None)
        except Exception:
            continue
        if found is not None:
            return found
    return None


def check_hooks(dotted: str, spec_dir: Path) -> None:
    """Check, without importing, that ``dotted`` names a Hooks subclass; raises HooksError."""
    module, _, name = dotted.rpartition(".")
    chain = find_module(module, spec_dir)
    if not _is_hooks_class(chain, name, spec_dir, set()):
        raise HooksError(f"{dotted!r} is not a subclass of bitty.hooks.Hooks; declare it as "
                         f"`class {name}(Hooks)` after `from bitty.hooks import Hooks`")


def _source(chain: list[ModuleSpec]) -> tuple[ast.Module, str]:
    found = chain[-1]
    origin = found.origin
    if not origin or not origin.endswith(".py"):
        raise HooksError(f"module {found.name!r} has no Python source ({origin or 'a namespace'}); bitty "
                         "checks hooks from their source without running them: make it a .py module")
    path = Path(origin)
    try:
        if path.stat().st_size > MAX_SOURCE_BYTES:
            raise HooksError(f"{origin} is over {MAX_SOURCE_BYTES:,} bytes; keep hooks small")
        text = path.read_text(encoding="utf-8")
        return ast.parse(text, filename=origin), origin
    except (OSError, UnicodeDecodeError) as exc:
        raise HooksError(f"cannot read {origin}: {exc}") from None
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        line = getattr(exc, "lineno", None)
        raise HooksError(f"cannot parse {origin}{f' line {line}' if line else ''}: "
                         f"{getattr(exc, 'msg', None) or type(exc).__name__}; fix the module") from None


def _is_hooks_class(chain: list[ModuleSpec], name: str, spec_dir: Path, seen: set[tuple[str, str]]) -> bool:
    """Whether class ``name`` of the module at the end of ``chain`` subclasses Hooks, following
    its bases through this module and modules it imports with ``from ... import``."""
    module = chain[-1].name
    if module in _HOOKS_HOMES and name == "Hooks":
        return True
    tree, origin = _source(chain)
    if (module, name) in seen or len(seen) > 20:
        return False
    seen.add((module, name))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    imported: dict[str, tuple[str, str]] = {}  # local name -> (module, name)
    modules: dict[str, str] = {}  # local name -> module (``import bitty.hooks as h``)
    package = module if chain[-1].submodule_search_locations else module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                imported[alias.asname or alias.name] = (base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                # ``import a.b`` binds ``a``; ``import a.b as h`` binds ``h`` to ``a.b``
                first = alias.name.split(".")[0]
                modules[alias.asname or first] = alias.name if alias.asname else first
    if name not in classes and name in imported:  # re-exported: follow it to its module
        source_module, source_name = imported[name]
        if source_module in _HOOKS_HOMES and source_name == "Hooks":
            return True
        if source_module:
            return _is_hooks_class(find_module(source_module, spec_dir), source_name, spec_dir, seen)
    if name not in classes:
        raise HooksError(f"module {module!r} ({origin}) defines no class {name!r}; check the name in `hooks:`")
    for base_node in classes[name].bases:
        if isinstance(base_node, ast.Name):
            if base_node.id in classes and base_node.id != name:
                if _is_hooks_class(chain, base_node.id, spec_dir, seen):
                    return True
            elif base_node.id in imported:
                source_module, source_name = imported[base_node.id]
                if source_module in _HOOKS_HOMES and source_name == "Hooks":
                    return True
                try:
                    if source_module and _is_hooks_class(find_module(source_module, spec_dir), source_name,
                                                         spec_dir, seen):
                        return True
                except HooksError:
                    continue
        elif isinstance(base_node, ast.Attribute) and base_node.attr == "Hooks":
            dotted = ast.unparse(base_node.value)
            head, _, rest = dotted.partition(".")
            full = modules.get(head, head) + (f".{rest}" if rest else "")
            if full in _HOOKS_HOMES:
                return True
    return False


def import_hooks(dotted: str, spec_dir: Path) -> type[Hooks]:
    """Import the hooks class ``dotted`` from the spec's folder or an installed package (never the
    current directory) and check that it is a Hooks subclass."""
    module_name, _, class_name = dotted.rpartition(".")
    chain = find_module(module_name, spec_dir)
    try:
        module = _load(chain)
        cls = getattr(module, class_name)
    except HooksError:
        raise
    except Exception as exc:
        raise HooksError(f"cannot import hooks {dotted!r}: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Hooks)):
        raise HooksError(f"hooks {dotted!r} is not a subclass of bitty.hooks.Hooks")
    return cls


def _load(chain: list[ModuleSpec]) -> Any:
    """Import each module of ``chain`` from the location found, reusing one already imported from
    the same file and refusing one of the same name imported from elsewhere."""
    module = None
    for found in chain:
        loaded = sys.modules.get(found.name)
        if loaded is not None:
            origin = getattr(getattr(loaded, "__spec__", None), "origin", None)
            if found.origin and origin and os.path.realpath(origin) != os.path.realpath(found.origin):
                raise HooksError(f"module {found.name!r} is already imported from {origin}, not {found.origin}; "
                                 "rename the hooks module")
            module = loaded
            continue
        new = importlib.util.module_from_spec(found)
        sys.modules[found.name] = new
        try:
            assert found.loader is not None
            found.loader.exec_module(new)
        except BaseException:
            del sys.modules[found.name]
            raise
        parent, _, child = found.name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, new)
        module = new
    return module


def hooks_class(spec: Spec) -> type[Hooks]:
    """The spec's hooks class (imported on first use), or the no-op default."""
    return import_hooks(spec.hooks, spec.path.parent) if spec.hooks else Hooks
