"""The loader and `bitty validate`: every problem reported, located and explained."""

from __future__ import annotations

import json
from datetime import UTC
from pathlib import Path

import pytest

from bitty.cli import main
from bitty.errors import SpecError
from bitty.lang import functions
from bitty.spec.load import load_spec, schema
from tests.conftest import EXCHANGES, ROOT, SPECS

NEGATIVE = sorted((SPECS / "negative").glob("*.yaml"))


def expected_errors(path: Path) -> list[str]:
    """Negative examples declare the errors they must produce in `# expect:` comments."""
    return [line.split("# expect:", 1)[1].strip() for line in path.read_text().splitlines() if "# expect:" in line]


@pytest.mark.parametrize("path", NEGATIVE, ids=[p.stem for p in NEGATIVE])
def test_negative_specs_report_each_error(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each broken spec fails validation with every expected line, located as file:line:col: $.path."""
    expected = expected_errors(path)
    assert expected, f"{path} declares no `# expect:` lines"
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    for want in expected:
        assert any(want in line for line in out), f"missing {want!r} in:\n" + "\n".join(out)
    assert len(out) == len(expected), "unexpected extra errors:\n" + "\n".join(out)


def test_bundled_specs_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    """`bitty validate` with no argument checks every bundled spec and exits 0."""
    assert main(["validate"]) == 0


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--format json lists errors with file, line, column and path for tools."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXCHANGES / "coinbase.yaml").read_text().replace("idle_timeout: 30", "idle_timeout: -1"))
    assert main(["validate", "--format", "json", str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    [error] = report["errors"]
    assert error["path"] == "$.idle_timeout" and error["line"] > 1 and error["column"] == 15


def test_invalid_yaml_is_located(tmp_path: Path) -> None:
    """A YAML syntax error is reported with its position, not a traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nurl: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    [problem] = info.value.problems
    assert problem.line >= 2 and "invalid YAML" in problem.message


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    """Python tags in a spec are refused, never executed."""
    bad = tmp_path / "evil.yaml"
    bad.write_text("name: !!python/object/apply:os.system ['touch /tmp/bitty-pwned']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(bad)
    assert not Path("/tmp/bitty-pwned").exists()


def test_every_schema_property_is_described() -> None:
    """The schema is the documentation: every property carries a description."""
    missing = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if isinstance(sub, dict) and "description" not in sub and "$ref" not in sub:
                    missing.append(f"{path}.{name}")
            for key, value in node.items():
                if key != "if":  # discriminator conditions, not properties
                    walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(schema(), "$")
    assert not missing


def test_schema_lists_the_registered_functions() -> None:
    """The expression description names exactly the functions bitty registers."""
    described = schema()["$defs"]["expression"]["description"]
    listed = described.split("functions (", 1)[1].split(")", 1)[0]
    assert {name.strip() for name in listed.split(",")} == set(functions.REGISTRY)


def test_user_spec_overrides_bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec in --exchanges-dir with a bundled name replaces the bundled one."""
    from bitty.spec import files as paths
    from bitty.spec.load import spec_files

    (tmp_path / "coinbase.yaml").write_text((EXCHANGES / "coinbase.yaml").read_text())
    files = spec_files(paths.spec_dirs([str(tmp_path)]))
    assert files["coinbase"] == tmp_path / "coinbase.yaml"
    assert files["binance"].parent == EXCHANGES


def test_readme_generated_sections_are_current() -> None:
    """The README's spec reference and exchange table are what the schema and the bundled specs
    generate (run `python -m bitty.spec.docs`)."""
    from bitty.spec.docs import END, EXCHANGES_END, EXCHANGES_START, START, bundled_specs, render, render_exchanges

    text = (ROOT / "README.md").read_text()
    assert text.split(START, 1)[1].split(END, 1)[0].strip() == render().strip()
    exchanges = text.split(EXCHANGES_START, 1)[1].split(EXCHANGES_END, 1)[0].strip()
    assert exchanges == render_exchanges(bundled_specs()).strip()


def test_readme_walkthrough_spec_is_valid(tmp_path: Path) -> None:
    """The spec shown in the README's walk-through loads, and maps a documented Bitstamp trade."""
    import re
    from datetime import datetime

    from bitty.mapping.mapper import Mapper

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", readme, re.S)
    assert block is not None
    text = "\n".join(line[3:] for line in block.group(1).splitlines())
    path = tmp_path / "bitstamp.yaml"
    path.write_text(text)
    spec = load_spec(path)
    mapper = Mapper(spec)
    frame = {"event": "trade", "channel": "live_trades_btcusd", "data": {
        "id": 310436510, "amount_str": "0.00150000", "price_str": "37021.47", "type": 1,
        "microtimestamp": "1700489331512000", "amount": 0.0015, "price": 37021.47}}
    [trade] = mapper.handle(frame, datetime.now(UTC)).trades
    assert (trade.symbol, trade.trade_id, str(trade.price), trade.side) == ("BTC-USD", "310436510", "37021.47", "sell")


def test_two_specs_with_one_name_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two files giving the same `name` fail validation, each naming the other, and collect refuses to run."""
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "kraken-copy.yaml").write_text((EXCHANGES / "coinbase.yaml").read_text().replace(
        "name: coinbase", "name: kraken"))
    assert main(["validate", "--exchanges-dir", str(folder)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    copy = str(folder / "kraken-copy.yaml")
    assert out[0].startswith("exchanges.d/kraken.yaml:") and out[0].endswith(
        f"$.name: name 'kraken' is also the name of {copy}; exchange names are unique: rename one, or keep one file")
    assert out[1].startswith(f"{copy}:2:7: $.name: name 'kraken' is also the name of exchanges.d/kraken.yaml")
    db = tmp_path / "x.db"
    assert main(["collect", "kraken", str(folder / "kraken-copy.yaml"), "--db", f"sqlite:///{db}",
                 "--duration", "0.1"]) == 1
    assert "$.name: name 'kraken' is also the name of" in capsys.readouterr().err
    assert not db.exists()


def test_x_not_null_is_not_taken_for_a_string() -> None:
    """`x != null` (the absent field `null`, which is null) stays valid; `== true` gets a JSON literal hint."""
    from bitty.lang.expr import compile_expression, suspicious

    assert suspicious(compile_expression("a != null && b == 'x'")) == []
    [message] = suspicious(compile_expression("a == true"))
    assert "write `true` for the value" in message
