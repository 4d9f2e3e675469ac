"""Turning one raw websocket frame into what it means: trades, a heartbeat, a ping to answer,
an exchange error, an ack to ignore, or a reason to quarantine it.

Pure and synchronous: no sockets, no clocks (the caller passes ``received_at``), so every spec
can be tested frame by frame.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from jmespath.exceptions import JMESPathError

from bitty.lang.compiler import compile_record
from bitty.lang.expr import evaluate_safely
from bitty.lang.functions import to_text
from bitty.mapping.bounds import check_amount, check_time, latest_time
from bitty.mapping.codec import NOT_JSON, DecodeError, dumps, loads, plain_json
from bitty.mapping.program import compile_program
from bitty.spec.load import MessageKind, Spec
from bitty.trade import Trade, isoformat

SIDES = {"buy": "buy", "sell": "sell", "Buy": "buy", "Sell": "sell", "BUY": "buy", "SELL": "sell"}


class FrameTooLarge(ValueError):
    """A frame (or what it decompresses to) is over the spec's max_frame_bytes."""


@dataclass(slots=True)
class Outcome:
    """What one frame meant. ``kind`` is trade, heartbeat, pong, error, reconnect, channel, ignore
    or unknown."""

    kind: str
    trades: list[Trade] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)  # reasons, one per rejected record
    symbol: str | None = None  # heartbeat: normalized symbol (None: the whole connection); channel: native
    last_trade_id: str | None = None
    reply: Any = None  # pong: the reply value
    message: str = ""  # error text, or why a frame is unknown
    fatal: bool = False
    name: str = ""  # the message kind's name
    log: str = "debug"


def decompress(data: bytes, method: str, limit: int) -> bytes:
    """Decompress a binary frame, refusing to produce more than ``limit`` bytes."""
    if method == "none":
        return data
    if method == "auto":
        if data[:2] == b"\x1f\x8b":
            wbits = 16 + zlib.MAX_WBITS
        elif len(data) > 1 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
            wbits = zlib.MAX_WBITS
        else:
            wbits = -zlib.MAX_WBITS
    else:
        wbits = 16 + zlib.MAX_WBITS if method == "gzip" else -zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"binary frame does not decompress ({method}): {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise FrameTooLarge(f"frame decompresses to more than {limit} bytes")
    return out


def compress(data: bytes, method: str) -> bytes:
    if method == "gzip":
        return gzip.compress(data)
    if method == "deflate":
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return packer.compress(data) + packer.flush()
    raise ValueError(f"unknown compression {method!r}")


def raw_text(data: str | bytes) -> str:
    """A frame as text for the quarantine: text as is, binary as base64."""
    if isinstance(data, str):
        return data
    return "base64:" + base64.b64encode(data).decode()


class Mapper:
    """Maps decoded frames of one spec. ``channels`` (channel id -> native symbol) is per connection."""

    def __init__(self, spec: Spec, exchange: str | None = None) -> None:
        self.spec = spec
        self.exchange = exchange or spec.name
        self.known: dict[str, str] = {}  # native -> normalized, seeded with subscribed symbols
        self._to_normalized = spec.symbols.to_normalized
        self._trade_fields = {
            kind.name: {name: expr.fn for name, expr in kind.fields} for kind in spec.messages if kind.type == "trade"
        }
        # Per trade kind, all fields as one generated function of (record, frame) returning a
        # tuple, so a record costs one call and no {"record": ..., "frame": ...} object.
        self._records = {
            kind.name: (compile_record([expr.ast for _, expr in kind.fields], ("record", "frame")),
                        _Positions(*(_position(kind.fields, n) for n in _Positions._fields)))  # type: ignore[arg-type]
            for kind in spec.messages if kind.type == "trade"
        }
        # The generated fast path (bitty.mapping.program): (kind name, trades) for a frame of good
        # trades, None for any other frame. Readers call it first and ``handle_exactly`` after a None.
        self.program = compile_program(spec, self.exchange, self.known, SIDES, trade_text, derived_id)

    def learn(self, normalized_symbols: list[str]) -> None:
        for symbol in normalized_symbols:
            native = self.spec.symbols.to_native(symbol)
            self.known[native] = symbol
            self.known[native.upper()] = symbol
            self.known[native.lower()] = symbol

    def normalize(self, native: Any) -> str | None:
        if not isinstance(native, str):
            native = to_text(native)
            if native is None:
                return None
        found = self.known.get(native)
        return found if found is not None else self._to_normalized(native)

    def decode(self, data: str | bytes) -> Any:
        """Decoded JSON of a frame, numbers with their own digits (``bitty.mapping.codec``); a
        text frame that is not JSON is its string.

        Raises ValueError (with the reason) for binary frames that are not JSON.
        """
        if isinstance(data, bytes):
            if self.spec.compression == "auto":  # a binary frame may be plain JSON already
                frame = plain_json(data)
                if frame is not NOT_JSON:
                    return frame
            data = decompress(data, self.spec.compression, self.spec.max_frame_bytes)
            try:
                return loads(data)
            except DecodeError as exc:
                raise ValueError(f"binary frame is not JSON after decompression: {exc}") from None
        try:
            return loads(data)
        except DecodeError:
            return data

    def handle(self, frame: Any, received_at: datetime, channels: dict[str, str] | None = None) -> Outcome:
        if self.program is not None:  # a frame of good trades, in one call; None for anything else
            found = self.program(frame, received_at, channels)
            if found is not None:
                return Outcome("trade", found[1], name=found[0])
        return self.handle_exactly(frame, received_at, channels)

    def handle_exactly(self, frame: Any, received_at: datetime, channels: dict[str, str] | None = None) -> Outcome:
        """``handle`` without the fast path: the reference it is tested against."""
        spec = self.spec
        if spec.pong is not None and _truthy(spec.pong.match.fn, frame):
            return Outcome("pong", reply=frame)
        heartbeat = spec.heartbeat
        if heartbeat is not None and _truthy(heartbeat.match.fn, frame):
            return self._heartbeat(frame, channels)
        for kind in spec.messages:
            if not _truthy(kind.match.fn, frame):
                continue
            if kind.type == "trade":
                return self._trades(kind, frame, received_at, channels)
            if kind.type == "ignore":
                return Outcome("ignore", name=kind.name, log=kind.log)
            if kind.type in ("error", "reconnect"):
                text = None
                if kind.message is not None:
                    text, _ = evaluate_safely(kind.message.fn, frame)
                message = to_text(text) if text is not None else None
                if message is None:
                    message = frame if isinstance(frame, str) else _json_text(frame)
                return Outcome(kind.type, name=kind.name, message=message, fatal=kind.fatal)
            if kind.type == "channel":
                channel, _ = evaluate_safely(kind.channel.fn, frame)  # type: ignore[union-attr]
                native, _ = evaluate_safely(kind.symbol.fn, frame)  # type: ignore[union-attr]
                if channels is not None and channel is not None and native is not None:
                    channels[str(to_text(channel))] = str(to_text(native))
                return Outcome("channel", name=kind.name, symbol=to_text(native))
        return Outcome("unknown", message="no message kind matches this frame")

    def _heartbeat(self, frame: Any, channels: dict[str, str] | None) -> Outcome:
        heartbeat = self.spec.heartbeat
        assert heartbeat is not None
        symbol = None
        if heartbeat.symbol is not None:
            symbol = to_text(evaluate_safely(heartbeat.symbol.fn, frame)[0])
        elif heartbeat.channel is not None:
            channel = to_text(evaluate_safely(heartbeat.channel.fn, frame)[0])
            symbol = (channels or {}).get(channel or "")
        last = None
        if heartbeat.last_trade_id is not None:
            last = to_text(evaluate_safely(heartbeat.last_trade_id.fn, frame)[0])
        normalized = self.normalize(symbol) if symbol is not None else None
        return Outcome("heartbeat", symbol=normalized, last_trade_id=last)

    def _trades(self, kind: MessageKind, frame: Any, received_at: datetime,
                channels: dict[str, str] | None) -> Outcome:
        out = Outcome("trade", name=kind.name)
        if kind.records is not None:
            records, error = evaluate_safely(kind.records.fn, frame)
            if error:
                out.rejects.append(f"records: {error}")
                return out
            if records is None:
                records = []
            elif not isinstance(records, list):
                records = [records]
        else:
            records = [frame]
        channel_symbol = None
        if kind.channel is not None:
            channel = to_text(evaluate_safely(kind.channel.fn, frame)[0])
            channel_symbol = (channels or {}).get(channel or "")
            if channel_symbol is None:
                out.rejects.append(f"channel {channel!r} was never assigned to a symbol")
                return out
        evaluate, at = self._records[kind.name]
        seen: dict[tuple[str, str], int] = {}
        exchange = self.exchange
        for record in records:
            try:
                values = evaluate(record, frame)
            except Exception:
                out.rejects.append(self._field_error(kind, record, frame))
                continue
            trade_or_reason = self._trade(values, at, channel_symbol, exchange, received_at, seen)
            if type(trade_or_reason) is Trade:
                out.trades.append(trade_or_reason)
            else:
                out.rejects.append(trade_or_reason)  # type: ignore[arg-type]
        return out

    def _field_error(self, kind: MessageKind, record: Any, frame: Any) -> str:
        """Which field failed, and how: the first one in spec order, evaluated on its own."""
        context = {"record": record, "frame": frame}
        for name, fn in self._trade_fields[kind.name].items():
            try:
                fn(context)
            except Exception as exc:
                return f"{name}: {type(exc).__name__}: {exc}"
        return "fields: evaluation failed"

    def _trade(self, values: tuple[Any, ...], at: _Positions, channel_symbol: str | None, exchange: str,
               received_at: datetime, seen: dict[tuple[str, str], int]) -> Trade | str:
        native = channel_symbol if at.symbol is None else values[at.symbol]
        if native is None:
            return "symbol is missing"
        symbol = self.known.get(native) if type(native) is str else None
        if symbol is None:
            symbol = self.normalize(native)
            if symbol is None:
                return f"cannot normalize symbol {native!r}"
        price, size = values[at.price], values[at.size]
        problem = _amount_problem("price", price) or _amount_problem("size", size)
        if problem is not None:
            return problem
        raw_side = values[at.side]
        side = SIDES.get(raw_side) if isinstance(raw_side, str) else None
        if side is None:
            return f"side is not buy or sell: {raw_side!r}"
        moment = values[at.time]
        if not isinstance(moment, datetime):
            return f"time is missing or unreadable: {moment!r}"
        reason = check_time(moment, latest_time(received_at))
        if reason is not None:
            return f"time {reason}"
        if at.trade_id is None:  # the spec says the exchange publishes no ids (trade_ids: none)
            text = trade_text(moment, price, size, side)
            seen[symbol, text] = n = seen.get((symbol, text), 0) + 1
            trade_id = derived_id(text, n)
        else:
            raw_id = values[at.trade_id]
            trade_id = raw_id if type(raw_id) is str else to_text(raw_id)  # type: ignore[assignment]
            if not trade_id:
                return (f"trade_id is missing, empty or not a scalar ({raw_id!r}); the exchange publishes trade "
                        f"ids (trade_ids: {self.spec.trade_ids}), so none is made up")
        return Trade(exchange, symbol, trade_id, price, size, side, moment, received_at)


class _Positions(NamedTuple):
    """Where each trade field sits in a kind's evaluated tuple (None: the kind has no such field)."""

    symbol: int | None
    trade_id: int | None
    price: int
    size: int
    side: int
    time: int


def _position(fields: tuple[tuple[str, Any], ...], name: str) -> int | None:
    return next((i for i, (field_name, _) in enumerate(fields) if field_name == name), None)


def derive_trade_id(moment: datetime, price: Decimal, size: Decimal, side: str, occurrence: int) -> str:
    """A deterministic id for exchanges that publish none: the same trade replayed or received
    again after a reconnect gets the same id; identical trades within one frame are numbered."""
    return derived_id(trade_text(moment, price, size, side), occurrence)


def trade_text(moment: datetime, price: Decimal, size: Decimal, side: str) -> str:
    """What a derived id is made of, but its occurrence. Equal texts are equal trades, so it is
    also the key that numbers identical trades: a text hashes faster than fresh Decimals."""
    return f"{isoformat(moment)}|{price.normalize()}|{size.normalize()}|{side}|"


def derived_id(text: str, occurrence: int) -> str:
    return "d" + hashlib.blake2b(f"{text}{occurrence}".encode(), digest_size=10).hexdigest()


def _json_text(value: Any) -> str:
    """A decoded frame as JSON text, for messages: numbers with their digits (``codec.dumps``);
    anything JSON cannot hold (a hooks decode may produce it) by its repr."""
    try:
        return dumps(value).decode()
    except (TypeError, ValueError, OverflowError):
        return json.dumps(value, default=repr)


def _truthy(fn: Any, frame: Any) -> bool:
    try:
        value = fn(frame)
    except (JMESPathError, TypeError, ValueError, AttributeError):  # as evaluate_safely
        return False
    return value is not None and value is not False and value != "" and value != [] and value != {}


def _amount_problem(name: str, value: Any) -> str | None:
    """Why a mapped price or size cannot be stored, or None."""
    if type(value) is not Decimal:
        return f"{name} is missing or not a positive number: {value!r}"
    reason = check_amount(value)
    return None if reason is None else f"{name} {reason}"
