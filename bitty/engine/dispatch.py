"""Frames to actions, without I/O: ``Dispatcher.handle(data, received_at)``.

Like ``websockets``' ``Protocol``: the connection hands every text or binary frame to
``handle`` and applies what comes back; nothing here reads a socket, sleeps or looks at a
clock. A frame of good trades only (the usual one) comes back as the bare ``list`` of its
trades; anything else as ``Actions``: trades, heartbeats, quarantined items, replies to send
(pongs), exchange error messages, a restart reason or a fatal error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from bitty.errors import ExchangeError
from bitty.mapping.mapper import FrameTooLarge, Mapper, raw_text
from bitty.spec.hooks import Hooks
from bitty.spec.load import Spec
from bitty.trade import Quarantined, Trade

logger = logging.getLogger(__name__)

Variables = Callable[..., dict[str, Any]]  # template variables for a reply (id, now_ms, ...)


class Actions:
    """What one frame asks of the connection. Treat as read-only."""

    __slots__ = ("errors", "fatal", "heartbeats", "quarantined", "replies", "restart", "trades")

    def __init__(self, trades: list[Trade] | tuple[()] = (), *,
                 heartbeats: list[tuple[str | None, str | None]] | tuple[()] = (),
                 quarantined: list[Quarantined] | tuple[()] = (), replies: list[Any] | tuple[()] = (),
                 errors: list[str] | tuple[()] = (), restart: str | None = None,
                 fatal: ExchangeError | None = None) -> None:
        self.trades = trades
        self.heartbeats = heartbeats  # (normalized symbol or None for the connection, last trade id)
        self.quarantined = quarantined
        self.replies = replies  # values to send: a str as text, anything else as JSON
        self.errors = errors  # non-fatal exchange errors, to count and log
        self.restart = restart  # close and reconnect, with this reason
        self.fatal = fatal  # stop this stream for good

    def __repr__(self) -> str:
        shown = {name: getattr(self, name) for name in self.__slots__ if getattr(self, name)}
        return f"Actions({shown})"


NOTHING = Actions()
Result = list[Trade] | Actions


def decode_text(data: str) -> Any:
    """A text frame as JSON, or the text itself when it is not JSON: ``Mapper.decode`` of text,
    which ``Dispatcher.handle`` inlines (``_loads``, ``_NotJson``) for speed. Where frames are
    decoded changes (``Mapper.decode``), change these with it: a test compares them."""
    try:
        return _loads(data)
    except _NotJson:
        return data


_loads = orjson.loads
_NotJson = orjson.JSONDecodeError


class Dispatcher:
    """One connection's frames of one spec. ``channels`` (channel id -> native symbol) is per
    connection: ``reset()`` on every connect."""

    def __init__(self, spec: Spec, exchange: str, symbols: list[str], hooks: Hooks | None = None,
                 variables: Variables | None = None, label: str = "") -> None:
        self.spec = spec
        self.exchange = exchange
        self.label = label or exchange  # names the connection in log lines
        self.mapper = Mapper(spec, exchange)
        self.mapper.learn(symbols)
        self.channels: dict[str, str] = {}
        self._variables = variables or (lambda **extra: extra)
        # Only a hooks class that overrides decode costs a call per frame.
        self._decode_hook = hooks.decode if hooks is not None and type(hooks).decode is not Hooks.decode else None
        self._text_fast = self._decode_hook is None
        self._program = self.mapper.program

    def reset(self) -> None:
        """A new connection: forget the channel ids the old one was told."""
        self.channels = {}

    def decode(self, data: str | bytes) -> Any:
        """A frame's value: JSON decoded (binary frames decompressed first), then the hooks'
        ``decode``. Raises ValueError (FrameTooLarge included) with the reason."""
        frame = self.mapper.decode(data)
        if self._decode_hook is not None:
            frame = self._decode_hook(frame)
        return frame

    def handle(self, data: str | bytes, received_at: datetime) -> Result:
        """Map one frame: its trades (the usual frame) or the ``Actions`` it calls for."""
        if self._text_fast and type(data) is str:
            # decode_text, inline: the call is a tenth of a frame's mapping.
            try:
                frame = _loads(data)
            except _NotJson:
                frame = data
        else:
            try:
                frame = self.decode(data)
            except FrameTooLarge as exc:
                return Actions(quarantined=[self.quarantine(data[:4096], str(exc), received_at)])
            except ValueError as exc:
                return Actions(quarantined=[self.quarantine(data, str(exc), received_at)])
        program = self._program
        if program is not None:  # a frame of good trades, the usual one, in one call
            found = program(frame, received_at, self.channels)
            if found is not None:
                return found[1]
        return self.handle_exactly(data, frame, received_at)

    def handle_exactly(self, data: str | bytes, frame: Any, received_at: datetime) -> Actions:
        """A decoded frame through the mapper's exact path (every kind of message)."""
        outcome = self.mapper.handle_exactly(frame, received_at, self.channels)
        kind = outcome.kind
        if kind == "trade":
            rejected = [self.quarantine(data, f"{outcome.name}: {reason}", received_at) for reason in outcome.rejects]
            return Actions(outcome.trades, quarantined=rejected)
        if kind == "heartbeat":
            return Actions(heartbeats=[(outcome.symbol, outcome.last_trade_id)])
        if kind == "pong":
            assert self.spec.pong is not None
            return Actions(replies=[self.spec.pong.reply.render(self._variables(frame=frame))])
        if kind == "error":
            if outcome.fatal:
                return Actions(fatal=ExchangeError(f"{self.exchange} rejected the subscription: {outcome.message}"))
            return Actions(errors=[outcome.message])
        if kind == "reconnect":
            return Actions(restart=f"the exchange announced a disconnect: {outcome.message}")
        if kind == "unknown":
            return Actions(quarantined=[self.quarantine(data, outcome.message, received_at)])
        level = logging.getLevelName(outcome.log.upper()) if kind == "ignore" else logging.DEBUG
        logger.log(level, "%s : %s frame: %s", self.label, outcome.name, short(data))  # ignore, channel
        return NOTHING

    def quarantine(self, data: str | bytes, reason: str, at: datetime) -> Quarantined:
        return Quarantined(self.exchange, self.spec.version, reason, raw_text(data), at)


def short(data: str | bytes, limit: int = 200) -> str:
    text = raw_text(data)
    return text if len(text) <= limit else text[:limit] + "..."
