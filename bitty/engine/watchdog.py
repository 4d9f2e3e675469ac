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
- no data frame arrived within ``idle_timeout`` (protocol pings and pongs are not data) and
  the spec declares no ``rest.latest``, or
- where the spec declares ``rest.latest`` (exchanges without heartbeats), a symbol that has had
  no trade for ``idle_timeout`` on its own clock (a trade or REST's word restarts it), even while
  other symbols trade, is not vouched for by the exchange's REST: the verdict is then a ``Check``
  of such symbols (at most ``max_checks`` out at once, the longest silent first, each at most
  once per ``idle_timeout``), the connection fetches their latest trades and ``on_latest``
  judges each answer (a newer trade there than here is a dead subscription; the same is a quiet
  market, vouched for another ``idle_timeout``). A failed check restarts a connection silent
  for ``idle_timeout`` (the idle restart of old); on a busy one it is logged and retried after
  ``idle_timeout``, or
- the connection nears the exchange's forced disconnect (``connection.max_age``, less
  ``max_age_margin``) and nobody hands it over.
A market that simply does not trade is never restarted while its heartbeats say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

CONNECTION = ""  # the key of connection-wide heartbeats
MAX_CHECKS = 4  # rest.latest checks out at once per connection (the exchange's budget is in liveness)


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
    last_trade_time: datetime | None = None  # the exchange's time of last_trade_id
    vouched_at: float | None = None  # the exchange's REST said the symbol is quiet (rest.latest)
    checking_since: float | None = None  # a REST check of the latest trade is out
    asked_at: float | None = None  # when the last REST check went out (one per idle_timeout)
    latest_problem: str | None = None  # the last REST check failed, and nothing vouched since
    rest_baseline: tuple[str | None, datetime | None] | None = None  # REST's latest before any trade here


@dataclass(frozen=True)
class Check:
    """A verdict that is a question: fetch the exchange's latest trade of ``symbols`` and answer
    with ``Watchdog.on_latest`` (or ``on_latest_failed``). ``reason`` is the restart it defers."""

    symbols: tuple[str, ...]
    reason: str


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

    def on_trade(self, symbol: str, trade_id: str, now: float, time: datetime | None = None) -> None:
        state = self.symbols.get(symbol)
        if state is None:
            state = self.symbols[symbol] = SymbolState(now)
        state.last_trade_at = now
        state.last_trade_id = trade_id
        state.last_trade_time = time
        state.unseen_beats = 0  # trades are flowing: the subscription is alive
        state.latest_problem = None
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
                 idle_timeout: float, max_age: float | None = None, latest_checks: bool = False,
                 sequential_ids: bool = False, max_checks: int = MAX_CHECKS) -> None:
        self.liveness = Liveness(symbols, now, heartbeat_timeout, trade_timeout, per_symbol_heartbeat, trades_count)
        self.on_trade = self.liveness.on_trade
        self.on_heartbeat = self.liveness.on_heartbeat
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.opened = now
        self.last_data_at = now
        # rest.latest: each silent symbol is checked against the exchange's REST (before a restart)
        self.latest_checks = latest_checks
        self.max_checks = max_checks
        self.sequential_ids = sequential_ids  # trade ids are integers growing per trade
        self.subscribed_at: datetime | None = None  # wall clock when the subscriptions completed
        timeouts = [t for t in (heartbeat_timeout, trade_timeout) if t]
        self.tick = max(0.05, min([*timeouts, idle_timeout]) / 4)  # how often verdict is asked

    def restart_clock(self, now: float, wall: datetime | None = None) -> None:
        """The subscriptions are complete: heartbeats and trades are due from ``now`` (``wall``:
        the same moment on the exchange's clock, UTC, for judging REST's latest trade)."""
        self.liveness.restart_clock(now)
        self.subscribed_at = wall

    def verdict(self, now: float) -> str | Check | None:
        """A reason to restart the connection now, a ``Check`` to make first, or None while it
        is healthy."""
        reason = self.liveness.check(now)
        max_age = self.max_age
        aged = max_age is not None and max_age > 0 and now - self.opened > max_age - max_age_margin(max_age)
        idle = now - self.last_data_at > self.idle_timeout
        checks = self.latest_checks and not aged  # an aged connection is replaced anyway
        if reason is None and idle and not checks:
            reason = f"no frame for {self.idle_timeout:g}s"
        if reason is None and aged:
            reason = f"connection is {now - self.opened:.0f}s old; the exchange closes it at {max_age:g}s"
        if reason is not None or not checks:
            return reason
        if idle:  # the whole connection is silent: a symbol nobody could vouch for restarts it
            for symbol, state in self.liveness.symbols.items():
                problem = state.latest_problem
                if problem is not None and state.checking_since is None and now - self._heard(state) > self.idle_timeout:
                    return self._unknown(symbol, problem)
        return self._check(now, idle)

    # --- rest.latest: data liveness without heartbeats -------------------------------------

    def _heard(self, state: SymbolState) -> float:
        """When the symbol was last known alive: its last trade, or REST's word that it is quiet."""
        return max(state.last_trade_at or state.started, state.vouched_at or state.started)

    def _check(self, now: float, idle: bool) -> Check | None:
        """The symbols silent for idle_timeout on their own clock that nobody vouched for, not
        asked about within idle_timeout: the longest silent first, up to ``max_checks`` out."""
        states = self.liveness.symbols
        room = self.max_checks - sum(1 for state in states.values() if state.checking_since is not None)
        if room <= 0:
            return None
        due: list[tuple[float, str]] = []
        for symbol, state in states.items():
            heard = self._heard(state)
            if state.checking_since is not None or now - heard <= self.idle_timeout:
                continue
            if state.asked_at is not None and now - state.asked_at <= self.idle_timeout:
                continue  # at most one check per symbol per idle_timeout, answered or not
            if self._heartbeat_vouches(state, now):
                continue
            due.append((heard, symbol))
        if not due:
            return None
        due.sort(key=lambda item: item[0])
        chosen = tuple(symbol for _, symbol in due[:room])
        for symbol in chosen:
            states[symbol].checking_since = states[symbol].asked_at = now
        quiet = "no frame" if idle else "no trade"
        return Check(chosen, f"{quiet} for {self.idle_timeout:g}s")

    def _heartbeat_vouches(self, state: SymbolState, now: float) -> bool:
        """A recent heartbeat reporting our last trade already says the market is quiet."""
        beat = state.last_heartbeat_at
        return beat is not None and now - beat <= self.idle_timeout and self.liveness._vouched(state)

    def on_latest(self, symbol: str, trade_id: str | None, time: datetime | None, now: float) -> str | None:
        """The exchange's latest trade of ``symbol``: a reason to restart (a dead subscription),
        or None (a quiet market: the symbol is vouched for another idle_timeout)."""
        state = self.liveness.symbols.get(symbol)
        if state is None:
            return None
        state.checking_since = None
        state.latest_problem = None
        if trade_id is None and time is None:  # the exchange has no trade of it at all
            state.vouched_at = now
            return None
        ours: tuple[str | None, datetime | None] = (state.last_trade_id, state.last_trade_time)
        if state.last_trade_id is None:
            if state.rest_baseline is None:
                # Nothing received here yet: a trade after the subscriptions completed was missed;
                # an older one is the baseline later answers are compared with.
                after = self.subscribed_at
                if time is not None and after is not None and time > after:
                    return _dead(symbol, trade_id, time, None)
                state.rest_baseline = (trade_id, time)
                state.vouched_at = now
                return None
            ours = state.rest_baseline
        if _newer((trade_id, time), ours, self.sequential_ids):
            return _dead(symbol, trade_id, time, ours[0] if state.last_trade_id is not None else None)
        state.vouched_at = now
        return None

    def on_latest_failed(self, symbol: str, problem: str, now: float) -> str | None:
        """The check could not be made: on a connection silent for idle_timeout, the idle
        restart of old (with the cause); on a busy one nothing yet (asked again after
        idle_timeout, and a restart should the whole connection fall silent meanwhile)."""
        state = self.liveness.symbols.get(symbol)
        if state is not None:
            state.checking_since = None
            state.latest_problem = problem
        if now - self.last_data_at > self.idle_timeout:
            return self._unknown(symbol, problem)
        return None

    def _unknown(self, symbol: str, problem: str) -> str:
        return f"no frame for {self.idle_timeout:g}s and the exchange's latest trade of {symbol} is unknown ({problem})"


def _newer(rest: tuple[str | None, datetime | None], ours: tuple[str | None, datetime | None],
           sequential: bool) -> bool:
    """Whether REST's latest trade is one after ours."""
    rest_id, rest_time = rest
    our_id, our_time = ours
    if rest_id is not None and our_id is not None:
        if rest_id == our_id:
            return False
        if sequential and rest_id.isdigit() and our_id.isdigit():
            return int(rest_id) > int(our_id)
    if rest_time is not None and our_time is not None:
        return rest_time > our_time
    return rest_id is not None and our_id is not None  # different opaque ids, no times to order them


def _dead(symbol: str, trade_id: str | None, time: datetime | None, ours: str | None) -> str:
    theirs = trade_id if trade_id is not None else time.isoformat() if time else "?"
    return (f"{symbol}: the exchange's latest trade {theirs} is newer than ours "
            f"{ours if ours is not None else '(none since subscribing)'} (dead subscription)")
