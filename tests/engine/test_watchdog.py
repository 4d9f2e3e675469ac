"""The liveness judge on its own clock."""

from __future__ import annotations

from typing import Any

from bitty.engine.watchdog import Liveness, Watchdog, max_age_margin


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


def watchdog(**kwargs: Any) -> Watchdog:
    options: dict[str, Any] = {"heartbeat_timeout": 5.0, "trade_timeout": None, "per_symbol_heartbeat": True,
                               "idle_timeout": 30.0}
    options.update(kwargs)
    return Watchdog(["BTC-USD", "ETH-USD"], 0.0, **options)


def test_heartbeats_reporting_an_unseen_trade_twice_in_a_row_restart_at_once() -> None:
    """The second heartbeat in a row reporting a trade we never received is a dead
    subscription: the verdict comes then, not after the heartbeat timeout."""
    dog = watchdog()
    dog.on_trade("ETH-USD", "20", 0.5)
    assert dog.on_heartbeat("ETH-USD", "20", 1.0) is None
    assert dog.on_heartbeat("ETH-USD", "21", 2.0) is None  # one report: the trade may be on its way
    reason = dog.on_heartbeat("ETH-USD", "21", 3.0)
    assert reason == "ETH-USD: heartbeat reports last trade 21 but the last trade received is 20 (missing trades)"
    dog.on_heartbeat("BTC-USD", None, 3.0)
    assert dog.verdict(3.0) == reason


def test_a_trade_between_heartbeats_keeps_the_subscription_alive() -> None:
    """Heartbeats running ahead of a busy stream are no verdict while trades arrive between them
    (within the heartbeat timeout; past it, the old rule still restarts)."""
    dog = watchdog()
    for second in range(1, 5):
        dog.on_heartbeat("BTC-USD", None, float(second))
        assert dog.on_heartbeat("ETH-USD", str(100 + second), float(second)) is None
        dog.on_trade("ETH-USD", str(100 + second - 1), second + 0.5)
    assert dog.verdict(4.6) is None


def test_idle_counts_data_frames_only() -> None:
    """No data frame within idle_timeout restarts; the connection sets last_data_at on data only."""
    dog = watchdog(heartbeat_timeout=None, idle_timeout=10.0)
    assert dog.verdict(9.0) is None
    dog.last_data_at = 9.0
    assert dog.verdict(18.5) is None
    assert dog.verdict(19.5) == "no frame for 10s"


def test_max_age_restart_comes_one_margin_before_the_exchange_closes() -> None:
    """With connection.max_age and nobody handing over, the verdict comes max_age_margin early."""
    assert max_age_margin(86400) == 60.0 and max_age_margin(100) == 10.0
    dog = watchdog(heartbeat_timeout=None, idle_timeout=1e9, max_age=100.0)
    assert dog.verdict(89.0) is None
    assert dog.verdict(91.0) == "connection is 91s old; the exchange closes it at 100s"


def test_trade_timeout_without_a_vouching_heartbeat() -> None:
    """No trade within trade_timeout restarts unless the heartbeat vouches for a quiet market."""
    dog = watchdog(heartbeat_timeout=None, per_symbol_heartbeat=False, trade_timeout=3.0, idle_timeout=1e9)
    dog.on_trade("BTC-USD", "7", 1.0)
    dog.on_trade("ETH-USD", "9", 1.0)
    assert dog.verdict(3.5) is None
    assert str(dog.verdict(4.5)).startswith("BTC-USD: no trade for 3.5s")
    dog.on_heartbeat("BTC-USD", "7", 4.5)
    dog.on_heartbeat("ETH-USD", "9", 4.5)
    assert dog.verdict(60.0) is None


def test_the_tick_follows_the_shortest_timeout() -> None:
    """The verdict is asked four times per shortest timeout, never more often than every 0.05 s."""
    assert watchdog(heartbeat_timeout=2.0).tick == 0.5
    assert watchdog(heartbeat_timeout=0.1).tick == 0.05
