"""Reconnecting: which failures are retried, and how long to wait before the next attempt.

Like ``websockets``: a loop over a backoff generator (``bitty.backoff``) plus one function,
``classify``, that turns the exception a connection ended with into a ``Failure``: retried or
fatal, the line to log, and a wait the server asked for (HTTP Retry-After)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp

from bitty.backoff import backoff, retry_after
from bitty.errors import ConnectError, ExchangeError
from bitty.mapping.mapper import FrameTooLarge

# Connections that lived this long and received frames reset the backoff.
HEALTHY_AFTER = 30.0


class ServerClosed(ConnectError):
    """The server closed the connection."""

    def __init__(self, code: int | None) -> None:
        self.code = code
        super().__init__(f"server closed the connection (code {code})")


class Restart(Exception):
    """A connection closed by bitty to reconnect (the watchdog's verdict, the exchange's
    notice), with the reason."""


@dataclass(frozen=True)
class Failure:
    message: str  # what the log line and stats.last_error say
    fatal: bool = False  # stop the stream: retrying cannot help
    level: int = logging.WARNING
    cause: str = "disconnect"  # of the disconnected event: disconnect or watchdog
    wait: float | None = None  # at least this long before the next attempt


RETRIED = (TimeoutError, aiohttp.ClientError, ConnectError, OSError, FrameTooLarge)


def classify(exc: BaseException) -> Failure | None:
    """How a connection's end is handled; None for an exception that is a bug (raise it)."""
    if isinstance(exc, ExchangeError):
        return Failure(str(exc), fatal=True, level=logging.ERROR)
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        wait = retry_after(exc.headers.get("Retry-After")) if exc.headers else None
        return Failure(f"handshake refused: HTTP {exc.status} {exc.message}", wait=wait)
    if isinstance(exc, Restart):
        return Failure(f"restarting: {exc}", cause="watchdog")
    if isinstance(exc, ServerClosed):
        return Failure(str(exc), level=logging.INFO if exc.code in (1000, 1001) else logging.WARNING)
    if isinstance(exc, RETRIED):
        return Failure(f"connection failed: {type(exc).__name__}: {exc}")
    return None


class Delays:
    """Successive reconnect delays; a healthy connection starts the backoff over."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial, self.cap = initial, cap
        self._delays: Iterator[float] = backoff(initial, cap=cap)

    def next(self, healthy: bool, wait: float | None = None) -> float:
        if healthy:
            self._delays = backoff(self.initial, cap=self.cap)
        delay = next(self._delays)
        return delay if wait is None else max(delay, wait)
