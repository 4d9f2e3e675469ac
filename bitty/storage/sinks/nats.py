"""The NATS JetStream sink: trades (and quarantined frames, ledger events) published to a stream.

The stream is created with the settings below, or checked if it exists: a stream with other
settings is a clear error, never silently reused. A publish waits for JetStream's ack; a trade
whose ``Nats-Msg-Id`` the stream already holds (a redundant collector published it first,
within the duplicate window) is acked as a duplicate and counted so. While NATS is away the
publish fails with ``SinkUnavailable``: the writer keeps the batch, retries with backoff, and
spills to disk past its buffer, exactly as for a database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from bitty.errors import SinkError
from bitty.storage.sinks import SinkUnavailable
from bitty.storage.sinks import message as fmt
from bitty.trade import Quarantined, Trade

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSettings:
    """The JetStream stream bitty publishes to (docs/deploy.md explains each choice)."""

    name: str = "BITTY"
    prefix: str = "bitty"  # subjects <prefix>.>
    retention: str = "limits"  # kept until max_age, whatever sinks read: a new sink can replay
    max_age: float = 7 * 86400.0  # seconds
    duplicate_window: float = 120.0  # seconds: copies of a Nats-Msg-Id within it are dropped
    replicas: int = 1  # 3 on a NATS cluster of three or more servers
    storage: str = "file"

    def config(self) -> StreamConfig:
        return StreamConfig(name=self.name, subjects=[f"{self.prefix}.>"], retention=RetentionPolicy(self.retention),
                            max_age=self.max_age, duplicate_window=self.duplicate_window,
                            num_replicas=self.replicas, storage=StorageType(self.storage))

    def differences(self, found: StreamConfig) -> list[str]:
        want = self.config()
        out = []
        for key in ("subjects", "retention", "max_age", "duplicate_window", "num_replicas", "storage"):
            have, need = getattr(found, key), getattr(want, key)
            if key in ("max_age", "duplicate_window") and have is not None and need is not None:
                same = abs(float(have) - float(need)) < 1e-6
            else:
                same = have == need
            if not same:
                out.append(f"{key} is {_show(have)}, bitty needs {_show(need)}")
        return out


def _show(value: Any) -> str:
    return str(getattr(value, "value", value))


async def connect(url: str, name: str = "bitty") -> Client:
    """A NATS connection that reconnects by itself; unreachable at start is a clear error."""
    async def on_error(exc: Exception) -> None:
        # each failed reconnect attempt lands here (every 0.5 s): the disconnect was said once
        logger.log(logging.DEBUG if isinstance(exc, OSError) else logging.WARNING, "NATS %s: %s", url, exc)

    client: list[Client] = []

    async def on_disconnect() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own close
        logger.warning("NATS %s: disconnected, reconnecting", url)

    async def on_reconnect() -> None:
        logger.warning("NATS %s: reconnected", url)

    # nats-py retries a first connection forever when reconnecting is on: try the socket first,
    # so that a wrong URL or a server that is down is a clear error at start.
    servers = [u.strip() for u in url.split(",") if u.strip()]
    failures = []
    for server in servers:
        where = urlsplit(server)
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(where.hostname or "127.0.0.1", where.port or 4222), timeout=3)
            writer.close()
            break
        except (OSError, TimeoutError) as exc:
            failures.append(f"{server}: {exc or type(exc).__name__}")
    else:
        raise SinkError(f"cannot reach NATS at {'; '.join(failures)}")
    try:
        client.append(await nats.connect(servers=servers, name=name, connect_timeout=3, allow_reconnect=True,
                                         max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=on_error,
                                         disconnected_cb=on_disconnect, reconnected_cb=on_reconnect))
        return client[0]
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise SinkError(f"cannot reach NATS at {url}: {exc or type(exc).__name__}") from None


async def ensure_stream(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create the stream, or check that an existing one has bitty's settings."""
    try:
        info = await js.stream_info(settings.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(settings.config())
        logger.info("created JetStream stream %s on %s.> (%s retention, max age %gs, duplicate window %gs, %d replicas)",
                    settings.name, settings.prefix, settings.retention, settings.max_age, settings.duplicate_window,
                    settings.replicas)
        return
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError, nats.errors.TimeoutError):
        raise SinkError("NATS answers but JetStream does not: start nats-server with -js") from None
    wrong = settings.differences(info.config)
    if wrong:
        raise SinkError(f"JetStream stream {settings.name} exists with other settings than bitty needs: "
                        + "; ".join(wrong) + f" (use another stream name, or change or delete stream {settings.name})")


class NatsSink:
    """Publishes to JetStream. ``aopen`` on the event loop; ``write`` from any other thread."""

    def __init__(self, url: str, settings: StreamSettings | None = None, timeout: float = 5.0) -> None:
        self.url = url
        self.settings = settings or StreamSettings()
        self.timeout = timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acks_inbox: str | None = None
        self._acks: dict[str, asyncio.Future[bytes]] = {}
        self._ack_number = 0

    async def aopen(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._nc = await connect(self.url)
        self._js = self._nc.jetstream(timeout=self.timeout)
        try:
            await ensure_stream(self._js, self.settings)
        except BaseException:
            await self._nc.close()
            raise

    async def aclose(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), timeout=self.timeout)
            except (nats.errors.Error, TimeoutError):
                await self._nc.close()

    def open(self) -> None:
        self._call(self.aopen())

    def close(self) -> None:
        self._call(self.aclose())

    def write(self, batch: Sequence[Trade], quarantined: Sequence[Quarantined] = ()) -> list[Trade]:
        """Publish; the trades JetStream took as new (not duplicates), in order."""
        return self._call(self.publish(batch, quarantined))

    def event(self, subject: str, kind: str, fields: dict[str, Any], msg_id: str) -> None:
        """Publish one ledger event (from a worker thread)."""
        self._call(self._send(subject, fmt.encode_event(kind, fields), fmt.EVENT, msg_id))

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "NatsSink.aopen() first"
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=self.timeout * 4)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise SinkUnavailable(f"NATS {self.url} did not acknowledge within {self.timeout * 4:g}s") from None

    async def publish(self, batch: Sequence[Trade], quarantined: Sequence[Quarantined] = ()) -> list[Trade]:
        assert self._nc is not None
        nc = self._nc
        if nc.is_closed:
            raise SinkUnavailable(f"the connection to NATS {self.url} is closed")
        if self._acks_inbox is None:
            self._acks_inbox = nc.new_inbox()
            await nc.subscribe(self._acks_inbox + ".*", cb=self._on_ack)
        prefix, loop = self.settings.prefix, asyncio.get_running_loop()
        futures: list[asyncio.Future[bytes]] = []
        try:
            # Every publish goes into the client's buffer at once, each with its own reply
            # subject; then the acks are awaited together: one round trip per batch, not per
            # trade (nats-py's publish_async yields to the loop per message, which sends each
            # alone: three times slower).
            for t in batch:
                self._ack_number += 1
                token = str(self._ack_number)
                future = self._acks[token] = loop.create_future()
                futures.append(future)
                await nc.publish(fmt.trade_subject(prefix, t), fmt.encode_trade(t), reply=f"{self._acks_inbox}.{token}",
                                 headers={"Nats-Msg-Id": fmt.trade_id(t), fmt.FORMAT: fmt.TRADE})
            replies = await asyncio.wait_for(asyncio.gather(*futures), timeout=self.timeout)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise SinkUnavailable(f"NATS {self.url}: publish failed: {exc or type(exc).__name__}") from None
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
            self._acks = {k: f for k, f in self._acks.items() if not f.done()}
        new = []
        for t, reply in zip(batch, replies, strict=True):
            ack = orjson.loads(reply) if reply else {}
            if "error" in ack or "seq" not in ack:
                raise SinkUnavailable(f"NATS {self.url}: JetStream refused a publish: {ack.get('error') or reply!r}")
            if not ack.get("duplicate"):
                new.append(t)
        for item in quarantined:
            data, msg_id = fmt.encode_quarantine(item)
            await self._send(f"{prefix}.quarantine.{fmt.token(item.exchange)}", data, fmt.QUARANTINE, msg_id)
        return new

    async def _on_ack(self, msg: Msg) -> None:
        future = self._acks.get(msg.subject.rpartition(".")[2])
        if future is not None and not future.done():
            future.set_result(msg.data)

    async def _send(self, subject: str, data: bytes, kind: str, msg_id: str) -> bool:
        """Publish one message; True if JetStream already held its id (a duplicate)."""
        assert self._js is not None and self._nc is not None
        if self._nc.is_closed:
            raise SinkUnavailable(f"the connection to NATS {self.url} is closed")
        try:
            ack = await self._js.publish(subject, data, headers={"Nats-Msg-Id": msg_id, fmt.FORMAT: kind})
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise SinkUnavailable(f"NATS {self.url}: publish failed: {exc or type(exc).__name__}") from None
        return bool(ack.duplicate)
