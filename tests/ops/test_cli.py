"""CLI polish: --version, an example in every command's --help, exit codes as documented."""

from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

from bitty.cli import build_parser, main
from tests.conftest import ROOT


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """bitty --version prints the installed version and exits 0."""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"bitty {version('bitty')}"


def test_every_command_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """Every command's --help ends with at least one example command line."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) >= {"validate", "collect", "test", "symbols", "demo", "replay", "record", "audit"}
    for name in commands:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "\nexamples:\n  bitty " in text, name
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "exit codes: 0 ok, 1 error" in capsys.readouterr().out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option is a usage error: exit 2."""
    with pytest.raises(SystemExit) as exit_:
        main(["collect", "--no-such-option"])
    assert exit_.value.code == 2


def test_readme_documents_exit_codes() -> None:
    """The README lists every exit code the CLI uses."""
    text = (ROOT / "README.md").read_text()
    for line in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"):
        assert line in text, line
