"""``bitty test``: replay a spec's fixtures through the real engine and compare with golden rows.

Fixtures live in ``<spec folder>/fixtures/<name>/``: ``session.jsonl`` (what the exchange sends
and what the client must send, see ``bitty.commands.replay``), ``golden.jsonl`` (the expected rows),
optionally ``errors.jsonl`` (exchange error frames the spec must recognize),
``reconnects.jsonl`` (disconnect announcements the spec must recognize) and ``bootstrap.json``
(the response served to the spec's bootstrap request).
"""

from __future__ import annotations

import difflib
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bitty.commands.replay import ReplayServer, load_session
from bitty.mapping.mapper import Mapper
from bitty.pipeline import CollectOptions, collect
from bitty.spec import files as paths
from bitty.spec.load import Spec
from bitty.storage.store import Store

GOLDEN_COLUMNS = ("exchange", "symbol", "trade_id", "price", "size", "side", "time")


@dataclass
class Result:
    spec: Spec
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    quarantined: int = 0
    updated: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def read_jsonl(path: Path) -> list[Any]:
    return [orjson.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


async def replay_rows(spec: Spec, session: Path, db_url: str | None = None) -> tuple[list[dict[str, Any]], ReplayServer, int]:
    """Serve ``session`` locally, collect from it with the real engine, and return the stored rows."""
    server = ReplayServer(load_session(session))
    bootstrap = session.parent / "bootstrap.json"
    bootstrap_urls = {}
    if bootstrap.exists():
        server.http["/bootstrap"] = bootstrap.read_bytes()
    url = await server.start()
    if bootstrap.exists():
        bootstrap_urls[spec.name] = url.replace("ws://", "http://") + "/bootstrap"
    with tempfile.TemporaryDirectory(prefix="bitty-test-") as tmp:
        db = db_url or f"sqlite:///{tmp}/test.db"
        try:
            result = await collect(CollectOptions(
                exchanges=[str(spec.path)], urls={spec.name: url}, bootstrap_urls=bootstrap_urls,
                db=db, reconnect=False,
                progress_interval=3600,
            ))
        finally:
            await server.close()
        store = Store(db)
        try:
            trades = store.read_trades(spec.name)
        finally:
            store.close()
    rows = [{k: v for k, v in t.as_json(received_at=False).items() if k in GOLDEN_COLUMNS} for t in trades]
    return rows, server, result.quarantined


async def check(spec: Spec, update: bool = False) -> Result:
    result = Result(spec)
    folder = paths.fixtures_dir(spec.path)
    session = folder / "session.jsonl"
    golden = folder / "golden.jsonl"
    if not session.exists():
        result.problems.append(f"no fixtures: {session} is missing")
        return result
    rows, server, quarantined = await replay_rows(spec, session)
    result.rows, result.quarantined = rows, quarantined
    result.problems += [f"session: {m}" for m in server.mismatches]
    if quarantined:
        result.problems.append(f"{quarantined} frames or records were quarantined (run with LOG_LEVEL=debug to see why)")
    if update:
        write_jsonl(golden, rows)
        result.updated = True
    elif not golden.exists():
        result.problems.append(f"no golden rows: {golden} is missing (bitty test --update writes it)")
    else:
        expected = read_jsonl(golden)
        if expected != rows:
            diff = difflib.unified_diff(
                [orjson.dumps(r).decode() for r in expected], [orjson.dumps(r).decode() for r in rows],
                "golden.jsonl", "replayed", lineterm="", n=1)
            result.problems.append("rows differ from golden:\n" + "\n".join(diff))
    for name, kind in (("errors.jsonl", "error"), ("reconnects.jsonl", "reconnect")):
        if (folder / name).exists():
            result.problems += check_kind(spec, folder / name, kind)
    return result


def check_kind(spec: Spec, path: Path, kind: str) -> list[str]:
    """Every frame in the file must be recognized as ``kind`` (an error, a reconnect notice)."""
    mapper = Mapper(spec)
    problems = []
    now = datetime.now(UTC)
    for number, event in enumerate(read_jsonl(path), 1):
        frame = event.get("recv", event.get("recv_text"))
        text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
        outcome = mapper.handle(mapper.decode(text), now, {})
        if outcome.kind != kind:
            problems.append(f"{path.name}:{number}: recognized as {outcome.kind!r}, not as {kind!r}")
    return problems
