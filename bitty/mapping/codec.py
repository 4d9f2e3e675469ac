"""JSON frames in and out, with every number's own digits.

A JSON number with a fraction or an exponent is decoded to a ``Decimal`` of its text
(``100473000.00000000`` stays that, ``0.0010`` keeps its zero), integers to ``int``: no float
anywhere between the socket and the row. msgspec parses the text and hands each such number's
digits to ``Decimal`` in C, which costs less than orjson's floats on the frames exchanges send
(strings, mostly; see ``bench``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

# A frame that is not JSON (or whose integer is beyond Python's 4,300-digit limit) raises it.
DecodeError = msgspec.DecodeError

_decoder = msgspec.json.Decoder(float_hook=Decimal)
loads = _decoder.decode
_encoder = msgspec.json.Encoder(decimal_format="number")


def dumps(value: Any) -> bytes:
    """JSON of a decoded frame, Decimals as the numbers they were read from."""
    return _encoder.encode(value)


def plain_json(data: bytes) -> Any:
    """A binary frame that is already JSON (an object or array), decoded; ``NOT_JSON`` for any
    other. gzip and zlib streams start 1f 8b and 78, never ``{`` or ``[``; a raw deflate stream
    may, but then it holds bytes JSON cannot, so the parse tells them apart."""
    if data.lstrip(b" \t\r\n")[:1] not in (b"{", b"["):
        return NOT_JSON
    try:
        return loads(data)
    except DecodeError:
        return NOT_JSON


NOT_JSON = object()
