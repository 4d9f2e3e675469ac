"""The socket loop: connect, subscribe, read frames and apply what the dispatcher makes of
them, let the watchdog judge, reconnect with backoff.

``Connection`` does I/O and timing only: frames become actions in ``bitty.engine.dispatch``,
restart verdicts come from ``bitty.engine.watchdog``, reconnect decisions from
``bitty.engine.reconnect``. The original subclass API is an adapter over it
(``bitty.engine.legacy.BaseConsumer``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import aiohttp

from bitty.engine import keepalive
from bitty.engine.dispatch import NOTHING, Actions, Dispatcher, Result
from bitty.engine.events import Listeners, Stats
from bitty.engine.liveness import Fetch, LatestFetcher
from bitty.engine.reconnect import HEALTHY_AFTER, Delays, Restart, ServerClosed, classify
from bitty.engine.subscribe import Subscription
from bitty.engine.watchdog import Check, Watchdog
from bitty.errors import BittyError, ConnectError, ExchangeError
from bitty.mapping import codec
from bitty.mapping.mapper import FrameTooLarge, raw_text
from bitty.spec.hooks import Hooks, hooks_class
from bitty.spec.load import Spec
from bitty.trade import Quarantined, Trade

logger = logging.getLogger(__name__)


class Frames(Protocol):
    """What turns a frame into actions: ``Dispatcher`` (a spec) or the original API's adapter."""

    def handle(self, data: str | bytes, received_at: datetime) -> Result: ...

    def reset(self) -> None: ...


class Sends(Protocol):
    """What a connection sends and how it connects: ``Subscription`` (a spec) or the original
    API's ``bitty.engine.legacy.Plain``."""

    keepalive_interval: float | None

    @property
    def max_frame_bytes(self) -> int: ...

    @property
    def headers(self) -> dict[str, str]: ...

    @property
    def pace(self) -> float: ...

    def new_connection(self) -> None: ...

    async def fetch_bootstrap(self, session: aiohttp.ClientSession) -> None: ...

    def url(self) -> str: ...

    def messages(self) -> list[Any]: ...

    def heartbeat_messages(self) -> list[Any] | None: ...

    def keepalive_message(self) -> Any: ...

    def liveness(self) -> tuple[bool, bool, bool]: ...


class Connection(Listeners):
    """One websocket connection carrying a list of symbols, kept alive until ``stop()``."""

    url: str | None = None
    exchange_name: str = ""
    enable_heartbeat: bool = False
    heartbeat_timeout: float = 2
    trade_timeout: float | None = 70
    idle_timeout: float = 60
    connect_timeout: float = 30  # TCP + TLS + websocket handshake

    def __init__(self, product_ids: list[str], url: str | None = None, loop: Any = None, *,
                 spec: Spec | None = None, reconnect: bool = True, backoff_initial: float = 1.0,
                 backoff_cap: float = 60.0, bootstrap_url: str | None = None, handover: bool = False,
                 rest_url: str | None = None, latest: Fetch | None = None) -> None:
        self.product_ids = list(product_ids)
        self.loop = loop
        self.spec = spec
        self.reconnect_enabled = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        # With handover, whoever runs this consumer replaces it before connection.max_age
        # (bitty.engine.handover) instead of it reconnecting on its own.
        self.handover = handover
        self.max_age = spec.max_age if spec is not None and not handover else None
        self._init_listeners()
        self.last_heartbeat: dict[str, Any] = {}
        self.stats = Stats()
        self.terminated = False
        self.failed: ExchangeError | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = asyncio.Event()
        self.watchdog: Watchdog | None = None
        self._restart_reason: str | None = None
        if spec is not None:
            self.exchange_name = self.exchange_name or spec.name
            self.enable_heartbeat = spec.heartbeat is not None
            self.heartbeat_timeout = spec.heartbeat.timeout if spec.heartbeat else self.heartbeat_timeout
            self.trade_timeout = spec.trade_timeout
            self.idle_timeout = spec.idle_timeout
            self.hooks: Hooks = hooks_class(spec)(spec, self.product_ids)
        else:
            self.hooks = Hooks.__new__(Hooks)  # the original API: no hooks, their no-op defaults
        self.subscription: Sends = self._subscription(url, bootstrap_url)
        # rest.latest: where the spec has it, a silent connection is checked against the
        # exchange's REST before a restart; off when the websocket is redirected (a replay, a
        # local exchange) without a REST URL: the real REST never saw that stream.
        self.latest: Fetch | None = latest
        if latest is None and spec is not None and spec.rest_latest is not None and (url is None or rest_url):
            self.latest = LatestFetcher(spec, rest_url)
        self._session: aiohttp.ClientSession | None = None
        self.frames: Frames = self._frames()

    # --- what a subclass may replace (bitty.engine.legacy) ---------------------------------

    def _subscription(self, url: str | None, bootstrap_url: str | None) -> Sends:
        if self.spec is None:
            raise BittyError(f"{type(self).__name__} needs spec= (or the original API: bitty.BaseConsumer)")
        return Subscription(self.spec, self.product_ids, self.hooks, url, bootstrap_url)

    def _frames(self) -> Frames:
        return self._new_dispatcher()

    def _new_dispatcher(self) -> Dispatcher:
        assert self.spec is not None and isinstance(self.subscription, Subscription)
        return Dispatcher(self.spec, self.exchange_name, self.product_ids, self.hooks,
                          self.subscription.variables, self.consumer_id)

    def _subscribe_messages(self) -> list[Any]:
        return self.subscription.messages()

    def _messages_to_send(self) -> list[Any]:
        """What goes out once connected: the subscribe messages, then those turning heartbeats on."""
        messages = self._subscribe_messages()
        if self.enable_heartbeat:
            messages += self.subscription.heartbeat_messages() or []
        return messages

    def _new_watchdog(self, now: float) -> Watchdog:
        trade_ids, per_symbol, trades_count = self.subscription.liveness()
        return Watchdog(
            list(self.product_ids), now,
            heartbeat_timeout=self.heartbeat_timeout if self.enable_heartbeat else None,
            trade_timeout=self.trade_timeout if trade_ids else None,
            per_symbol_heartbeat=per_symbol, trades_count=trades_count,
            idle_timeout=self.idle_timeout, max_age=self.max_age, latest_checks=self.latest is not None,
            sequential_ids=self.spec is not None and self.spec.trade_ids == "sequential")

    def render_url(self) -> str:
        return self.subscription.url()

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and keep consuming until ``stop()``, reconnecting with backoff."""
        delays = Delays(self.backoff_initial, self.backoff_cap)
        async with aiohttp.ClientSession() as session:
            self._session = session
            while not self.terminated:
                started = time.monotonic()
                frames_before = self.stats.frames
                connects_before = self.stats.connects
                cause, wait = "disconnect", None
                try:
                    await self._connect_once(session)
                except Exception as exc:
                    failure = classify(exc)
                    if failure is None:
                        raise
                    self.stats.last_error = failure.message
                    if failure.fatal:
                        self.failed = exc if isinstance(exc, ExchangeError) else ExchangeError(failure.message)
                        logger.error("%s : stopped: %s", self.consumer_id, failure.message)
                        break
                    logger.log(failure.level, "%s : %s", self.consumer_id, failure.message)
                    cause, wait = failure.cause, failure.wait
                finally:
                    if self.stats.connects > connects_before:
                        stopped = self.terminated
                        self._emit_event("disconnected", "stopped" if stopped else self.stats.last_error,
                                         "stop" if stopped else cause)
                if self.terminated or not self.reconnect_enabled:
                    break
                healthy = self.stats.frames > frames_before and time.monotonic() - started > HEALTHY_AFTER
                delay = delays.next(healthy, wait)
                self.stats.reconnects += 1
                logger.info("%s : reconnecting in %.2fs", self.consumer_id, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Stop consuming; ``run()`` returns once the connection is closed."""
        self.terminated = True
        self._stopping.set()
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()

    kill = stop

    def is_connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def _connect_once(self, session: aiohttp.ClientSession) -> None:
        self.frames.reset()
        sub = self.subscription
        sub.new_connection()
        await sub.fetch_bootstrap(session)
        url = self.render_url()
        logger.info("%s : connecting to %s", self.consumer_id, url)
        try:
            # Text frames arrive as bytes (decode_text=False) and _read decodes them, so a frame
            # that is not UTF-8 is quarantined instead of failing the connection.
            ws = cast(aiohttp.ClientWebSocketResponse, await asyncio.wait_for(session.ws_connect(
                url, max_msg_size=sub.max_frame_bytes, headers=sub.headers, autoping=False, decode_text=False,
                timeout=aiohttp.ClientWSTimeout(ws_close=2)), timeout=self.connect_timeout))
        except TimeoutError:
            raise ConnectError(f"no websocket handshake within {self.connect_timeout:g}s") from None
        async with ws:
            self.ws = ws
            self.stats.connects += 1
            self._emit_raw("open", url)
            self._restart_reason = None
            self.watchdog = self._new_watchdog(time.monotonic())
            # Frames are read while the subscribe messages go out: paced per symbol, they can
            # take many seconds (bitstamp: 1,000 symbols at 20 messages a second).
            helper = asyncio.create_task(self._subscribed(ws, url))
            try:
                try:
                    await self._read(ws)
                finally:
                    helper.cancel()
                    failed = (await asyncio.gather(helper, return_exceptions=True))[0]
                if isinstance(failed, Exception):
                    raise failed
            finally:
                self._emit_raw("close", ws.close_code)
                self.ws = None
        if self._restart_reason:
            raise Restart(self._restart_reason)
        if not self.terminated:
            raise ServerClosed(ws.close_code)

    async def _subscribed(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> None:
        """Subscribe, then watch the stream (and keep it alive) until the connection ends. A
        failure closes the connection so the reader stops, and is raised from there."""
        try:
            await self._subscribe(ws)
            assert self.watchdog is not None
            # nothing was due before the subscriptions
            self.watchdog.restart_clock(time.monotonic(), _datetime_now(UTC))
            self._emit_event("connected", url)
            helpers = [self._watch(ws)]
            sub = self.subscription
            if sub.keepalive_interval:
                helpers.append(keepalive.send_every(sub.keepalive_interval, sub.keepalive_message,
                                                    lambda message: self._send(ws, message)))
            await asyncio.gather(*helpers)
        except Exception:
            await ws.close()
            raise

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, payload: Any) -> None:
        # Numbers echoed from a frame (Decimals) go out as JSON numbers with their own digits.
        text = payload if isinstance(payload, str) else codec.dumps(payload).decode()
        logger.debug("%s : sending %s", self.consumer_id, text)
        self._emit_raw("send", text)
        await ws.send_str(text)

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        pace = self.subscription.pace
        for i, message in enumerate(self._messages_to_send()):
            if i and pace:
                await asyncio.sleep(pace)
            await self._send(ws, message)

    async def _watch(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Ask the watchdog for its verdict every tick; close the socket when it has one."""
        watchdog = self.watchdog
        assert watchdog is not None
        checks: set[asyncio.Task[None]] = set()
        try:
            while True:
                await asyncio.sleep(watchdog.tick)
                reason = watchdog.verdict(time.monotonic())
                if isinstance(reason, Check):  # the watchdog bounds how many are out at once
                    for symbol in reason.symbols:
                        task = asyncio.create_task(self._check_latest(ws, symbol))
                        checks.add(task)
                        task.add_done_callback(checks.discard)
                elif reason is not None:
                    self._restart_reason = reason
                    await ws.close()
                    return
        finally:
            for task in checks:
                task.cancel()

    async def _check_latest(self, ws: aiohttp.ClientWebSocketResponse, symbol: str) -> None:
        """Ask the exchange's REST for the latest trade of one silent symbol (waiting its turn
        in the exchange's budget, then bounded by rest.latest.timeout) and hand the answer to
        the watchdog; close the socket on its verdict."""
        watchdog, fetch, session = self.watchdog, self.latest, self._session
        assert watchdog is not None and fetch is not None and session is not None
        try:
            latest = await fetch(session, symbol)
        except Exception as exc:  # LatestError, or an injected fetcher's own failure
            reason = watchdog.on_latest_failed(symbol, str(exc), time.monotonic())
            logger.warning("%s : %s: cannot check the latest trade: %s", self.consumer_id, symbol, exc)
        else:
            reason = watchdog.on_latest(symbol, latest.trade_id, latest.time, time.monotonic())
            if reason is None:
                logger.debug("%s : %s: quiet market (the exchange's latest trade is %s)",
                             self.consumer_id, symbol, latest.trade_id or latest.time)
        if reason is not None and self._restart_reason is None:
            self._restart_reason = reason
            await ws.close()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # No per-receive timeout (it costs a timer per frame): the watchdog compares its
        # last_data_at with idle_timeout. Only data frames count, never protocol pings.
        watchdog = self.watchdog
        assert watchdog is not None
        handle = self.frames.handle
        data_types = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
        text = aiohttp.WSMsgType.TEXT
        while True:
            msg = await ws.receive()
            if msg.type in data_types:
                now = watchdog.last_data_at = time.monotonic()
                self.stats.frames += 1
                data: Any = msg.data
                if msg.type is text and type(data) is bytes:  # see decode_text=False
                    try:
                        data = data.decode()
                    except UnicodeDecodeError as exc:
                        self._emit_quarantined(Quarantined(self.exchange_name, self.spec.version if self.spec else 0,
                                                           f"text frame is not valid UTF-8: {exc}", raw_text(data),
                                                           _datetime_now(UTC)))
                        continue
                if self.on_raw_callbacks:
                    self._emit_raw("recv", data)
                result = handle(data, _datetime_now(UTC))
                if isinstance(result, list):
                    self._trades(result, now)
                elif result is not NOTHING and await self._apply(ws, result, now):
                    return
            elif msg.type in keepalive.PROTOCOL:
                await keepalive.answer_ping(ws, msg)
            elif msg.type == aiohttp.WSMsgType.ERROR:
                error = msg.data if isinstance(msg.data, BaseException) else ws.exception()
                if isinstance(error, aiohttp.WebSocketError) and error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                    raise FrameTooLarge(f"frame over connection.max_frame_bytes: {error}")
                raise ConnectError(f"websocket error: {error}")
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return

    def _trades(self, trades: list[Trade], now: float) -> None:
        if not trades:
            return
        on_trade = self.watchdog.on_trade  # type: ignore[union-attr]
        # One sync callback (the collector's writer) is called here, in the same loop (the hot path).
        only, callbacks = self._sync_callback, self.on_trade_callbacks
        if only is not None and len(callbacks) == 1 and callbacks[0] is only:
            for trade in trades:
                on_trade(trade.symbol, trade.trade_id, now, trade.time)
                try:
                    only(trade)
                except Exception:  # a failing callback must not stop the stream
                    self._callback_failed(only)
        else:
            for trade in trades:
                on_trade(trade.symbol, trade.trade_id, now, trade.time)
            self._emit_trades(trades)
        self.stats.trades += len(trades)
        # the original status view: once per frame, its last trade
        self.last_heartbeat["trade"] = now
        self.last_heartbeat["trade_trade"] = trades[-1].trade_id

    async def _apply(self, ws: aiohttp.ClientWebSocketResponse, actions: Actions, now: float) -> bool:
        """Apply one frame's actions; True when the connection is to close (the reader stops)."""
        if actions.trades:
            self._trades(actions.trades, now)
        for item in actions.quarantined:
            self._emit_quarantined(item)
        restart = actions.restart
        for symbol, last_trade_id in actions.heartbeats:
            self.stats.heartbeats += 1
            self.last_heartbeat["heartbeat"] = now
            self.last_heartbeat["heartbeat_trade"] = last_trade_id
            restart = self.watchdog.on_heartbeat(symbol, last_trade_id, now) or restart  # type: ignore[union-attr]
            self._emit_heartbeat({"type": "heartbeat", "product_id": symbol, "last_trade_id": last_trade_id})
        for reply in actions.replies:
            await self._send(ws, reply)
        for message in actions.errors:
            self.stats.exchange_errors += 1
            self.stats.last_error = message
            logger.error("%s : exchange error: %s", self.consumer_id, message)
        if actions.fatal is not None:
            self.stats.exchange_errors += 1
            raise actions.fatal
        if restart is not None:
            self._restart_reason = restart
            await ws.close()
            return True
        return False


_datetime_now = datetime.now
