"""``bitty collect --config deploy.yaml``: one reviewed file describing a collector of a fleet.

    database: postgresql+psycopg://bitty@db.internal/bitty   # optional with nats
    nats: nats://nats.internal:4222                          # optional with database
    stream: {name: BITTY, prefix: bitty, replicas: 3, duplicate_window: 120, max_age: 604800}
    name: collector-a1                                       # optional, default host:pid
    shard: 0/2                                               # optional
    spill_dir: /var/lib/bitty/spill                          # optional
    exchanges:                                               # exchange -> symbols ([] = the spec's defaults)
      coinbase: [BTC-USD, ETH-USD]
      kraken: []

Unknown keys are errors (a typo must not silently collect the wrong thing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bitty.errors import BittyError
from bitty.pipeline import CollectOptions
from bitty.storage.sinks.nats import StreamSettings

KEYS = {"database", "nats", "stream", "name", "shard", "spill_dir", "exchanges"}
STREAM_KEYS = {"name", "prefix", "replicas", "duplicate_window", "max_age", "retention", "storage"}


def load(path: str) -> tuple[CollectOptions, dict[str, list[str]]]:
    """Collect options and the symbols per exchange from a deployment file."""
    try:
        raw: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BittyError(f"{path}: cannot read: {exc}") from None
    if not isinstance(raw, dict):
        raise BittyError(f"{path}: expected a mapping of {', '.join(sorted(KEYS))}")
    for key in raw:
        if key not in KEYS:
            raise BittyError(f"{path}: $.{key}: unknown key (known: {', '.join(sorted(KEYS))})")
    exchanges = raw.get("exchanges")
    if not isinstance(exchanges, dict) or not exchanges:
        raise BittyError(f"{path}: $.exchanges: expected a mapping of exchange name -> list of symbols")
    symbols: dict[str, list[str]] = {}
    for name, listed in exchanges.items():
        if listed is None:
            listed = []
        if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
            raise BittyError(f"{path}: $.exchanges.{name}: expected a list of symbols")
        symbols[str(name)] = listed
    stream = raw.get("stream") or {}
    if not isinstance(stream, dict):
        raise BittyError(f"{path}: $.stream: expected a mapping")
    for key in stream:
        if key not in STREAM_KEYS:
            raise BittyError(f"{path}: $.stream.{key}: unknown key (known: {', '.join(sorted(STREAM_KEYS))})")
    if raw.get("database") is None and raw.get("nats") is None:
        raise BittyError(f"{path}: give database, nats or both")
    options = CollectOptions(exchanges=list(symbols), db=raw.get("database"), nats=raw.get("nats"),
                             nats_stream=StreamSettings(**stream), shard=_text(raw, "shard", path),
                             name=_text(raw, "name", path), spill_dir=raw.get("spill_dir") or "bitty-spill")
    return options, symbols


def _text(raw: dict[str, Any], key: str, path: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise BittyError(f"{path}: $.{key}: expected text, e.g. {'0/2' if key == 'shard' else 'collector-a1'}")
    return value
