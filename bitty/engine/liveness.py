"""Asking the exchange's REST for a symbol's latest trade (``rest.latest``): the I/O half of
data liveness on exchanges without heartbeats.

The watchdog decides (``Watchdog.verdict`` returns a ``Check`` of the symbols silent for
``idle_timeout``, ``Watchdog.on_latest`` judges the answer); this module only fetches and maps
one answer, each GET waiting its turn in the exchange's ``Budget`` (``rest.latest.per_second``,
shared by every connection of the exchange), and ``Connection`` wires the two."""

from __future__ import annotations

import asyncio
import time as clock
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bitty.errors import BittyError
from bitty.lang.expr import evaluate_safely
from bitty.mapping import codec
from bitty.spec.model import RestLatest, Spec


class LatestError(BittyError):
    """The latest trade could not be had (unreachable, HTTP error, exchange error, bad body)."""


@dataclass(frozen=True)
class Latest:
    """The exchange's latest trade of a symbol: its id and/or time (None when it has none yet)."""

    trade_id: str | None
    time: datetime | None


class Budget:
    """Requests a second to one exchange, shared by all its connections: each request takes the
    next free slot (``1 / per_second`` after the previous one) and waits for it. Pure arithmetic
    on a monotonic clock, so it holds across connections without a lock."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self.interval = 1.0 / per_second
        self.next_free = float("-inf")

    def reserve(self, now: float) -> float:
        """Take the next slot: the seconds to wait from ``now`` until it."""
        slot = max(now, self.next_free)
        self.next_free = slot + self.interval
        return slot - now

    async def turn(self) -> None:
        delay = self.reserve(clock.monotonic())
        if delay > 0:
            await asyncio.sleep(delay)


# one budget per exchange (spec name) per event loop: every connection of a collector shares it
_budgets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Budget]] = weakref.WeakKeyDictionary()


def budget(exchange: str, per_second: float) -> Budget:
    """The request budget of ``exchange`` in the running event loop."""
    per_loop = _budgets.setdefault(asyncio.get_running_loop(), {})
    found = per_loop.get(exchange)
    if found is None or found.per_second != per_second:
        found = per_loop[exchange] = Budget(per_second)
    return found


# What a connection calls: (session, normalized symbol) -> the latest trade, or LatestError.
Fetch = Callable[[aiohttp.ClientSession, str], Awaitable[Latest]]


class LatestFetcher:
    """GETs ``rest.latest`` of one spec. ``rest_url`` replaces the URL's origin (a local exchange,
    a proxy), as ``--rest-url`` does for backfill."""

    def __init__(self, spec: Spec, rest_url: str | None = None) -> None:
        if spec.rest_latest is None:
            raise ValueError(f"spec {spec.name!r} has no rest.latest")
        self.spec = spec
        self.rest: RestLatest = spec.rest_latest
        self.rest_url = rest_url

    def url(self, symbol: str) -> str:
        url = str(self.rest.url.render({"symbol": self.spec.symbols.to_native(symbol)}))
        if self.rest_url:
            base, parts = urlsplit(self.rest_url), urlsplit(url)
            url = urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
        return url

    async def __call__(self, session: aiohttp.ClientSession, symbol: str) -> Latest:
        url = self.url(symbol)
        await budget(self.spec.name, self.rest.per_second).turn()  # not part of rest.latest.timeout
        try:
            async with asyncio.timeout(self.rest.timeout):
                async with session.get(url) as response:
                    raw = await response.read()
                    status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LatestError(f"GET {url}: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        if status >= 400:
            raise LatestError(f"GET {url}: HTTP {status}: {raw[:200].decode(errors='replace')}")
        try:
            body = codec.loads(raw)  # ids and times as the exchange wrote them, never floats
        except codec.DecodeError as exc:
            raise LatestError(f"GET {url}: not JSON: {exc}") from None
        return self.latest(body, url)

    def latest(self, body: Any, url: str = "rest.latest") -> Latest:
        """The latest trade in a decoded body (the largest time, else the largest id)."""
        rest = self.rest
        if rest.error is not None:
            error, _ = evaluate_safely(rest.error.fn, body)
            if error not in (None, False, "", [], {}):
                raise LatestError(f"GET {url}: exchange error: {error}")
        records, problem = evaluate_safely(rest.records.fn, body)
        if problem:
            raise LatestError(f"GET {url}: records: {problem}")
        if isinstance(records, dict):
            records = [records]
        if not isinstance(records, list):
            raise LatestError(f"GET {url}: records gave {type(records).__name__}, not a list")
        found: list[Latest] = []
        for record in records:
            scope = {"record": record, "frame": body}
            trade_id = time = None
            if rest.trade_id is not None:
                value, problem = evaluate_safely(rest.trade_id.fn, scope)
                if problem or value is None:
                    raise LatestError(f"GET {url}: trade_id: {problem or 'null'}")
                trade_id = str(value)
            if rest.time is not None:
                value, problem = evaluate_safely(rest.time.fn, scope)
                if problem or not isinstance(value, datetime):
                    raise LatestError(f"GET {url}: time: {problem or repr(value)}")
                time = value
            found.append(Latest(trade_id, time))
        if not found:
            return Latest(None, None)  # nothing ever traded (or nothing recent)
        return max(found, key=lambda latest: (latest.time is not None, latest.time or 0, _id_key(latest.trade_id)))


def _id_key(trade_id: str | None) -> tuple[int, str]:
    if trade_id is None:
        return (0, "")
    return (1, trade_id.rjust(40, "0")) if trade_id.isdigit() else (1, trade_id)
