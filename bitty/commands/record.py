"""``bitty record``: write the raw frames of a live connection to a session file.

The file is the session format of ``bitty.commands.replay`` (so ``bitty replay`` serves it, and it can
become a spec's fixture): ``open`` with the URL, every frame the client sent (``send``), every
frame received exactly as it arrived (``recv_text``, or ``recv_binary`` in base64), and ``close``,
each with ``t``, the seconds since the connection opened.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import IO, Any

from bitty.engine.consumer import BaseConsumer
from bitty.mapping import codec
from bitty.spec import files as paths
from bitty.spec.load import find_spec, load_spec
from bitty.spec.symbols import resolve


class Recorder:
    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.opened = time.monotonic()
        self.frames = 0

    def __call__(self, event: str, data: Any) -> None:
        if event == "open":
            self.opened = time.monotonic()
            line: dict[str, Any] = {"open": data}
        elif event == "send":
            try:
                line = {"send": codec.loads(data)}  # numbers keep their digits
            except codec.DecodeError:
                line = {"send_text": data}
        elif event == "recv":
            self.frames += 1
            binary = isinstance(data, bytes)
            line = {"recv_binary": base64.b64encode(data).decode()} if binary else {"recv_text": data}
        else:
            line = {"close": data or 1000}
        line["t"] = round(time.monotonic() - self.opened, 6)
        self.file.write(codec.dumps(line) + b"\n")


async def record(exchange: str, out: Path, symbols: str | None, url: str | None,
                 duration: float, dirs: list[str]) -> int:
    spec = load_spec(find_spec(exchange, paths.spec_dirs(dirs)))
    chosen = resolve(spec.symbols, symbols.split(",")) if symbols else list(spec.default_symbols)
    consumer = BaseConsumer(chosen, url=url, spec=spec)
    with out.open("wb") as file:
        recorder = Recorder(file)
        consumer.on_raw(recorder)
        task = asyncio.create_task(consumer.run())
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=duration)
        except TimeoutError:
            pass
        finally:
            await consumer.stop()
            await task
    print(f"recorded {recorder.frames} frames to {out}")
    return 1 if consumer.failed else 0
