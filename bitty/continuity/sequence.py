"""Trade-id continuity: where a spec promises ``trade_ids: sequential``, a skipped id is a missed
trade. ``Continuity`` watches the live stream of one exchange and reports every hole.

Pure and synchronous: no clocks, no I/O. The caller decides what a hole means (a new gap in the
ledger, or the far side of a disconnect gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Hole:
    """Trades ``after_id + 1 .. before_id - 1`` of ``symbol`` never arrived."""

    symbol: str
    after_id: int
    before_id: int
    after_time: datetime | None
    before_time: datetime

    @property
    def missing(self) -> int:
        return self.before_id - self.after_id - 1


def as_int(trade_id: str | None) -> int | None:
    """The id as an integer, or None when it is not one (then continuity cannot be checked)."""
    if trade_id is None:
        return None
    text = trade_id.strip()
    if not text or not (text.isdigit() or (text[0] == "-" and text[1:].isdigit())):
        return None
    return int(text)


class Continuity:
    """Last id seen per symbol; ``observe`` returns the hole a trade reveals, if any.

    Ids at or below the last one (a replay, an exchange resending after a reconnect) are not
    holes and do not move the mark back. ``forget`` drops a symbol's mark, so the next trade
    starts afresh (used when the gap is already accounted for elsewhere).
    """

    def __init__(self) -> None:
        self.last: dict[str, tuple[int, datetime | None]] = {}
        self.not_integer = 0  # trades whose id is not an integer

    def seed(self, symbol: str, trade_id: str | None, moment: datetime | None = None) -> None:
        """Start from a known last id (e.g. the last one stored before a restart)."""
        value = as_int(trade_id)
        if value is not None:
            self.last[symbol] = (value, moment)

    def observe(self, symbol: str, trade_id: str, moment: datetime) -> Hole | None:
        value = as_int(trade_id)
        if value is None:
            self.not_integer += 1
            return None
        previous = self.last.get(symbol)
        if previous is not None and value <= previous[0]:
            return None
        self.last[symbol] = (value, moment)
        if previous is None or value == previous[0] + 1:
            return None
        return Hole(symbol, previous[0], value, previous[1], moment)

    def forget(self, symbol: str) -> None:
        self.last.pop(symbol, None)


def missing_ids(after_id: int, before_id: int, present: set[int]) -> list[int]:
    """Ids strictly between the two that are not in ``present``."""
    return [i for i in range(after_id + 1, before_id) if i not in present]
