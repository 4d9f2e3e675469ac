"""Keeping a connection open: protocol pings answered, application pings sent on a timer.

Protocol pings and pongs keep the socket open but are not data: the watchdog's idle timer
ignores them, so a server that answers pings but stopped sending data is restarted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

PROTOCOL = (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG)


async def answer_ping(ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> None:
    """A protocol ping is answered with a pong carrying its payload (autoping is off so that
    pings reach the reader, which answers them here)."""
    if msg.type == aiohttp.WSMsgType.PING:
        await ws.pong(msg.data)


async def send_every(interval: float, message: Callable[[], Any], send: Callable[[Any], Awaitable[None]]) -> None:
    """Send ``message()`` every ``interval`` seconds until cancelled (the spec's ``keepalive``)."""
    while True:
        await asyncio.sleep(interval)
        await send(message())
