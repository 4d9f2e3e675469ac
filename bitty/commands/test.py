"""``bitty test``: replay a spec's fixtures through the real engine and compare with golden rows.

Fixtures live in ``<spec folder>/fixtures/<name>/``: ``session.jsonl`` (what the exchange sends
and what the client must send, see ``bitty.commands.replay``), ``golden.jsonl`` (the expected rows),
optionally ``errors.jsonl`` (exchange error frames the spec must recognize),
``reconnects.jsonl`` (disconnect announcements the spec must recognize) and ``bootstrap.json``
(the response served to the spec's bootstrap request).

A session may open with ``{"meta": {"symbols": ["XBTUSD", "XBTZ24"]}}``: the symbols collected
instead of the spec's defaults (derivatives a default list does not name). Its ``{"http": ...}``
answers (a listing) are served with every HTTP endpoint of the spec pointed at the replay
(``--rest-url``), so instruments are named from the recorded listing.

A run prints one line per spec; the reasons of quarantined frames are part of its problems, and
bitty's own log lines are held back (``LOG_LEVEL=debug`` shows them). ``--update`` writes the
golden rows only from a run without problems.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bitty.commands.replay import ReplayServer, load_session
from bitty.mapping import codec
from bitty.mapping.mapper import Mapper
from bitty.pipeline import CollectOptions, collect
from bitty.spec import files as paths
from bitty.spec.load import Spec
from bitty.storage.store import Store
from bitty.storage.tables import quarantine

GOLDEN_COLUMNS = ("exchange", "symbol", "trade_id", "price", "size", "side", "time")


@dataclass
class Result:
    spec: Spec
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    quarantined: int = 0
    reasons: list[str] = field(default_factory=list)  # one per quarantined frame or record
    updated: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def read_jsonl(path: Path) -> list[Any]:
    """JSON Lines, numbers with their own digits (as the engine decodes frames)."""
    return [codec.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


class _Held(logging.Handler):
    """bitty's warnings during a run, kept to show only if the run fails."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextlib.contextmanager
def _quiet() -> Iterator[_Held]:
    """bitty's log lines held back during a run, unless LOG_LEVEL asks for them: a passing spec
    prints its one line (a fixture's announced disconnect is no news); a failing one prints its
    problems and the warnings held."""
    held = _Held()
    logger = logging.getLogger("bitty")
    if "LOG_LEVEL" in os.environ:
        yield held
        return
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(held)
    try:
        yield held
    finally:
        logger.removeHandler(held)
        logger.setLevel(level)
        logger.propagate = propagate


async def replay_rows(spec: Spec, session: Path, db_url: str | None = None) -> tuple[list[dict[str, Any]], ReplayServer, int]:
    """Serve ``session`` locally, collect from it with the real engine, and return the stored rows."""
    rows, server, reasons, _ = await replay(spec, session, db_url)
    return rows, server, len(reasons)


async def replay(spec: Spec, session: Path, db_url: str | None = None
                 ) -> tuple[list[dict[str, Any]], ReplayServer, list[str], list[str]]:
    """``replay_rows`` with the reason (and frame) of each quarantined frame or record, and the
    warnings logged during the run."""
    server = ReplayServer(load_session(session))
    bootstrap = session.parent / "bootstrap.json"
    bootstrap_urls = {}
    if bootstrap.exists():
        server.http["/bootstrap"] = bootstrap.read_bytes()
    symbols = session_symbols(session)
    url = await server.start()
    rest_urls = {spec.name: url.replace("ws://", "http://")} if server.http and not bootstrap.exists() else {}
    if bootstrap.exists():
        bootstrap_urls[spec.name] = url.replace("ws://", "http://") + "/bootstrap"
    with tempfile.TemporaryDirectory(prefix="bitty-test-") as tmp:
        db = db_url or f"sqlite:///{tmp}/test.db"
        try:
            with _quiet() as held:
                await collect(CollectOptions(
                    exchanges=[str(spec.path)], urls={spec.name: url}, bootstrap_urls=bootstrap_urls,
                    rest_urls=rest_urls, symbols=symbols, db=db, reconnect=False,
                    progress_interval=3600,
                ))
        finally:
            await server.close()
        store = Store(db)
        try:
            trades = store.read_trades(spec.name)
            with store.engine.connect() as conn:
                quarantined = conn.execute(sa.select(quarantine.c.reason, quarantine.c.frame)
                                           .where(quarantine.c.exchange == spec.name).order_by(quarantine.c.id)).all()
        finally:
            store.close()
    rows = [{k: v for k, v in t.as_json(received_at=False).items() if k in GOLDEN_COLUMNS} for t in trades]
    return rows, server, [f"{reason} (frame: {_clip(frame)})" for reason, frame in quarantined], held.lines


def session_symbols(session: Path) -> list[str] | None:
    """The symbols a session's ``{"meta": {"symbols": [...]}}`` line names, if any."""
    for line in session.read_text(encoding="utf-8").splitlines():
        if line.startswith('{"meta"'):
            meta = orjson.loads(line)["meta"]
            symbols = meta.get("symbols") if isinstance(meta, dict) else None
            if symbols is not None:
                return [str(s) for s in symbols]
    return None


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


async def check(spec: Spec, update: bool = False) -> Result:
    result = Result(spec)
    folder = paths.fixtures_dir(spec.path)
    session = folder / "session.jsonl"
    golden = folder / "golden.jsonl"
    if not session.exists():
        result.problems.append(f"no fixtures: {session} is missing")
        return result
    rows, server, reasons, warnings = await replay(spec, session)
    result.rows, result.quarantined, result.reasons = rows, len(reasons), reasons
    result.problems += [f"session: {m}" for m in server.mismatches]
    if reasons:
        result.problems.append(f"{len(reasons)} frames or records were quarantined:\n"
                               + "\n".join(f"  {reason}" for reason in reasons))
    for name, kind in (("errors.jsonl", "error"), ("reconnects.jsonl", "reconnect")):
        if (folder / name).exists():
            result.problems += check_kind(spec, folder / name, kind)
    if result.problems and warnings:
        result.problems.append("logged during the run:\n" + "\n".join(f"  {line}" for line in warnings))
    if update:
        if result.problems:  # golden rows come from a clean run only
            result.problems.append(f"{golden.name} not rewritten: the run has the problems above")
        else:
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
    return result


def check_kind(spec: Spec, path: Path, kind: str) -> list[str]:
    """Every frame in the file must be recognized as ``kind`` (an error, a reconnect notice)."""
    mapper = Mapper(spec)
    problems = []
    now = datetime.now(UTC)
    for number, event in enumerate(read_jsonl(path), 1):
        frame = event.get("recv", event.get("recv_text"))
        text = frame if isinstance(frame, str) else codec.dumps(frame).decode()
        outcome = mapper.handle(mapper.decode(text), now, {})
        if outcome.kind != kind:
            why = f" ({outcome.message or '; '.join(outcome.rejects)})" if outcome.message or outcome.rejects else ""
            problems.append(f"{path.name}:{number}: recognized as {outcome.kind!r}, not as {kind!r}{why}")
    return problems
