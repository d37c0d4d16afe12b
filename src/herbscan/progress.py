"""Progress for long jobs: a rich bar (rate, ETA) on a terminal, periodic log lines elsewhere."""

from __future__ import annotations

import sys
import time


class Progress:
    """Count work done; `update(n, **fields)` adds n and shows fields such as loss=0.31.

    On a terminal this draws a rich progress bar; when stderr is not a terminal (CI, nohup, a
    cluster job log) it prints one plain line every `every` seconds and one at the end.
    """

    def __init__(
        self,
        total: int | None,
        description: str,
        *,
        unit: str = "it",
        enabled: bool = True,
        every: float = 10.0,
    ):
        self.total, self.description, self.unit = total, description, unit
        self.enabled, self.every = enabled, every
        self.done = 0
        self.fields: dict[str, object] = {}
        self._start = self._last = time.monotonic()
        self._bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[extra]}"),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, rate="", extra="")

    def rate(self) -> float:
        elapsed = time.monotonic() - self._start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _extra(self) -> str:
        return " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields.items()
        )

    def update(self, n: int = 1, **fields: object) -> None:
        self.done += n
        self.fields.update(fields)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(
                self._task, advance=n, rate=f"{self.rate():.1f} {self.unit}/s", extra=self._extra()
            )
        elif time.monotonic() - self._last >= self.every:
            self._log()

    def _log(self) -> None:
        self._last = time.monotonic()
        total = f"/{self.total}" if self.total else ""
        rate = self.rate()
        eta = ""
        if self.total and rate > 0:
            eta = f" ETA {max(0.0, (self.total - self.done) / rate):.0f}s"
        print(
            f"{self.description}: {self.done}{total} {self.unit} ({rate:.1f}/s){eta} "
            f"{self._extra()}".rstrip(),
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        else:
            self._log()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
