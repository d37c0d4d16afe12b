"""Worker processes for long jobs, stopped together with the job.

A job stopped by Ctrl-C or `kill` (SIGTERM, as schedulers send) must neither leave its workers
running (each holds a model or tesseract and hundreds of MB) nor wait for every queued sheet:
`worker_pool` cancels the work that has not started and ends the workers, while a job that
finishes shuts its pool down normally. The CLI makes SIGTERM act as Ctrl-C does
(`stop_on_signals`), so that this cleanup, and the journals' flushes, run.

A job killed outright (`kill -9`, the out-of-memory killer) runs no cleanup at all, so each
worker also watches its parent: on Linux the kernel sends it SIGKILL when the parent dies
(`PR_SET_PDEATHSIG`), and everywhere a thread ends it within a second of seeing itself
orphaned (macOS has no parent-death signal). Once the workers are gone, multiprocessing's
resource tracker sees its pipe close and exits too.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool of `workers` spawned processes (fork after torch or tesseract threads
    started can deadlock) that is torn down at once when the job is stopped."""
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        children = [c for c in multiprocessing.active_children() if c not in before]
        for child in children:
            child.terminate()
        for child in children:
            child.join(timeout=5)
        raise
    pool.shutdown(wait=True)


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, poll_seconds: float = 0.5) -> None:
    """Make this (worker) process end when process `parent` dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watcher below still works
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="herbscan-parent-watch", daemon=True).start()


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, raised in the main thread (see `stop_on_signals`)."""


_stopped_by: list[int] = []


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) and SIGTERM raise `Stopped` in the main thread, so
    `with` blocks unwind, and `stopped_by` tells which signal stopped the job; the previous
    handlers come back after it. Outside the main thread, where handlers cannot be set, it
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        _stopped_by.append(signum)
        for s in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(f"signal {signum}")

    _stopped_by.clear()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def stopped_by() -> int | None:
    """The signal that stopped this process's job, or None."""
    return _stopped_by[0] if _stopped_by else None
