"""Near-duplicate sheets: the same specimen imaged twice, or one image saved twice under two ids.

A duplicate in training and test makes a test score a memory test. Each sheet gets a
fingerprint: turned upright, grey, shrunk, then
- a 63-bit perceptual hash (signs of the 8×8 lowest-frequency DCT coefficients of a 32×32
  thumbnail against their median, DC left out), for the sheet and for it turned 180°, since an
  upright sheet may have been photographed either way round;
- a 48×72 grey thumbnail.
Sheets of one herbarium share a layout (label corner, colour chart), so two different sheets of
the same species can hash as close as a re-cropped copy. `near_pairs` therefore takes the pairs
within `max_distance` bits as candidates and keeps those whose thumbnails correlate at
`min_similarity` or more, allowing shifts of a few pixels and scales of ±5% (crops of a few
percent). Resizing, re-encoding and colour shifts leave a copy's correlation above 0.98;
distinct sheets of one ALA collection stayed below 0.71 (`benchmarks/neardup.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from herbscan.errors import check_range
from herbscan.images import open_rgb

MAX_DISTANCE = 16
"""Hash bits (of 63) two sheets may differ by to be compared further."""
MIN_SIMILARITY = 0.85
"""Correlation of the grey thumbnails above which two sheets are near-duplicates."""
THUMB = (48, 72)
SHIFT = 3  # pixels of the thumbnail a copy may be shifted by (crops of ~5%)
SCALES = (0.95, 1.0, 1.05)

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


class Fingerprints(NamedTuple):
    hashes: np.ndarray  # (n, 2) uint64: upright, turned 180°
    thumbs: np.ndarray  # (n, 72, 48) float32, zero mean and unit variance
    errors: list[tuple[int, str]]  # (index, message) of files that could not be read


def _hash(grey32: np.ndarray) -> int:
    from scipy.fft import dctn

    low = dctn(grey32, norm="ortho")[:8, :8].ravel()[1:]
    bits = low > np.median(low)
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def fingerprint(path: str | Path) -> tuple[tuple[int, int], np.ndarray]:
    """((hash, hash turned 180°), standardised grey thumbnail) of an image file."""
    im = open_rgb(path, min_size=(96, 96))
    if im.width > im.height:
        im = im.transpose(Image.Transpose.ROTATE_90)
    grey = im.convert("L")
    g32 = np.asarray(grey.resize((32, 32), Image.Resampling.BOX), np.float64)
    thumb = np.asarray(grey.resize(THUMB, Image.Resampling.BOX), np.float32)
    thumb = (thumb - thumb.mean()) / (thumb.std() + 1e-6)
    return (_hash(g32), _hash(g32[::-1, ::-1])), thumb


def fingerprints(paths: Sequence[str | Path]) -> Fingerprints:
    """Fingerprints of many files; an unreadable one is listed and takes part in no pair."""
    from herbscan.cache import failure  # lazy: a split needs nothing else of the cache

    hashes = np.zeros((len(paths), 2), np.uint64)
    thumbs = np.zeros((len(paths), THUMB[1], THUMB[0]), np.float32)
    errors = []
    for i, p in enumerate(paths):
        try:
            (hashes[i, 0], hashes[i, 1]), thumbs[i] = fingerprint(p)
        except Exception as e:  # noqa: BLE001 - one bad file is listed, never the end
            errors.append((i, failure(p, e)))
    return Fingerprints(hashes, thumbs, errors)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances (len(a), len(b)) between two arrays of uint64 hashes."""
    x = np.bitwise_xor(np.asarray(a, np.uint64)[:, None], np.asarray(b, np.uint64)[None, :])
    return _POPCOUNT[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1)


def _standard(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6)


def similarity(a: np.ndarray, b: np.ndarray, shift: int = SHIFT) -> float:
    """Highest correlation of two standardised thumbnails over shifts of up to `shift` px and
    scales of ±5% (a copy cropped by a few percent is shifted and enlarged)."""
    m = shift
    core = _standard(a[m:-m, m:-m])
    h, w = core.shape
    best = -1.0
    for scale in SCALES:
        if scale == 1.0:
            bs = b
        else:  # enlarge or shrink b about its centre, back to its own size
            big = Image.fromarray(b).resize(
                (round(b.shape[1] * scale), round(b.shape[0] * scale)), Image.Resampling.BILINEAR
            )
            left, top = (big.width - b.shape[1]) // 2, (big.height - b.shape[0]) // 2
            if scale > 1:
                bs = np.asarray(big, np.float32)[top : top + b.shape[0], left : left + b.shape[1]]
            else:
                bs = np.full(b.shape, float(b.mean()), np.float32)
                bs[-top : -top + big.height, -left : -left + big.width] = np.asarray(big)
        for dy in range(-m, m + 1):
            for dx in range(-m, m + 1):
                win = _standard(bs[m + dy : m + dy + h, m + dx : m + dx + w])
                best = max(best, float((core * win).mean()))
    return best


def near_pairs(
    fp: Fingerprints,
    max_distance: int = MAX_DISTANCE,
    min_similarity: float = MIN_SIMILARITY,
    block: int = 2048,
) -> list[tuple[int, int, int, float]]:
    """Every near-duplicate pair (i, j, hash distance, similarity), i < j."""
    check_range("max_distance", max_distance, 0, 63)
    check_range("min_similarity", min_similarity, -1.0, 1.0)
    n = len(fp.hashes)
    ok = np.ones(n, bool)
    ok[[i for i, _ in fp.errors]] = False
    pairs = []
    for s in range(0, n, block):
        a = fp.hashes[s : s + block, 0]
        d = np.minimum(distances(a, fp.hashes[:, 0]), distances(a, fp.hashes[:, 1]))
        for i, j in zip(*np.nonzero(d <= max_distance)):
            i = int(i) + s
            j = int(j)
            if j <= i or not (ok[i] and ok[j]):
                continue
            sim = max(
                similarity(fp.thumbs[i], fp.thumbs[j]),
                similarity(fp.thumbs[i], fp.thumbs[j][::-1, ::-1]),
            )
            if sim >= min_similarity:
                pairs.append((i, j, int(d[i - s, j]), round(sim, 4)))
    return pairs


def linked_groups(keys: Sequence[str], pairs) -> dict[str, str]:
    """Union of the groups (`keys[i]`, e.g. specimen ids) that pairs (i, j, ...) join: each key
    maps to one representative of its merged group."""
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.get(k, k) != k:
            k = parent[k] = parent.get(parent[k], parent[k])
        return k

    for i, j, *_ in pairs:
        a, b = find(keys[i]), find(keys[j])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {k: find(k) for k in set(keys)}


def pairs_across(paths: Sequence[str | Path], keys: Sequence[str]) -> list[tuple]:
    """Near-duplicate pairs (i, j, hash distance, similarity) of images under different keys
    (specimen ids): one sheet saved twice, which a split by specimen cannot keep together."""
    return [p for p in near_pairs(fingerprints(paths)) if keys[p[0]] != keys[p[1]]]


def duplicates_among(
    paths: Sequence[str | Path], others: Sequence[str | Path]
) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for each image paths[i] that is near-identical to others[j] (a
    different file): e.g. test sheets with a copy among the training sheets."""
    same = {str(Path(p).resolve()) for p in paths}
    kept = [j for j, o in enumerate(others) if str(Path(o).resolve()) not in same]
    fp = fingerprints(list(paths) + [others[j] for j in kept])
    n = len(paths)
    return [(i, kept[j - n], sim) for i, j, _, sim in near_pairs(fp) if i < n <= j]
