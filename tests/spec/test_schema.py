"""Defaults live in the schema alone: the loader fills them, the model carries none."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitty.spec import load, model
from bitty.spec.load import load_spec
from bitty.spec.model import Spec
from bitty.spec.schema import defaults, fill_defaults

# Every optional block present, every defaulted key absent.
BARE = """\
name: bare
url: wss://example.invalid/ws
bootstrap:
  url: https://example.invalid/token
symbols:
  default: [BTC-USD]
  native: "{base}-{quote}"
subscribe:
  messages: [{type: subscribe, product_ids: "${symbols}"}]
heartbeat:
  match: type == 'heartbeat'
  timeout: 10
messages:
  trade:
    type: trade
    match: type == 'match'
    fields: {symbol: product_id, trade_id: trade_id, price: decimal(price), size: decimal(size),
             side: side, time: iso_time(time)}
  ack:
    type: ignore
    match: type == 'subscriptions'
  error:
    type: error
    match: type == 'error'
rest:
  trades:
    url: https://example.invalid/trades/${symbol}
    records: "@"
    fields: {trade_id: trade_id, price: decimal(price), size: decimal(size), side: side, time: iso_time(time)}
  latest:
    url: https://example.invalid/trades/${symbol}
    records: "@"
    fields: {trade_id: trade_id}
"""


def _kind(spec: Spec, name: str) -> model.MessageKind:
    return next(k for k in spec.messages if k.name == name)


# schema default path -> where the loaded model carries it
CARRIED: dict[str, Callable[[Spec], Any]] = {
    "$.version": lambda s: s.version,
    "$.description": lambda s: s.description,
    "$.docs": lambda s: s.docs,
    "$.bootstrap.method": lambda s: s.bootstrap.method,  # type: ignore[union-attr]
    "$.symbols.case": lambda s: s.symbols.case,
    "$.symbols.aliases": lambda s: s.symbols.aliases,
    "$.symbols.quotes": lambda s: list(s.symbols.quotes),
    "$.symbols.map": lambda s: s.symbols.explicit,
    "$.symbols.size_units": lambda s: s.symbols.size_units,
    "$.connection.max_frame_bytes": lambda s: s.max_frame_bytes,
    "$.connection.headers": lambda s: dict(s.headers),
    "$.subscribe.per": lambda s: s.subscribe.per,
    "$.heartbeat.messages": lambda s: list(s.heartbeat.messages),  # type: ignore[union-attr]
    "$.heartbeat.trades_count": lambda s: s.heartbeat.trades_count,  # type: ignore[union-attr]
    "$.trade_timeout": lambda s: s.trade_timeout,
    "$.idle_timeout": lambda s: s.idle_timeout,
    "$.compression": lambda s: s.compression,
    "$.messages.*.log": lambda s: _kind(s, "ack").log,
    "$.messages.*.fatal": lambda s: _kind(s, "error").fatal,
    "$.rest.trades.paginate.by": lambda s: s.rest_trades.paginate,  # type: ignore[union-attr]
    "$.rest.trades.paginate.max_pages": lambda s: s.rest_trades.max_pages,  # type: ignore[union-attr]
    "$.rest.trades.rate.per_second": lambda s: s.rest_trades.per_second,  # type: ignore[union-attr]
    "$.rest.trades.rate.retries": lambda s: s.rest_trades.retries,  # type: ignore[union-attr]
    "$.rest.latest.timeout": lambda s: s.rest_latest.timeout,  # type: ignore[union-attr]
    "$.rest.latest.per_second": lambda s: s.rest_latest.per_second,  # type: ignore[union-attr]
}
# defaults that are empty blocks, there so the defaults inside them are filled
BLOCKS = {"$.connection", "$.rest.trades.paginate", "$.rest.trades.rate"}


def test_every_schema_default_is_what_the_model_gets(tmp_path: Path) -> None:
    """A spec that leaves out every defaulted key loads with exactly the schema's defaults."""
    declared = defaults()
    assert set(declared) == set(CARRIED) | BLOCKS, "a new schema default needs a line in CARRIED"
    assert all(declared[path] == {} for path in BLOCKS)
    path = tmp_path / "bare.yaml"
    path.write_text(BARE)
    spec = load_spec(path)
    got = {where: carried(spec) for where, carried in CARRIED.items()}
    assert got == {where: declared[where] for where in CARRIED}
    assert all(type(got[w]) is type(declared[w]) or isinstance(declared[w], int) for w in CARRIED)


def test_no_model_field_has_a_python_default() -> None:
    """Model dataclasses declare no defaults: a value is given, or the schema declared it."""
    with_default = [
        f"{cls.__name__}.{field.name}"
        for _, cls in inspect.getmembers(model, dataclasses.is_dataclass)
        for field in dataclasses.fields(cls)
        if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    ]
    assert with_default == []


def test_the_loader_writes_no_fallback_values() -> None:
    """The loader reads raw["key"] for defaulted keys: no `.get(key, fallback)` anywhere in it."""
    tree = ast.parse(Path(load.__file__).read_text())
    fallbacks = [
        ast.unparse(node) for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
        and len(node.args) == 2
    ]
    assert fallbacks == []


def test_defaults_follow_the_branch_a_message_kind_takes() -> None:
    """`fatal` is filled on error kinds and `log` on ignore kinds, never on kinds without the key."""
    raw: dict[str, Any] = {"messages": {
        "t": {"type": "trade", "match": "a", "fields": {}},
        "i": {"type": "ignore", "match": "a"},
        "e": {"type": "error", "match": "a"},
        "given": {"type": "ignore", "match": "a", "log": "warning"},
    }}
    fill_defaults(raw)
    assert raw["messages"] == {
        "t": {"type": "trade", "match": "a", "fields": {}},
        "i": {"type": "ignore", "match": "a", "log": "debug"},
        "e": {"type": "error", "match": "a", "fatal": False},
        "given": {"type": "ignore", "match": "a", "log": "warning"},
    }
    assert raw["connection"] == {"max_frame_bytes": 4 * 1024 * 1024, "headers": {}}
