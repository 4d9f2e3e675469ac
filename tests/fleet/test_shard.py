"""`--shard i/n` and `--config deploy.yaml`: which streams a collector takes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bitty.commands.deploy import load
from bitty.errors import BittyError
from bitty.planning import load_specs, parse_shard, plan, shard_of
from tests.conftest import ROOT

SYMBOLS = [f"S{i}-USD" for i in range(200)]


def test_shards_partition_the_streams_the_same_way_in_every_process() -> None:
    """Every stream is in exactly one shard, and another interpreter (another hash seed) agrees."""
    mine = [shard_of("coinbase", s, 3) for s in SYMBOLS]
    assert set(mine) == {0, 1, 2}
    code = ("from bitty.planning import shard_of; "
            f"print([shard_of('coinbase', s, 3) for s in {SYMBOLS!r}])")
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert other.stdout.strip() == str(mine)


def test_plan_keeps_only_the_shards_streams() -> None:
    """Two shards of one exchange's symbols: disjoint, and together all of them."""
    (spec,) = load_specs(["coinbase"], [])
    symbols = ["BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "LTC-USD", "DOGE-USD"]
    halves = [sorted(s for _, chosen in plan([spec], symbols, shard=(i, 2)) for s in chosen) for i in (0, 1)]
    assert not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == sorted(symbols)


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2", "0/0"])
def test_a_bad_shard_is_a_clear_error(text: str) -> None:
    """--shard must be I/N with 0 <= I < N."""
    with pytest.raises(BittyError, match="expected I/N"):
        parse_shard(text)


def test_a_deployment_file_describes_a_collector(tmp_path: Path) -> None:
    """exchanges with their symbols, shard, name, outputs and stream settings come from one file."""
    path = tmp_path / "deploy.yaml"
    path.write_text("nats: nats://nats.internal:4222\nname: a1\nshard: 0/2\n"
                    "stream: {name: FLEET, replicas: 3}\nexchanges:\n  coinbase: [BTC-USD]\n  kraken: []\n")
    options, symbols = load(str(path))
    assert (options.nats, options.db, options.name, options.shard) == ("nats://nats.internal:4222", None, "a1", "0/2")
    assert options.nats_stream.name == "FLEET" and options.nats_stream.replicas == 3
    assert symbols == {"coinbase": ["BTC-USD"], "kraken": []}


@pytest.mark.parametrize(("text", "message"), [
    ("exchanges: {coinbase: []}\nnats: n\nshards: 0/2\n", r"\$.shards: unknown key"),
    ("nats: n\n", r"\$.exchanges: expected a mapping"),
    ("exchanges: {coinbase: []}\n", "give database, nats or both"),
    ("exchanges: {coinbase: []}\nnats: n\nstream: {replica: 3}\n", r"\$.stream.replica: unknown key"),
])
def test_a_bad_deployment_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    """A typo in a deployment file is an error naming the key, not a silently different fleet."""
    path = tmp_path / "deploy.yaml"
    path.write_text(text)
    with pytest.raises(BittyError, match=message):
        load(str(path))
