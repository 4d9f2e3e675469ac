"""The compiled spec: frozen dataclasses the engine reads (it never indexes raw YAML)."""

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
    records: Expr | None = None
    channel: Expr | None = None
    fields: tuple[tuple[str, Expr], ...] = ()
    symbol: Expr | None = None
    message: Expr | None = None
    fatal: bool = False
    log: str = "debug"


@dataclass(frozen=True)
class Subscribe:
    per: str
    batch_size: int | None
    messages: tuple[Template, ...]


@dataclass(frozen=True)
class Heartbeat:
    match: Expr
    timeout: float
    messages: tuple[Template, ...] = ()
    symbol: Expr | None = None
    channel: Expr | None = None
    last_trade_id: Expr | None = None
    trades_count: bool = False


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
    kind: Expr | None = None
    settle: Expr | None = None
    expiry: Expr | None = None
    strike: Expr | None = None
    right: Expr | None = None
    contract_size: Expr | None = None
    inverse: Expr | None = None
    size_unit: Expr | None = None
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestTrades:
    """``rest.trades``: the endpoint gaps are backfilled from (see bitty/backfill.py)."""

    url: Template
    records: Expr
    fields: tuple[tuple[str, Expr], ...]
    error: Expr | None = None
    paginate: str = "none"  # none | id | time | cursor
    cursor: Expr | None = None
    page_size: int | None = None
    max_pages: int = 100
    per_second: float = 1.0
    retries: int = 5


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
    heartbeat: Heartbeat | None = None
    trade_timeout: float | None = None
    idle_timeout: float = 60.0
    keepalive: Keepalive | None = None
    pong: Pong | None = None
    compression: str = "auto"
    bootstrap: Bootstrap | None = None
    symbol_list: SymbolList | None = None
    max_symbols: int | None = None
    max_frame_bytes: int = 4 * 1024 * 1024
    messages_per_second: float | None = None
    max_age: float | None = None
    headers: tuple[tuple[str, str], ...] = ()
    hooks: str | None = None
    description: str = ""
    docs: str = ""
    trade_ids: str = "opaque"  # opaque | sequential
    rest_trades: RestTrades | None = None
    # The spec's parameters as chosen (name, value), defaults included (bitty.spec.params).
    params: tuple[tuple[str, str], ...] = ()
    markets: tuple[str, ...] = ("spot",)  # symbols.markets: kinds of instrument collected
