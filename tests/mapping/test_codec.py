"""Frames in: JSON decoded with every number's digits, binary frames that are plain JSON under
`compression: auto`, text frames that are not UTF-8; and the digits out again in SQLite and
PostgreSQL."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp import WSMsgType, web

from bitty.mapping import codec
from bitty.mapping.mapper import Mapper, compress
from bitty.spec.load import load_spec
from bitty.storage.store import Store
from tests.wsserver import accept, drain, drive, read_json

SPEC = load_spec(Path(__file__).parents[1] / "specs" / "positive" / "testex.yaml")
FRAME = b'{"type":"match","trade_id":1,"product_id":"BTC-USD","price":100473000.00000000,"size":0.0010,' \
        b'"side":"buy","time":"2024-01-02T03:04:05.123456Z"}'


def test_a_binary_frame_of_plain_json_decodes_under_auto() -> None:
    """`compression: auto` takes a binary frame that is already JSON as it is (it used to fail
    with 'invalid distance too far back'), with its numbers' digits."""
    mapper = Mapper(SPEC)
    assert SPEC.compression == "auto"
    for data in (FRAME, b"  \n" + FRAME, b"[" + FRAME + b"]"):
        frame = mapper.decode(data)
        first = frame[0] if isinstance(frame, list) else frame
        assert str(first["price"]) == "100473000.00000000" and str(first["size"]) == "0.0010"


@pytest.mark.parametrize("method", ["gzip", "zlib", "deflate"])
def test_compressed_frames_still_decode_under_auto(method: str) -> None:
    """gzip, zlib and raw deflate frames are still inflated under `compression: auto`."""
    data = {"gzip": gzip.compress(FRAME), "zlib": zlib.compress(FRAME), "deflate": compress(FRAME, "deflate")}[method]
    assert Mapper(SPEC).decode(data)["price"] == Decimal("100473000.00000000")


def test_binary_garbage_is_still_refused_with_the_reason() -> None:
    """A binary frame that is neither JSON nor a compressed stream raises ValueError with why,
    including one that starts like JSON."""
    mapper = Mapper(SPEC)
    for data in (b"\x00\x01binary garbage", b"{not json at all"):
        with pytest.raises(ValueError, match=r"binary frame does not decompress|not JSON"):
            mapper.decode(data)


def test_numbers_keep_their_digits_through_dumps_and_loads() -> None:
    """A decoded frame encodes back to the very digits it was decoded from."""
    assert codec.dumps(codec.loads(FRAME)) == FRAME


def test_a_text_frame_that_is_not_utf8_is_quarantined_and_the_stream_goes_on() -> None:
    """Invalid UTF-8 in a text frame is quarantined (the bytes kept, base64) without dropping the
    connection; the next trade is stored."""
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        ws = await accept(request)
        await read_json(ws)
        await ws.send_frame(b'{"type":"match","price":"\xff\xfe"}', WSMsgType.TEXT)
        await ws.send_bytes(FRAME)  # a binary frame of plain JSON
        await ws.send_str(FRAME.decode().replace('"trade_id":1', '"trade_id":2'))
        return await drain(ws)

    run = drive(handler, 0.4, SPEC)
    assert [t.trade_id for t in run.trades] == ["1", "2"]
    assert [str(t.price) for t in run.trades] == ["100473000.00000000"] * 2
    assert run.consumer.stats.reconnects == 0 and run.connections == 1
    [bad] = run.quarantined
    assert "text frame is not valid UTF-8" in bad.reason and bad.frame.startswith("base64:")


@pytest.mark.parametrize("text", ["100473000.00000000", "0.0010", "0.000000000001", "1234567890.123456789012345678901234567890"])
def test_the_published_digits_are_stored(db_url: str, text: str) -> None:
    """SQLite (decimal text) and PostgreSQL (NUMERIC) store the digits sent, trailing zeros
    included, whether they came as a JSON number or a string, and read them back."""
    mapper = Mapper(SPEC)
    mapper.learn(["BTC-USD"])
    now = datetime(2024, 6, 1, tzinfo=UTC)
    trades = []
    for n, value in enumerate((text, f'"{text}"')):
        frame = FRAME.replace(b"100473000.00000000", value.encode()).replace(b'"trade_id":1', b'"trade_id":%d' % n)
        trades += mapper.handle(mapper.decode(frame), now, {}).trades
    assert len(trades) == 2
    store = Store(db_url)
    try:
        store.open()
        store.write(trades[:1])
        store.write(trades)  # with a known trade: PostgreSQL's staged COPY, after the direct one
        with store.engine.connect() as conn:
            cast = "price::text" if store.engine.dialect.name == "postgresql" else "price"
            stored = conn.execute(sa.text(f"SELECT {cast}, size FROM trades ORDER BY trade_id")).all()
        assert [row[0] for row in stored] == [text, text]
        assert [str(row[1]) for row in stored] == ["0.0010", "0.0010"]
        assert [format(t.price, "f") for t in store.read_trades()] == [text, text]
    finally:
        store.close()


def test_an_error_frame_shown_as_text_keeps_its_numbers() -> None:
    """An error kind without a message shows the frame as JSON, its decimals as the digits sent."""
    mapper = Mapper(SPEC)
    outcome = mapper.handle(mapper.decode('{"type":"error","code":1.50,"big":123456789012345678901234567890}'),
                            datetime(2024, 6, 1, tzinfo=UTC), {})
    assert outcome.kind == "error"
    assert outcome.message == '{"type":"error","code":1.50,"big":123456789012345678901234567890}'
