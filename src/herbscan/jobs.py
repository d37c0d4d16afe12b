"""Jobs: long runs over a fixed list of sheets that survive Ctrl-C, SIGTERM and `kill -9`.

A job folder holds
    <state file>   what the job is: the options it was started with, its unit size, and what the
                   command keeps there (screen: `screen.json`)
    inputs.csv     the inputs, fixed when the job starts: a resumed job never reads its source again
    <units>/       one file per finished unit of `unit_size` inputs, written atomically
so a kill at any moment loses only the units in flight, and a resume does the missing units, each
exactly once. Resuming with other options than the job was started with is refused, naming the
option. The CLI turns SIGTERM into Ctrl-C (`workers.stop_on_signals`), so that pools shut down
and nothing half-written is left; units already written stay.

`screen` (Parquet units, local or Dask) and `transcribe` (JSON units) run on it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from herbscan.errors import HerbscanError, ParameterError, RunError, check_range
from herbscan.fileio import atomic_path, write_csv, write_json
from herbscan.progress import Progress

INPUTS = "inputs.csv"


def unit_file(units_dir: str | Path, k: int, suffix: str) -> Path:
    return Path(units_dir) / f"part-{k:06d}{suffix}"


def save_unit(units_dir: str | Path, k: int, suffix: str, write: Callable[[Path], None]) -> None:
    """Finish unit k: `write(tmp)` fills a temporary file that then replaces the unit's file
    (also what a Dask task calls on its worker, where there is no Job object)."""
    Path(units_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(unit_file(units_dir, k, suffix)) as tmp:
        write(tmp)


@dataclass
class Job:
    """An open job folder: its state, its fixed inputs and its units."""

    folder: Path
    state: dict
    rows: list[dict]
    state_name: str
    units_name: str
    suffix: str

    @classmethod
    def open(
        cls,
        folder: str | Path,
        *,
        options: dict,
        start: Callable[[], tuple[list[dict], list[str], dict]],
        resume: bool,
        unit_size: int,
        state_name: str = "job.json",
        units_name: str = "units",
        suffix: str = ".json",
        what: str = "job",
        error: type[HerbscanError] = RunError,
    ) -> Job:
        """Start a job in `folder`, or reopen the one there (`resume` must be set, with the same
        `options`). `start()` runs only for a new job: it returns (inputs, their columns, more
        state to keep)."""
        check_range("unit_size", unit_size, 1)
        folder = Path(folder)
        path = folder / state_name
        if path.exists():
            if not resume:
                raise error(
                    f"{folder}: already holds a {what}; pass --resume to finish it or choose "
                    "another --out"
                )
            state = json.loads(path.read_text(encoding="utf-8"))
            if "options" not in state:
                raise error(
                    f"{folder}: the {what} was started by an older herbscan; finish it with that "
                    "version or start again in another --out"
                )
            for key, value in options.items():
                was = state["options"].get(key)
                if was != value:
                    raise error(
                        f"{folder}: the {what} was started with {key} {was!r}, not {value!r}; "
                        "resume with the same options or choose another --out"
                    )
            with open(folder / INPUTS, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            if len(rows) != state["n_inputs"]:
                raise error(f"{folder / INPUTS}: cut short; start the {what} again elsewhere")
        else:
            rows, columns, info = start()
            folder.mkdir(parents=True, exist_ok=True)
            write_csv(folder / INPUTS, rows, columns, for_people=False)
            state = {
                **info,
                "options": options,
                "n_inputs": len(rows),
                "unit_size": unit_size,
                "input_columns": columns,
            }
            write_json(path, state)
        return cls(folder, state, rows, state_name, units_name, suffix)

    @property
    def unit_size(self) -> int:
        return int(self.state["unit_size"])

    @property
    def n_units(self) -> int:
        return (len(self.rows) + self.unit_size - 1) // self.unit_size

    @property
    def units_dir(self) -> Path:
        return self.folder / self.units_name

    def unit_rows(self, k: int) -> list[dict]:
        return self.rows[k * self.unit_size : (k + 1) * self.unit_size]

    def unit_path(self, k: int) -> Path:
        return unit_file(self.units_dir, k, self.suffix)

    def todo(self) -> list[int]:
        """Units without a finished file, in order."""
        return [k for k in range(self.n_units) if not self.unit_path(k).exists()]

    def save_unit(self, k: int, write: Callable[[Path], None]) -> None:
        """Finish unit k: `write(tmp)` fills a temporary file that then replaces the unit's."""
        save_unit(self.units_dir, k, self.suffix, write)

    def save_records(self, k: int, records: list[dict]) -> None:
        """Finish unit k as a JSON list of records."""
        self.save_unit(
            k, lambda tmp: tmp.write_text(json.dumps(records, ensure_ascii=False), "utf-8")
        )

    def records(self, k: int) -> list[dict]:
        """The records of a finished JSON unit."""
        return json.loads(self.unit_path(k).read_text(encoding="utf-8"))

    def run(
        self,
        process: Callable[[int, list[dict]], None],
        units: list[int] | None = None,
        *,
        description: str = "",
        progress: bool = True,
    ) -> None:
        """Process the missing units (or `units`) in order; `process(k, rows)` ends by saving
        unit k. A progress bar counts inputs, starting from those already done."""
        units = self.todo() if units is None else units
        with Progress(len(self.rows), description, unit="sheets", enabled=progress) as bar:
            bar.update(len(self.rows) - sum(len(self.unit_rows(k)) for k in units))
            for k in units:
                rows = self.unit_rows(k)
                process(k, rows)
                bar.update(len(rows))

    def run_dask(
        self,
        address: str,
        task: Callable,
        payload: dict,
        *,
        description: str = "",
        progress: bool = True,
    ) -> None:
        """Each missing unit as one Dask task `task(payload, k, rows, units_dir)`, which saves
        the unit itself on the worker. `address`: a scheduler, or "local:N" for N processes."""
        try:
            from distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise ParameterError(
                "dask is not installed; pip install 'herbscan[dask]' (or drop "
                "--dask to use the local engine)"
            ) from None
        cluster = None
        if address.startswith("local:"):
            try:
                n = int(address.split(":", 1)[1])
            except ValueError:
                raise ParameterError(
                    f"dask must be 'local:N' or a scheduler address; got {address!r}"
                ) from None
            check_range("dask local workers", n, 1)
            cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
            )
            address = cluster.scheduler_address
        todo = self.todo()
        try:
            with (
                Client(address) as client,
                Progress(len(self.rows), description, unit="sheets", enabled=progress) as bar,
            ):
                bar.update(len(self.rows) - sum(len(self.unit_rows(k)) for k in todo))
                futures = [
                    client.submit(
                        task, payload, k, self.unit_rows(k), str(self.units_dir), pure=False
                    )
                    for k in todo
                ]
                for fut in as_completed(futures):
                    bar.update(fut.result())
        finally:
            if cluster is not None:
                cluster.close()

    def finish(self, summary: dict) -> dict:
        """Record the job as complete with `summary` in its state file; returns the state."""
        self.state = {**self.state, **summary, "complete": True}
        write_json(self.folder / self.state_name, self.state)
        return self.state
