"""Headless Chromium (Debian's ``chromium`` package) for the page tests: a DOM after the page's
scripts ran, and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--hide-scrollbars"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return found


def render(url: str, tmp_path: Path, screenshot: Path, size: str = "1200,800", budget_ms: int = 4000) -> str:
    """The DOM of ``url`` once its scripts ran for ``budget_ms`` of virtual time; writes a screenshot."""
    binary = chromium()
    common = [binary, *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--window-size={size}",
              f"--virtual-time-budget={budget_ms}"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=50)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = subprocess.run([*common, f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=50)
    assert shot.returncode == 0 and screenshot.stat().st_size > 0, shot.stderr[-2000:]
    return dom.stdout
