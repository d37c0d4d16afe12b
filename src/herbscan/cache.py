"""Array store of preprocessed sheets, so epochs and later runs never decode a JPEG twice.

One uint8 `.npy` per (file, preprocessing), keyed by the file's absolute path, size and
modification time plus the preprocessing parameters: a changed file or a different input size is
a cache miss, never a stale hit. Entries are written atomically (temp file + rename), so a killed
job leaves no half-written entry. The default location is `$HERBSCAN_CACHE` or
`~/.cache/herbscan`; `cache_dir=None` in the functions below means that default, `False` no cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from herbscan.errors import HerbscanError
from herbscan.fileio import atomic_path
from herbscan.images import input_shape, load_sheet
from herbscan.progress import Progress
from herbscan.tiles import SheetTiles, TileSpec, keep_tiles, sheet_tiles
from herbscan.workers import worker_pool

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("HERBSCAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "herbscan"


def _key(path: str | Path) -> str:
    """Identity of a file's content without reading it: absolute path, size, mtime."""
    p = Path(path).resolve()
    st = p.stat()
    return hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()


@dataclass(frozen=True)
class SheetCache:
    """Preprocessed sheets of one preprocessing (size, fit) under `root`."""

    root: Path
    size: int
    fit: str = "stretch"

    @property
    def folder(self) -> Path:
        return Path(self.root) / f"sheets-v{FORMAT_VERSION}-{self.size}-{self.fit}"

    def entry(self, path: str | Path) -> Path:
        key = _key(path)
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, path: str | Path) -> np.ndarray | None:
        try:
            e = self.entry(path)
            return np.load(e) if e.is_file() else None
        except (OSError, ValueError):
            return None  # missing source, or an unreadable entry: recompute

    def put(self, path: str | Path, array: np.ndarray) -> None:
        with atomic_path(self.entry(path)) as tmp, open(tmp, "wb") as f:
            np.save(f, array)

    def load(self, path: str | Path) -> np.ndarray:
        """The preprocessed sheet, decoded (and stored) on a miss."""
        a = self.get(path)
        if a is None:
            a = load_sheet(path, self.size, self.fit)
            self.put(path, a)
        return a


@dataclass(frozen=True)
class TileCache:
    """Sheets decoded at a tile spec's working scale, with their windows and tile statistics."""

    root: Path
    spec: TileSpec

    @property
    def folder(self) -> Path:
        s = self.spec
        return Path(self.root) / f"tiles-v{FORMAT_VERSION}-{s.size}-{s.stride}-{s.scale:g}"

    def entry(self, path: str | Path) -> Path:
        key = _key(path)
        return self.folder / key[:2] / f"{key}.npz"

    def load(self, path: str | Path) -> SheetTiles:
        e = self.entry(path)
        if e.is_file():
            try:
                with np.load(e) as z:
                    coords = [tuple(c) for c in z["coords"].tolist()]
                    return SheetTiles(str(path), z["sheet"], coords, z["stats"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable entry: recompute
        st = sheet_tiles(path, self.spec)
        with atomic_path(e) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                sheet=st.sheet,
                coords=np.asarray(st.coords, np.int32).reshape(-1, 2),
                stats=st.stats,
            )
        return st


def _tile_job(args: tuple[str, TileSpec, TileCache | None, float | None, bool]):
    path, spec, cache, keep_above, thumbnails = args
    try:
        st = cache.load(path) if cache else sheet_tiles(path, spec, keep_above is not None)
        if keep_above is None:
            return st, ""
        return keep_tiles(st, spec.size, keep_above, thumbnails), ""
    except Exception as e:  # noqa: BLE001 - one bad sheet is an error row, never the job's end
        return None, failure(path, e)


def load_tile_sheets(
    paths: Sequence[str | Path],
    spec: TileSpec,
    *,
    cache_dir: str | Path | None | bool = None,
    workers: int = 1,
    progress: bool = True,
    keep_above: float | None = None,
    thumbnails: bool = False,
    pool=None,
):
    """Yield (index, SheetTiles or None, error) for each path, in order; bad files don't stop it.

    Sheets come from the tile cache when present, else are decoded by `workers` processes.
    Only the sheets in flight are in memory. With `keep_above` (bits), each sheet arrives as
    `KeptTiles` instead: only the tiles that pass the entropy filter and a thumbnail, cut in the
    worker so that whole sheets never cross between processes (with a thumbnail for heatmaps
    when `thumbnails`).
    """
    root = _cache_root(cache_dir)
    cache = TileCache(root, spec) if root else None
    jobs = [(str(p), spec, cache, keep_above, thumbnails) for p in paths]
    yield from _run_jobs(_tile_job, jobs, workers, "tiling sheets", progress, chunk=1, pool=pool)


def _run_jobs(
    fn,
    jobs: list,
    workers: int,
    description: str,
    progress: bool,
    chunk: int | None = None,
    pool=None,
):
    """Yield (index, *fn(job)) in order, from `workers` spawned processes or in this one.
    `pool`: a running `worker_pool` to use (a long job keeps one for all its batches)."""
    with Progress(len(jobs), description, unit="sheets", enabled=progress and len(jobs) > 8) as bar:
        if workers > 1 and len(jobs) > 2:
            chunk = chunk or max(1, min(16, len(jobs) // (workers * 8)))
            with nullcontext(pool) if pool is not None else worker_pool(workers) as p:
                for i, result in enumerate(p.map(fn, jobs, chunksize=chunk)):
                    bar.update(1)
                    yield (i, *result)
        else:
            for i, job in enumerate(jobs):
                result = fn(job)
                bar.update(1)
                yield (i, *result)


def failure(path: str | Path, e: BaseException) -> str:
    """One line for a sheet that could not be read: herbscan's own message, or the path and the
    exception (a full or read-only cache folder, a bug in a decoder) for anything else."""
    if isinstance(e, HerbscanError):
        return str(e)
    return f"{path}: {type(e).__name__}: {e}"


def _cache_root(cache_dir: str | Path | None | bool) -> Path | None:
    """None/True: the default cache; False: no cache; else that folder."""
    if cache_dir is False:
        return None
    return default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)


def _resolve_cache(cache_dir: str | Path | None | bool, size: int, fit: str) -> SheetCache | None:
    root = _cache_root(cache_dir)
    return SheetCache(root, size, fit) if root else None


def _decode(args: tuple[str, int, str, SheetCache | None]) -> tuple[np.ndarray | None, str]:
    path, size, fit, cache = args
    try:
        a = cache.load(path) if cache else load_sheet(path, size, fit)
        return a, ""
    except Exception as e:  # noqa: BLE001 - one bad sheet is an error row, never the job's end
        return None, failure(path, e)


def iter_sheets(
    paths: Sequence[str | Path],
    size: int,
    fit: str = "stretch",
    *,
    cache_dir: str | Path | None | bool = None,
    workers: int = 1,
    progress: bool = True,
    pool=None,
):
    """Yield (index, uint8 array or None, error) per path, in order, as sheets are ready.

    Workers keep decoding ahead while the caller uses what has arrived, so inference overlaps
    decoding; only the sheets in flight are in memory.
    """
    cache = _resolve_cache(cache_dir, size, fit)
    jobs = [(str(p), size, fit, cache) for p in paths]
    yield from _run_jobs(_decode, jobs, workers, "decoding sheets", progress, pool=pool)


def load_sheets(
    paths: Sequence[str | Path],
    size: int,
    fit: str = "stretch",
    *,
    cache_dir: str | Path | None | bool = None,
    workers: int = 1,
    progress: bool = True,
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Preprocess many sheets into one (n_ok, *input_shape(size, fit), 3) uint8 array.

    Returns (array, indices of `paths` that loaded, [(path, error)] for those that did not).
    Bad files are recorded and skipped, never fatal. Cached sheets load without decoding; misses
    are decoded by `workers` processes.
    """
    cache = _resolve_cache(cache_dir, size, fit)
    out = np.empty((len(paths), *input_shape(size, fit), 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    failures: list[tuple[str, str]] = []
    todo = []
    for i, p in enumerate(paths):
        a = cache.get(p) if cache else None
        if a is not None and a.shape == out.shape[1:]:
            out[i], ok[i] = a, True
        else:
            todo.append(i)
    for j, a, err in iter_sheets(
        [paths[i] for i in todo], size, fit, cache_dir=cache_dir, workers=workers, progress=progress
    ):
        if a is None:
            failures.append((str(paths[todo[j]]), err))
        else:
            out[todo[j]], ok[todo[j]] = a, True
    idx = np.flatnonzero(ok)
    return (out if idx.size == len(paths) else out[idx]), idx.tolist(), failures
