"""Trade-id continuity: which ids make a hole, which do not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bitty.continuity.sequence import Continuity, Hole, as_int, missing_ids

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(n: int) -> datetime:
    return T0 + timedelta(seconds=n)


def test_consecutive_ids_make_no_hole() -> None:
    """1, 2, 3 is continuous; the first id of a symbol is never a hole."""
    c = Continuity()
    assert [c.observe("BTC-USD", str(n), at(n)) for n in (1, 2, 3)] == [None, None, None]


def test_skipped_ids_are_one_hole_with_both_sides() -> None:
    """5 then 8: ids 6 and 7 are missing, bounded by the trades on both sides."""
    c = Continuity()
    c.observe("BTC-USD", "5", at(5))
    hole = c.observe("BTC-USD", "8", at(8))
    assert hole == Hole("BTC-USD", 5, 8, at(5), at(8))
    assert hole.missing == 2


def test_symbols_are_independent() -> None:
    """Each symbol has its own sequence."""
    c = Continuity()
    c.observe("BTC-USD", "100", at(0))
    assert c.observe("ETH-USD", "7", at(1)) is None
    assert c.observe("BTC-USD", "101", at(2)) is None


def test_replayed_or_older_ids_are_not_holes_and_keep_the_mark() -> None:
    """An id at or below the last one (a resend after reconnect) neither opens a hole nor moves back."""
    c = Continuity()
    c.observe("X-Y", "10", at(10))
    assert c.observe("X-Y", "9", at(9)) is None
    assert c.observe("X-Y", "10", at(10)) is None
    assert c.observe("X-Y", "11", at(11)) is None


def test_non_integer_ids_are_counted_not_checked() -> None:
    """Ids that are not integers cannot be checked: counted and skipped."""
    c = Continuity()
    assert c.observe("X-Y", "abc", at(0)) is None
    assert c.not_integer == 1
    assert as_int(" 42 ") == 42 and as_int("4.2") is None and as_int(None) is None


def test_seed_and_forget() -> None:
    """A seeded last id (from the database) is where the next trade is compared; forget resets."""
    c = Continuity()
    c.seed("X-Y", "20", at(20))
    assert c.observe("X-Y", "23", at(23)) == Hole("X-Y", 20, 23, at(20), at(23))
    c.forget("X-Y")
    assert c.observe("X-Y", "30", at(30)) is None


@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=60, unique=True))
def test_holes_account_for_every_missing_id(ids: list[int]) -> None:
    """Over any increasing stream, the holes cover exactly the ids missing between first and last."""
    ids.sort()
    c = Continuity()
    holes = [h for n in ids if (h := c.observe("S", str(n), at(n))) is not None]
    reported = {i for h in holes for i in range(h.after_id + 1, h.before_id)}
    assert reported == set(missing_ids(ids[0], ids[-1], set(ids)))
