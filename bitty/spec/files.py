"""Where bundled specs and the schema live, in a checkout and in an installed package."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
# Installed wheels carry the folders under bitty/_data; a checkout (or editable install) has
# them beside the package.
_DATA_ROOTS = (_PACKAGE / "_data", _PACKAGE.parent)

ENV_DIRS = "BITTY_EXCHANGES_DIR"


def _data(name: str) -> Path:
    for root in _DATA_ROOTS:
        if (root / name).exists():
            return root / name
    return _DATA_ROOTS[-1] / name


def bundled_specs_dir() -> Path:
    return _data("exchanges.d")


def schema_file() -> Path:
    return _data("schemas") / "exchange.schema.json"


def spec_dirs(extra: list[str] | None = None) -> list[Path]:
    """Bundled specs first, then ``$BITTY_EXCHANGES_DIR`` (os.pathsep-separated), then ``extra``:
    a later folder's spec overrides an earlier one of the same name."""
    dirs = [bundled_specs_dir()]
    env = os.environ.get(ENV_DIRS, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(p) for p in extra or []]
    return dirs


def fixtures_dir(spec_path: Path) -> Path:
    """Fixtures of a spec: ``<spec folder>/fixtures/<spec stem>/``."""
    return spec_path.parent / "fixtures" / spec_path.stem
