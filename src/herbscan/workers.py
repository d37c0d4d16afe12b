"""Worker processes for long jobs, stopped together with the job.

A job stopped by Ctrl-C or `kill` (SIGTERM, as schedulers send) must neither leave its workers
running (each holds a model or tesseract and hundreds of MB) nor wait for every queued sheet:
`worker_pool` cancels the work that has not started and ends the workers, while a job that
finishes shuts its pool down normally. The CLI makes SIGTERM act as Ctrl-C does
(`stop_on_signals`), so that this cleanup, and the journals' flushes, run.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool of `workers` spawned processes (fork after torch or tesseract threads
    started can deadlock) that is torn down at once when the job is stopped."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        children = multiprocessing.active_children()
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=5)
        raise
    pool.shutdown(wait=True)


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised in the main thread (see `stop_on_signals`)."""


_stopped_by: list[int] = []


def stop_on_signals() -> None:
    """From now on Ctrl-C (SIGINT) and SIGTERM raise `Stopped` in the main thread, so `with`
    blocks unwind, and `stopped_by` tells which signal stopped the job."""
    def stop(signum, frame):
        _stopped_by.append(signum)
        raise Stopped(f"signal {signum}")

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def stopped_by() -> int | None:
    """The signal that stopped this process's job, or None."""
    return _stopped_by[0] if _stopped_by else None
