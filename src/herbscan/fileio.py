"""Writing finished files atomically: a temp file in the same folder, then a rename.

Readers see the old file or the new one, never half of one, and a killed job leaves no partial
output. Files get the permissions a plain `open()` would give (0666 minus the umask), not the
0600 of a temp file, so colleagues on a shared drive can read results. A leaf module: it imports
nothing of ours.

CSV files meant for people (predictions, flagged sheets, transcriptions, lists of skipped files)
are opened in spreadsheets, which execute a cell that starts with `=`, `+`, `-`, `@`, a tab or a
carriage return. `write_csv` neutralises such cells as OWASP recommends, by a leading `'` (which
spreadsheets hide and treat as "text"), except plain numbers such as `-149.52`; Parquet and JSON
keep every value raw. Files herbscan reads back itself (split manifests, inputs.csv) are written
with `for_people=False`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write bytes or text to `path` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def neutralise(value: object) -> object:
    """A cell value that a spreadsheet cannot execute: a text starting like a formula gets a
    leading `'`; numbers and other values are returned as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def unneutralise(value: str) -> str:
    """The value `neutralise` was given (for herbscan reading its own CSV files back)."""
    if value.startswith("'") and value[1:].startswith(_FORMULA_START):
        return value[1:]
    return value


def write_csv(
    path: str | Path, rows: Iterable[dict], fieldnames: list[str], *, for_people: bool = True
) -> Path:
    """CSV with a header row, UTF-8, written atomically; keys outside `fieldnames` are ignored.
    `for_people` neutralises formula-like cells (see the module docstring)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
        w.writerow({k: neutralise(k) if for_people else k for k in fieldnames})
        for row in rows:
            w.writerow({k: neutralise(v) for k, v in row.items()} if for_people else row)
    return Path(path)


def read_people_csv(path: str | Path) -> tuple[list[dict], list[str]]:
    """(rows, columns) of a CSV that `write_csv` wrote for people, with every cell as it was
    before the formula escape (`unneutralise`) and missing trailing cells as ""."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [{k: unneutralise(v or "") for k, v in r.items()} for r in reader]
        return rows, list(reader.fieldnames or [])


def path_key(path: str) -> str:
    """A short, stable file-name stem for a sheet's path: 20 hex digits of its SHA-1."""
    return hashlib.sha1(path.encode()).hexdigest()[:20]


def picture_file(folder: str | Path, path: str) -> Path:
    """Where a screen in `folder` keeps the picture (heatmap or thumbnail) of the sheet at
    `path`: written by `screen`, read by `screen-report` and the review app."""
    return Path(folder) / "pictures" / f"{path_key(path)}.img"


def write_json(path: str | Path, obj: dict) -> Path:
    """Indented JSON, written atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
