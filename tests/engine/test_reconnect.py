"""Which failures are retried, and the delays between attempts."""

from __future__ import annotations

import logging

import aiohttp

from bitty.engine.reconnect import Delays, Restart, ServerClosed, classify
from bitty.errors import ExchangeError


def test_exchange_rejection_is_fatal() -> None:
    """An ExchangeError (a rejected subscription) stops the stream: retrying cannot help."""
    failure = classify(ExchangeError("testex rejected the subscription: FOO"))
    assert failure is not None and failure.fatal and failure.message == "testex rejected the subscription: FOO"


def test_restarts_and_drops_are_retried_with_their_cause() -> None:
    """A watchdog restart is retried with cause watchdog; a clean server close logs at INFO."""
    restart = classify(Restart("no frame for 5s"))
    assert restart is not None and not restart.fatal and restart.cause == "watchdog"
    assert restart.message == "restarting: no frame for 5s"
    closed = classify(ServerClosed(1000))
    assert closed is not None and closed.level == logging.INFO and closed.cause == "disconnect"
    assert classify(ServerClosed(1006)).level == logging.WARNING  # type: ignore[union-attr]
    failed = classify(ConnectionResetError("reset"))
    assert failed is not None and failed.message == "connection failed: ConnectionResetError: reset"


def test_a_bug_is_not_classified() -> None:
    """An exception that is no network or exchange failure is raised, not retried."""
    assert classify(KeyError("x")) is None


def test_retry_after_on_a_refused_handshake() -> None:
    """HTTP 429 with Retry-After waits at least that long."""
    exc = aiohttp.WSServerHandshakeError(None, (), status=429, message="Too Many Requests",  # type: ignore[arg-type]
                                         headers={"Retry-After": "7"})  # type: ignore[arg-type]
    failure = classify(exc)
    assert failure is not None and failure.wait == 7.0 and "HTTP 429" in failure.message
    assert Delays(0.01, 1.0).next(False, failure.wait) == 7.0


def test_a_healthy_connection_starts_the_backoff_over() -> None:
    """Delays grow while attempts fail and fall back to the first after a healthy connection."""
    delays = Delays(1.0, 60.0)
    first = [delays.next(False) for _ in range(6)]
    assert first[0] <= 1.0 and first[-1] > 5.0
    assert delays.next(True) <= 1.0
