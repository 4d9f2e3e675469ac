"""A local exchange for the operations tests: a generated coinbase session served at its recorded
pace, and a collector run in a thread of its own (as ``bitty collect`` runs it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bitty.pipeline import CollectOptions, CollectResult, collect
from tests.commands.test_collect import serve_in_thread

SUBSCRIBE = {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["matches", "heartbeat"]}
SUBSCRIPTIONS = {"type": "subscriptions", "channels": [
    {"name": "matches", "product_ids": ["BTC-USD", "ETH-USD"], "account_ids": None},
    {"name": "heartbeat", "product_ids": ["BTC-USD", "ETH-USD"], "account_ids": None}]}


def write_session(path: Path, seconds: float, per_second: int) -> int:
    """A coinbase session of ``per_second`` matches a second (alternating BTC-USD and ETH-USD) for
    ``seconds``, with a heartbeat per product every second; returns the number of trades."""
    start = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)
    lines = [{"send": SUBSCRIBE}, {"recv": SUBSCRIPTIONS}]
    last = {"BTC-USD": 1000, "ETH-USD": 5000}
    count = int(seconds * per_second)
    for n in range(count):
        t = n / per_second
        product = "BTC-USD" if n % 2 == 0 else "ETH-USD"
        last[product] += 1
        moment = (start + timedelta(seconds=t)).isoformat().replace("+00:00", "Z")
        lines.append({"t": t, "recv": {"type": "match", "trade_id": last[product], "side": "buy", "size": "0.01000000",
                                       "price": f"{37000 + n % 50}.25", "product_id": product, "sequence": n + 1,
                                       "time": moment}})
        if n % per_second == 0:
            for name, trade_id in last.items():
                lines.append({"t": t, "recv": {"type": "heartbeat", "last_trade_id": trade_id, "product_id": name,
                                               "sequence": n + 1, "time": moment}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class Running:
    status_url: str
    result: CollectResult | None = None


@contextlib.contextmanager
def exchange(tmp_path: Path, seconds: float = 30, per_second: int = 40) -> Iterator[tuple[str, int]]:
    """(websocket URL, trades it sends) of a local coinbase serving a generated session at its pace."""
    session = tmp_path / "session.jsonl"
    count = write_session(session, seconds, per_second)
    url, stop = serve_in_thread(session, hold=True, speed=1.0)
    try:
        yield url, count
    finally:
        stop()  # type: ignore[operator]


@contextlib.contextmanager
def collector(options: CollectOptions) -> Iterator[Running]:
    """``collect(options)`` in a thread with its own event loop, its status server on a free port;
    stopped (flushing everything) when the block ends."""
    port = free_port()
    options.status_addr = f"127.0.0.1:{port}"
    running = Running(f"http://127.0.0.1:{port}")
    box: dict[str, object] = {}
    ready = threading.Event()

    def run() -> None:
        async def main() -> None:
            box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            running.result = await collect(options, box["stop"])  # type: ignore[arg-type]

        try:
            asyncio.run(main())
        except BaseException as exc:  # shown by the test
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        wait_for(lambda: get(running.status_url + "/status")[0] == 200 or "error" in box, 10)
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        yield running
    finally:
        if "loop" in box and thread.is_alive():
            box["loop"].call_soon_threadsafe(box["stop"].set)  # type: ignore[attr-defined]
        thread.join(30)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]


def wait_for(condition: object, seconds: float = 10) -> None:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"not true within {seconds}s")
