"""`bitty test`: one line per passing spec and nothing else, the reasons of quarantined frames
inline when it fails, and `--update` that never writes golden rows from a failing run."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from bitty.commands.test import check
from bitty.spec.load import load_spec

ROOT = Path(__file__).parents[2]
TESTEX = ROOT / "tests" / "specs" / "positive" / "testex.yaml"
SUBSCRIBE = {"send": {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "id": "<any>"}}


def _match(trade_id: object, price: str = '"100.5"') -> str:
    return ('{"recv_text": "{\\"type\\":\\"match\\",\\"trade_id\\":' + orjson.dumps(trade_id).decode().replace('"', '\\"')
            + ',\\"product_id\\":\\"BTC-USD\\",\\"price\\":' + price.replace('"', '\\"')
            + ',\\"size\\":\\"0.25\\",\\"side\\":\\"buy\\",\\"time\\":\\"2024-01-02T03:04:05Z\\"}"}')


def _spec_folder(tmp_path: Path, lines: list[str]) -> Path:
    """testex.yaml with a session of ``lines`` (after the subscription), in its own folder."""
    spec = tmp_path / "testex.yaml"
    shutil.copy(TESTEX, spec)
    fixtures = tmp_path / "fixtures" / "testex"
    fixtures.mkdir(parents=True)
    session = [orjson.dumps(SUBSCRIBE).decode(), '{"comment": "trades after the subscription"}', *lines, '{"close": 1000}']
    (fixtures / "session.jsonl").write_text("\n".join(session) + "\n")
    return spec


def _bitty(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "bitty", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_passing_spec_prints_one_line_and_no_log(tmp_path: Path) -> None:
    """On success `bitty test` prints the spec's line and the total, with no log lines at all."""
    spec = _spec_folder(tmp_path, [_match(1), _match(2, "100473000.00000000")])
    assert _bitty("test", str(spec), "--update", cwd=tmp_path).returncode == 0
    golden = (tmp_path / "fixtures" / "testex" / "golden.jsonl").read_text().splitlines()
    assert [orjson.loads(line)["price"] for line in golden] == ["100.5", "100473000.00000000"]
    done = _bitty("test", str(spec), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["ok   testex: 2 trades", "1 passed, 0 failed"]
    assert done.stderr == ""


def test_quarantine_reasons_are_shown_and_update_keeps_the_golden_rows(tmp_path: Path) -> None:
    """A run with quarantined records fails with each reason and frame inline, and `--update`
    leaves golden.jsonl as it was."""
    spec = _spec_folder(tmp_path, [_match(1), _match("", '"1"'), _match(3, '"NaN"')])
    golden = tmp_path / "fixtures" / "testex" / "golden.jsonl"
    golden.write_text('{"kept": true}\n')
    result = asyncio.run(check(load_spec(spec), update=True))
    assert not result.ok and not result.updated
    assert golden.read_text() == '{"kept": true}\n'
    text = "\n".join(result.problems)
    assert "2 frames or records were quarantined" in text
    assert "trade_id is missing, empty or not a scalar ('')" in text
    assert "price is missing or not a positive number: None" in text and '\\"price\\":\\"NaN\\"' not in text
    assert '"price":"NaN"' in text  # the frame, next to its reason
    assert "golden.jsonl not rewritten" in text


def test_the_cli_prints_the_reasons_without_log_level(tmp_path: Path) -> None:
    """The reasons are in `bitty test`'s own output, not only under LOG_LEVEL=debug."""
    spec = _spec_folder(tmp_path, [_match(1), _match(2, '"-0"')])
    done = _bitty("test", str(spec), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == "FAIL testex: 1 trades"
    assert "price is not positive: -0" in done.stdout
    assert done.stderr == ""
