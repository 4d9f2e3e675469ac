"""Where the engine's public names have always been imported from.

The engine itself: ``connection`` (the socket loop), ``dispatch`` (frames to actions),
``watchdog`` (restart verdicts), ``reconnect``, ``keepalive``, ``subscribe``, ``events``;
``legacy`` adapts the original subclass API (``BaseConsumer``) onto it."""

from __future__ import annotations

from bitty.engine.events import Stats, StreamEvent
from bitty.engine.legacy import BaseConsumer
from bitty.engine.reconnect import HEALTHY_AFTER, ServerClosed

__all__ = ["HEALTHY_AFTER", "BaseConsumer", "ServerClosed", "Stats", "StreamEvent"]
