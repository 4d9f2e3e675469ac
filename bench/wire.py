"""The websocket wire format (RFC 6455), server side, as far as the bench needs it: the HTTP
upgrade handshake, unmasked frames out, masked client frames in. No sockets here: the flooding
server in ``bench.server`` is a thin asyncio shell around these functions."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class ProtocolError(ValueError):
    """The peer broke the protocol; a websocket peer is sent a close frame with ``status``."""

    def __init__(self, message: str, status: int = 1002) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """An upgrade request: the URL's path and query, and the headers with lower-cased names."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


def parse_request(head: bytes) -> Request:
    """The request line and headers of ``head`` (up to the blank line), if it asks for a websocket."""
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    if method != "GET" or not version.startswith("HTTP/1."):
        raise ProtocolError(f"not a websocket upgrade: {lines[0]!r}")
    headers = {}
    for line in filter(None, lines[1:]):
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError(f"malformed header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket" or not headers.get("sec-websocket-key"):
        raise ProtocolError("no Upgrade: websocket or no Sec-WebSocket-Key")
    url = urlsplit(target)
    return Request(url.path, parse_qs(url.query), headers)


def accept(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``: it proves the server read it."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def handshake(request: Request) -> bytes:
    """The ``101 Switching Protocols`` answer. It negotiates no subprotocol and no extension, so
    frames go uncompressed and the reserved bits stay zero."""
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept(request.headers['sec-websocket-key'])}\r\n\r\n").encode()


def header(length: int, opcode: int = TEXT) -> bytes:
    """The header of a final, unmasked (server) frame carrying ``length`` payload bytes."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 1 << 16:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")


def frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """A final, unmasked frame."""
    return header(len(payload), opcode) + payload


def close(status: int | None = None) -> bytes:
    """A close frame, with a status code or without one (an empty close answers an empty close)."""
    return frame(b"" if status is None else status.to_bytes(2, "big"), CLOSE)


class TextHeaders(dict[int, bytes]):
    """Text frame headers by payload length, each computed once, so a hot loop can look them up
    with ``map(headers.__getitem__, lengths)`` without a Python call per frame."""

    def __missing__(self, length: int) -> bytes:
        self[length] = value = header(length)
        return value


def unmask(data: bytes, mask: bytes) -> bytes:
    """``data`` XOR the 4-byte ``mask`` repeated: one big-integer XOR rather than a loop per byte."""
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class Parser:
    """Client frames from a byte stream: ``feed`` the bytes as they arrive and get back the
    ``(opcode, payload)`` messages they complete. Fragmented messages are reassembled; control
    frames (close, ping, pong) may come between fragments, as RFC 6455 allows."""

    def __init__(self, max_size: int = 1 << 20) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._opcode = CONTINUATION  # of the fragmented message in progress, if any
        self._fragments: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        messages = []
        while (decoded := self._frame()) is not None:
            fin, opcode, payload = decoded
            if opcode >= CLOSE:
                if opcode not in (CLOSE, PING, PONG) or not fin or len(payload) > 125:
                    raise ProtocolError(f"bad control frame (opcode {opcode:#x}, fin {fin}, {len(payload)} bytes)")
                messages.append((opcode, payload))
                continue
            if opcode == CONTINUATION:
                if not self._opcode:
                    raise ProtocolError("continuation frame without a message to continue")
            elif opcode in (TEXT, BINARY) and not self._opcode:
                self._opcode = opcode
            else:
                raise ProtocolError(f"unexpected opcode {opcode:#x}")
            self._size += len(payload)
            if self._size > self.max_size:
                raise ProtocolError(f"message larger than {self.max_size} bytes", status=1009)
            self._fragments.append(payload)
            if fin:
                messages.append((self._opcode, b"".join(self._fragments)))
                self._opcode, self._fragments, self._size = CONTINUATION, [], 0
        return messages

    def _frame(self) -> tuple[bool, int, bytes] | None:
        """The next whole frame in the buffer, unmasked, or None until more bytes arrive."""
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise ProtocolError("reserved bits set, but no extension was negotiated")
        if not second & 0x80:
            raise ProtocolError("client frames must be masked")
        length, start = second & 0x7F, 2
        if length >= 126:
            start = 4 if length == 126 else 10
            if len(buf) < start:
                return None
            length = int.from_bytes(buf[2:start], "big")
        if length > self.max_size:
            raise ProtocolError(f"frame larger than {self.max_size} bytes", status=1009)
        end = start + 4 + length
        if len(buf) < end:
            return None
        payload = unmask(bytes(buf[start + 4:end]), bytes(buf[start:start + 4]))
        del buf[:end]
        return bool(first & 0x80), first & 0x0F, payload
