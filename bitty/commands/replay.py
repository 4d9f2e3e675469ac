"""Sessions: the file format shared by fixtures, ``bitty record`` and ``bitty replay``, and a
local websocket server that plays one.

A session is JSON Lines, one event per line:

    {"send": {...}}            the client sends this JSON here (``send_text`` for a text frame);
                               the server waits for the client's next frame and compares.
                               The string "<any>" in an expected value matches anything.
    {"recv": {...}}            the server sends this JSON as a text frame (numbers with the
                               digits the line gives them: 0.0010 is sent as 0.0010)
    {"recv_text": "..."}       ... this text frame
    {"recv_binary": "b64"}     ... this binary frame (base64)
    "compress": "gzip"         on recv/recv_text: send it compressed, as a binary frame
                               ("deflate" for raw deflate)
    {"close": 1000}            the server closes the connection with this code
    {"open": "wss://..."}      (recordings) the client connected to this URL
    {"http": "/path?query", "body": {...}}
                               an HTTP answer the replay serves (any method) at this path: a
                               bootstrap (KuCoin's token), a symbol list, a page of REST trades.
                               Matched on path and query first, then on the path alone;
                               "status" (default 200) and "body_text" (a non-JSON body) are optional.
                               A whole exchange then runs offline from one file: point both
                               ``--url`` and ``--rest-url`` at the replay.
    "t": 1.25                  optional: seconds since the connection opened (recordings);
                               ``--speed`` replays with these delays
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from bitty.errors import BittyError
from bitty.mapping import codec
from bitty.mapping.mapper import compress

logger = logging.getLogger(__name__)
ANY = "<any>"


@dataclass(frozen=True)
class Event:
    kind: str  # send | recv | close | open | http
    data: Any = None  # send/recv: str or bytes (what goes on the wire); close: code
    expected: Any = None  # send: the JSON value (or text) expected from the client
    t: float | None = None


def parse_event(obj: dict[str, Any], where: str) -> Event | None:
    t = obj.get("t")
    if t is not None:
        if isinstance(t, bool) or not isinstance(t, int | float | Decimal):
            raise BittyError(f'{where}: "t" is the seconds since the connection opened, a number')
        t = float(t)  # a delay for the event loop, not data (sessions decode numbers as Decimals)
    if "send" in obj:
        return Event("send", expected=obj["send"], t=t)
    if "send_text" in obj:
        return Event("send", expected=obj["send_text"], data="text", t=t)
    if "recv" in obj or "recv_text" in obj:
        text = obj["recv_text"] if "recv_text" in obj else codec.dumps(obj["recv"]).decode()
        method = obj.get("compress")
        data: str | bytes = compress(text.encode(), method) if method else text
        return Event("recv", data=data, t=t)
    if "recv_binary" in obj:
        return Event("recv", data=base64.b64decode(obj["recv_binary"]), t=t)
    if "close" in obj:
        return Event("close", data=int(obj["close"] or 1000), t=t)
    if "open" in obj:
        return Event("open", data=obj["open"], t=t)
    if "http" in obj:
        if not isinstance(obj["http"], str) or not obj["http"].startswith("/"):
            raise BittyError(f"{where}: \"http\" is the path an answer is served at, starting with /")
        body = obj["body_text"].encode() if "body_text" in obj else codec.dumps(obj.get("body"))
        return Event("http", data=(int(obj.get("status", 200)), body), expected=obj["http"], t=t)
    if "meta" in obj or "comment" in obj:
        return None
    raise BittyError(f"{where}: unknown session event {sorted(obj)}")


def load_session(path: Path) -> list[Event]:
    events = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = codec.loads(line)  # numbers keep their digits, as a frame's do
        except codec.DecodeError as exc:
            raise BittyError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise BittyError(f"{path}:{number}: a session event is a JSON object, not {type(obj).__name__}")
        event = parse_event(obj, f"{path}:{number}")
        if event is not None:
            events.append(event)
    return events


def matches(expected: Any, actual: Any) -> bool:
    if expected == ANY:
        return True
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
    return bool(expected == actual)


@dataclass
class ReplayServer:
    """Serves a session to every websocket client on 127.0.0.1 (any path)."""

    events: list[Event]
    speed: float | None = None  # None: no delays; otherwise honour "t" divided by speed
    expect_timeout: float = 5.0
    hold: bool = False  # keep the connection open after the last event instead of closing
    received: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    connections: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Plain HTTP answers by path (a bootstrap call, a REST endpoint): path -> JSON body bytes.
    http: dict[str, bytes] = field(default_factory=dict)
    http_requests: list[str] = field(default_factory=list)
    http_status: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The session's own HTTP answers (``{"http": path, "body": ...}``) join ``http``.
        for event in self.events:
            if event.kind == "http":
                status, body = event.data
                self.http.setdefault(event.expected, body)
                self.http_status.setdefault(event.expected, status)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1]
        self.url = f"ws://{host}:{self.port}"
        return self.url

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            self.http_requests.append(f"{request.method} {request.path_qs}")
            key = request.path_qs if request.path_qs in self.http else request.path
            body = self.http.get(key)
            if body is None:
                return web.Response(status=404, text=f"no fixture for {request.path_qs}")
            return web.Response(body=body, status=self.http_status.get(key, 200), content_type="application/json")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self.connections += 1
        self.paths.append(request.path_qs)
        loop = asyncio.get_running_loop()
        opened = loop.time()
        try:
            for event in self.events:
                if self.speed and event.t is not None:
                    delay = opened + event.t / self.speed - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if ws.closed:
                    break
                if event.kind == "send":
                    await self._expect(ws, event)
                elif event.kind == "recv":
                    if isinstance(event.data, bytes):
                        await ws.send_bytes(event.data)
                    else:
                        await ws.send_str(event.data)
                elif event.kind == "close":
                    await ws.close(code=event.data)
                    break
            if self.hold and not ws.closed:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        self.received.append(msg.data)
            elif not ws.closed:
                await ws.close()
        except ConnectionResetError:
            logger.info("replay: the client went away before the session's end")
        finally:
            self.done.set()
        return ws

    async def _expect(self, ws: web.WebSocketResponse, event: Event) -> None:
        try:
            msg = await ws.receive(timeout=self.expect_timeout)
        except TimeoutError:
            self.mismatches.append(f"expected the client to send {_show(event.expected)}, got nothing "
                                   f"in {self.expect_timeout:g}s")
            return
        if msg.type != WSMsgType.TEXT:
            self.mismatches.append(f"expected the client to send {_show(event.expected)}, got {msg.type.name}")
            return
        self.received.append(msg.data)
        if event.data == "text":
            actual: Any = msg.data
        else:
            try:
                actual = codec.loads(msg.data)
            except codec.DecodeError:
                actual = msg.data
        if not matches(event.expected, actual):
            self.mismatches.append(f"expected the client to send {_show(event.expected)}, got {msg.data}")


def _show(value: Any) -> str:
    return value if isinstance(value, str) else codec.dumps(value).decode()
