"""The one thread that writes the gap ledger, in the order the writes were asked for.

A write that fails because the database is away (a refused or dropped connection, a locked
SQLite file) is retried with backoff, and the writes behind it wait, so a gap is never settled
before it is opened. Reads run once, in order behind the writes. At most ``max_jobs`` writes
wait (a few hundred bytes each); beyond that new ones are refused loudly. ``stop`` writes what it
can and hands back the writes still waiting, for the caller to journal (``ledger.save_journal``).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bitty.backoff import backoff

logger = logging.getLogger(__name__)


@dataclass
class Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    durable: bool  # a write: retried while the database is away, journaled at stop
    future: Future[Any] = field(default_factory=Future)


def transient(exc: BaseException) -> bool:
    """The database is away (worth retrying), rather than refusing this write."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)


class LedgerWorker:
    def __init__(self, max_jobs: int = 100_000, initial_delay: float = 0.2, max_delay: float = 5.0) -> None:
        self.max_jobs = max_jobs
        self.initial_delay, self.max_delay = initial_delay, max_delay
        self.refused = 0  # writes refused because max_jobs were waiting
        self._jobs: collections.deque[Job] = collections.deque()
        self._ready = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bitty-ledger", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, durable: bool = True) -> Future[Any]:
        job = Job(fn, args, durable)
        with self._ready:
            if self._stopping.is_set():
                job.future.set_exception(RuntimeError("the ledger worker has stopped"))
                return job.future
            if durable and sum(j.durable for j in self._jobs) >= self.max_jobs:
                self.refused += 1
                logger.error("ledger write refused: %d writes already wait for the database (%s lost)",
                             self.max_jobs, getattr(fn, "__name__", fn))
                job.future.set_exception(RuntimeError("ledger backlog full"))
                return job.future
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def stop(self) -> list[Job]:
        """Write what can be written now, stop, and return the writes that could not be made."""
        with self._ready:
            self._stopping.set()
            self._ready.notify()
        self._thread.join()
        left = list(self._jobs)
        self._jobs.clear()
        for job in left:
            if not job.durable:
                job.future.set_exception(RuntimeError("the ledger worker has stopped"))
        return [job for job in left if job.durable]

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._stopping.is_set():
                    self._ready.wait()
                if not self._jobs:
                    return
                job = self._jobs[0]
            if not self._attempt(job):
                return  # stopping with the database away: the rest stays queued for stop()
            with self._ready:
                self._jobs.popleft()

    def _attempt(self, job: Job) -> bool:
        """Run the job, retrying a durable one while the database is away; False if the worker
        is stopping with the job still not written."""
        delays = backoff(self.initial_delay, cap=self.max_delay)
        failures = 0
        while True:
            try:
                result = job.fn(*job.args)
            except Exception as exc:
                if not (job.durable and transient(exc)):
                    job.future.set_exception(exc)
                    return True
                failures += 1
                if failures == 1:
                    logger.warning("ledger write waits for the database (%s): %s",
                                   getattr(job.fn, "__name__", job.fn), str(exc).splitlines()[0])
                if self._stopping.is_set():
                    return False
                self._stopping.wait(next(delays))
                continue
            if failures:
                logger.warning("ledger writes resume after %d failed attempts", failures)
            job.future.set_result(result)
            return True
