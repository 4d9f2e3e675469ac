"""The original bitty API as an adapter onto the one engine: subclass ``BaseConsumer``,
set ``url`` and ``exchange_name``, override ``process_message`` and
``make_subscribe_payload`` (and ``make_heartbeat_payload`` with ``enable_heartbeat``).

``BaseConsumer(symbols, spec=...)`` without overrides is the spec-driven ``Connection``
itself; an override only swaps in what it replaces (``LegacyFrames`` for ``process_message``,
the payload for the subscribe messages)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp

from bitty.engine.connection import Connection, Frames, Sends
from bitty.engine.dispatch import Actions, Dispatcher
from bitty.errors import BittyError
from bitty.lang.functions import iso_time, to_decimal, to_text
from bitty.mapping.mapper import raw_text
from bitty.trade import Quarantined, Trade

logger = logging.getLogger(__name__)


class BaseConsumer(Connection):
    """One websocket connection carrying a list of symbols, kept alive until ``stop()``."""

    _spec_dispatcher: Dispatcher

    def process_message(self, message: str | bytes) -> dict[str, Any] | list[dict[str, Any]] | None:
        """Turn one frame into message dicts (``type``: match/trade, heartbeat, error) or None.

        Subclasses of the original API override this. The spec-driven default maps the frame
        with the spec and returns the trades and heartbeat it carries as dicts."""
        if self.spec is None:
            raise NotImplementedError("must implement process_message or pass spec=")
        dispatcher = self.frames if isinstance(self.frames, Dispatcher) else self._spec_dispatcher
        outcome = dispatcher.mapper.handle(dispatcher.decode(message), _now(), dispatcher.channels)
        if outcome.kind == "trade":
            return [{"type": "trade", **t.as_row()} for t in outcome.trades]
        if outcome.kind == "heartbeat":
            return {"type": "heartbeat", "product_id": outcome.symbol, "last_trade_id": outcome.last_trade_id}
        if outcome.kind == "error":
            return {"type": "error", "message": outcome.message}
        return None

    def make_subscribe_payload(self) -> Any:
        """The subscribe message (a dict sent as JSON, or a str sent as text). The spec-driven
        default returns the list of all subscribe messages of this connection."""
        if self.spec is None:
            raise NotImplementedError("must implement make_subscribe_payload or pass spec=")
        return self.subscription.messages()

    def make_heartbeat_payload(self) -> Any:
        """The message that turns heartbeats on, or None. Called only if enable_heartbeat."""
        return self.subscription.heartbeat_messages()

    # --- the engine's extension points, from the original API -----------------------------

    def _subscription(self, url: str | None, bootstrap_url: str | None) -> Sends:
        if self.spec is not None:
            return super()._subscription(url, bootstrap_url)
        if url is not None:
            self.url = url
        if self.url is None:
            raise BittyError(f"need url for consumer {type(self).__name__}")
        return Plain(self)

    def _frames(self) -> Frames:
        if self.spec is not None:
            self._spec_dispatcher = self._new_dispatcher()
            if type(self).process_message is BaseConsumer.process_message:
                return self._spec_dispatcher
        return LegacyFrames(self)

    def _messages_to_send(self) -> list[Any]:
        cls = type(self)
        if cls.make_subscribe_payload is BaseConsumer.make_subscribe_payload and \
                cls.make_heartbeat_payload is BaseConsumer.make_heartbeat_payload:
            return super()._messages_to_send()
        if cls.make_subscribe_payload is BaseConsumer.make_subscribe_payload:
            messages = self._subscribe_messages()
        else:
            messages = [self.make_subscribe_payload()]
        if self.enable_heartbeat:
            extra = self.make_heartbeat_payload()
            if extra is not None:
                messages += extra if self.spec is not None else [extra]
        return messages


class Plain:
    """What a consumer without a spec sends on its own: nothing but its ``make_*_payload``
    (see ``BaseConsumer._messages_to_send``), to its ``url``, with the engine's default limits."""

    keepalive_interval: float | None = None
    max_frame_bytes = 4 * 1024 * 1024
    pace = 0.0

    def __init__(self, consumer: BaseConsumer) -> None:
        self.consumer = consumer

    @property
    def headers(self) -> dict[str, str]:
        return {}

    def new_connection(self) -> None:
        pass

    async def fetch_bootstrap(self, session: aiohttp.ClientSession) -> None:
        pass

    def url(self) -> str:
        assert self.consumer.url is not None
        return self.consumer.url

    def messages(self) -> list[Any]:
        return []

    def heartbeat_messages(self) -> list[Any] | None:
        return None

    def keepalive_message(self) -> Any:
        return None

    def liveness(self) -> tuple[bool, bool, bool]:
        # process_message's heartbeats carry the last trade id, connection-wide
        return self.consumer.enable_heartbeat, False, False


class LegacyFrames:
    """Frames through a subclass's ``process_message``, its message dicts turned into actions."""

    def __init__(self, consumer: BaseConsumer) -> None:
        self.consumer = consumer

    def reset(self) -> None:
        dispatcher = getattr(self.consumer, "_spec_dispatcher", None)
        if dispatcher is not None:  # the spec's mapping behind a process_message that calls super()
            dispatcher.reset()

    def handle(self, data: str | bytes, received_at: datetime) -> Actions:
        consumer = self.consumer
        try:
            messages = consumer.process_message(data)
        except Exception:
            logger.exception("%s : process_message failed", consumer.consumer_id)
            return Actions(quarantined=[self._quarantine(data, "process_message raised")])
        if messages is None:
            return Actions()
        trades: list[Trade] = []
        heartbeats: list[tuple[str | None, str | None]] = []
        quarantined: list[Quarantined] = []
        for msg in messages if isinstance(messages, list) else [messages]:
            msg_type = msg.get("type")
            if msg_type == "heartbeat":
                heartbeats.append((msg.get("product_id"), to_text(msg.get("last_trade_id"))))
            elif msg_type in ("match", "trade", "last_match"):
                trade = trade_from_dict(consumer.exchange_name, msg)
                if trade is None:
                    quarantined.append(self._quarantine(data, f"incomplete trade message: {msg!r}"))
                else:
                    trades.append(trade)
            elif msg_type == "error":
                logger.warning("%s : dropping message %s", consumer.consumer_id, msg)
        return Actions(trades, heartbeats=heartbeats, quarantined=quarantined)

    def _quarantine(self, data: str | bytes, reason: str) -> Quarantined:
        consumer = self.consumer
        version = consumer.spec.version if consumer.spec else 0
        return Quarantined(consumer.exchange_name, version, reason, raw_text(data), _now())


def trade_from_dict(exchange: str, msg: dict[str, Any]) -> Trade | None:
    """A trade from the original API's message dict, or None when a field is missing."""
    price = to_decimal(msg.get("price"))
    size = to_decimal(msg.get("size"))
    moment = msg.get("time")
    if not isinstance(moment, datetime):
        moment = iso_time(moment)
    side = msg.get("side")
    symbol = msg.get("symbol") or msg.get("product_id")
    trade_id = to_text(msg.get("trade_id"))
    if None in (price, size, moment, symbol, trade_id) or side not in ("buy", "sell"):
        return None
    assert isinstance(price, Decimal) and isinstance(size, Decimal) and moment is not None
    return Trade(msg.get("exchange_name") or exchange, str(symbol), str(trade_id), price, size,
                 str(side), moment, _now())


def _now() -> datetime:
    return datetime.now(UTC)
