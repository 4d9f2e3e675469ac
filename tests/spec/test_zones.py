"""`bitty validate` warns about `iso_time(x)` without a zone where the spec's fixtures or field names
show zone-less times; the warning never fails validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitty.cli import main
from tests.conftest import SPECS

TIME_LINE = "      time: iso_time(record.time)"


def spec_with_fixture(tmp_path: Path, time_text: str, field: str = "time") -> Path:
    text = (SPECS / "positive" / "testex.yaml").read_text()
    assert TIME_LINE in text
    text = text.replace("name: testex", "name: koreax").replace(TIME_LINE, f"      time: iso_time(record.{field})")
    spec = tmp_path / "koreax.yaml"
    spec.write_text(text)
    fixtures = tmp_path / "fixtures" / "koreax"
    fixtures.mkdir(parents=True)
    frame = {"type": "match", "trade_id": 1, "product_id": "BTC-USD", "price": "1", "size": "1", "side": "buy",
             field: time_text}
    (fixtures / "session.jsonl").write_text(json.dumps({"recv": frame}) + "\n")
    return spec


def test_zoneless_fixture_times_warn_and_validation_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fixture frame with a zone-less time read by iso_time(x): one located warning, exit 0."""
    spec = spec_with_fixture(tmp_path, "2024-05-14 18:31:40.123")
    line = spec.read_text().splitlines().index("      time: iso_time(record.time)") + 1
    assert main(["validate", str(spec)]) == 0
    captured = capsys.readouterr()
    [warning] = captured.out.splitlines()
    assert warning.startswith(f"{spec}:{line}:13: $.messages.trade.fields.time: warning: iso_time(record.time) reads "
                              "'time', which has no zone in the fixture frames ('2024-05-14 18:31:40.123')")
    assert warning.endswith("; name the exchange's zone: iso_time(record.time, 'Asia/Seoul'), "
                            "or an offset like iso_time(record.time, '+09:00')")
    assert "1 of 1 specs valid, 0 errors, 1 warnings" in captured.err


def test_times_with_a_zone_or_a_named_zone_do_not_warn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Fixture times with Z or an offset, or a call that names its zone, give no warning."""
    spec = spec_with_fixture(tmp_path, "2024-05-14T09:31:40.123456789Z")
    assert main(["validate", str(spec)]) == 0
    assert capsys.readouterr().out == ""
    (tmp_path / "named").mkdir()
    spec = spec_with_fixture(tmp_path / "named", "2024-05-14 18:31:40")
    spec.write_text(spec.read_text().replace("iso_time(record.time)", "iso_time(record.time, 'Asia/Seoul')"))
    assert main(["validate", str(spec)]) == 0
    assert capsys.readouterr().out == ""


def test_a_local_time_field_name_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A field named as a local time (no fixture evidence needed) warns; JSON output lists it apart from errors."""
    spec = spec_with_fixture(tmp_path, "not a time", field="local_time")
    assert main(["validate", "--format", "json", str(spec)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == []
    [warning] = report["warnings"]
    assert warning["path"] == "$.messages.trade.fields.time"
    assert "by its name a local time without a zone" in warning["message"]
