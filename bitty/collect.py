"""``LOG_LEVEL=info python -m bitty.collect [args]``: how the original bitty was started."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from bitty.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["collect", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
