"""NATS fixtures: the server on this machine, and a stream and subject prefix of one test alone."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator

import pytest

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def nats_url() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return NATS_URL
    except OSError:
        pytest.skip("NATS is not running on 127.0.0.1:4222")


@pytest.fixture
def stream_names() -> Iterator[tuple[str, str]]:
    """A stream name and subject prefix of this test alone (deleted afterwards)."""
    tag = uuid.uuid4().hex[:10]
    name, prefix = f"BITTYTEST_{tag}", f"bittytest{tag}"
    yield name, prefix
    import asyncio

    import nats

    async def delete() -> None:
        try:
            nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
        except Exception:
            return
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(name)
        await nc.close()

    asyncio.run(delete())
