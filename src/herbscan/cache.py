"""Array store of preprocessed sheets, so epochs and later runs never decode a JPEG twice.

One uint8 `.npy` per (file, preprocessing), keyed by the file's absolute path, size and
modification time plus the preprocessing parameters: a changed file or a different input size is
a cache miss, never a stale hit. Entries are written atomically (temp file + rename), so a killed
job leaves no half-written entry. The default location is `$HERBSCAN_CACHE` or
`~/.cache/herbscan`; `cache_dir=None` in the functions below means that default, `False` no cache.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from herbscan.errors import HerbscanError, ParameterError
from herbscan.fileio import atomic_path
from herbscan.images import image_size, input_shape, load_sheet
from herbscan.progress import Progress
from herbscan.tiles import SheetTiles, TileSpec, keep_tiles, sheet_tiles
from herbscan.workers import worker_pool

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("HERBSCAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "herbscan"


def cache_chosen(cache_dir: str | Path | None | bool) -> bool:
    """Whether the user chose where (or whether) to cache: a flag, or HERBSCAN_CACHE."""
    return cache_dir is not None or bool(os.environ.get("HERBSCAN_CACHE"))


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


TILE_FORMAT = 2  # 2: the sheet in its own .npy, so training reads windows without loading it


@dataclass(frozen=True)
class TileCache:
    """Sheets decoded at a tile spec's working scale, with their windows and tile statistics.

    Per sheet: `<key>.sheet.npy` (the decoded sheet, memory-mappable) and `<key>.npz` (window
    origins and statistics), the .npz written last so that it marks a complete entry.
    """

    root: Path
    spec: TileSpec

    @property
    def folder(self) -> Path:
        s = self.spec
        return Path(self.root) / f"tiles-v{TILE_FORMAT}-{s.size}-{s.stride}-{s.scale:g}"

    def entry(self, path: str | Path) -> Path:
        key = _key(path)
        return self.folder / key[:2] / f"{key}.npz"

    @staticmethod
    def sheet_file(entry: Path) -> Path:
        return entry.with_suffix(".sheet.npy")

    def has(self, path: str | Path) -> bool:
        try:
            e = self.entry(path)
        except OSError:
            return False
        return e.is_file() and self.sheet_file(e).is_file()

    def load(self, path: str | Path, mmap: bool = False) -> SheetTiles:
        """The sheet's tiles, decoded (and stored) on a miss; `mmap` leaves the pixels on disk."""
        e = self.entry(path)
        if e.is_file():
            try:
                with np.load(e) as z:
                    coords = [tuple(c) for c in z["coords"].tolist()]
                    stats = z["stats"]
                sheet = np.load(self.sheet_file(e), mmap_mode="r" if mmap else None)
                return SheetTiles(str(path), sheet, coords, stats)
            except (OSError, ValueError, KeyError):
                pass  # unreadable entry: recompute
        st = sheet_tiles(path, self.spec)
        with atomic_path(self.sheet_file(e)) as tmp, open(tmp, "wb") as f:
            np.save(f, st.sheet)
        with atomic_path(e) as tmp, open(tmp, "wb") as f:
            np.savez(f, coords=np.asarray(st.coords, np.int32).reshape(-1, 2), stats=st.stats)
        return st


@dataclass
class TileMeta:
    """What training needs to know of a cached sheet without its pixels."""

    path: str
    sheet_file: str
    shape: tuple[int, int]
    coords: list[tuple[int, int]]
    stats: np.ndarray

    @property
    def entropy(self) -> np.ndarray:
        return self.stats[:, 0]


def _meta_job(args: tuple[str, TileCache]):
    path, cache = args
    try:
        st = cache.load(path, mmap=True)
        f = cache.sheet_file(cache.entry(path))
        return TileMeta(str(path), str(f), st.sheet.shape[:2], st.coords, st.stats), ""
    except Exception as e:  # noqa: BLE001 - one bad sheet is an error row, never the job's end
        return None, failure(path, e)


def cached_tiles(
    paths: Sequence[str | Path],
    spec: TileSpec,
    root: Path,
    *,
    workers: int = 1,
    progress: bool = True,
):
    """Yield (index, TileMeta or None, error) per path: each sheet is decoded into the tile
    cache under `root` (by `workers` processes) and only its windows and statistics come
    back, so nothing the size of a sheet crosses between processes or stays in memory."""
    cache = TileCache(Path(root), spec)
    jobs = [(str(p), cache) for p in paths]
    yield from _run_jobs(_meta_job, jobs, workers, "tiling sheets", progress, chunk=1)


class TileWindows:
    """The tiles of many cached sheets as an array (n, T, T, 3) uint8 whose pixels stay on disk:
    indexing reads just those windows from the memory-mapped sheets. The pages read are given
    back after every batch (madvise DONTNEED: they stay in the OS file cache, but no longer
    count as this process's memory), and at most `open_sheets` sheets stay mapped (each holds a
    file descriptor), so memory does not grow with the number of sheets."""

    def __init__(
        self,
        files: Sequence[str],
        sheet: np.ndarray,
        xy: np.ndarray,
        size: int,
        open_sheets: int = 256,
    ):
        self.files, self.size = list(files), int(size)
        self.sheet = np.asarray(sheet, np.int64)
        self.xy = np.asarray(xy, np.int64).reshape(-1, 2)
        self._open: dict[int, np.ndarray] = {}
        self._limit = open_sheets

    def __len__(self) -> int:
        return len(self.sheet)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), self.size, self.size, 3)

    def _map(self, s: int) -> np.ndarray:
        a = self._open.pop(s, None)
        if a is None:
            a = np.load(self.files[s], mmap_mode="r")
            if len(self._open) >= self._limit:  # unmap the least recently used sheet
                self._open.pop(next(iter(self._open)))
        self._open[s] = a
        return a

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx, np.int64)
        if idx.ndim == 0:
            return self[idx[None]][0]
        t = self.size
        out = np.empty((len(idx), t, t, 3), np.uint8)
        touched = set()
        for j in np.argsort(self.sheet[idx], kind="stable"):  # group the reads by sheet
            i = idx[j]
            x, y = self.xy[i]
            s = int(self.sheet[i])
            out[j] = self._map(s)[y : y + t, x : x + t]
            touched.add(s)
        for s in touched:
            _drop_pages(self._open.get(s))
        return out


def _drop_pages(a) -> None:
    """Give back the resident pages of a memory-mapped array (where the OS can)."""
    mm = getattr(a, "_mmap", None)
    if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


def tile_cache_bytes(paths: Sequence[str | Path], spec: TileSpec, root: Path) -> int:
    """Disk the tile cache still needs for `paths`: the decoded size of every sheet not yet
    cached (read from image headers; unreadable files count nothing)."""
    cache = TileCache(Path(root), spec)
    total = 0
    for p in paths:
        if cache.has(p):
            continue
        try:
            w, h = image_size(p)
        except HerbscanError:
            continue
        total += max(spec.size, round(w * spec.scale)) * max(spec.size, round(h * spec.scale)) * 3
    return total


def check_free_space(folder: Path, need: int, what: str) -> None:
    """Refuse, in one line, a job whose cache would not fit on the disk of `folder`."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > 0.95 * free:
        raise ParameterError(
            f"{folder}: {what} needs about {need / 1e9:.1f} GB and only {free / 1e9:.1f} GB "
            "are free; free space, point --cache-dir (or HERBSCAN_CACHE) at a larger disk, or "
            "use a smaller --scale"
        )


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
    root = cache_root(cache_dir)
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


def cache_root(cache_dir: str | Path | None | bool) -> Path | None:
    """None/True: the default cache; False: no cache; else that folder."""
    if cache_dir is False:
        return None
    return default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)


def _resolve_cache(cache_dir: str | Path | None | bool, size: int, fit: str) -> SheetCache | None:
    root = cache_root(cache_dir)
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
