"""Rendering an audit: the time axis of its charts."""

from __future__ import annotations

from datetime import UTC, datetime

from bitty.continuity.chart import ticks


def test_ticks_are_round_and_labelled() -> None:
    """Time-axis ticks fall on round times, with the date on the first and where the day changes."""
    marks = ticks(datetime(2024, 5, 14, 22, 7, tzinfo=UTC), datetime(2024, 5, 15, 3, 0, tzinfo=UTC))
    assert [label for _, label in marks] == ["2024-05-14 22:30", "23:00", "23:30", "2024-05-15 00:00", "00:30", "01:00",
                                             "01:30", "02:00", "02:30", "03:00"]
