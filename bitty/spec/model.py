"""The compiled spec: frozen dataclasses the engine reads (it never indexes raw YAML).

No field has a default: defaults live in the schema alone, filled by the loader
(``bitty.spec.schema.fill_defaults``), so every value here was given or declared there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bitty.lang.expr import Expr
from bitty.spec.symbols import SymbolRules
from bitty.spec.template import Template

TRADE_FIELDS = ("symbol", "trade_id", "price", "size", "side", "time")
CONNECTION_VARS = {"symbols", "id", "now_ms", "now_s", "connect_id", "bootstrap"}


@dataclass(frozen=True)
class MessageKind:
    name: str
    type: str  # trade | ignore | error | channel | reconnect
    match: Expr
    records: Expr | None
    channel: Expr | None
    fields: tuple[tuple[str, Expr], ...]
    symbol: Expr | None
    message: Expr | None
    fatal: bool
    log: str  # ignore kinds only ('' elsewhere)


@dataclass(frozen=True)
class Subscribe:
    per: str
    batch_size: int | None
    messages: tuple[Template, ...]


@dataclass(frozen=True)
class Heartbeat:
    match: Expr
    timeout: float
    messages: tuple[Template, ...]
    symbol: Expr | None
    channel: Expr | None
    last_trade_id: Expr | None
    trades_count: bool


@dataclass(frozen=True)
class Keepalive:
    interval: float
    message: Template


@dataclass(frozen=True)
class Pong:
    match: Expr
    reply: Template


@dataclass(frozen=True)
class Bootstrap:
    url: Template
    method: str
    keepalive_interval: Expr | None


@dataclass(frozen=True)
class SymbolList:
    url: str  # the first of ``urls``
    records: Expr
    native: Expr
    base: Expr | None
    quote: Expr | None
    filter: Expr | None
    # How the listing tells an instrument's kind, settlement, expiry, strike, right and contract
    # (bitty.markets.instruments reads them).
    kind: Expr | None
    settle: Expr | None
    expiry: Expr | None
    strike: Expr | None
    right: Expr | None
    contract_size: Expr | None
    inverse: Expr | None
    size_unit: Expr | None
    urls: tuple[str, ...]


@dataclass(frozen=True)
class RestTrades:
    """``rest.trades``: the endpoint gaps are backfilled from (see bitty/backfill.py)."""

    url: Template
    records: Expr
    fields: tuple[tuple[str, Expr], ...]
    error: Expr | None
    paginate: str  # none | id | time | cursor
    cursor: Expr | None
    page_size: int | None
    max_pages: int
    per_second: float
    retries: int


@dataclass(frozen=True)
class RestLatest:
    """``rest.latest``: a symbol's latest trade on the exchange, asked when the symbol is silent
    on an exchange without heartbeats (see bitty/engine/liveness.py)."""

    url: Template
    records: Expr
    trade_id: Expr | None
    time: Expr | None
    error: Expr | None
    timeout: float
    per_second: float  # requests a second shared by every connection of the exchange


REST_TRADES_VARS = {"symbol", "after_id", "from_id", "to_id", "from_s", "from_ms", "from_ns", "to_s", "to_ms", "cursor"}


@dataclass(frozen=True)
class Spec:
    name: str
    version: int
    path: Path
    url: Template
    symbols: SymbolRules
    default_symbols: tuple[str, ...]
    subscribe: Subscribe
    messages: tuple[MessageKind, ...]
    heartbeat: Heartbeat | None
    trade_timeout: float | None
    idle_timeout: float
    keepalive: Keepalive | None
    pong: Pong | None
    compression: str
    bootstrap: Bootstrap | None
    symbol_list: SymbolList | None
    max_symbols: int | None
    max_frame_bytes: int
    messages_per_second: float | None
    max_age: float | None
    headers: tuple[tuple[str, str], ...]
    hooks: str | None
    description: str
    docs: str
    trade_ids: str  # opaque | sequential | none (the exchange publishes none: derived)
    rest_trades: RestTrades | None
    rest_latest: RestLatest | None
    # The spec's parameters as chosen (name, value), defaults included (bitty.spec.params).
    params: tuple[tuple[str, str], ...]
    markets: tuple[str, ...]  # symbols.markets: kinds of instrument collected
