"""The exceptions bitty raises on purpose.

    BittyError                 everything below; the CLI exits 1 on it
    +-- SpecError              a spec file is invalid (carries every problem found)
    +-- SymbolError            a symbol the exchange does not list
    +-- ConnectError           a websocket or HTTP connection failed (retryable)
    +-- ExchangeError          the exchange reported an error that reconnecting cannot heal
    +-- SinkError              storage failed
"""

from __future__ import annotations

from dataclasses import dataclass


class BittyError(Exception):
    """Base of every error bitty raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec, located in its file."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }


class SpecError(BittyError):
    """A spec failed to load; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SymbolError(BittyError):
    """A symbol that the exchange's spec cannot resolve."""


class ConnectError(BittyError):
    """A connection failed in a way a retry may heal."""


class ExchangeError(BittyError):
    """The exchange rejected us in a way that reconnecting will not heal."""


class SinkError(BittyError):
    """Storing trades failed."""
