"""A hooks class for an exchange that sends pipe-separated text trades.

Named by pipes.yaml beside it (``hooks: pipes_hooks.PipeTrades``): hooks come from the spec's own folder."""

from __future__ import annotations

from typing import Any

from bitty.hooks import Hooks


class PipeTrades(Hooks):
    """Turns ``T|BTC-USD|42|100.5|0.25|b|2024-01-02T03:04:05Z`` into a JSON-like dict."""

    def decode(self, frame: Any) -> Any:
        if isinstance(frame, str) and frame.startswith("T|"):
            _, symbol, trade_id, price, size, side, time = frame.split("|")
            return {"kind": "trade", "s": symbol, "id": trade_id, "p": price, "q": size,
                    "side": {"b": "buy", "s": "sell"}[side], "t": time}
        return frame

    def subscribe_messages(self, messages: list[Any]) -> list[Any]:
        return [f"SUB {m}" for m in messages]
