"""Sanity bounds on mapped values: what a trade's price, size and time may be before it is stored.

A value outside them is not a trade any exchange made but a broken or hostile frame (a price of
``1e999999`` is a million digits of text once written out), so its record is quarantined with
the reason. The limits are documented in README ("Sanity bounds"):

- price and size: finite, positive, at most ``MAX_DIGITS`` significant digits, and between
  ``10**MIN_EXPONENT`` and ``10**MAX_EXPONENT`` (exclusive);
- time: from ``EARLIEST`` (2009, the first bitcoin block) to ``AHEAD`` past the time the frame
  was received.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bitty.lang.functions import DECIMAL_DIGITS

MAX_DIGITS = DECIMAL_DIGITS
MIN_EXPONENT = -30
MAX_EXPONENT = 30
SMALLEST = Decimal(1).scaleb(MIN_EXPONENT)
LARGEST = Decimal(1).scaleb(MAX_EXPONENT)  # excluded
EARLIEST = datetime(2009, 1, 1, tzinfo=UTC)
AHEAD = timedelta(days=1)


def check_amount(value: Decimal) -> str | None:
    """Why ``value`` cannot be a price or size, or None when it can."""
    if not value.is_finite():
        return f"is not a finite number: {value}"
    if value.is_signed() or not value:
        return f"is not positive: {value}"
    if not SMALLEST <= value < LARGEST:
        return f"is out of bounds (not within 1E{MIN_EXPONENT} to 1E+{MAX_EXPONENT}): {_short(value)}"
    if len(value.as_tuple().digits) > MAX_DIGITS:
        return f"has more than {MAX_DIGITS} significant digits: {_short(value)}"
    return None


def latest_time(received_at: datetime) -> datetime:
    """The latest plausible trade time for a frame received at ``received_at``."""
    return received_at + AHEAD


def check_time(moment: datetime, latest: datetime) -> str | None:
    """Why ``moment`` cannot be a trade's time, or None when it can."""
    if moment.tzinfo is None:
        return f"has no zone: {moment.isoformat()}"
    if moment < EARLIEST:
        return f"is before {EARLIEST.year}: {moment.isoformat()}"
    if moment > latest:
        return f"is more than a day after the frame was received: {moment.isoformat()}"
    return None


def _short(value: Decimal) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:30] + "..." + text[-20:]
