"""Python hooks for exchanges the spec language cannot express.

A spec names a ``Hooks`` subclass with ``hooks: package.module.Class``. Override one to three
methods; every default does nothing, so the spec keeps doing the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bitty.errors import BittyError

if TYPE_CHECKING:
    from bitty.spec.model import Spec


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


def import_hooks(dotted: str) -> type[Hooks]:
    module_name, _, class_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise BittyError(f"cannot import hooks {dotted!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Hooks)):
        raise BittyError(f"hooks {dotted!r} is not a subclass of bitty.hooks.Hooks")
    return cls


def hooks_class(spec: Spec) -> type[Hooks]:
    """The spec's hooks class (imported on first use), or the no-op default."""
    return import_hooks(spec.hooks) if spec.hooks else Hooks
