"""The bitty message format on NATS, version 1 (documented in docs/deploy.md).

Subjects, under a prefix (default ``bitty``):

    <prefix>.trades.<exchange>.<symbol>   one trade per message
    <prefix>.quarantine.<exchange>        a frame that could not be mapped, with the reason
    <prefix>.coverage.<exchange>.<symbol> a stream connected / disconnected (ledger event)
    <prefix>.gaps.<exchange>.<symbol>     a gap opened / bounded / settled (ledger event)
    <prefix>.runs.<run key>               a collector started / renewed its lease / stopped

Every message is a JSON object with ``"v": 1`` and a ``Bitty-Format`` header naming its kind
(``trade/1``, ``quarantine/1``, ``event/1``). Decimals are text exactly as the exchange sent
them, times ISO-8601 UTC, ids the exchange's own. A trade's ``Nats-Msg-Id`` is
``exchange/symbol/trade_id``, so JetStream drops the copies redundant collectors publish.

Subject tokens may not hold ``.``, ``*``, ``>`` or white space: a name's characters outside
``[A-Za-z0-9_-]`` are written ``~XX`` (hex of each UTF-8 byte), which reads back exactly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from bitty.trade import Quarantined, Trade

VERSION = 1
FORMAT = "Bitty-Format"
TRADE, QUARANTINE, EVENT = "trade/1", "quarantine/1", "event/1"
_UNSAFE = re.compile(rb"[^A-Za-z0-9_-]")


def token(name: str) -> str:
    """``name`` as one NATS subject token."""
    return _UNSAFE.sub(lambda m: b"~%02X" % m.group()[0], name.encode()).decode("ascii")


def trade_subject(prefix: str, trade: Trade) -> str:
    return f"{prefix}.trades.{token(trade.exchange)}.{token(trade.symbol)}"


def trade_id(trade: Trade) -> str:
    return f"{trade.exchange}/{trade.symbol}/{trade.trade_id}"


def encode_trade(trade: Trade) -> bytes:
    body = trade.as_json()
    body["v"] = VERSION  # type: ignore[assignment]
    return orjson.dumps(body)


def encode_quarantine(item: Quarantined) -> tuple[bytes, str]:
    """The message and its id (a hash of what the exchange sent: two collectors quarantine the same frame once)."""
    body = {"v": VERSION, "exchange": item.exchange, "spec_version": item.spec_version, "reason": item.reason,
            "frame": item.frame, "received_at": item.received_at.isoformat()}
    digest = hashlib.sha256(f"{item.exchange}\0{item.reason}\0{item.frame}".encode()).hexdigest()[:32]
    return orjson.dumps(body), f"quarantine/{item.exchange}/{digest}"


def encode_event(kind: str, fields: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": VERSION, "kind": kind, **fields}, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


class Foreign(ValueError):
    """A message that is not in bitty's format; its text says why."""


@dataclass
class Decoded:
    kind: str  # trade | quarantine | event
    trade: Trade | None = None
    quarantined: Quarantined | None = None
    event: dict[str, Any] | None = None


def decode(headers: dict[str, str] | None, data: bytes) -> Decoded:
    """A message read back; ``Foreign`` when it is not bitty's (or of a version this bitty does not read)."""
    kind = (headers or {}).get(FORMAT)
    if kind not in (TRADE, QUARANTINE, EVENT):
        raise Foreign(f"no {FORMAT} header of a known kind (got {kind!r})")
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Foreign(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise Foreign(f"not a version {VERSION} object")
    try:
        if kind == TRADE:
            return Decoded("trade", trade=Trade(
                _text(body, "exchange"), _text(body, "symbol"), _text(body, "trade_id"), _decimal(body, "price"),
                _decimal(body, "size"), _text(body, "side"), _time(body, "time"), _time(body, "received_at")))
        if kind == QUARANTINE:
            spec_version = body.get("spec_version")
            if not isinstance(spec_version, int):
                raise Foreign("spec_version is not an integer")
            return Decoded("quarantine", quarantined=Quarantined(
                _text(body, "exchange"), spec_version, _text(body, "reason"), _text(body, "frame"),
                _time(body, "received_at")))
    except KeyError as exc:
        raise Foreign(f"field {exc.args[0]!r} is missing") from None
    kind = body.get("kind")
    if not isinstance(kind, str):
        raise Foreign("an event without a kind")
    if kind not in EVENT_FIELDS:
        raise Foreign(f"an event of unknown kind {kind!r} (known: {', '.join(EVENT_FIELDS)})")
    missing = [k for k in EVENT_FIELDS[kind] if k not in body]
    if missing:
        raise Foreign(f"a {kind} event without {', '.join(missing)}")
    for key in EVENT_TIMES & body.keys():
        if body[key] is not None:
            try:
                datetime.fromisoformat(body[key])
            except (TypeError, ValueError):
                raise Foreign(f"{key} of a {kind} event is not an ISO-8601 time: {body[key]!r}") from None
    return Decoded("event", event=body)


# What ``bitty.storage.sinks.events.apply`` reads of each event: checked here, so an event it could
# not apply is refused as foreign (kept in quarantine) instead of failing the sink's transaction.
EVENT_FIELDS = {
    "run": ("key",),
    "connected": ("run", "exchange", "symbol", "at"),
    "disconnected": ("run", "exchange", "symbol", "at", "reason"),
    "gap_opened": ("key", "exchange", "symbol", "from_time", "to_time", "cause", "from_id", "to_id", "at"),
    "gap_bounded": ("key", "to_time", "to_id"),
    "gap_settled": ("key", "status", "reason", "at", "backfilled", "duplicates"),
    "run_counts": ("exchange", "started_at", "ended_at", "received", "stored", "duplicates", "quarantined"),
}
EVENT_TIMES = frozenset({"at", "since", "from_time", "to_time", "started_at", "ended_at", "alive_at", "stopped_at",
                         "lease_until"})


def _text(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise Foreign(f"{key} is not text")
    return value


def _decimal(body: dict[str, Any], key: str) -> Decimal:
    try:
        value = Decimal(_text(body, key))
    except InvalidOperation:
        raise Foreign(f"{key} {body[key]!r} is not a decimal") from None
    if not value.is_finite():
        raise Foreign(f"{key} {body[key]!r} is not finite")
    return value


def _time(body: dict[str, Any], key: str) -> datetime:
    try:
        value = datetime.fromisoformat(_text(body, key).replace("Z", "+00:00"))
    except ValueError:
        raise Foreign(f"{key} {body[key]!r} is not an ISO-8601 time") from None
    if value.tzinfo is None:
        raise Foreign(f"{key} {body[key]!r} has no time zone")
    return value


def time_of(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
