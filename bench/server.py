"""A local websocket server sending trade frames: one port per exchange, run in its own process
so its CPU is not counted against the client.

A connection names its symbols in its URL, in Binance's own ``streams=btcusdt@trade/...`` or,
for any exchange, in ``natives=BTC-USD,ETH-USD`` (the bench hands consumers such a URL
template; they still send their real subscribe messages, which the server ignores). It gets
``bench.frames.generate``'s frames for those symbols with its own trade ids, and the heartbeats
the exchange sends meanwhile: as fast as it reads them (a flood), or at a steady rate per symbol
(a market). Then it gets a ping and the exchange's idle heartbeats every ``IDLE_EVERY``
seconds, so that no watchdog restarts a connection waiting for the others to finish.

A flood has to outrun any client on a machine with few cores, so the server encodes nothing
per frame: a connection fills a chunk of ``bench.frames.templates`` with C-level ``map``, joins
them with their websocket headers and writes the chunk in one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench import wire
from bench.frames import heartbeats, holes, templates

CHUNK = 500  # frames per flood write, and between two of Coinbase's heartbeat rounds in a flood
TICK = 0.05  # seconds between two writes of a paced connection
IDLE_EVERY = 1.0  # seconds between pings (and idle heartbeats) once a connection's flood is done
_ids = itertools.count(1, 1_000_000)  # a connection's first frame id: its trade ids are its own
_headers = wire.TextHeaders()


def _join(payloads: list[bytes]) -> bytes:
    """Payloads as consecutive websocket text frames."""
    out = [b""] * (2 * len(payloads))
    out[0::2] = map(_headers.__getitem__, map(len, payloads))
    out[1::2] = payloads
    return b"".join(out)


@dataclass(frozen=True)
class Feed:
    """One exchange's frames as templates. A connection gets ``per_symbol`` frames for each of
    its symbols (all of ``frames`` when 0): as fast as it reads them, or ``per_second`` a second
    for each symbol."""

    exchange: str
    frames: list[bytes]
    per_symbol: int = 0
    per_second: float = 0.0

    def count(self, natives: list[str]) -> int:
        """How many frames a connection for ``natives`` gets. Raises ValueError beyond ``frames``."""
        count = self.per_symbol * len(natives) if self.per_symbol else len(self.frames)
        if count > len(self.frames):
            raise ValueError(f"{self.exchange}: {len(natives)} symbols need {count} frames, "
                             f"the server built {len(self.frames)}")
        return count

    def chunks(self, natives: list[str], start_id: int, count: int, size: int = CHUNK) -> Iterator[bytes]:
        """``generate(exchange, natives, count, start_id)`` as websocket text frames, ``size`` at
        a time, each chunk led by the heartbeats the exchange sends during a flood."""
        values = holes(natives, start_id)
        for lo in range(0, count, size):
            yield self.chunk(natives, start_id, values, lo, min(lo + size, count), beat=True)

    def chunk(self, natives: list[str], start_id: int, values: Iterator[dict[bytes, Any]], lo: int, hi: int,
              beat: bool) -> bytes:
        """Frames ``lo`` to ``hi`` filled with the next ``values``, after heartbeats if ``beat``."""
        payloads = heartbeats(self.exchange, natives, start_id, lo, idle=False) if beat else []
        payloads += map(bytes.__mod__, self.frames[lo:hi], values)  # stops at the slice's end
        return _join(payloads)

    def idle(self, natives: list[str], start_id: int, count: int) -> bytes:
        """A ping and the exchange's heartbeats, for a connection whose ``count`` frames are sent."""
        return wire.frame(b"bench", wire.PING) + _join(heartbeats(self.exchange, natives, start_id, count, idle=True))


def subscribed(request: wire.Request) -> list[str] | None:
    """The natives a connection names in its URL, or None if it names none."""
    if natives := request.query.get("natives"):
        return [n for n in natives[0].split(",") if n] or None
    if streams := request.query.get("streams"):
        return [s.split("@")[0].upper() for s in streams[0].split("/") if s] or None
    return None


async def _stream(writer: asyncio.StreamWriter, feed: Feed, natives: list[str], start_id: int, count: int) -> None:
    if feed.per_second:
        await _paced(writer, feed, natives, start_id, count)
    else:
        for chunk in feed.chunks(natives, start_id, count):
            writer.write(chunk)
            await writer.drain()  # the client's pace: no more than the transport's buffer piles up
    while True:
        await asyncio.sleep(IDLE_EVERY)
        writer.write(feed.idle(natives, start_id, count))
        await writer.drain()


async def _paced(writer: asyncio.StreamWriter, feed: Feed, natives: list[str], start_id: int, count: int) -> None:
    """``feed.per_second`` frames a second per symbol, written every ``TICK``, with the exchange's
    busy heartbeats once a second (on time, as no backlog delays them)."""
    loop = asyncio.get_running_loop()
    began, sent, beat_at = loop.time(), 0, -1.0
    rate = feed.per_second * len(natives)
    values = holes(natives, start_id)
    while sent < count:
        await asyncio.sleep(TICK)
        now = loop.time() - began
        due = min(count, int(now * rate))
        beat = now - beat_at >= 1.0
        beat_at = now if beat else beat_at
        writer.write(feed.chunk(natives, start_id, values, sent, due, beat))
        await writer.drain()
        sent = due


async def _connection(feed: Feed, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One client: handshake, flood the symbols its URL names, answer pings until it closes."""
    flood: asyncio.Task[None] | None = None
    try:
        try:
            request = wire.parse_request(await reader.readuntil(b"\r\n\r\n"))
            natives = subscribed(request)
            if natives is None:
                raise wire.ProtocolError("the URL names no symbols (natives= or streams=)")
            count = feed.count(natives)
        except (wire.ProtocolError, ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            writer.write(wire.BAD_REQUEST)
            return
        writer.write(wire.handshake(request))
        flood = asyncio.create_task(_stream(writer, feed, natives, next(_ids), count))
        parser = wire.Parser()
        while data := await reader.read(1 << 16):
            for opcode, payload in parser.feed(data):  # subscribe messages and keepalives: ignored
                if opcode == wire.PING:
                    writer.write(wire.frame(payload, wire.PONG))
                elif opcode == wire.CLOSE:
                    flood.cancel()  # before it writes again: nothing may follow the close frame
                    writer.write(wire.close(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None))
                    return
    except wire.ProtocolError as exc:
        writer.write(wire.close(exc.status))
    except ConnectionError:
        pass
    finally:
        if flood is not None:
            flood.cancel()
            await asyncio.gather(flood, return_exceptions=True)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def start(frames: Mapping[str, int], per_symbol: int = 0,
                per_second: float = 0.0) -> tuple[list[asyncio.Server], dict[str, int]]:
    """One listening server on 127.0.0.1 for each exchange in ``frames``, with that many frame
    templates; a connection gets ``per_symbol`` frames per symbol (all of them if 0), flooded or
    ``per_second`` a second per symbol."""
    servers, ports = [], {}
    for exchange, count in frames.items():
        feed = Feed(exchange, templates(exchange, count), per_symbol, per_second)
        handler = functools.partial(_connection, feed)
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        ports[exchange] = server.sockets[0].getsockname()[1]
    return servers, ports


async def _serve(frames: Mapping[str, int], per_symbol: int, per_second: float, pipe: Connection) -> None:
    servers, ports = await start(frames, per_symbol, per_second)
    pipe.send(ports)
    try:
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # until told to stop
    finally:
        for server in servers:
            server.close()


def serve(frames: Mapping[str, int], pipe: Connection, per_symbol: int = 0, per_second: float = 0.0) -> None:
    """Process entry point: send {exchange: port} through ``pipe``, serve until it gets a message."""
    asyncio.run(_serve(frames, per_symbol, per_second, pipe))
