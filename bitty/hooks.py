"""The public home of :class:`Hooks`: ``from bitty.hooks import Hooks`` in a spec's hooks module."""

from bitty.spec.hooks import Hooks

__all__ = ["Hooks"]
