"""``bitty record``: write the raw frames of a live connection to a session file.

The file is the session format of ``bitty.commands.replay`` (so ``bitty replay`` serves it, and it can
become a spec's fixture): the HTTP answers the session needed (``http``: the symbol listing, each
of the spec's ``symbols.list`` URLs, and every bootstrap answer, KuCoin's token), ``open`` with the
URL, every frame the client sent (``send``), every frame received exactly as it arrived
(``recv_text``, or ``recv_binary`` in base64), and ``close``, each with ``t``, the seconds since
the connection opened. Replayed with both ``--url`` and ``--rest-url`` pointing at ``bitty
replay``, the exchange then runs offline: names come from the recorded listing and a bootstrap is
answered as it was.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from bitty.engine.connection import Sends
from bitty.engine.consumer import BaseConsumer
from bitty.engine.subscribe import Subscription
from bitty.errors import BittyError
from bitty.mapping import codec
from bitty.markets.instruments import parse_listing, redirect
from bitty.spec import files as paths
from bitty.spec.load import Spec, find_spec, load_spec
from bitty.spec.symbols import resolve

logger = logging.getLogger("bitty.record")


class Recorder:
    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.opened = time.monotonic()
        self.frames = 0
        self.answers = 0

    def http(self, url: str, status: int, body: bytes) -> None:
        """An HTTP answer, served by a replay at the URL's path and query (any method)."""
        parts = urlsplit(url)
        line: dict[str, Any] = {"http": (parts.path or "/") + (f"?{parts.query}" if parts.query else "")}
        if status != 200:
            line["status"] = status
        try:
            line["body"] = codec.loads(body)  # numbers keep their digits
        except codec.DecodeError:
            line["body_text"] = body.decode("utf-8", "replace")
        self.answers += 1
        self.file.write(codec.dumps(line) + b"\n")

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


class RecordedBootstrap(Subscription):
    """A subscription whose bootstrap answers are written to the session as they arrive."""

    def __init__(self, *args: Any, recorder: Recorder) -> None:
        super().__init__(*args)
        self.recorder = recorder

    async def fetch_bootstrap(self, session: aiohttp.ClientSession) -> None:
        await super().fetch_bootstrap(session)
        boot = self.spec.bootstrap
        if boot is not None:
            url = self.bootstrap_url or str(boot.url.render({"connect_id": self.connect_id, "now_ms": 0}))
            self.recorder.http(url, 200, orjson.dumps(self.bootstrap))


class RecordingConsumer(BaseConsumer):
    def __init__(self, *args: Any, recorder: Recorder, **kwargs: Any) -> None:
        self.recorder = recorder
        super().__init__(*args, **kwargs)

    def _subscription(self, url: str | None, bootstrap_url: str | None) -> Sends:
        assert self.spec is not None
        return RecordedBootstrap(self.spec, self.product_ids, self.hooks, url, bootstrap_url, recorder=self.recorder)


async def record_listing(spec: Spec, recorder: Recorder, origin: str | None) -> list[str] | None:
    """GET each URL of the spec's listing, write the answers, and teach the spec the names it
    gives; the names listed, or None when the listing could not be read (a warning says why)."""
    listing = spec.symbol_list
    if listing is None:
        return None
    names: list[str] = []
    async with aiohttp.ClientSession() as session:
        for url in listing.urls or (listing.url,):
            target = redirect(url, origin)
            try:
                async with session.get(target, timeout=aiohttp.ClientTimeout(total=15)) as response:
                    body = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("%s: GET %s: %s: %s; the session has no listing", spec.name, target,
                               type(exc).__name__, exc)
                return None
            recorder.http(url, response.status, body)
            try:
                if response.status >= 400:
                    raise BittyError(f"{spec.name}: GET {target}: HTTP {response.status}")
                instruments = parse_listing(spec, orjson.loads(body))
            except (BittyError, orjson.JSONDecodeError) as exc:
                logger.warning("%s: the listing cannot be read (%s); symbols are named without it", spec.name, exc)
                return None
            for instrument in instruments:
                if instrument.normalized:
                    spec.symbols.learn(instrument.native, instrument.normalized)
                    names.append(instrument.normalized)
    return names


async def record(exchange: str, out: Path, symbols: str | None, url: str | None,
                 duration: float, dirs: list[str], rest_url: str | None = None) -> int:
    spec = load_spec(find_spec(exchange, paths.spec_dirs(dirs)))
    bootstrap_url = None
    if rest_url and spec.bootstrap is not None:
        if spec.bootstrap.url.variables():
            raise BittyError(f"{spec.name}: --rest-url cannot redirect a bootstrap URL built from variables")
        bootstrap_url = redirect(str(spec.bootstrap.url.render({})), rest_url)
    with out.open("wb") as file:
        recorder = Recorder(file)
        known = await record_listing(spec, recorder, rest_url)
        chosen = (resolve(spec.symbols, symbols.split(","), known, exchange=spec.name) if symbols
                  else list(spec.default_symbols))
        consumer = RecordingConsumer(chosen, url=url, spec=spec, bootstrap_url=bootstrap_url, rest_url=rest_url,
                                     recorder=recorder)
        consumer.on_raw(recorder)
        task = asyncio.create_task(consumer.run())
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=duration)
        except TimeoutError:
            pass
        finally:
            await consumer.stop()
            await task
    print(f"recorded {recorder.frames} frames and {recorder.answers} HTTP answers to {out}")
    return 1 if consumer.failed else 0
