"""``bitty collect``: run the collectors until done; signals stop them cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bitty.pipeline import CollectOptions, CollectResult, collect

logger = logging.getLogger("bitty.collect")


def run(options: CollectOptions) -> int:
    """Run ``collect`` until done. SIGTERM and Ctrl-C stop it cleanly, flushing everything
    received (exit 0 and 130); a second signal aborts the flush."""
    signals: list[int] = []

    async def main() -> CollectResult:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = loop.create_task(collect(options, stop))

        def on_signal(signum: int) -> None:
            signals.append(signum)
            if len(signals) == 1:
                logger.warning("received %s: flushing and stopping", signal.Signals(signum).name)
                stop.set()
            else:
                task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        return await task

    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:  # a second signal: what was in memory went to the spill folder
        logger.error("stopped before everything was written; what was left is in %s", options.spill_dir)
        return 130 if signals and signals[0] == signal.SIGINT else 1
    print(
        f"collected {result.received} trades: {result.stored} stored, {result.duplicates} duplicates, "
        f"{result.quarantined} quarantined, {result.reconnects} reconnects"
        + (f", {result.lost} LOST" if result.lost else ""),
        file=sys.stderr,
    )
    for failure in result.failures:
        print(f"error: {failure}", file=sys.stderr)
    if result.failures:
        return 1
    return 130 if signals and signals[0] == signal.SIGINT else 0
