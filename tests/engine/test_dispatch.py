"""Frames to actions without a socket: ``Dispatcher.handle`` called directly."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bitty.engine.dispatch import NOTHING, Actions, Dispatcher, decode_text
from bitty.spec.load import parse_spec
from tests.conftest import SPECS
from tests.engine.test_consumer import SPEC, heartbeat, match

AT = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def dispatcher(spec: Any = SPEC) -> Dispatcher:
    return Dispatcher(spec, "testex", ["BTC-USD", "ETH-USD"], variables=lambda **extra: {"id": 1, **extra})


def handle(frame: Any, spec: Any = SPEC) -> Any:
    return dispatcher(spec).handle(frame if isinstance(frame, (str, bytes)) else json.dumps(frame), AT)


def test_a_frame_of_good_trades_is_its_list_of_trades() -> None:
    """The usual frame comes back as the bare list of its trades, received_at as given."""
    trades = handle(match(1))
    assert isinstance(trades, list)
    assert [(t.symbol, t.trade_id, str(t.price), t.received_at) for t in trades] == [("BTC-USD", "1", "100.5", AT)]


def test_heartbeat_becomes_a_heartbeat_action() -> None:
    """A heartbeat frame is (normalized symbol, last trade id), nothing else."""
    actions = handle(heartbeat("ETH-USD", 9))
    assert isinstance(actions, Actions)
    assert actions.heartbeats == [("ETH-USD", "9")] and not actions.trades and actions.restart is None


def test_server_ping_becomes_a_rendered_reply() -> None:
    """An application ping is answered: the reply template rendered with the ping's values."""
    assert handle({"type": "ping", "n": 42}).replies == [{"type": "pong", "echo": 42}]


def test_fatal_and_ordinary_exchange_errors() -> None:
    """A rejected subscription is a fatal error naming the reason; another error is only reported."""
    fatal = handle({"type": "error", "message": "Failed to subscribe", "reason": "FOO-BAR is not a valid product"})
    assert fatal.fatal is not None and "testex rejected the subscription: FOO-BAR is not a valid product" in str(fatal.fatal)
    ordinary = handle({"type": "error", "message": "slow down"})
    assert ordinary.errors == ["slow down"] and ordinary.fatal is None


def test_reconnect_notice_is_a_restart_reason() -> None:
    """A `reconnect` kind asks for a restart with the exchange's message."""
    text = (SPECS / "positive" / "testex.yaml").read_text().replace(
        "  rejected:\n", "  notice:\n    type: reconnect\n    match: type == 'reconnect'\n    message: reason\n  rejected:\n")
    spec = parse_spec(text, Path("testex.yaml"))
    actions = handle({"type": "reconnect", "reason": "maintenance"}, spec)
    assert actions.restart == "the exchange announced a disconnect: maintenance"


def test_bad_frames_are_quarantined_with_their_reason() -> None:
    """Unknown kinds, broken records and undecodable binary frames become quarantined items."""
    unknown = handle({"type": "surprise"}).quarantined
    assert [q.reason for q in unknown] == ["no message kind matches this frame"]
    broken = handle({**match(1), "price": "NaN"}).quarantined
    assert len(broken) == 1 and "price is missing or not a positive number" in broken[0].reason
    assert broken[0].exchange == "testex" and broken[0].frame and broken[0].received_at == AT
    binary = handle(b"\x00\x01binary garbage").quarantined
    assert len(binary) == 1 and binary[0].frame.startswith("base64:")


def test_binary_frames_are_decompressed() -> None:
    """A gzip binary frame is decoded like its text."""
    trades = handle(gzip.compress(json.dumps(match(5)).encode()))
    assert [t.trade_id for t in trades] == ["5"]


def test_frames_that_ask_nothing_return_the_shared_empty_actions() -> None:
    """A matched frame of a kind to ignore returns NOTHING (no allocation per frame)."""
    text = (SPECS / "positive" / "testex.yaml").read_text().replace(
        "  rejected:\n", "  ack:\n    type: ignore\n    match: type == 'subscriptions'\n  rejected:\n")
    spec = parse_spec(text, Path("testex.yaml"))
    assert handle({"type": "subscriptions"}, spec) is NOTHING


def test_non_json_text_is_the_text_itself() -> None:
    """A text frame that is not JSON is matched as its string (and quarantined when nothing matches)."""
    actions = handle("{not json")
    assert [q.frame for q in actions.quarantined] == ["{not json"]


def test_the_inline_text_decode_is_the_mappers() -> None:
    """The hot path's inline decode of text frames gives what Mapper.decode gives (numbers
    included), so a change to how frames are decoded cannot bypass the engine."""
    d = dispatcher()
    frames = [json.dumps({**match(1), "price": 100.5, "size": 1e-8}), '{"n": 12345678901234567890}', "not json"]
    for text in frames:
        assert decode_text(text) == d.decode(text) == d.mapper.decode(text)
    trade_frame = json.dumps({**match(2), "price": "37021.47"})
    assert d.handle(trade_frame, AT) == d.mapper.handle(d.decode(trade_frame), AT).trades
