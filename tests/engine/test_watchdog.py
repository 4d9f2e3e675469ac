"""The liveness judge on its own clock."""

from __future__ import annotations

from bitty.engine.watchdog import Liveness


def test_the_clock_restarts_when_the_subscriptions_are_complete() -> None:
    """Subscribing took 8 s, ETH-USD last: no heartbeat was due from it before then, while the
    heartbeats that arrived meanwhile still count."""
    liveness = Liveness(["BTC-USD", "ETH-USD"], now=0.0, heartbeat_timeout=5, trade_timeout=None,
                        per_symbol_heartbeat=True)
    liveness.on_heartbeat("BTC-USD", None, 2.0)
    liveness.on_heartbeat("BTC-USD", None, 7.5)
    assert str(liveness.check(9.0)).startswith("ETH-USD: no heartbeat for 9.0s")  # judged from the connect
    liveness.restart_clock(8.0)
    assert liveness.check(9.0) is None
    assert str(liveness.check(12.6)).startswith("BTC-USD: no heartbeat for 5.1s")
    liveness.on_heartbeat("BTC-USD", None, 12.5)
    assert str(liveness.check(13.1)).startswith("ETH-USD: no heartbeat for 5.1s")
