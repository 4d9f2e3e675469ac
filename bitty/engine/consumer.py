"""The websocket engine: connect, subscribe, read, keep alive, watch, reconnect.

``BaseConsumer`` is both the original bitty API (subclass it, override ``process_message`` and
``make_subscribe_payload``) and the spec-driven consumer (pass ``spec=``). Mapping frames is done
by the pure ``Mapper``; this module only does I/O and timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from bitty.backoff import backoff, retry_after
from bitty.engine.watchdog import Liveness
from bitty.errors import BittyError, ConnectError, ExchangeError
from bitty.lang.functions import iso_time, to_decimal, to_text
from bitty.mapping import codec
from bitty.mapping.codec import DecodeError
from bitty.mapping.mapper import FrameTooLarge, Mapper, Outcome, raw_text
from bitty.spec.hooks import Hooks, hooks_class
from bitty.spec.load import Spec
from bitty.trade import Quarantined, Trade

logger = logging.getLogger(__name__)
UTC = UTC

# Connections that lived this long and received frames reset the backoff.
HEALTHY_AFTER = 30.0


@dataclass
class Stats:
    frames: int = 0
    trades: int = 0
    heartbeats: int = 0
    quarantined: int = 0
    exchange_errors: int = 0
    connects: int = 0
    reconnects: int = 0
    callback_errors: int = 0
    last_error: str = ""


class ServerClosed(ConnectError):
    """The server closed the connection."""

    def __init__(self, code: int | None) -> None:
        self.code = code
        super().__init__(f"server closed the connection (code {code})")


@dataclass(frozen=True)
class StreamEvent:
    """A change in what a connection covers: ``connected`` once subscribed, ``disconnected``
    when that connection ends. ``cause``: disconnect, watchdog (bitty restarted the stream) or
    stop."""

    kind: str
    exchange: str
    symbols: tuple[str, ...]
    at: datetime
    reason: str = ""
    cause: str = ""
    since: datetime | None = None  # disconnected: when this connection had connected


class _Restart(Exception):
    """Raised inside a connection to close it and reconnect, with the reason."""


class BaseConsumer:
    """One websocket connection carrying a list of symbols, kept alive until ``stop()``."""

    # --- per consumer overrides (the original bitty API) ---
    url: str | None = None
    exchange_name: str = ""
    enable_heartbeat: bool = False
    heartbeat_timeout: float = 2
    trade_timeout: float | None = 70
    idle_timeout: float = 60
    connect_timeout: float = 30  # TCP + TLS + websocket handshake

    def __init__(self, product_ids: list[str], url: str | None = None, loop: Any = None, *,
                 spec: Spec | None = None, reconnect: bool = True, backoff_initial: float = 1.0,
                 backoff_cap: float = 60.0, bootstrap_url: str | None = None, handover: bool = False) -> None:
        self.product_ids = list(product_ids)
        self.loop = loop
        self.spec = spec
        self.reconnect_enabled = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_cap = backoff_cap
        self._url_override = url
        self._bootstrap_url = bootstrap_url
        # With handover, whoever runs this consumer replaces it before connection.max_age
        # (bitty.engine.handover) instead of it reconnecting on its own.
        self.handover = handover
        self.connected_at: datetime | None = None
        if spec is not None:
            self.exchange_name = self.exchange_name or spec.name
            self.enable_heartbeat = spec.heartbeat is not None
            self.heartbeat_timeout = spec.heartbeat.timeout if spec.heartbeat else self.heartbeat_timeout
            self.trade_timeout = spec.trade_timeout
            self.idle_timeout = spec.idle_timeout
            self.mapper: Mapper | None = Mapper(spec, self.exchange_name)
            self.mapper.learn(self.product_ids)
            self.hooks: Hooks = hooks_class(spec)(spec, self.product_ids)
        else:
            self.mapper = None
            self.hooks = Hooks.__new__(Hooks)
            if url is not None:
                self.url = url
            if self.url is None:
                raise BittyError(f"need url for consumer {type(self).__name__}")
        self.on_trade_callbacks: list[Callable[[Trade], Any]] = []
        self._sync_callback: Callable[[Trade], Any] | None = None  # the only callback, when it is sync
        self.on_heartbeat_callbacks: list[Callable[[dict[str, Any]], Any]] = []
        self.on_quarantine_callbacks: list[Callable[[Quarantined], Any]] = []
        self.on_raw_callbacks: list[Callable[[str, Any], Any]] = []
        self.on_event_callbacks: list[Callable[[StreamEvent], Any]] = []
        self.last_heartbeat: dict[str, Any] = {}
        self.stats = Stats()
        self.terminated = False
        self.failed: ExchangeError | None = None
        self.channels: dict[str, str] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._request_id = 0
        self._connect_id = ""
        self._bootstrap: Any = None
        self._liveness: Liveness | None = None
        self._restart_reason: str | None = None
        self._last_frame_at = 0.0
        self._fast_path = spec is not None and type(self).process_message is BaseConsumer.process_message
        # Only a hooks class that overrides decode costs a call per frame.
        self._decode_hook = self.hooks.decode if type(self.hooks).decode is not Hooks.decode else None
        self._keepalive_interval: float | None = spec.keepalive.interval if spec and spec.keepalive else None

    # --- the original API ------------------------------------------------------------------

    @property
    def consumer_id(self) -> str:
        symbols = self.product_ids[0] if len(self.product_ids) == 1 else ",".join(self.product_ids)
        return f"{self.exchange_name} | {symbols}"

    def on_trade(self, callback: Callable[[Trade], Any]) -> None:
        """Register a sync or async callback called with every trade."""
        self.on_trade_callbacks.append(callback)
        callbacks = self.on_trade_callbacks
        # Whether a coroutine function is asked here, not per frame (it costs more than a trade's mapping).
        self._sync_callback = callbacks[0] if len(callbacks) == 1 and not _is_async(callbacks[0]) else None

    def on_heartbeat(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Register a sync or async callback called with every heartbeat."""
        self.on_heartbeat_callbacks.append(callback)

    def on_quarantine(self, callback: Callable[[Quarantined], Any]) -> None:
        """Register a callback for frames (or records) that could not be mapped."""
        self.on_quarantine_callbacks.append(callback)

    def on_event(self, callback: Callable[[StreamEvent], Any]) -> None:
        """Register a callback for ``StreamEvent``s: connected (subscribed) and disconnected."""
        self.on_event_callbacks.append(callback)

    def _emit_event(self, kind: str, reason: str = "", cause: str = "") -> None:
        now = _now()
        since = self.connected_at if kind == "disconnected" else None
        if kind == "connected":
            self.connected_at = now
        event = StreamEvent(kind, self.exchange_name, tuple(self.product_ids), now, reason, cause, since)
        for callback in self.on_event_callbacks:
            self._call(callback, event)

    def on_raw(self, callback: Callable[[str, Any], Any]) -> None:
        """Register a callback seeing every frame sent ('send') and received ('recv'), and
        connection events ('open', 'close')."""
        self.on_raw_callbacks.append(callback)

    def _on_trade(self, trade: Trade) -> None:
        for callback in self.on_trade_callbacks:
            self._call(callback, trade)

    def _on_heartbeat(self, msg: dict[str, Any]) -> None:
        for callback in self.on_heartbeat_callbacks:
            self._call(callback, msg)

    def _call(self, callback: Callable[[Any], Any], arg: Any) -> None:
        if _is_async(callback):
            task = asyncio.get_running_loop().create_task(callback(arg))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
            return
        try:
            callback(arg)
        except Exception:  # a failing callback must not stop the stream
            self._callback_failed(callback)

    def _callback_failed(self, callback: Callable[[Any], Any]) -> None:
        self.stats.callback_errors += 1
        logger.exception("%s : callback %r failed", self.consumer_id, callback)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s : callback failed", self.consumer_id, exc_info=task.exception())

    def process_message(self, message: str | bytes) -> dict[str, Any] | list[dict[str, Any]] | None:
        """Turn one frame into message dicts (``type``: match/trade, heartbeat, error) or None.

        Subclasses of the original API override this. The spec-driven default maps the frame
        with the spec and returns the trades and heartbeat it carries as dicts."""
        if self.mapper is None:
            raise NotImplementedError("must implement process_message or pass spec=")
        outcome = self.mapper.handle(self.mapper.decode(message), _now(), self.channels)
        if outcome.kind == "trade":
            return [{"type": "trade", **t.as_row()} for t in outcome.trades]
        if outcome.kind == "heartbeat":
            return {"type": "heartbeat", "product_id": outcome.symbol, "last_trade_id": outcome.last_trade_id}
        if outcome.kind == "error":
            return {"type": "error", "message": outcome.message}
        return None

    def make_subscribe_payload(self) -> Any:
        """The subscribe message (a dict sent as JSON, or a str sent as text). The spec-driven
        default returns the list of all subscribe messages of this connection."""
        if self.spec is None:
            raise NotImplementedError("must implement make_subscribe_payload or pass spec=")
        return self._subscribe_messages()

    def make_heartbeat_payload(self) -> Any:
        """The message that turns heartbeats on, or None. Called only if enable_heartbeat."""
        if self.spec is None or self.spec.heartbeat is None or not self.spec.heartbeat.messages:
            return None
        variables = self._variables(symbols=self._natives())
        return [t.render(variables) for t in self.spec.heartbeat.messages]

    # --- rendering -------------------------------------------------------------------------

    def _natives(self) -> list[str]:
        assert self.spec is not None
        return [self.spec.symbols.to_native(s) for s in self.product_ids]

    def _variables(self, **extra: Any) -> dict[str, Any]:
        self._request_id += 1
        now = time.time()
        variables = {"id": self._request_id, "now_ms": int(now * 1000), "now_s": int(now),
                     "connect_id": self._connect_id, "bootstrap": self._bootstrap}
        variables.update(extra)
        return variables

    def _subscribe_messages(self) -> list[Any]:
        assert self.spec is not None
        sub = self.spec.subscribe
        natives = self._natives()
        out: list[Any] = []
        if sub.per == "symbol":
            for native in natives:
                out += [t.render(self._variables(symbol=native)) for t in sub.messages]
        elif sub.per == "batch":
            size = sub.batch_size or len(natives)
            for i in range(0, len(natives), size):
                out += [t.render(self._variables(symbols=natives[i:i + size])) for t in sub.messages]
        else:
            out += [t.render(self._variables(symbols=natives)) for t in sub.messages]
        return self.hooks.subscribe_messages(out)

    def render_url(self) -> str:
        if self.spec is None:
            assert self.url is not None
            return self.url
        variables = {"symbols": self._natives(), "connect_id": self._connect_id, "bootstrap": self._bootstrap}
        url = str(self.spec.url.render(variables))
        override = self._url_override
        if override:
            parts = urlsplit(override)
            if parts.path in ("", "/") and not parts.query:
                # Only an origin: keep the spec's path and query (streams in the URL).
                spec_parts = urlsplit(url)
                url = urlunsplit((parts.scheme, parts.netloc, spec_parts.path, spec_parts.query, ""))
            else:
                from bitty.spec.template import Template

                url = str(Template.compile(override).render(variables))
        return self.hooks.url(url)

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and keep consuming until ``stop()``, reconnecting with backoff."""
        delays = backoff(self.backoff_initial, cap=self.backoff_cap)
        async with aiohttp.ClientSession() as session:
            while not self.terminated:
                started = time.monotonic()
                frames_before = self.stats.frames
                connects_before = self.stats.connects
                cause = "disconnect"
                wait: float | None = None
                try:
                    await self._connect_once(session)
                except ExchangeError as exc:
                    self.failed = exc
                    self.stats.last_error = str(exc)
                    logger.error("%s : stopped: %s", self.consumer_id, exc)
                    break
                except aiohttp.WSServerHandshakeError as exc:
                    wait = retry_after(exc.headers.get("Retry-After")) if exc.headers else None
                    self._note(f"handshake refused: HTTP {exc.status} {exc.message}")
                except _Restart as exc:
                    self._note(f"restarting: {exc}")
                    cause = "watchdog"
                except ServerClosed as exc:
                    self._note(str(exc), logging.INFO if exc.code in (1000, 1001) else logging.WARNING)
                except (TimeoutError, aiohttp.ClientError, ConnectError, OSError, FrameTooLarge) as exc:
                    self._note(f"connection failed: {type(exc).__name__}: {exc}")
                finally:
                    if self.stats.connects > connects_before:
                        stopped = self.terminated
                        self._emit_event("disconnected", "stopped" if stopped else self.stats.last_error,
                                         "stop" if stopped else cause)
                if self.terminated or not self.reconnect_enabled:
                    break
                if self.stats.frames > frames_before and time.monotonic() - started > HEALTHY_AFTER:
                    delays = backoff(self.backoff_initial, cap=self.backoff_cap)
                delay = next(delays)
                if wait is not None:
                    delay = max(delay, wait)
                self.stats.reconnects += 1
                logger.info("%s : reconnecting in %.2fs", self.consumer_id, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _note(self, reason: str, level: int = logging.WARNING) -> None:
        self.stats.last_error = reason
        logger.log(level, "%s : %s", self.consumer_id, reason)

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
        self._connect_id = uuid.uuid4().hex
        self._request_id = 0
        self.channels = {}
        if self.spec is not None and self.spec.bootstrap is not None:
            await self._run_bootstrap(session)
        url = self.render_url()
        max_size = self.spec.max_frame_bytes if self.spec else 4 * 1024 * 1024
        headers = dict(self.spec.headers) if self.spec else {}
        logger.info("%s : connecting to %s", self.consumer_id, url)
        try:
            # Text frames arrive as bytes (decode_text=False) and _read decodes them, so a frame
            # that is not UTF-8 is quarantined instead of failing the connection.
            ws = cast(aiohttp.ClientWebSocketResponse, await asyncio.wait_for(session.ws_connect(
                url, max_msg_size=max_size, headers=headers, autoping=False, decode_text=False,
                timeout=aiohttp.ClientWSTimeout(ws_close=2)), timeout=self.connect_timeout))
        except TimeoutError:
            raise ConnectError(f"no websocket handshake within {self.connect_timeout:g}s") from None
        async with ws:
            self.ws = ws
            self.stats.connects += 1
            self._emit_raw("open", url)
            self._restart_reason = None
            self._liveness = self._new_liveness()
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
            raise _Restart(self._restart_reason)
        if not self.terminated:
            raise ServerClosed(ws.close_code)

    async def _subscribed(self, ws: aiohttp.ClientWebSocketResponse, url: str) -> None:
        """Subscribe, then watch the stream (and keep it alive) until the connection ends. A
        failure closes the connection so the reader stops, and is raised from there."""
        try:
            await self._subscribe(ws)
            assert self._liveness is not None
            self._liveness.restart_clock(time.monotonic())  # nothing was due before the subscriptions
            self._emit_event("connected", url)
            helpers = [self._watch(ws)]
            if self._keepalive_interval:
                helpers.append(self._keepalive(ws))
            await asyncio.gather(*helpers)
        except Exception:
            await ws.close()
            raise

    async def _run_bootstrap(self, session: aiohttp.ClientSession) -> None:
        assert self.spec is not None and self.spec.bootstrap is not None
        boot = self.spec.bootstrap
        url = self._bootstrap_url or str(boot.url.render({"connect_id": self._connect_id,
                                                          "now_ms": int(time.time() * 1000)}))
        async with session.request(boot.method, url, timeout=aiohttp.ClientTimeout(total=15)) as response:
            if response.status >= 400:
                raise ConnectError(f"bootstrap {boot.method} {url}: HTTP {response.status}")
            self._bootstrap = orjson.loads(await response.read())
        if boot.keepalive_interval is not None:
            millis = to_decimal(boot.keepalive_interval(self._bootstrap))
            if millis is not None and millis > 0:
                self._keepalive_interval = float(millis) / 1000

    def _new_liveness(self) -> Liveness:
        per_symbol = bool(self.spec and self.spec.heartbeat and
                          (self.spec.heartbeat.symbol or self.spec.heartbeat.channel))
        has_trade_ids = bool(self.spec and self.spec.heartbeat and self.spec.heartbeat.last_trade_id) or (
            self.spec is None and self.enable_heartbeat)
        return Liveness(
            list(self.product_ids), time.monotonic(),
            heartbeat_timeout=self.heartbeat_timeout if self.enable_heartbeat else None,
            trade_timeout=self.trade_timeout if has_trade_ids else None,
            per_symbol_heartbeat=per_symbol,
            trades_count=bool(self.spec and self.spec.heartbeat and self.spec.heartbeat.trades_count),
        )

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, payload: Any) -> None:
        text = payload if isinstance(payload, str) else orjson.dumps(payload, default=str).decode()
        logger.debug("%s : sending %s", self.consumer_id, text)
        self._emit_raw("send", text)
        await ws.send_str(text)

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        pace = 1.0 / self.spec.messages_per_second if self.spec and self.spec.messages_per_second else 0.0
        if type(self).make_subscribe_payload is BaseConsumer.make_subscribe_payload:
            messages = self._subscribe_messages()
        else:
            messages = [self.make_subscribe_payload()]
        if self.enable_heartbeat:
            extra = self.make_heartbeat_payload()
            if extra is not None:
                messages += extra if self.spec is not None else [extra]
        for i, message in enumerate(messages):
            if i and pace:
                await asyncio.sleep(pace)
            await self._send(ws, message)

    async def _keepalive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        assert self.spec is not None and self.spec.keepalive is not None and self._keepalive_interval
        while True:
            await asyncio.sleep(self._keepalive_interval)
            await self._send(ws, self.spec.keepalive.message.render(self._variables()))

    async def _watch(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        assert self._liveness is not None
        timeouts = [t for t in (self.heartbeat_timeout if self.enable_heartbeat else None,
                                self._liveness.trade_timeout) if t]
        tick = max(0.05, min([*timeouts, self.idle_timeout]) / 4)
        max_age = self.spec.max_age if self.spec and not self.handover else None
        opened = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            reason = self._liveness.check(now)
            if reason is None and now - self._last_frame_at > self.idle_timeout:
                reason = f"no frame for {self.idle_timeout:g}s"
            if reason is None and max_age and now - opened > max_age - min(60.0, max_age / 10):
                reason = f"connection is {now - opened:.0f}s old; the exchange closes it at {max_age:g}s"
            if reason is not None:
                self._restart_reason = reason
                await ws.close()
                return

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # No per-receive timeout (it costs a timer per frame): the watchdog checks
        # _last_frame_at against idle_timeout. Protocol pings count as frames.
        self._last_frame_at = time.monotonic()
        while True:
            msg = await ws.receive()
            self._last_frame_at = time.monotonic()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                self.stats.frames += 1
                data: Any = msg.data
                if msg.type == aiohttp.WSMsgType.TEXT and type(data) is bytes:  # see decode_text=False
                    try:
                        data = data.decode()
                    except UnicodeDecodeError as exc:
                        self._quarantine(data, f"text frame is not valid UTF-8: {exc}")
                        continue
                if self.on_raw_callbacks:
                    self._emit_raw("recv", data)
                replies = self.on_message(data)
                for reply in replies or ():
                    await self._send(ws, reply)
            elif msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.ERROR:
                error = msg.data if isinstance(msg.data, BaseException) else ws.exception()
                if isinstance(error, aiohttp.WebSocketError) and error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
                    raise FrameTooLarge(f"frame over connection.max_frame_bytes: {error}")
                raise ConnectError(f"websocket error: {error}")
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return

    def _emit_raw(self, event: str, data: Any) -> None:
        for callback in self.on_raw_callbacks:
            callback(event, data)

    # --- frames ----------------------------------------------------------------------------

    def on_message(self, data: str | bytes) -> list[Any] | None:
        """Handle one frame; returns replies to send (pongs)."""
        if self._fast_path:
            return self._on_spec_frame(data)
        self._on_legacy_frame(data)
        return None

    def _quarantine(self, data: str | bytes, reason: str) -> None:
        self.stats.quarantined += 1
        version = self.spec.version if self.spec else 0
        item = Quarantined(self.exchange_name, version, reason, raw_text(data), _now())
        logger.debug("%s : quarantined frame: %s", self.consumer_id, reason)
        for callback in self.on_quarantine_callbacks:
            callback(item)

    def _on_spec_frame(self, data: str | bytes) -> list[Any] | None:
        mapper = self.mapper
        assert mapper is not None
        received_at = _datetime_now(UTC)
        try:
            if type(data) is str and self._decode_hook is None:
                # Mapper.decode of text, inline: the call is a tenth of a frame's mapping.
                try:
                    frame = _loads(data)
                except DecodeError:
                    frame = data
            else:
                frame = mapper.decode(data)
                if self._decode_hook is not None:
                    frame = self._decode_hook(frame)
        except FrameTooLarge as exc:
            self._quarantine(data[:4096], str(exc))
            return None
        except ValueError as exc:
            self._quarantine(data, str(exc))
            return None
        program = mapper.program
        if program is not None:  # a frame of good trades, the usual one, in one call
            found = program(frame, received_at, self.channels)
            if found is not None:
                self._dispatch_trades(found[1])
                return None
        outcome = mapper.handle_exactly(frame, received_at, self.channels)
        kind = outcome.kind
        if kind == "trade":
            self._dispatch_trades(outcome.trades)
            for reason in outcome.rejects:
                self._quarantine(data, f"{outcome.name}: {reason}")
        elif kind == "heartbeat":
            self._heartbeat(outcome.symbol, outcome.last_trade_id)
        elif kind == "pong":
            assert self.spec is not None and self.spec.pong is not None
            return [self.spec.pong.reply.render(self._variables(frame=frame))]
        elif kind == "error":
            self._exchange_error(outcome)
        elif kind == "reconnect":
            self._restart_reason = f"the exchange announced a disconnect: {outcome.message}"
            self._close_soon()
        elif kind == "unknown":
            self._quarantine(data, outcome.message)
        elif kind in ("ignore", "channel"):
            logger.log(logging.getLevelName(outcome.log.upper()) if kind == "ignore" else logging.DEBUG,
                       "%s : %s frame: %s", self.consumer_id, outcome.name, _short(data))
        return None

    def _close_soon(self) -> None:
        """Close the connection from synchronous frame handling; ``run`` then reconnects."""
        ws = self.ws
        if ws is not None and not ws.closed:
            task = asyncio.get_running_loop().create_task(ws.close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _dispatch_trades(self, trades: list[Trade]) -> None:
        liveness = self._liveness
        now = time.monotonic()
        callbacks = self.on_trade_callbacks
        # One sync callback (the collector's writer) is called here, without _call per trade.
        only = self._sync_callback
        if only is None or len(callbacks) != 1 or callbacks[0] is not only:
            only = None
        for trade in trades:
            if liveness is not None:
                liveness.on_trade(trade.symbol, trade.trade_id, now)
            if only is None:
                self._on_trade(trade)
                continue
            try:
                only(trade)
            except Exception:  # a failing callback must not stop the stream
                self._callback_failed(only)
        if trades:
            self.stats.trades += len(trades)
            # the original status view: once per frame, its last trade
            self.last_heartbeat["trade"] = now
            self.last_heartbeat["trade_trade"] = trades[-1].trade_id

    def _heartbeat(self, symbol: str | None, last_trade_id: str | None) -> None:
        now = time.monotonic()
        self.stats.heartbeats += 1
        self.last_heartbeat["heartbeat"] = now
        self.last_heartbeat["heartbeat_trade"] = last_trade_id
        if self._liveness is not None:
            self._liveness.on_heartbeat(symbol, last_trade_id, now)
        self._on_heartbeat({"type": "heartbeat", "product_id": symbol, "last_trade_id": last_trade_id})

    def _exchange_error(self, outcome: Outcome) -> None:
        self.stats.exchange_errors += 1
        self.stats.last_error = outcome.message
        if outcome.fatal:
            raise ExchangeError(f"{self.exchange_name} rejected the subscription: {outcome.message}")
        logger.error("%s : exchange error: %s", self.consumer_id, outcome.message)

    def _on_legacy_frame(self, data: str | bytes) -> None:
        try:
            messages = self.process_message(data)
        except Exception:
            logger.exception("%s : process_message failed", self.consumer_id)
            self._quarantine(data, "process_message raised")
            return
        if messages is None:
            return
        for msg in messages if isinstance(messages, list) else [messages]:
            msg_type = msg.get("type")
            if msg_type == "heartbeat":
                self._heartbeat(msg.get("product_id"), to_text(msg.get("last_trade_id")))
            elif msg_type in ("match", "trade", "last_match"):
                trade = _trade_from_dict(self.exchange_name, msg)
                if trade is None:
                    self._quarantine(data, f"incomplete trade message: {msg!r}")
                    continue
                self._dispatch_trades([trade])
            elif msg_type == "error":
                logger.warning("%s : dropping message %s", self.consumer_id, msg)


@functools.lru_cache(maxsize=1024)
def _is_async(callback: Callable[[Any], Any]) -> bool:
    """Whether a callback is a coroutine function (asked once per callback, not per trade)."""
    return inspect.iscoroutinefunction(callback)


def _trade_from_dict(exchange: str, msg: dict[str, Any]) -> Trade | None:
    price = to_decimal(msg.get("price"))
    size = to_decimal(msg.get("size"))
    moment = msg.get("time")
    if not isinstance(moment, datetime):
        moment = iso_time(moment)
    side = msg.get("side")
    symbol = msg.get("symbol") or msg.get("product_id")
    trade_id = to_text(msg.get("trade_id"))
    if None in (price, size, moment, symbol, trade_id) or side not in ("buy", "sell"):
        return None
    assert isinstance(price, Decimal) and isinstance(size, Decimal) and moment is not None
    return Trade(msg.get("exchange_name") or exchange, str(symbol), str(trade_id), price, size,
                 str(side), moment, _now())


_datetime_now = datetime.now
_loads = codec.loads  # numbers as Decimals of their own digits: no float between socket and row


def _now() -> datetime:
    return _datetime_now(UTC)


def _short(data: str | bytes, limit: int = 200) -> str:
    text = raw_text(data)
    return text if len(text) <= limit else text[:limit] + "..."
