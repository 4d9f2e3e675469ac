"""Hostile input, property-based: random and mutated specs, random frames against every bundled
spec. Nothing raises an uncaught exception; every rejection comes with a reason."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitty.errors import SpecError
from bitty.mapping.mapper import Mapper
from bitty.spec.load import Spec, load_spec, parse_spec
from tests.conftest import EXCHANGES, replace_at, value_paths

SPECS: list[Spec] = [load_spec(p) for p in sorted(EXCHANGES.glob("*.yaml"))]
SOURCES = {s.name: s.path.read_text() for s in SPECS}
NOW = datetime(2024, 1, 1, tzinfo=UTC)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["NaN", "-1", "0", "1e400", "buy", "sell", "trade", "BTC-USD", "btcusdt", "2024-01-01T00:00:00Z"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(["type", "e", "event", "data", "p", "q", "price", "size", "side", "s", "T", "t",
                         "channel", "product_id", "trade_id", "time", "result", "arg", "topic", "ch", "tick"]),
        children, max_size=6),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=json_values, index=st.integers(min_value=0, max_value=len(SPECS) - 1))
def test_random_frames_never_crash_the_mapper(frame: Any, index: int) -> None:
    """Any JSON value, against any bundled spec, maps to an outcome; rejects carry reasons."""
    spec = SPECS[index]
    mapper = Mapper(spec)
    outcome = mapper.handle(frame, NOW, {})
    assert outcome.kind in {"trade", "heartbeat", "pong", "error", "reconnect", "channel", "ignore", "unknown"}
    assert all(isinstance(r, str) and r for r in outcome.rejects)
    for trade in outcome.trades:
        assert trade.side in ("buy", "sell") and trade.price > 0 and trade.size > 0


def mutate_frames(spec: Spec) -> list[Any]:
    session = spec.path.parent / "fixtures" / spec.name / "session.jsonl"
    return [orjson.loads(line)["recv"] for line in session.read_text().splitlines()
            if line.strip() and "recv" in orjson.loads(line)]


FRAMES = [(i, f) for i, spec in enumerate(SPECS) for f in mutate_frames(spec)]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_real_frames_are_mapped_or_explained(data: st.DataObject) -> None:
    """A fixture frame with one value replaced (wrong type, missing, NaN, huge) never crashes,
    and a trade frame that loses a required value is rejected with a reason, not stored wrong."""
    index, frame = data.draw(st.sampled_from(FRAMES))
    path = data.draw(st.sampled_from(value_paths(frame)))
    mutated = replace_at(frame, path, data.draw(json_scalars))
    mapper = Mapper(SPECS[index])
    outcome = mapper.handle(mutated, NOW, {})
    for trade in outcome.trades:
        assert trade.price.is_finite() and trade.size.is_finite() and trade.time.tzinfo is not None


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_specs_load_or_explain(data: st.DataObject) -> None:
    """A bundled spec with one value replaced or removed either loads or raises SpecError with
    located, non-empty problems - never another exception."""
    name = data.draw(st.sampled_from(sorted(SOURCES)))
    document = yaml.safe_load(SOURCES[name])
    path = data.draw(st.sampled_from([p for p in value_paths(document) if p]))
    if data.draw(st.booleans()):
        parent = _get(document, path[:-1])
        if isinstance(parent, dict):
            parent.pop(path[-1])
        else:
            parent.pop(path[-1])
    else:
        document = replace_at(document, path, data.draw(json_scalars))
    text = yaml.safe_dump(document, sort_keys=False)
    try:
        parse_spec(text, Path(f"{name}.yaml"))
    except SpecError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.line >= 1 and problem.column >= 1 and problem.path.startswith("$") and problem.message


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=300))
def test_random_text_as_a_spec_is_explained(text: str) -> None:
    """Arbitrary text is either a valid spec (never, in practice) or a SpecError."""
    try:
        parse_spec(text, Path("random.yaml"))
    except SpecError as exc:
        assert exc.problems and all(p.message for p in exc.problems)


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value
