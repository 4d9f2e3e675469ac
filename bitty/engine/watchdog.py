"""Every restart verdict, on an explicit clock: ``Watchdog.verdict(now)``.

Pure state; the connection feeds it what arrived and when, asks for a verdict, and only closes
the socket with the reason. A stream is restarted when
- no heartbeat arrived within ``heartbeat_timeout`` (per symbol where the exchange sends one per
  symbol), or
- heartbeats report a last trade id that we have not received: at the second such heartbeat in
  a row with no trade of that symbol in between (a dead subscription, noticed within two
  heartbeat intervals), or after ``heartbeat_timeout`` of such reports in any case, or
- no trade arrived within ``trade_timeout`` and the latest heartbeat does not vouch for the quiet
  (its last trade id is not the last one we received), or
- no data frame arrived within ``idle_timeout`` (protocol pings and pongs are not data), or
- the connection nears the exchange's forced disconnect (``connection.max_age``, less
  ``max_age_margin``) and nobody hands it over.
A market that simply does not trade is never restarted while its heartbeats say so.
"""

from __future__ import annotations

from dataclasses import dataclass

CONNECTION = ""  # the key of connection-wide heartbeats


def max_age_margin(max_age: float) -> float:
    """How long before the exchange's forced disconnect a connection is replaced (by a
    handover, or by the watchdog's restart where nobody hands over)."""
    return min(60.0, max_age / 10)


@dataclass
class SymbolState:
    started: float
    last_trade_at: float | None = None
    last_trade_id: str | None = None
    last_heartbeat_at: float | None = None
    heartbeat_trade_id: str | None = None
    baseline_trade_id: str | None = None  # heartbeat's id before we received any trade
    unseen_since: float | None = None
    unseen_beats: int = 0  # heartbeats in a row reporting an unseen trade, no trade between them


class Liveness:
    """Heartbeats and trades per symbol: the verdicts that need the exchange's word."""

    def __init__(self, symbols: list[str], now: float, heartbeat_timeout: float | None,
                 trade_timeout: float | None, per_symbol_heartbeat: bool, trades_count: bool = False) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.trades_count = trades_count  # trades prove liveness (heartbeats only on quiet channels)
        self.trade_timeout = trade_timeout
        self.per_symbol = per_symbol_heartbeat
        self.symbols = {symbol: SymbolState(now) for symbol in symbols}
        self.connection = SymbolState(now)

    def restart_clock(self, now: float) -> None:
        """Count "nothing yet" from ``now``: the subscriptions are complete (what arrived while
        they went out still counts)."""
        for state in (self.connection, *self.symbols.values()):
            state.started = now

    def on_trade(self, symbol: str, trade_id: str, now: float) -> None:
        state = self.symbols.get(symbol)
        if state is None:
            state = self.symbols[symbol] = SymbolState(now)
        state.last_trade_at = now
        state.last_trade_id = trade_id
        state.unseen_beats = 0  # trades are flowing: the subscription is alive
        if state.heartbeat_trade_id == trade_id:
            state.unseen_since = None
        if self.trades_count:
            state.last_heartbeat_at = now
            self.connection.last_heartbeat_at = now

    def on_heartbeat(self, symbol: str | None, last_trade_id: str | None, now: float) -> str | None:
        """Note a heartbeat; returns a reason to restart at once (a dead subscription)."""
        if symbol is None or not self.per_symbol:
            self.connection.last_heartbeat_at = now
            if symbol is None:
                return None
        state = self.symbols.get(symbol)
        if state is None:
            return None  # a heartbeat for a symbol this connection does not carry
        state.last_heartbeat_at = now
        if last_trade_id is None:
            return None
        state.heartbeat_trade_id = last_trade_id
        if state.last_trade_id is None and state.baseline_trade_id is None:
            state.baseline_trade_id = last_trade_id
        if self._vouched(state):
            state.unseen_since = None
            state.unseen_beats = 0
            return None
        if state.unseen_since is None:
            state.unseen_since = now
        state.unseen_beats += 1
        return _missing(symbol, state) if state.unseen_beats >= 2 else None

    @staticmethod
    def _vouched(state: SymbolState) -> bool:
        """The heartbeat's last trade is one we have (or it predates the subscription)."""
        if state.heartbeat_trade_id is None:
            return False
        if state.last_trade_id is not None:
            return state.heartbeat_trade_id == state.last_trade_id
        return state.heartbeat_trade_id == state.baseline_trade_id

    def check(self, now: float) -> str | None:
        """A reason to restart the stream, or None while it is healthy."""
        hb_timeout = self.heartbeat_timeout
        if hb_timeout is not None:
            if self.per_symbol:
                for symbol, state in self.symbols.items():
                    since = state.last_heartbeat_at or state.started
                    if now - since > hb_timeout:
                        return f"{symbol}: no heartbeat for {now - since:.1f}s (timeout {hb_timeout:g}s)"
            else:
                since = self.connection.last_heartbeat_at or self.connection.started
                if now - since > hb_timeout:
                    return f"no heartbeat for {now - since:.1f}s (timeout {hb_timeout:g}s)"
            for symbol, state in self.symbols.items():
                if state.unseen_since is not None and (state.unseen_beats >= 2 or now - state.unseen_since > hb_timeout):
                    return _missing(symbol, state)
        if self.trade_timeout is not None:
            for symbol, state in self.symbols.items():
                since = state.last_trade_at or state.started
                if now - since > self.trade_timeout and not self._vouched(state):
                    return f"{symbol}: no trade for {now - since:.1f}s and no heartbeat vouches for a quiet market"
        return None


def _missing(symbol: str, state: SymbolState) -> str:
    return (f"{symbol}: heartbeat reports last trade {state.heartbeat_trade_id} but the last "
            f"trade received is {state.last_trade_id} (missing trades)")


class Watchdog:
    """One connection's judge: heartbeats, unseen trades, trade timeout, idle and max age.

    The connection sets ``last_data_at`` on every data frame (text or binary, never a protocol
    ping or pong), reports trades and heartbeats, and calls ``verdict(now)`` every ``tick``
    seconds."""

    def __init__(self, symbols: list[str], now: float, *, heartbeat_timeout: float | None,
                 trade_timeout: float | None, per_symbol_heartbeat: bool = False, trades_count: bool = False,
                 idle_timeout: float, max_age: float | None = None) -> None:
        self.liveness = Liveness(symbols, now, heartbeat_timeout, trade_timeout, per_symbol_heartbeat, trades_count)
        self.on_trade = self.liveness.on_trade
        self.on_heartbeat = self.liveness.on_heartbeat
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.opened = now
        self.last_data_at = now
        timeouts = [t for t in (heartbeat_timeout, trade_timeout) if t]
        self.tick = max(0.05, min([*timeouts, idle_timeout]) / 4)  # how often verdict is asked

    def restart_clock(self, now: float) -> None:
        """The subscriptions are complete: heartbeats and trades are due from ``now``."""
        self.liveness.restart_clock(now)

    def verdict(self, now: float) -> str | None:
        """A reason to restart the connection now, or None while it is healthy."""
        reason = self.liveness.check(now)
        if reason is None and now - self.last_data_at > self.idle_timeout:
            reason = f"no frame for {self.idle_timeout:g}s"
        max_age = self.max_age
        if reason is None and max_age and now - self.opened > max_age - max_age_margin(max_age):
            reason = f"connection is {now - self.opened:.0f}s old; the exchange closes it at {max_age:g}s"
        return reason
