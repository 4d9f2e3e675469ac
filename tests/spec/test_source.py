"""Hostile spec files: size, nesting, aliases and expressions are bounded, each refused with one
`file:line:col: $.path: message` line from the real CLI, never a traceback or a memory blow-up."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from bitty.cli import main
from tests.conftest import ROOT, SPECS

MEMORY_LIMIT = 1024 * 1024 * 1024  # address space for the whole validate process


def validate_limited(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m bitty validate` in a process whose address space is capped."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-m", "bitty", "validate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=50, preexec_fn=cap)


def test_billion_laughs_stays_within_a_small_memory_bound() -> None:
    """A sub-kilobyte spec whose aliases expand to 10^10 strings is refused by a process capped
    at 1 GB of address space, with one located line."""
    path = SPECS / "negative" / "billion_laughs.yaml"
    assert path.stat().st_size < 5 * 1024
    result = validate_limited(str(path))
    assert result.returncode == 1, result.stderr
    [line] = result.stdout.splitlines()
    assert ":8:5: $: aliases (*name) expand this document to over" in line
    assert "Traceback" not in result.stderr


def test_a_spec_of_50_mb_is_refused_before_it_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 50 MB file is refused from its size alone, with the limit named."""
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.write(b"name: big\ndescription: '")
        f.truncate(50 * 1024 * 1024)
    assert main(["validate", str(big)]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.endswith("big.yaml:1:1: $: the file is 52,428,800 bytes, over the limit of 1,048,576; "
                         "a spec describes one exchange and needs far less")


def test_100k_deep_nesting_is_located_not_a_recursion_error(tmp_path: Path) -> None:
    """100,000 nested brackets give one located error in a memory-capped process, no RecursionError."""
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: deep\nurl: " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = validate_limited(str(deep))
    assert result.returncode == 1, result.stderr
    [line] = result.stdout.splitlines()
    assert "deep.yaml:2:55: $.url[0][0]" in line and "nested more than 50 levels deep" in line
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stdout


def test_deep_nesting_through_aliases_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Aliases that each nest the previous one deeper are measured as expanded, so depth cannot
    be smuggled past the bound."""
    lines = ["name: nest", "a0: &a0 [[[[[[[[[[x]]]]]]]]]]"]
    lines += [f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]" for i in range(1, 30)]
    path = tmp_path / "nest.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert main(["validate", str(path)]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert "aliases (*name) expand this document to over" in line and "levels deep" in line


def test_200k_term_expression_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 200,000-term expression is refused by its size (it used to end in RecursionError)."""
    text = (SPECS / "positive" / "testex.yaml").read_text()
    term = " || ".join(["a"] * 200_000)
    assert "match: " in text
    path = tmp_path / "long.yaml"
    path.write_text(_replace_first_match(text, term))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "expression is 999,996 characters, over the limit of 4,096" in out
    assert "RecursionError" not in out


def _replace_first_match(text: str, expression: str) -> str:
    head, _, tail = text.partition("match: ")
    line_end = tail.index("\n")
    return f"{head}match: \"{expression}\"{tail[line_end:]}"
