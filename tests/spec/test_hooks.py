"""Hooks are found in the spec's folder or an installed package, never the current directory;
`bitty validate` checks them from their source without importing or running them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bitty.cli import main
from bitty.errors import SpecError
from bitty.spec.hooks import Hooks, hooks_class
from bitty.spec.load import load_spec
from tests.conftest import SPECS

SPEC = (SPECS / "positive" / "pipes.yaml").read_text()


def spec_naming(folder: Path, hooks: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hooked.yaml"
    path.write_text(SPEC.replace("name: pipes", "name: hooked").replace(
        "hooks: pipes_hooks.PipeTrades", f"hooks: {hooks}"))
    return path


def loud_module(marker: Path, body: str = "class Loud(Hooks):\n    pass\n") -> str:
    """Source of a module that leaves a file behind when it is executed."""
    return (f"from pathlib import Path\nfrom bitty.hooks import Hooks\n"
            f"Path({str(marker)!r}).write_text('executed')\n{body}")


def run_validate(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bitty", "validate", str(path)], cwd=cwd,
                          capture_output=True, text=True, timeout=50)


def test_validate_never_runs_the_this_module(tmp_path: Path) -> None:
    """`hooks: this.Hooks` is checked from `this`'s source: the Zen of Python is never printed."""
    path = spec_naming(tmp_path / "specs", "this.Hooks")
    result = run_validate(path, tmp_path)
    assert "Beautiful is better than ugly" not in result.stdout + result.stderr
    assert result.returncode == 1
    assert "$.hooks: module 'this'" in result.stdout and "defines no class 'Hooks'" in result.stdout


def test_a_module_in_the_current_directory_is_never_imported(tmp_path: Path) -> None:
    """Run as `python -m bitty` (the current directory heads sys.path), a module lying there is
    neither imported nor accepted; the message says to move it next to the spec."""
    marker = tmp_path / "executed"
    work = tmp_path / "work"
    work.mkdir()
    (work / "evil.py").write_text(loud_module(marker))
    path = spec_naming(tmp_path / "specs", "evil.Loud")
    result = run_validate(path, work)
    assert not marker.exists()
    assert result.returncode == 1
    assert ("$.hooks: module 'evil' is only in the current directory, which is never searched "
            "(it would run whatever lies there); move evil next to the spec, or install it") in result.stdout


def test_validate_checks_hooks_beside_the_spec_without_importing(tmp_path: Path) -> None:
    """A hooks module beside the spec validates from its source alone; only hooks_class (collect,
    test) imports it."""
    marker = tmp_path / "executed"
    folder = tmp_path / "specs"
    path = spec_naming(folder, "loud_hooks.Loud")
    (folder / "loud_hooks.py").write_text(loud_module(marker))
    assert main(["validate", str(path)]) == 0
    spec = load_spec(path)
    assert not marker.exists()
    cls = hooks_class(spec)
    assert marker.exists() and issubclass(cls, Hooks) and cls.__name__ == "Loud"


def test_a_base_class_in_another_module_is_followed(tmp_path: Path) -> None:
    """A hooks class whose base is imported from a sibling module is recognized from source."""
    folder = tmp_path / "specs"
    path = spec_naming(folder, "pkg.child.Child")
    (folder / "pkg").mkdir()
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "base.py").write_text("import bitty.hooks\n\nclass Base(bitty.hooks.Hooks):\n    pass\n")
    (folder / "pkg" / "child.py").write_text("from .base import Base\n\nclass Child(Base):\n    pass\n")
    load_spec(path)


def test_a_class_that_is_not_hooks_is_reported(tmp_path: Path) -> None:
    """A class that does not subclass Hooks fails validation with what to write instead."""
    folder = tmp_path / "specs"
    path = spec_naming(folder, "plain.NotHooks")
    (folder / "plain.py").write_text("class NotHooks:\n    pass\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    [problem] = info.value.problems
    assert problem.path == "$.hooks" and problem.line == 3
    assert problem.message == ("'plain.NotHooks' is not a subclass of bitty.hooks.Hooks; declare it as "
                               "`class NotHooks(Hooks)` after `from bitty.hooks import Hooks`")


def test_installed_packages_provide_hooks(tmp_path: Path) -> None:
    """A hooks class from an installed package (here bitty's own) is found without the spec folder."""
    path = spec_naming(tmp_path / "specs", "bitty.hooks.Hooks")
    assert hooks_class(load_spec(path)) is Hooks
