"""Per-symbol liveness: is a stream healthy, quiet, or dead?

Pure state with an explicit clock. A stream is restarted when
- no heartbeat arrived within ``heartbeat_timeout`` (per symbol where the exchange sends one per
  symbol), or
- a heartbeat has reported, for longer than ``heartbeat_timeout``, a last trade id that we have
  not received (trades are missing), or
- no trade arrived within ``trade_timeout`` and the latest heartbeat does not vouch for the quiet
  (its last trade id is not the last one we received).
A market that simply does not trade is never restarted while its heartbeats say so.
"""

from __future__ import annotations

from dataclasses import dataclass

CONNECTION = ""  # the key of connection-wide heartbeats


@dataclass
class SymbolState:
    started: float
    last_trade_at: float | None = None
    last_trade_id: str | None = None
    last_heartbeat_at: float | None = None
    heartbeat_trade_id: str | None = None
    baseline_trade_id: str | None = None  # heartbeat's id before we received any trade
    unseen_since: float | None = None


class Liveness:
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
        if state.heartbeat_trade_id == trade_id:
            state.unseen_since = None
        if self.trades_count:
            state.last_heartbeat_at = now
            self.connection.last_heartbeat_at = now

    def on_heartbeat(self, symbol: str | None, last_trade_id: str | None, now: float) -> None:
        if symbol is None or not self.per_symbol:
            self.connection.last_heartbeat_at = now
            if symbol is None:
                return
        state = self.symbols.get(symbol)
        if state is None:
            return  # a heartbeat for a symbol this connection does not carry
        state.last_heartbeat_at = now
        if last_trade_id is None:
            return
        state.heartbeat_trade_id = last_trade_id
        if state.last_trade_id is None and state.baseline_trade_id is None:
            state.baseline_trade_id = last_trade_id
        if self._vouched(state):
            state.unseen_since = None
        elif state.unseen_since is None:
            state.unseen_since = now

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
                if state.unseen_since is not None and now - state.unseen_since > hb_timeout:
                    return (f"{symbol}: heartbeat reports last trade {state.heartbeat_trade_id} but the last "
                            f"trade received is {state.last_trade_id} (missing trades)")
        if self.trade_timeout is not None:
            for symbol, state in self.symbols.items():
                since = state.last_trade_at or state.started
                if now - since > self.trade_timeout and not self._vouched(state):
                    return f"{symbol}: no trade for {now - since:.1f}s and no heartbeat vouches for a quiet market"
        return None
