"""Log lines: UTC timestamps always; ``--log-format json`` writes one JSON object per line for log shippers."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson

FORMATS = ("text", "json")


def _utc(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``2026-12-07T04:11:21.123Z INFO    bitty.collect: message``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)


class JsonFormatter(logging.Formatter):
    """``{"time": "...Z", "level": "info", "logger": "bitty.collect", "message": "..."}``"""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": _utc(record), "level": record.levelname.lower(), "logger": record.name,
                                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, so a live terminal view that redirects it
    (rich) prints log lines above its table."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup(fmt: str = "text") -> None:
    """Log to stderr at $LOG_LEVEL (default info). Like ``logging.basicConfig``, this leaves a root
    logger configured by someone else (an embedding program, pytest) alone."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, StderrHandler)]
    if root.handlers and not ours:
        return
    for handler in ours:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    level = os.environ.get("LOG_LEVEL", "info").upper()
    root.setLevel(getattr(logging, level, logging.INFO))
