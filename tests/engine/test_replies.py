"""Replies that echo a frame's numbers send them as JSON numbers with the digits received."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bitty.spec.load import load_spec
from tests.conftest import SPECS
from tests.wsserver import accept, drain, drive, read_json

SPEC = load_spec(SPECS / "positive" / "testex.yaml")  # pong: {type: pong, echo: ${n}}


def test_pong_echoes_numbers_with_their_digits() -> None:
    """A ping's numeric fields come back in the pong as numbers, digit for digit (not strings, not floats)."""
    received: list[str] = []
    pings = ['{"type": "ping", "n": 1712345678.123450000}',
             '{"type": "ping", "n": 0.1234567890123456789}',
             '{"type": "ping", "n": 1E-12}',
             '{"type": "ping", "n": 42}']

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        for ping in pings if n == 1 else ():  # the first connection (the heartbeat watchdog may reconnect)
            await ws.send_str(ping)
            received.append(await asyncio.wait_for(ws.receive_str(), 5))
        return await drain(ws)

    drive(handler, 0.5, SPEC)
    assert received == ['{"type":"pong","echo":1712345678.123450000}',
                        '{"type":"pong","echo":0.1234567890123456789}',
                        '{"type":"pong","echo":1E-12}',
                        '{"type":"pong","echo":42}']
