"""The live status page, loaded in headless Chromium while a real collector runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bitty.pipeline import CollectOptions
from tests.ops.chromium import chromium, render
from tests.ops.helpers import collector, exchange, free_port, get, wait_for


def test_live_page_in_chromium(tmp_path: Path) -> None:
    """The page shows a row per stream with its state, last-trade age and trades, and a trades/s
    chart per exchange; a stream that cannot connect is marked reconnecting."""
    chromium()
    with exchange(tmp_path, seconds=60, per_second=40) as (url, _count):
        options = CollectOptions(exchanges=["coinbase", "kraken"], urls={"coinbase": url,
                                 "kraken": f"ws://127.0.0.1:{free_port()}"}, db=f"sqlite:///{tmp_path}/page.db",
                                 spill_dir=str(tmp_path / "spill"), backfill=False, backoff_initial=0.2)
        with collector(options) as running:
            wait_for(lambda: len(json.loads(get(running.status_url + "/history")[1])["exchanges"].get("coinbase", []))
                     >= 4)
            shot = tmp_path / "status-page.png"
            dom = render(running.status_url + "/", tmp_path, shot)
    rows = re.findall(r'<tr data-exchange="(\w+)" data-state="(\w+)">(.*?)</tr>', dom)
    states = {exchange: state for exchange, state, _ in rows}
    assert states == {"coinbase": "connected", "kraken": "reconnecting"}, dom[:3000]
    coinbase = next(cells for exchange, _, cells in rows if exchange == "coinbase")
    assert "BTC-USD, ETH-USD" in coinbase
    assert re.search(r'<td class="age">\d+\.\d s ago</td>', coinbase)
    assert int(re.search(r'<td class="trades">(\d+)</td>', coinbase).group(1)) > 0  # type: ignore[union-attr]
    assert 'class="state connected"' in coinbase
    chart = re.search(r'<div class="chart" data-exchange="coinbase">(.*?)</div>', dom)
    assert chart and "<polyline" in chart.group(1) and "trades/s" in chart.group(1)
    assert re.search(r">\d\d:\d\d:\d\d</text>", chart.group(1))  # labelled time ticks
    assert "healthy" in dom and "trades received" in dom
    kraken = re.search(r'<div class="chart" data-exchange="kraken">(.*?)</div>', dom)
    assert kraken and 'class="gapmark"' in kraken.group(1)  # never connected: marked not covered
    assert 'class="gapmark"' not in chart.group(1)
