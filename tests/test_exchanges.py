"""Conformance: every spec in exchanges.d/ replays its fixtures into its golden rows."""

from __future__ import annotations

import asyncio

import pytest

from bitty.commands.test import check
from bitty.spec.load import load_spec
from tests.conftest import EXCHANGES

SPECS = sorted(EXCHANGES.glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_replays_into_golden_rows(path) -> None:  # type: ignore[no-untyped-def]
    """The spec loads, the client sends what the session expects, and the rows match golden."""
    result = asyncio.run(check(load_spec(path)))
    assert result.ok, "\n".join(result.problems)
    assert len(result.rows) >= 3


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_has_complete_fixtures(path) -> None:  # type: ignore[no-untyped-def]
    """Every exchange ships a session, golden rows, error frames and a symbol list response."""
    folder = EXCHANGES / "fixtures" / path.stem
    missing = [n for n in ("session.jsonl", "golden.jsonl", "errors.jsonl", "symbols.json") if not (folder / n).exists()]
    assert not missing, f"{folder}: missing {missing}"


def test_golden_rows_cover_both_sides() -> None:
    """Across the bundled exchanges the fixtures exercise buy and sell takers."""
    import orjson

    sides = set()
    for path in SPECS:
        for line in (EXCHANGES / "fixtures" / path.stem / "golden.jsonl").read_text().splitlines():
            sides.add(orjson.loads(line)["side"])
    assert sides == {"buy", "sell"}


@pytest.mark.parametrize("name", ["bitmex", "bybit"])
def test_batched_subscriptions_stay_within_the_exchange_limit(name: str) -> None:
    """45 symbols on one connection go out as subscribe messages of at most batch_size topics
    (BitMEX refuses more than 20 args, Bybit spot more than 10), every symbol once."""
    from bitty.engine.consumer import BaseConsumer
    from bitty.planning import plan

    spec = load_spec(EXCHANGES / f"{name}.yaml")
    symbols = [f"C{n:02d}X-USDT" for n in range(45)]
    [(_, chosen)] = plan([spec], symbols)  # one connection
    consumer = BaseConsumer(chosen, spec=spec)
    messages = consumer._subscribe_messages()
    sizes = [len(m["args"]) for m in messages]
    assert spec.subscribe.batch_size is not None and max(sizes) == spec.subscribe.batch_size
    assert sum(sizes) == 45 and len({a for m in messages for a in m["args"]}) == 45
