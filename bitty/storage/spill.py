"""Spill files: trades that could not be written to the database yet, kept on local disk.

While the database is away (or far behind), the writer appends the trades it holds to a journal
file in the spill folder (JSON lines, one trade per line, decimals as text) and fsyncs it, so a
kill loses only what arrived since the last sync. Spill files are written back to the database
as soon as it accepts writes again, including by the next run after a crash, and deleted only
once all their trades are stored.

A failed append is undone (the file is cut back to its last complete line), so a full disk
leaves no half-written line and no stray file. A spill folder belongs to one collector at a time
(``lock``). A file with lines that cannot be read back (a torn last line after a kill, corrupt
or foreign content) has its readable trades stored and is then renamed ``bitty-unreadable-*``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from bitty.errors import SinkError
from bitty.trade import Trade

PREFIX = "bitty-spill-"
PREFIX_REFUSED = "bitty-refused-"  # rows the database refuses: kept, never written back
PREFIX_UNREADABLE = "bitty-unreadable-"  # lines that cannot be read back: kept, never written back
LOCK = ".bitty-spill.lock"
_CHUNK = 100  # trades a write: a disk filling up takes all the chunks it has room for


def lock(folder: Path) -> int:
    """Take the spill folder for this process (an flock held until ``unlock``); a folder another
    collector holds is refused, since both would write back and delete the same files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise SinkError(f"cannot use spill folder {folder}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SinkError(f"spill folder {folder} is in use by another collector (pid {holder}): "
                        f"give each collector its own --spill-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def unlock(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the flock


def _name(prefix: str) -> str:
    return f"{prefix}{datetime.now():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"


def _lines(trades: Iterable[Trade]) -> bytes:
    return b"".join(orjson.dumps(trade.as_json()) + b"\n" for trade in trades)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _sync_folder(folder: Path) -> None:
    """Make a new file's name durable (its directory entry), not only its content."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The spill file being appended to. ``append`` returns once the trades are on disk (fsync);
    when it raises (a full disk), the file holds exactly what it held before."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None
        self.count = 0  # trades in the open file
        self.error: OSError | None = None  # why the last append did not write everything
        self._fd: int | None = None
        self._size = 0

    def append(self, trades: list[Trade]) -> int:
        """Append trades and fsync; how many are on disk, all but when the disk fills up: then
        the file ends with the last complete chunk, and ``OSError`` is raised when none fit."""
        if not trades:
            return 0
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / _name(PREFIX)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            self.path = path
            self._size = self.count = 0
        written, size = 0, self._size
        self.error = None
        try:
            for i in range(0, len(trades), _CHUNK):
                chunk = trades[i:i + _CHUNK]
                data = _lines(chunk)
                _write_all(self._fd, data)
                size += len(data)
                written += len(chunk)
        except OSError as exc:
            self.error = exc
        try:
            if written:
                if self.error is not None:
                    os.ftruncate(self._fd, size)  # drop the chunk cut short
                os.fsync(self._fd)
                if self._size == 0:
                    _sync_folder(self.folder)
        except OSError as exc:
            self.error, written = exc, 0
        if not written:
            self._undo(self._size)
            assert self.error is not None
            raise self.error
        self._size = size
        self.count += written
        return written

    def _undo(self, size: int) -> None:
        """Cut the file back to its last complete chunk; an empty file is removed."""
        assert self._fd is not None and self.path is not None
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, size)
        if size == 0:
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None

    def rotate(self) -> Path | None:
        """Close the open file, so it can be written back; the next append opens a new one."""
        path, fd = self.path, self._fd
        self.path = self._fd = None
        self._size = self.count = 0
        if fd is not None:
            os.close(fd)
        return path


def write(folder: Path, trades: Iterable[Trade]) -> Path:
    """Write trades to a new spill file, durably (fsync) and atomically (rename)."""
    return _write_lines(folder, PREFIX, (trade.as_json() for trade in trades))


def refused(folder: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Keep rows the database refuses (a value it cannot hold) in a file of their own, which
    ``pending`` does not list: writing them again would fail again."""
    return _write_lines(folder, PREFIX_REFUSED, rows)


def _write_lines(folder: Path, prefix: str, rows: Iterable[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = _name(prefix)
    final = folder / name
    partial = folder / (name + ".part")
    try:
        with partial.open("wb") as file:
            for row in rows:
                file.write(orjson.dumps(row) + b"\n")
            file.flush()
            os.fsync(file.fileno())
        partial.rename(final)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()  # a full disk leaves no half-written file behind
        raise
    return final


def pending(folder: Path) -> list[Path]:
    """Spill files waiting to be written, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{PREFIX}*.jsonl"))


@dataclass
class Readback:
    trades: list[Trade] = field(default_factory=list)
    bad: list[tuple[int, bytes, str]] = field(default_factory=list)  # (line number, line, reason)


def read_back(path: Path) -> Readback:
    """The trades of a spill file, and every line that is not one (torn, corrupt, foreign)."""
    out = Readback()
    data = path.read_bytes()
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            out.trades.append(_trade(orjson.loads(line)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidOperation) as exc:
            # A trade with no newline after it: an append cut short (a kill, a full disk).
            torn = number == data.count(b"\n") + 1 and line.startswith(b'{"')
            out.bad.append((number, line, "incomplete last line" if torn else f"{type(exc).__name__}: {exc}"))
    return out


def read(path: Path) -> list[Trade]:
    return read_back(path).trades


def set_aside(path: Path) -> Path:
    """Rename a spill file that cannot be fully read back, so it is never written back again
    (a rename needs no free space, so a full disk cannot stop it)."""
    aside = path.with_name(PREFIX_UNREADABLE + path.name)
    path.rename(aside)
    return aside


def _trade(row: Any) -> Trade:
    if not isinstance(row, dict):
        raise TypeError(f"expected a trade object, got {type(row).__name__}")
    return Trade(
        row["exchange"], row["symbol"], row["trade_id"], Decimal(row["price"]), Decimal(row["size"]),
        row["side"], _time(row["time"]), _time(row["received_at"]),
    )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
