"""What a spec-driven connection sends: its URL, subscribe and heartbeat messages, keepalive
and pong values, rendered from the spec's templates; and the REST bootstrap some exchanges
need before the websocket (a token, the server's ping interval)."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bitty.errors import ConnectError
from bitty.lang.functions import to_decimal
from bitty.mapping import codec
from bitty.spec.hooks import Hooks
from bitty.spec.load import Spec
from bitty.spec.template import Template


class Subscription:
    """One connection's symbols of one spec; ``new_connection()`` before each connect."""

    def __init__(self, spec: Spec, symbols: list[str], hooks: Hooks, url_override: str | None = None,
                 bootstrap_url: str | None = None) -> None:
        self.spec = spec
        self.symbols = symbols
        self.hooks = hooks
        self.url_override = url_override
        self.bootstrap_url = bootstrap_url
        self.connect_id = ""
        self.bootstrap: Any = None
        self.request_id = 0
        self.keepalive_interval: float | None = spec.keepalive.interval if spec.keepalive else None

    # --- the connection's limits, from the spec ---
    @property
    def max_frame_bytes(self) -> int:
        return self.spec.max_frame_bytes

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.spec.headers)

    @property
    def pace(self) -> float:
        """Seconds between two messages sent while subscribing."""
        return 1.0 / self.spec.messages_per_second if self.spec.messages_per_second else 0.0

    def liveness(self) -> tuple[bool, bool, bool]:
        """What the heartbeats tell: (carry a last trade id, per symbol, trades count as heartbeats)."""
        heartbeat = self.spec.heartbeat
        if heartbeat is None:
            return False, False, False
        return (heartbeat.last_trade_id is not None, heartbeat.symbol is not None or heartbeat.channel is not None,
                heartbeat.trades_count)

    def new_connection(self) -> None:
        self.connect_id = uuid.uuid4().hex
        self.request_id = 0

    def natives(self) -> list[str]:
        return [self.spec.symbols.to_native(s) for s in self.symbols]

    def variables(self, **extra: Any) -> dict[str, Any]:
        """Template variables; each call is a new request ``id``."""
        self.request_id += 1
        now = time.time()
        variables = {"id": self.request_id, "now_ms": int(now * 1000), "now_s": int(now),
                     "connect_id": self.connect_id, "bootstrap": self.bootstrap}
        variables.update(extra)
        return variables

    def url(self) -> str:
        variables = {"symbols": self.natives(), "connect_id": self.connect_id, "bootstrap": self.bootstrap}
        url = str(self.spec.url.render(variables))
        override = self.url_override
        if override:
            parts = urlsplit(override)
            if parts.path in ("", "/") and not parts.query:
                # Only an origin: keep the spec's path and query (streams in the URL).
                spec_parts = urlsplit(url)
                url = urlunsplit((parts.scheme, parts.netloc, spec_parts.path, spec_parts.query, ""))
            else:
                url = str(Template.compile(override).render(variables))
        return self.hooks.url(url)

    def messages(self) -> list[Any]:
        """Every subscribe message of this connection, per symbol, batch or connection."""
        sub = self.spec.subscribe
        natives = self.natives()
        out: list[Any] = []
        if sub.per == "symbol":
            for native in natives:
                out += [t.render(self.variables(symbol=native)) for t in sub.messages]
        elif sub.per == "batch":
            size = sub.batch_size or len(natives)
            for i in range(0, len(natives), size):
                out += [t.render(self.variables(symbols=natives[i:i + size])) for t in sub.messages]
        else:
            out += [t.render(self.variables(symbols=natives)) for t in sub.messages]
        return self.hooks.subscribe_messages(out)

    def heartbeat_messages(self) -> list[Any] | None:
        """The messages that turn heartbeats on, or None."""
        heartbeat = self.spec.heartbeat
        if heartbeat is None or not heartbeat.messages:
            return None
        variables = self.variables(symbols=self.natives())
        return [t.render(variables) for t in heartbeat.messages]

    def keepalive_message(self) -> Any:
        assert self.spec.keepalive is not None
        return self.spec.keepalive.message.render(self.variables())

    async def fetch_bootstrap(self, session: aiohttp.ClientSession) -> None:
        """The spec's bootstrap request, if any: its answer becomes the ``bootstrap`` variable."""
        boot = self.spec.bootstrap
        if boot is None:
            return
        url = self.bootstrap_url or str(boot.url.render({"connect_id": self.connect_id,
                                                         "now_ms": int(time.time() * 1000)}))
        async with session.request(boot.method, url, timeout=aiohttp.ClientTimeout(total=15)) as response:
            if response.status >= 400:
                raise ConnectError(f"bootstrap {boot.method} {url}: HTTP {response.status}")
            try:
                self.bootstrap = codec.loads(await response.read())  # numbers keep their digits
            except codec.DecodeError as exc:
                raise ConnectError(f"bootstrap {boot.method} {url}: not JSON: {exc}") from None
        if boot.keepalive_interval is not None:
            millis = to_decimal(boot.keepalive_interval(self.bootstrap))
            if millis is not None and millis > 0:
                self.keepalive_interval = float(millis) / 1000
