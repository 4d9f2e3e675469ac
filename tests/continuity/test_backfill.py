"""REST backfill of each exchange with a ``rest.trades`` block, against a local HTTP server
serving responses in the exchange's documented format (``fixtures/<name>/rest/case.json``):
the URLs requested, pagination, a 429 honoured through Retry-After, and the golden rows."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bitty.continuity.backfill import Backfiller, Result, Window
from bitty.lang.functions import iso_time
from bitty.spec.load import load_spec
from tests.conftest import EXCHANGES
from tests.wsserver import serve

CASES = sorted(p.parent.parent.name for p in (EXCHANGES / "fixtures").glob("*/rest/case.json"))


class RestServer:
    """Answers each request with the next scripted response, whatever its path."""

    def __init__(self, folder: Path, responses: list[dict[str, Any]]) -> None:
        self.folder = folder
        self.responses = list(responses)
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path_qs)
        if not self.responses:
            return web.Response(status=404, text="script exhausted")
        spec = self.responses.pop(0)
        body = (self.folder / spec["file"]).read_bytes() if "file" in spec else json.dumps(spec["body"]).encode()
        return web.Response(status=spec.get("status", 200), body=body, headers=spec.get("headers", {}),
                            content_type="application/json")


@asynccontextmanager
async def rest_server(server: RestServer) -> AsyncIterator[str]:
    async def handle(request: web.Request, n: int) -> web.StreamResponse:
        return await server.handle(request)

    async with serve(handle) as local:
        yield local.url.replace("ws://", "http://")


async def backfill(name: str, case: dict[str, Any], page_size: int | None = None) -> tuple[Result, RestServer, list[float]]:
    spec = load_spec(EXCHANGES / f"{name}.yaml")
    assert spec.rest_trades is not None
    if page_size is not None:
        # The fixture's pages hold a few records instead of the endpoint's full page.
        spec = dataclasses.replace(spec, rest_trades=dataclasses.replace(spec.rest_trades, page_size=page_size))
    gap = case["gap"]
    window = Window(case["symbol"], iso_time(gap["from_time"]), iso_time(gap["to_time"]),  # type: ignore[arg-type]
                    gap.get("after_id"), gap.get("to_id"))
    server = RestServer(EXCHANGES / "fixtures" / name / "rest", case["responses"])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with rest_server(server) as origin, aiohttp.ClientSession() as session:
        result = await Backfiller(spec, session, origin, sleep=sleep).fill(window)
    return result, server, waits


@pytest.mark.parametrize("name", CASES)
def test_rest_backfill_matches_golden(name: str) -> None:
    """The spec requests the documented URLs page by page, waits out the 429, and maps the gap's trades."""
    folder = EXCHANGES / "fixtures" / name / "rest"
    case = json.loads((folder / "case.json").read_text())
    result, server, waits = asyncio.run(backfill(name, case, case.get("page_size")))
    assert (result.status, result.rejects) == (case["status"], 0), result.reason
    assert server.paths == [r["path"] for r in case["responses"]]
    assert any(abs(w - case["retry_after"]) < 0.2 for w in waits), waits
    rows = [t.as_json(received_at=False) for t in result.trades]
    assert len(rows) == case["trades"]
    golden = [json.loads(line) for line in (folder / "golden.jsonl").read_text().splitlines()]
    assert rows == golden


def test_gap_older_than_a_recent_only_endpoint_is_unrecoverable() -> None:
    """An endpoint returning only the latest trades cannot fill a gap that starts before them."""
    case = json.loads((EXCHANGES / "fixtures" / "bybit" / "rest" / "case.json").read_text())
    case["gap"] = {"from_time": "2024-05-14T09:29:00Z", "to_time": "2024-05-14T09:30:25Z",
                   "after_id": "2100000000007763000", "to_id": "2100000000007764025"}
    case["responses"] = case["responses"][1:]
    result, _, _ = asyncio.run(backfill("bybit", case))
    assert result.status == "unrecoverable"
    assert "only returns recent trades" in result.reason


def test_sequential_ids_the_endpoint_lacks_leave_the_gap_unrecoverable() -> None:
    """With trade_ids: sequential, every missing id must come back, or the gap stays unrecoverable."""
    case = json.loads((EXCHANGES / "fixtures" / "binance" / "rest" / "case.json").read_text())
    case["gap"]["to_id"] = "28471"  # 28470 is not on the endpoint's last (short) page
    result, _, _ = asyncio.run(backfill("binance", case, case["page_size"]))
    assert result.status == "unrecoverable"
    assert "28470" in result.reason


def test_retries_are_bounded() -> None:
    """An endpoint that keeps answering 429 gives up after rate.retries, naming the cause."""
    case = json.loads((EXCHANGES / "fixtures" / "coinbase" / "rest" / "case.json").read_text())
    case["responses"] = [case["responses"][0]] * 10
    result, server, _ = asyncio.run(backfill("coinbase", case))
    assert result.status == "unrecoverable"
    assert "429" in result.reason
    assert len(server.paths) == 6  # 1 + rate.retries
