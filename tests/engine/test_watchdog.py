"""The liveness judge on its own clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bitty.engine.watchdog import Check, Liveness, Watchdog, max_age_margin


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


# --- rest.latest: data liveness without heartbeats -------------------------------------------

def quiet_watchdog(**kwargs: Any) -> Watchdog:
    """A connection on an exchange without heartbeats whose spec declares rest.latest."""
    options: dict[str, Any] = {"heartbeat_timeout": None, "trade_timeout": None, "idle_timeout": 10.0,
                               "latest_checks": True, "sequential_ids": True}
    options.update(kwargs)
    return Watchdog(["BTC-USDT", "ETH-USDT"], 0.0, **options)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_quiet_market_is_vouched_for_by_rest_and_not_restarted() -> None:
    """Silent for idle_timeout, each symbol is checked once; REST's latest trade is ours, so the
    market is quiet: no restart, and no new check before another idle_timeout."""
    dog = quiet_watchdog()
    dog.restart_clock(0.0, T0)
    dog.on_trade("BTC-USDT", "100", 1.0, T0 + timedelta(seconds=1))
    dog.on_trade("ETH-USDT", "7", 1.0, T0 + timedelta(seconds=1))
    dog.last_data_at = 1.0
    assert dog.verdict(10.0) is None
    check = dog.verdict(11.5)
    assert isinstance(check, Check) and check.symbols == ("BTC-USDT", "ETH-USDT")
    assert check.reason == "no frame for 10s"
    assert dog.verdict(12.0) is None  # asked already: no second check while the answers are out
    assert dog.on_latest("BTC-USDT", "100", T0 + timedelta(seconds=1), 12.0) is None
    assert dog.on_latest("ETH-USDT", "7", T0 + timedelta(seconds=1), 12.0) is None
    for now in (13.0, 20.0, 21.9):  # vouched for another idle_timeout: at most one check per interval
        assert dog.verdict(now) is None
    again = dog.verdict(22.5)
    assert isinstance(again, Check) and again.symbols == ("BTC-USDT", "ETH-USDT")


def test_a_newer_trade_on_rest_is_a_dead_subscription() -> None:
    """REST's latest trade id is above the last one received: the subscription is dead, and
    the verdict names both ids."""
    dog = quiet_watchdog()
    dog.restart_clock(0.0, T0)
    dog.on_trade("ETH-USDT", "7", 1.0, T0 + timedelta(seconds=1))
    dog.last_data_at = 1.0
    check = dog.verdict(11.5)
    assert isinstance(check, Check)
    assert dog.on_latest("ETH-USDT", "9", T0 + timedelta(seconds=9), 12.0) == (
        "ETH-USDT: the exchange's latest trade 9 is newer than ours 7 (dead subscription)")


def test_sequential_ids_compare_as_integers_and_opaque_ones_by_time() -> None:
    """Id 10 is newer than 9 (not "10" < "9"); for opaque ids a different id with a later time
    is newer, an equal id is not."""
    dog = quiet_watchdog()
    dog.on_trade("BTC-USDT", "9", 1.0, T0)
    assert dog.on_latest("BTC-USDT", "10", T0, 12.0) is not None
    opaque = quiet_watchdog(sequential_ids=False)
    opaque.on_trade("BTC-USDT", "b7f3", 1.0, T0)
    assert opaque.on_latest("BTC-USDT", "b7f3", T0, 12.0) is None
    assert opaque.on_latest("BTC-USDT", "0a11", T0 - timedelta(seconds=5), 12.0) is None  # older
    assert opaque.on_latest("BTC-USDT", "0a11", T0 + timedelta(seconds=5), 12.0) is not None


def test_nothing_received_yet_compares_with_the_subscription_time_then_rest_itself() -> None:
    """No trade since subscribing: a REST trade after the subscriptions completed was missed;
    an older one is the baseline, and a later answer beyond it is a dead subscription."""
    dog = quiet_watchdog()
    dog.restart_clock(0.0, T0)
    assert dog.on_latest("BTC-USDT", "50", T0 + timedelta(seconds=3), 11.0) == (
        "BTC-USDT: the exchange's latest trade 50 is newer than ours (none since subscribing) (dead subscription)")
    assert dog.on_latest("ETH-USDT", "5", T0 - timedelta(hours=1), 11.0) is None  # a quiet market
    assert dog.on_latest("ETH-USDT", "5", T0 - timedelta(hours=1), 22.0) is None
    assert dog.on_latest("ETH-USDT", "6", T0 + timedelta(seconds=15), 33.0) is not None


def test_a_rest_failure_falls_back_to_the_idle_restart() -> None:
    """REST unreachable or in error: the idle restart of old, its reason naming the cause."""
    dog = quiet_watchdog()
    check = dog.verdict(10.5)
    assert isinstance(check, Check)
    reason = dog.on_latest_failed("BTC-USDT", "GET http://x/api/v3/trades: HTTP 503", 11.0)
    assert reason == ("no frame for 10s and the exchange's latest trade of BTC-USDT is unknown "
                      "(GET http://x/api/v3/trades: HTTP 503)")


def test_without_rest_latest_silence_restarts_as_before() -> None:
    """No rest.latest (or a redirected websocket): idle_timeout restarts, protocol pings or not."""
    dog = quiet_watchdog(latest_checks=False)
    assert dog.verdict(10.5) == "no frame for 10s"


def test_max_age_still_applies_while_symbols_are_vouched() -> None:
    """A vouched quiet market does not hide the forced-disconnect deadline."""
    dog = quiet_watchdog(max_age=100.0)
    check = dog.verdict(10.5)
    assert isinstance(check, Check)
    for symbol in check.symbols:
        dog.on_latest(symbol, None, None, 11.0)  # nothing ever traded
    assert dog.verdict(15.0) is None
    assert dog.verdict(95.0) == "no frame for 10s"  # a restart, not another check
    dog.last_data_at = 94.0
    assert str(dog.verdict(95.0)).startswith("connection is 95s old")


# --- rest.latest per symbol: one dead symbol among busy ones -------------------------------

def test_a_quiet_symbol_is_checked_while_others_trade() -> None:
    """ETH trades all along (the connection is never silent), BTC has had no trade for
    idle_timeout on its own clock: BTC alone is checked, and a newer trade there restarts."""
    dog = quiet_watchdog()
    dog.restart_clock(0.0, T0)
    dog.on_trade("BTC-USDT", "100", 1.0, T0 + timedelta(seconds=1))
    for second in range(1, 12):
        dog.on_trade("ETH-USDT", str(second), float(second), T0 + timedelta(seconds=second))
        dog.last_data_at = float(second)
        assert dog.verdict(float(second)) is None
    check = dog.verdict(11.5)
    assert isinstance(check, Check) and check.symbols == ("BTC-USDT",)
    assert check.reason == "no trade for 10s"
    assert dog.on_latest("BTC-USDT", "104", T0 + timedelta(seconds=9), 12.0) == (
        "BTC-USDT: the exchange's latest trade 104 is newer than ours 100 (dead subscription)")


def test_each_symbol_is_checked_at_most_once_per_idle_timeout_on_its_own_clock() -> None:
    """A vouched or failed check waits another idle_timeout; a trade restarts the symbol's clock."""
    dog = quiet_watchdog()
    dog.restart_clock(0.0, T0)
    dog.on_trade("BTC-USDT", "100", 1.0, T0)
    dog.on_trade("ETH-USDT", "7", 5.0, T0)
    dog.last_data_at = 5.0
    first = dog.verdict(11.5)
    assert isinstance(first, Check) and first.symbols == ("BTC-USDT",)  # ETH heard at 5.0
    assert dog.on_latest("BTC-USDT", "100", T0, 12.0) is None  # a quiet market, vouched
    dog.last_data_at = 15.0  # something else is busy on the connection
    second = dog.verdict(15.5)
    assert isinstance(second, Check) and second.symbols == ("ETH-USDT",)
    assert dog.on_latest_failed("ETH-USDT", "HTTP 429", 16.0) is None  # busy connection: no restart
    for now in (17.0, 21.9):
        dog.last_data_at = now
        assert dog.verdict(now) is None  # BTC vouched until 22.0, ETH asked at 15.5
    dog.on_trade("BTC-USDT", "101", 21.95, T0)
    dog.last_data_at = 25.4
    assert dog.verdict(25.4) is None  # BTC traded at 21.95; ETH waits until 25.5
    dog.last_data_at = 25.6
    again = dog.verdict(25.6)
    assert isinstance(again, Check) and again.symbols == ("ETH-USDT",)


def test_checks_out_at_once_are_bounded_longest_silent_first() -> None:
    """Of 10 quiet symbols at most max_checks are asked at once, the longest silent first; the
    next go out as answers come back."""
    symbols = [f"S{n}-USDT" for n in range(10)]
    dog = Watchdog(symbols, 0.0, heartbeat_timeout=None, trade_timeout=None, idle_timeout=10.0,
                   latest_checks=True, max_checks=3)
    for n, symbol in enumerate(symbols):
        dog.on_trade(symbol, "1", 10.0 - n, T0)  # S9 has been silent longest
    dog.last_data_at = 10.0
    check = dog.verdict(21.0)
    assert isinstance(check, Check) and check.symbols == ("S9-USDT", "S8-USDT", "S7-USDT")
    assert dog.verdict(21.1) is None  # three out: no room
    dog.on_latest("S8-USDT", "1", T0, 21.2)
    more = dog.verdict(21.3)
    assert isinstance(more, Check) and more.symbols == ("S6-USDT",)


def test_a_failed_check_restarts_only_when_the_connection_falls_silent() -> None:
    """On a busy connection a failed check is logged and waits; once the whole connection has
    been silent for idle_timeout, the symbol nobody could vouch for restarts it."""
    dog = quiet_watchdog()
    dog.restart_clock(0.0, T0)
    dog.last_data_at = 10.5
    check = dog.verdict(10.6)
    assert isinstance(check, Check)
    assert dog.on_latest_failed("BTC-USDT", "timeout", 11.0) is None
    assert dog.on_latest("ETH-USDT", "7", T0 - timedelta(hours=1), 11.0) is None
    assert dog.verdict(20.0) is None
    assert dog.verdict(21.0) == ("no frame for 10s and the exchange's latest trade of BTC-USDT is unknown "
                                 "(timeout)")


def test_a_heartbeat_vouching_for_the_quiet_saves_the_rest_check() -> None:
    """Where heartbeats carry the last trade id, a recent one naming ours already vouches: no REST call."""
    dog = quiet_watchdog(heartbeat_timeout=30.0, per_symbol_heartbeat=True)
    dog.restart_clock(0.0, T0)
    dog.on_trade("BTC-USDT", "100", 1.0, T0)
    dog.on_trade("ETH-USDT", "7", 1.0, T0)
    for now in (5.0, 10.0, 15.0):
        dog.on_heartbeat("BTC-USDT", "100", now)
        dog.on_heartbeat("ETH-USDT", None, now)  # no trade id: it cannot vouch, REST is asked
        dog.last_data_at = now
    check = dog.verdict(15.5)
    assert isinstance(check, Check) and check.symbols == ("ETH-USDT",)
