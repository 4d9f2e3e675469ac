"""The status HTTP server: ``/metrics``, ``/healthz``, ``/status``, ``/history`` and the live page ``/``.

It runs on the collector's event loop, so it must never hold it up: the snapshot (plain reads
of counters) is taken on the loop at most every ``fresh`` seconds; rendering it (JSON, the
Prometheus text: tens of milliseconds for a thousand symbols) happens once per snapshot on a
thread of its own, shared by every request that asks meanwhile (a storm renders it once);
nothing reads the database; a request with an unknown parameter is a 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import orjson
from aiohttp import web

from bitty.errors import BittyError
from bitty.ops import metrics
from bitty.ops.status import History, Snapshot, Source, health

logger = logging.getLogger(__name__)

DEFAULT_HEALTH_LIMIT = 60.0


def parse_addr(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError with the reason."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:9108")
    return host.strip("[]"), int(port)


class StatusServer:
    """Serves a ``Source``'s status. ``start()`` binds (a taken port is a ``BittyError``) before
    the source is known; ``attach()`` gives it the source once the process has one."""

    def __init__(self, host: str, port: int, source: Source | None = None, *,
                 health_limit: float = DEFAULT_HEALTH_LIMIT, interval: float = 1.0, fresh: float = 0.5) -> None:
        self.host, self.port = host, port
        self.source = source
        self.health_limit = health_limit
        self.interval = interval
        self.fresh = fresh
        self.history = History(keep=int(300 / interval))
        self.requests = 0
        self._snapshot: Snapshot | None = None
        self._taken = 0.0
        self._bodies: dict[str, tuple[Snapshot, asyncio.Future[bytes]]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bitty-status")
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._page = resources.files("bitty.ops").joinpath("page.html").read_bytes()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/history", self._history)
        self._scraped: Snapshot | None = None  # the snapshot being rendered as metrics (status thread)
        self._registry = metrics.registry(lambda: self._scraped or self.current())
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise BittyError(f"--status-addr {self.host}:{self.port}: cannot listen: {exc.strerror or exc}") from None
        server = site._server
        if server is not None and self.port == 0:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._sampler = asyncio.get_running_loop().create_task(self._sample())
        logger.info("status page on %s/ (metrics on /metrics)", self.url)

    def attach(self, source: Source) -> None:
        self.source = source

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self._runner is not None:
            await self._runner.cleanup()
        self._executor.shutdown(wait=True)

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.source is None:
                continue
            try:
                snapshot = self.source.snapshot()
            except Exception:  # a bug in a view must not stop the process it watches
                logger.exception("cannot take a status snapshot")
                continue
            self.history.add(snapshot)
            self._keep(self.history.annotate(snapshot))

    def _keep(self, snapshot: Snapshot) -> None:
        reasons = health(snapshot, self.health_limit)
        snapshot.healthy, snapshot.unhealthy_reasons = not reasons, reasons
        self._snapshot, self._taken = snapshot, time.monotonic()

    def current(self) -> Snapshot:
        """The latest snapshot, taken anew only when older than ``fresh`` seconds."""
        if self.source is None:
            raise web.HTTPServiceUnavailable(text="starting: not collecting yet\n")
        if self._snapshot is None or time.monotonic() - self._taken > self.fresh:
            self._keep(self.history.annotate(self.source.snapshot()))
        assert self._snapshot is not None
        return self._snapshot

    async def _body(self, name: str, render: Callable[[Snapshot], bytes]) -> bytes:
        """``render(snapshot)`` of the current snapshot, on the status thread, once per snapshot."""
        snapshot = self.current()
        cached = self._bodies.get(name)
        if cached is None or cached[0] is not snapshot:
            future = asyncio.get_running_loop().run_in_executor(self._executor, render, snapshot)
            cached = self._bodies[name] = (snapshot, future)
        return await asyncio.shield(cached[1])

    # --- handlers ------------------------------------------------------------------------

    @staticmethod
    def _check_query(request: web.Request, allowed: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(request.query) - set(allowed))
        if unknown:
            known = f" (known: {', '.join(allowed)})" if allowed else " (it takes none)"
            raise web.HTTPBadRequest(text=f"{request.path}: unknown query parameter {unknown[0]!r}{known}\n")

    async def _index(self, request: web.Request) -> web.Response:
        self.requests += 1
        self._check_query(request)
        return web.Response(body=self._page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _metrics(self, request: web.Request) -> web.Response:
        self.requests += 1
        self._check_query(request)
        body = await self._body("metrics", self._render_metrics)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        self.requests += 1
        self._check_query(request)
        snapshot = self.current()
        if not snapshot.healthy:
            return web.Response(status=503, text="unhealthy\n" + "".join(f"{r}\n" for r in snapshot.unhealthy_reasons))
        return web.Response(text="ok\n")

    async def _status(self, request: web.Request) -> web.Response:
        self.requests += 1
        self._check_query(request, ("exchange", "symbol"))
        exchange, symbol = request.query.get("exchange"), request.query.get("symbol")
        if exchange is None and symbol is None:
            body = await self._body("status", Snapshot.to_json)
        else:
            snapshot = self.current()
            if exchange is not None and exchange not in snapshot.exchanges and \
                    exchange not in {s.exchange for s in snapshot.streams}:
                raise web.HTTPNotFound(text=f"/status: no exchange {exchange!r} in this process\n")
            data = snapshot.as_json()
            data["symbols"] = [s for s in data["symbols"] if (exchange is None or s["exchange"] == exchange)
                               and (symbol is None or s["symbol"] == symbol)]
            data["streams"] = [s for s in data["streams"] if exchange is None or s["exchange"] == exchange]
            data["exchanges"] = {k: v for k, v in data["exchanges"].items() if exchange is None or k == exchange}
            body = orjson.dumps(data)
        return web.Response(body=body, content_type="application/json")

    def _render_metrics(self, snapshot: Snapshot) -> bytes:
        self._scraped = snapshot  # read by the registry's collector, on this same thread
        return metrics.render(self._registry)

    async def _history(self, request: web.Request) -> web.Response:
        self.requests += 1
        self._check_query(request)
        body = await self._body("history", lambda _s: orjson.dumps({"interval": self.interval,
                                                                    "exchanges": self.history.series()}))
        return web.Response(body=body, content_type="application/json")


async def start_status(addr: str | None, health_limit: float) -> StatusServer | None:
    """The status server of a command, bound first so that a taken port stops the command before
    it opens or takes anything; None without an address."""
    if addr is None:
        return None
    try:
        host, port = parse_addr(addr)
    except ValueError as exc:
        raise BittyError(f"--status-addr {exc}") from None
    server = StatusServer(host, port, health_limit=health_limit)
    await server.start()
    return server
