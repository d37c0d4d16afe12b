import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from herbscan.workers import worker_pool


def _gone(pid: int) -> bool:
    """Whether a process has ended (a zombie awaiting its reaper counts as ended)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" in status.read_text()
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_stopped_job_ends_its_workers_without_running_the_queue():
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt), worker_pool(2) as pool:
        pids = {pool.submit(os.getpid).result() for _ in range(4)}
        for _ in range(6):
            pool.submit(time.sleep, 30)
        raise KeyboardInterrupt
    assert time.perf_counter() - t0 < 20  # not the 90 s the queued sleeps would take
    assert pids and all(_gone(p) for p in pids)


def test_a_finished_job_shuts_its_pool_down():
    with worker_pool(2) as pool:
        assert list(pool.map(abs, [-1, -2, 3])) == [1, 2, 3]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_sigterm_stops_the_job_and_its_workers(tmp_path):
    script = textwrap.dedent("""
        import os, sys, time
        from herbscan.workers import stop_on_signals, stopped_by, worker_pool
        if __name__ == "__main__":
            try:
                with stop_on_signals(), worker_pool(2) as pool:
                    pids = {pool.submit(os.getpid).result() for _ in range(4)}
                    for _ in range(4):
                        pool.submit(time.sleep, 60)
                    print(*pids, flush=True)
                    time.sleep(60)
            except KeyboardInterrupt:
                print("stopped by", stopped_by(), flush=True)
                sys.exit(3)
    """)
    (tmp_path / "job.py").write_text(script)
    p = subprocess.Popen(
        [sys.executable, str(tmp_path / "job.py")], stdout=subprocess.PIPE, text=True
    )
    timer = threading.Timer(60, p.kill)  # a child that never starts must not hang the suite
    timer.start()
    pids = [int(x) for x in p.stdout.readline().split()]
    timer.cancel()
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 3 and out.strip() == f"stopped by {int(signal.SIGTERM)}"
    assert pids and all(_gone(pid) for pid in pids)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_workers_and_resource_tracker_die_with_a_killed_parent(tmp_path):
    """kill -9 runs no cleanup: the workers must notice their parent's death themselves."""
    script = textwrap.dedent("""
        import multiprocessing, multiprocessing.resource_tracker as rt
        import os, time
        from herbscan.workers import worker_pool
        if __name__ == "__main__":
            with worker_pool(2) as pool:
                for _ in range(4):
                    pool.submit(time.sleep, 120)
                time.sleep(1)
                pids = [c.pid for c in multiprocessing.active_children()]
                print(*pids, rt._resource_tracker._pid or 0, flush=True)
                time.sleep(120)
    """)
    (tmp_path / "job.py").write_text(script)
    p = subprocess.Popen(
        [sys.executable, str(tmp_path / "job.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(x) for x in p.stdout.readline().split()]
        workers, tracker = pids[:-1], pids[-1]
        assert len(workers) == 2
        assert not any(_gone(w) for w in workers)
        p.kill()
        p.wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and not all(_gone(w) for w in workers):
            time.sleep(0.1)
        assert all(_gone(w) for w in workers), "pool workers outlived their killed parent"
        while tracker and time.time() < deadline + 5 and not _gone(tracker):
            time.sleep(0.1)
        assert not tracker or _gone(tracker), "the resource tracker outlived the job"
    finally:
        p.kill()
        p.stdout.close()
