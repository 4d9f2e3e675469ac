"""Reconnect delays: jittered exponential backoff, capped, restarted after a healthy connection."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(initial: float = 1.0, factor: float = 1.6, cap: float = 60.0,
            rng: random.Random | None = None) -> Iterator[float]:
    """Delays for successive attempts: the first is jittered in [0, initial] so that many
    collectors restarting together do not reconnect in step; then x factor up to cap, each
    jittered by +-20%."""
    rng = rng or random.Random()
    yield rng.uniform(0, initial)
    delay = initial
    while True:
        yield min(cap, delay) * rng.uniform(0.8, 1.2)
        delay = min(cap, delay * factor)


def retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP Retry-After header (delta-seconds form only)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
