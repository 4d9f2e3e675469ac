"""A local websocket server flooding frames: one port per exchange, run in its own process so
its CPU is not counted against the client. Each connection learns its symbols the way the
exchange does (Binance: the URL's streams; Coinbase and Kraken: the subscribe message).

The server has to outrun any client on a machine with few cores, so it encodes nothing per
frame. At start-up every frame ``bench.frames.generate`` yields becomes a byte template with
holes where a connection differs (its symbols, its trade ids); a connection fills a chunk of
templates with C-level ``map``/``zip``, joins them with their websocket headers and writes the
chunk in one call. The bytes sent are exactly what ``generate`` would give that connection."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson

from bench import wire
from bench.frames import EXCHANGES, generate

CHUNK = 1000  # frames per write: large enough to cost nothing per frame, small enough to start at once
_ids = itertools.count(1, 1_000_000)
_headers = wire.TextHeaders()

# The holes in each exchange's frames, by path: what a connection fills in. Every other value is
# the same for all connections. A stream is "<native in lower case>@trade"; an id hole holds the
# connection's trade id plus a fixed offset (Coinbase's sequence is its trade id + 50 billion).
STREAM, SYMBOL, ID = "stream", "symbol", "id"
HOLES: dict[str, dict[tuple[str | int, ...], str]] = {
    "binance": {("stream",): STREAM, ("data", "s"): SYMBOL, ("data", "t"): ID},
    "coinbase": {("trade_id",): ID, ("product_id",): SYMBOL, ("sequence",): ID},
    "kraken": {(3,): SYMBOL},
}


@dataclass(frozen=True)
class Templates:
    """One exchange's frames with holes: ``frames[n] % args`` is frame n as bytes. ``holes``
    lists (kind, offset) in the order the holes appear, which is the order ``%`` takes args."""

    exchange: str
    frames: list[bytes]
    holes: tuple[tuple[str, int], ...]

    @classmethod
    def build(cls, exchange: str, count: int) -> Templates:
        """Cut the holes out of ``generate``'s own frames, so every other byte is its byte.
        Raises ValueError if the frames no longer fit ``HOLES``."""
        paths = list(HOLES[exchange])
        markers = [orjson.dumps(f"\x00{i}") for i in range(len(paths))]
        frames: list[bytes] = []
        holes: tuple[tuple[str, int], ...] | None = None
        for n, text in enumerate(generate(exchange, ["X"], count, start_id=1)):
            message = orjson.loads(text)
            found = []
            for path, marker in zip(paths, markers, strict=True):
                *parents, last = path
                parent = functools.reduce(lambda node, key: node[key], parents, message)
                value = parent[last]
                parent[last] = orjson.loads(marker)
                found.append((HOLES[exchange][path], value - (1 + n) if isinstance(value, int) else 0))
            template = orjson.dumps(message).replace(b"%", b"%%")
            order = sorted(range(len(paths)), key=lambda i: template.index(markers[i]))
            these = tuple(found[i] for i in order)
            if holes is None:
                holes = these
            elif these != holes:
                raise ValueError(f"{exchange} frame {n}: holes {these} differ from frame 0's {holes}")
            for (kind, _), i in zip(these, order, strict=True):
                template = template.replace(markers[i], b"%d" if kind == ID else b"%s")
            frames.append(template)
        return cls(exchange, frames, holes or ())

    def chunks(self, natives: list[str], start_id: int, size: int = CHUNK) -> Iterator[bytes]:
        """Websocket text frames of ``generate(exchange, natives, count, start_id)``, ``size`` at a time."""
        if not natives:
            return
        columns: list[Iterator[Any]] = []
        for kind, offset in self.holes:
            if kind == ID:
                columns.append(itertools.count(start_id + offset))
            else:
                texts = [n.lower() + "@trade" if kind == STREAM else n for n in natives]
                columns.append(itertools.cycle([orjson.dumps(t) for t in texts]))
        args = zip(*columns, strict=False) if columns else itertools.repeat(())  # all endless
        for lo in range(0, len(self.frames), size):
            # map stops at the shortest iterable, taking nothing more from args
            payloads = list(map(bytes.__mod__, self.frames[lo:lo + size], args))
            out = [b""] * (2 * len(payloads))
            out[0::2] = map(_headers.__getitem__, map(len, payloads))
            out[1::2] = payloads
            yield b"".join(out)


def subscribed(exchange: str, request: wire.Request, message: bytes | None) -> list[str] | None:
    """The natives a connection asks for, or None until it has said. Binance names them in the
    URL (``streams=btcusdt@trade/...``), the others in their first message (``product_ids`` or
    ``pair``)."""
    if exchange == "binance":
        streams = request.query.get("streams", [""])[0]
        return [s.split("@")[0].upper() for s in streams.split("/") if s]
    if message is None:
        return None
    try:
        first = orjson.loads(message)
    except orjson.JSONDecodeError:
        return []
    natives = (first.get("product_ids") or first.get("pair")) if isinstance(first, dict) else None
    return [n for n in natives if isinstance(n, str)] if isinstance(natives, list) else []


async def _flood(writer: asyncio.StreamWriter, chunks: Iterator[bytes]) -> None:
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()  # the client's pace: no more than the transport's buffer piles up


async def _connection(templates: Templates, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One client: handshake, learn its symbols, flood, then answer pings until it closes."""
    flood: asyncio.Task[None] | None = None
    try:
        try:
            request = wire.parse_request(await reader.readuntil(b"\r\n\r\n"))
        except (wire.ProtocolError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            writer.write(wire.BAD_REQUEST)
            return
        writer.write(wire.handshake(request))
        parser = wire.Parser()
        natives = subscribed(templates.exchange, request, None)
        while True:
            if flood is None and natives is not None:
                flood = asyncio.create_task(_flood(writer, templates.chunks(natives, next(_ids))))
            data = await reader.read(1 << 16)
            if not data:
                return
            for opcode, payload in parser.feed(data):
                if opcode == wire.PING:
                    writer.write(wire.frame(payload, wire.PONG))
                elif opcode == wire.CLOSE:
                    if flood is not None:
                        flood.cancel()  # before it writes again: nothing may follow the close frame
                    writer.write(wire.close(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None))
                    return
                elif natives is None and opcode in (wire.TEXT, wire.BINARY):
                    natives = subscribed(templates.exchange, request, payload)
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


async def start(frames: int) -> tuple[list[asyncio.Server], dict[str, int]]:
    """One listening server per exchange on 127.0.0.1, each connection sent ``frames`` frames."""
    servers, ports = [], {}
    for exchange in EXCHANGES:
        handler = functools.partial(_connection, Templates.build(exchange, frames))
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        ports[exchange] = server.sockets[0].getsockname()[1]
    return servers, ports


async def _serve(frames: int, pipe: Connection) -> None:
    servers, ports = await start(frames)
    pipe.send(ports)
    try:
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # until told to stop
    finally:
        for server in servers:
            server.close()


def serve(frames: int, pipe: Connection) -> None:
    """Process entry point: send {exchange: port} through ``pipe``, serve until it gets a message."""
    asyncio.run(_serve(frames, pipe))
