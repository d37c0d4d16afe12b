"""Tiles: windows over a sheet, their entropy, and sheet-level aggregation of tile scores.

A tile is a window `(x, y)` of `size`×`size` pixels on the sheet decoded at a working `scale`;
tiles are views into the decoded sheet, never copies of a collection. Windows step by `stride`;
along each axis a last window is aligned with the far edge when the stride does not land there,
so every pixel is covered and no window is padded (that last window overlaps its neighbour). A
sheet smaller than one tile is padded with its border colour to one window.

Entropy is the Shannon entropy (bits, 0–8) of a tile's 256-level grey histogram: blank paper is
low, plant, label text and stains are high. `otsu_threshold` picks the cut between the two modes
of a collection's entropy distribution.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from herbscan.errors import ParameterError, check_choice, check_range
from herbscan.images import image_size, open_rgb

AGGREGATIONS = ("mean", "max", "topk", "vote")
STAT_NAMES = ("entropy", "mean", "std", "paper_fraction")


@dataclass(frozen=True)
class TileSpec:
    """How sheets are cut: tile size and stride in pixels at the working scale."""

    size: int = 128
    stride: int = 128
    scale: float = 1.0

    def __post_init__(self):
        check_range("tile_size", self.size, 8)
        check_range("stride", self.stride, 1)
        check_range("scale", self.scale, 0.0, 1.0, low_open=True)

    def as_dict(self) -> dict:
        return asdict(self)


def origins(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis: 0, stride, 2·stride… plus one aligned with the far edge."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def windows(width: int, height: int, spec: TileSpec) -> list[tuple[int, int]]:
    """All (x, y) window origins of a width×height sheet, row by row."""
    return [
        (x, y)
        for y in origins(height, spec.size, spec.stride)
        for x in origins(width, spec.size, spec.stride)
    ]


def load_scaled(path: str | Path, scale: float) -> np.ndarray:
    """The sheet as uint8 (H, W, 3) at `scale` of its upright size, draft-decoded when possible."""
    if scale >= 1.0:
        return np.asarray(open_rgb(path))
    w, h = image_size(path)
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = open_rgb(path, min_size=(min(target), min(target)))
    # orientation may have swapped the axes; keep the decoded aspect
    tw, th = (
        (target[0], target[1]) if (im.width >= im.height) == (w >= h) else (target[1], target[0])
    )
    if im.size != (tw, th):
        im = im.resize((tw, th), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(im)


def pad_to_tile(sheet: np.ndarray, size: int) -> np.ndarray:
    """Pad a sheet smaller than one tile with its median border colour."""
    h, w = sheet.shape[:2]
    if h >= size and w >= size:
        return sheet
    border = np.concatenate([sheet[0], sheet[-1], sheet[:, 0], sheet[:, -1]])
    out = np.empty((max(h, size), max(w, size), 3), np.uint8)
    out[:] = np.median(border, axis=0).astype(np.uint8)
    out[:h, :w] = sheet
    return out


def cut(sheet: np.ndarray, coords: Sequence[tuple[int, int]], size: int) -> np.ndarray:
    """Tiles (n, size, size, 3) at the given origins (a copy of just those tiles)."""
    out = np.empty((len(coords), size, size, 3), np.uint8)
    for i, (x, y) in enumerate(coords):
        out[i] = sheet[y : y + size, x : x + size]
    return out


def grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as uint8 (Pillow's "L" conversion) of an (H, W, 3) uint8 array."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))


def entropy(grey_tile: np.ndarray) -> float:
    """Shannon entropy in bits of the 256-bin histogram of a grey tile."""
    hist = np.bincount(grey_tile.ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


def tile_stats(
    sheet: np.ndarray, coords: Sequence[tuple[int, int]], size: int, entropy_only: bool = False
) -> np.ndarray:
    """Per tile: entropy (bits), grey mean, grey std and fraction of paper-coloured pixels.

    Entropy, mean and std come from each tile's 256-bin grey histogram. Paper pixels are bright
    (grey ≥ 170) and unsaturated (max−min channel ≤ 40): the cream or white mounting paper, not
    plant tissue or stains. `entropy_only` leaves the other columns NaN (all inference needs).
    """
    g = grey(sheet)
    n = len(coords)
    out = np.full((n, len(STAT_NAMES)), np.nan, np.float32)
    hist = np.empty((n, 256), np.float64)
    for i, (x, y) in enumerate(coords):
        hist[i] = np.bincount(g[y : y + size, x : x + size].ravel(), minlength=256)
    hist /= size * size
    logp = np.log2(hist, out=np.zeros_like(hist), where=hist > 0)
    out[:, 0] = -(hist * logp).sum(axis=1)
    if entropy_only:
        return out
    levels = np.arange(256, dtype=np.float64)
    mean = hist @ levels
    out[:, 1] = mean
    out[:, 2] = np.sqrt(np.maximum(hist @ levels**2 - mean**2, 0.0))
    r, gr, b = sheet[..., 0], sheet[..., 1], sheet[..., 2]
    spread = np.maximum(np.maximum(r, gr), b)
    spread -= np.minimum(np.minimum(r, gr), b)
    paper = (g >= 170) & (spread <= 40)
    del spread
    for i, (x, y) in enumerate(coords):
        out[i, 3] = paper[y : y + size, x : x + size].mean()
    return out


@dataclass
class SheetTiles:
    """One decoded sheet's windows and their statistics (tiles are cut on demand)."""

    path: str
    sheet: np.ndarray
    coords: list[tuple[int, int]]
    stats: np.ndarray  # (n, len(STAT_NAMES))

    @property
    def entropy(self) -> np.ndarray:
        return self.stats[:, 0]


def sheet_tiles(path: str | Path, spec: TileSpec, entropy_only: bool = False) -> SheetTiles:
    """Decode a sheet once at the working scale and compute its windows and statistics."""
    sheet = pad_to_tile(load_scaled(path, spec.scale), spec.size)
    coords = windows(sheet.shape[1], sheet.shape[0], spec)
    return SheetTiles(str(path), sheet, coords, tile_stats(sheet, coords, spec.size, entropy_only))


def iter_tiles(
    paths: Sequence[str | Path], spec: TileSpec, min_entropy: float | None = None
) -> Iterator[tuple[int, SheetTiles, int, np.ndarray]]:
    """Yield (sheet index, SheetTiles, window index, tile view) for every kept window.

    Each sheet is decoded once and dropped before the next, so memory stays at one sheet.
    """
    for i, p in enumerate(paths):
        st = sheet_tiles(p, spec)
        for j, (x, y) in enumerate(st.coords):
            if min_entropy is not None and st.stats[j, 0] < min_entropy:
                continue
            yield i, st, j, st.sheet[y : y + spec.size, x : x + spec.size]


def otsu_threshold(values: np.ndarray, bins: int = 128, lo: float = 0.0, hi: float = 8.0) -> float:
    """The cut that maximises between-class variance of a 1-D distribution (Otsu, 1979).

    Used to separate blank-paper tiles from tiles with content without a tuned constant.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ParameterError("cannot choose an entropy threshold from zero tiles")
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    # an empty gap between the modes is a plateau of equal scores: cut in its middle
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float((edges[best[0] + 1] + edges[best[-1] + 1]) / 2)


def aggregate(tile_probs: np.ndarray, rule: str = "mean", k: int | None = None) -> np.ndarray:
    """Sheet probabilities (K,) from tile probabilities (n, K).

    mean: average of tile probabilities (the paper's rule); max: per class the highest tile
    probability; topk: per class the mean of its k highest tiles; vote: share of tiles whose
    most likely class is each class. max and topk are renormalised to sum to one. With no tiles
    (a blank sheet) every rule returns NaN.
    """
    check_choice("aggregate", rule, AGGREGATIONS)
    p = np.asarray(tile_probs, dtype=np.float64)
    if p.ndim != 2:
        raise ParameterError(f"tile probabilities must be (n_tiles, n_classes); got {p.shape}")
    if len(p) == 0:
        return np.full(p.shape[1], np.nan)
    if rule == "mean":
        return p.mean(axis=0)
    if rule == "vote":
        return np.bincount(p.argmax(axis=1), minlength=p.shape[1]) / len(p)
    if rule == "max":
        s = p.max(axis=0)
    else:
        kk = max(1, min(len(p), k or max(1, math.ceil(0.1 * len(p)))))
        s = np.sort(p, axis=0)[-kk:].mean(axis=0)
    return s / s.sum()


@dataclass
class KeptTiles:
    """A sheet reduced to what inference needs: its kept tiles, where every window was, and a
    thumbnail for heatmaps — small enough to pass between processes, unlike the whole sheet."""

    path: str
    shape: tuple[int, int]  # (height, width) of the sheet at the working scale
    coords: list[tuple[int, int]]
    entropy: np.ndarray  # bits per window
    kept: np.ndarray  # bool per window
    tiles: np.ndarray  # (n_kept, T, T, 3) uint8
    thumbnail: np.ndarray  # uint8 (h, w, 3), longest side THUMB_SIDE at most; empty if not asked


THUMB_SIDE = 480


def keep_tiles(st: SheetTiles, size: int, min_entropy: float, thumbnail: bool = True) -> KeptTiles:
    """Tiles at or above `min_entropy` bits; a sheet with none keeps its most textured tile."""
    kept = st.entropy >= min_entropy
    if not kept.any():
        kept[int(np.argmax(st.entropy))] = True
    h, w = st.sheet.shape[:2]
    thumb = np.zeros((0, 0, 3), np.uint8)
    if thumbnail:
        f = min(1.0, THUMB_SIDE / max(h, w))
        thumb = np.asarray(
            Image.fromarray(st.sheet).resize(
                (max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR
            )
        )
    return KeptTiles(
        st.path,
        (h, w),
        st.coords,
        st.entropy,
        kept,
        cut(st.sheet, [c for c, k in zip(st.coords, kept) if k], size),
        thumb,
    )


def heatmap_png(
    image: np.ndarray,
    coords: Sequence[tuple[int, int]],
    size: int,
    scores: np.ndarray,
    kept: np.ndarray,
    sheet_shape: tuple[int, int] | None = None,
    max_side: int = THUMB_SIDE,
) -> bytes:
    """A PNG of the sheet with each kept tile tinted by its score (blue 0 → red 1).

    `image` is the sheet or a thumbnail of it; `coords` are in pixels of the sheet whose
    (height, width) is `sheet_shape` (default: the image's). Dropped (blank) tiles stay clear.
    """
    h, w = image.shape[:2]
    _, sw = sheet_shape or (h, w)
    f = min(1.0, max_side / max(h, w))
    small = Image.fromarray(image).resize(
        (max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR
    )
    f *= w / sw  # sheet pixels → output pixels
    base = np.asarray(small, dtype=np.float32)
    heat = np.zeros(base.shape[:2], np.float32)
    mask = np.zeros(base.shape[:2], bool)
    for (x, y), s, keep in zip(coords, scores, kept):
        if not keep or not np.isfinite(s):
            continue
        y0, y1, x0, x1 = (round(y * f), round((y + size) * f), round(x * f), round((x + size) * f))
        heat[y0:y1, x0:x1] = np.maximum(heat[y0:y1, x0:x1], s)
        mask[y0:y1, x0:x1] = True
    alpha = (0.15 + 0.6 * heat)[..., None] * mask[..., None]
    red = np.array([220.0, 30.0, 30.0], np.float32)
    blue = np.array([40.0, 90.0, 220.0], np.float32)
    colour = blue + (red - blue) * heat[..., None]
    out = base * (1 - alpha) + colour * alpha
    buf = io.BytesIO()
    Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(buf, "PNG", optimize=True)
    return buf.getvalue()
