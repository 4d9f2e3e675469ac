"""Fetching the trades of a gap from the exchange's REST endpoint (``rest.trades`` in the spec).

``Backfiller.fill(window)`` walks the endpoint's pages from the start of the gap to its end (for
a gap with no known end, up to the exchange's latest trade), maps every record with the same
``Mapper`` the websocket uses, keeps the trades inside the gap and says whether the gap is now
complete (``closed``) or cannot be (``unrecoverable``, with the reason). Requests share one
budget per exchange (``rate.per_second``); HTTP 429 honours Retry-After. Storing the trades and
updating the ledger is the caller's business.

A short page is not taken for the last one (servers cap pages below what was asked for); an
empty page, or one holding nothing new, is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from bitty.backoff import backoff, retry_after
from bitty.continuity.sequence import as_int, missing_ids
from bitty.lang.expr import compile_expression, evaluate_safely
from bitty.mapping import codec
from bitty.mapping.mapper import Mapper
from bitty.spec.load import MessageKind, RestTrades, Spec
from bitty.trade import Trade

logger = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[Any]]


class BackfillError(Exception):
    """A request that failed for good (after the retries the spec allows)."""


@dataclass(frozen=True)
class Window:
    """The blind interval of one symbol: after trade ``after_id`` at ``from_time``, up to trade
    ``to_id`` at ``to_time`` (either may be unknown)."""

    symbol: str
    from_time: datetime
    to_time: datetime | None = None
    after_id: str | None = None
    to_id: str | None = None


@dataclass
class Result:
    status: str  # closed | unrecoverable
    reason: str
    trades: list[Trade] = field(default_factory=list)
    requests: int = 0
    rejects: int = 0


class RateBudget:
    """At most ``per_second`` requests per second, spaced evenly."""

    def __init__(self, per_second: float, sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / per_second
        self.sleep = sleep
        self.clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = self.clock()
            at = max(now, self._next)
            self._next = at + self.interval
            if at > now:
                await self.sleep(at - now)

    def penalize(self, seconds: float) -> None:
        """Nobody requests again before ``seconds`` from now (a 429's Retry-After)."""
        self._next = max(self._next, self.clock() + seconds)


class Backfiller:
    """Backfills gaps of one exchange. ``base_url`` replaces the origin of the spec's URL (tests,
    proxies); ``sleep`` is injectable so tests can see the waits without waiting."""

    def __init__(self, spec: Spec, session: aiohttp.ClientSession, base_url: str | None = None,
                 sleep: Sleep = asyncio.sleep, exchange: str | None = None) -> None:
        if spec.rest_trades is None:
            raise ValueError(f"spec {spec.name!r} has no rest.trades")
        self.spec = spec
        self.rest: RestTrades = spec.rest_trades
        self.session = session
        self.base_url = base_url
        self.sleep = sleep
        self.exchange = exchange or spec.name
        self.budget = RateBudget(self.rest.per_second, sleep)
        self.requests = 0  # made over this backfiller's life

    # --- mapping ---------------------------------------------------------------------------

    def _mapper(self, native: str) -> Mapper:
        rest = self.rest
        fields = rest.fields
        if not any(name == "symbol" for name, _ in fields):
            fields = (("symbol", compile_expression(f"`{orjson.dumps(native).decode()}`")), *fields)
        kind = MessageKind("rest.trades", "trade", compile_expression("`true`"), records=rest.records,
                           channel=None, fields=fields, symbol=None, message=None, fatal=False, log="")
        spec = dataclasses.replace(self.spec, messages=(kind,), pong=None, heartbeat=None)
        return Mapper(spec, self.exchange)

    # --- requests --------------------------------------------------------------------------

    def url(self, variables: dict[str, Any]) -> str:
        url = str(self.rest.url.render(variables))
        if self.base_url:
            base = urlsplit(self.base_url)
            parts = urlsplit(url)
            url = urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
        return url

    async def get(self, url: str) -> tuple[Any, dict[str, str]]:
        """The decoded body and headers of one GET, retrying as the spec's rate section allows."""
        delays = backoff(0.5, cap=30.0)
        last = ""
        for attempt in range(self.rest.retries + 1):
            await self.budget.wait()
            self.requests += 1
            wait: float | None = None
            try:
                async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as response:
                    raw = await response.read()
                    headers = {k.lower(): v for k, v in response.headers.items()}
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if status == 429:
                    wait = retry_after(headers.get("retry-after"))
                    last = "HTTP 429 (rate limited)"
                    if wait is not None:
                        self.budget.penalize(wait)
                elif status >= 500:
                    last = f"HTTP {status}"
                elif status >= 400:
                    raise BackfillError(f"GET {url}: HTTP {status}: {raw[:200].decode(errors='replace')}")
                else:
                    try:
                        body = codec.loads(raw)  # prices, sizes and ids keep their digits
                    except codec.DecodeError as exc:
                        raise BackfillError(f"GET {url}: not JSON: {exc}") from None
                    error = self._error(body)
                    if not error:
                        return body, headers
                    last = f"exchange error: {error}"
            if attempt == self.rest.retries:
                break
            delay = next(delays) if wait is None else wait
            logger.info("%s backfill: %s; retrying in %.1fs", self.exchange, last, delay)
            if wait is None:
                await self.sleep(delay)
        raise BackfillError(f"GET {url}: {last} (gave up after {self.rest.retries + 1} attempts)")

    def _error(self, body: Any) -> str:
        if self.rest.error is None:
            return ""
        value, _ = evaluate_safely(self.rest.error.fn, body)
        if value in (None, False, "", [], {}):
            return ""
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    # --- the walk --------------------------------------------------------------------------

    async def fill(self, window: Window) -> Result:
        """Fetch the trades of ``window``; never raises for exchange or network trouble."""
        try:
            return await self._fill(window)
        except BackfillError as exc:
            return Result("unrecoverable", str(exc), requests=self.requests)

    async def _fill(self, window: Window) -> Result:
        rest = self.rest
        native = self.spec.symbols.to_native(window.symbol)
        mapper = self._mapper(native)
        mapper.learn([window.symbol])
        after_int = as_int(window.after_id)
        to_int = as_int(window.to_id)
        after: str | None = window.after_id
        since = window.from_time
        cursor: Any = None
        found: dict[str, Trade] = {}
        rejects = 0
        requests = 0
        reached_start = rest.paginate != "none"
        complete = False
        while requests < rest.max_pages:
            after_value = as_int(after)
            variables = {
                "symbol": native, "after_id": after,
                "from_id": str(after_value + 1) if after_value is not None else after,
                "to_id": window.to_id, "cursor": cursor,
                "from_s": int(since.timestamp()), "from_ms": _ms(since), "from_ns": _ms(since) * 1_000_000,
                "to_s": int(window.to_time.timestamp()) if window.to_time else None,
                "to_ms": _ms(window.to_time) if window.to_time else None,
            }
            body, headers = await self.get(self.url(variables))
            requests += 1
            outcome = mapper.handle(body, datetime.now(UTC))
            rejects += len(outcome.rejects)
            for reason in outcome.rejects[:3]:
                logger.warning("%s backfill %s: record rejected: %s", self.exchange, window.symbol, reason)
            page = [t for t in outcome.trades if t.symbol == window.symbol]
            if not page or all(t.trade_id in found for t in page):
                complete = True  # nothing (newer) to give: the exchange's latest trade is reached
                break
            for trade in page:
                found[trade.trade_id] = trade
            ids = [i for i in (as_int(t.trade_id) for t in page) if i is not None]
            oldest, newest = min(t.time for t in page), max(t.time for t in page)
            if rest.paginate == "none":
                reached_start = oldest <= window.from_time or (
                    after_int is not None and len(ids) == len(page) and min(ids) <= after_int + 1)
                complete = True
                break
            if (to_int is not None and ids and max(ids) >= to_int - 1) or (
                    window.to_time is not None and newest >= window.to_time):
                complete = True
                break
            if rest.paginate == "id":
                if not ids or (after_value is not None and max(ids) <= after_value):
                    complete = True
                    break
                after = str(max(ids))
            elif rest.paginate == "time":
                if newest <= since:
                    complete = True
                    break
                since = newest
            else:
                assert rest.cursor is not None
                following, _ = evaluate_safely(rest.cursor.fn, {"body": body, "headers": headers})
                if following in (None, "") or following == cursor:
                    complete = True
                    break
                cursor = following
        kept = sorted((t for t in found.values() if _inside(t, window, after_int, to_int)),
                      key=lambda t: (t.time, as_int(t.trade_id) or 0))
        result = Result("closed", "", kept, requests, rejects)
        if not complete:
            result.status, result.reason = "unrecoverable", f"still short of the gap's end after {requests} pages"
        elif not reached_start:
            oldest_seen = min((t.time for t in found.values()), default=None)
            result.status = "unrecoverable"
            result.reason = (f"the endpoint only returns recent trades; its oldest ({oldest_seen}) is after "
                             f"the gap's start ({window.from_time})")
        elif self.spec.trade_ids == "sequential" and after_int is not None and to_int is not None:
            present = {i for i in (as_int(t.trade_id) for t in kept) if i is not None}
            missing = missing_ids(after_int, to_int, present)
            if missing:
                result.status = "unrecoverable"
                result.reason = f"{len(missing)} trade ids not served by the endpoint (first {missing[0]})"
        if result.status == "closed":
            result.reason = f"backfilled {len(kept)} trades in {requests} requests"
        return result


def _inside(trade: Trade, window: Window, after_int: int | None, to_int: int | None) -> bool:
    value = as_int(trade.trade_id)
    if value is not None and after_int is not None:
        return value > after_int and (to_int is None or value < to_int)
    if trade.trade_id in (window.after_id, window.to_id):
        return False
    return trade.time >= window.from_time and (window.to_time is None or trade.time <= window.to_time)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
