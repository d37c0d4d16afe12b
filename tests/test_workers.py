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
    p = subprocess.Popen([sys.executable, str(tmp_path / "job.py")], stdout=subprocess.PIPE,
                         text=True)
    timer = threading.Timer(60, p.kill)  # a child that never starts must not hang the suite
    timer.start()
    pids = [int(x) for x in p.stdout.readline().split()]
    timer.cancel()
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 3 and out.strip() == f"stopped by {int(signal.SIGTERM)}"
    assert pids and all(_gone(pid) for pid in pids)
