"""Where the specimen is: a mask of plant, labels and ink against the bare mounting paper.

A sheet is mostly paper of one colour; whatever differs from it clearly (plant, label text,
stamps, stains, tape) is the specimen and its annotations. The mask is built at a working scale
from colour distance to the paper, with a threshold set by the paper's own noise, then cleaned
(small specks dropped, holes filled, grown by a margin). Used by the audit to hide the specimen
and look at what is left.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_STEP = 22.0  # RGB distance below which a colour counts as paper whatever the noise


def paper_colour(rgb: np.ndarray) -> np.ndarray:
    """The mounting paper's colour: the most common coarse colour among the brighter half."""
    flat = rgb.reshape(-1, 3).astype(np.int32)
    lum = flat.mean(axis=1)
    bright = flat[lum >= np.percentile(lum, 50)]
    bins = (bright // 16) @ np.array([256, 16, 1])
    top = np.bincount(bins).argmax()
    return np.median(bright[bins == top], axis=0)


def sheet_box(paper: np.ndarray, min_share: float = 0.4) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the sheet: the rows and columns mostly of paper colour.
    Scanner bed, colour charts and rulers outside it are not the specimen."""
    rows = np.flatnonzero(paper.mean(axis=1) >= min_share)
    cols = np.flatnonzero(paper.mean(axis=0) >= min_share)
    if not len(rows) or not len(cols):
        return 0, paper.shape[0], 0, paper.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def specimen_mask(rgb: np.ndarray, margin: float = 0.003, min_area: float = 2e-5) -> np.ndarray:
    """Boolean mask (True: plant, labels, ink) of a uint8 RGB sheet at working scale.

    `margin` grows the mask by that share of the long side; components smaller than `min_area`
    of the sheet (dust, JPEG noise) are dropped."""
    img = ndimage.uniform_filter(rgb.astype(np.float32), size=(3, 3, 1))
    dist = np.linalg.norm(img - paper_colour(rgb), axis=2)
    near = dist[dist < np.percentile(dist, 50)]
    noise = 1.4826 * float(np.median(np.abs(near - np.median(near)))) if len(near) else 0.0
    cut = max(MIN_STEP, float(np.median(near)) + 6.0 * noise if len(near) else MIN_STEP)
    fg = dist > cut
    top, bottom, left, right = sheet_box(~fg)
    inside = np.zeros_like(fg)
    inside[top:bottom, left:right] = True
    fg &= inside
    labels, n = ndimage.label(fg)
    if n:
        sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
        keep = np.concatenate([[False], sizes >= min_area * fg.size])
        fg = keep[labels]
    fg = ndimage.binary_fill_holes(fg)
    grow = max(1, round(margin * max(fg.shape)))
    return ndimage.binary_dilation(fg, iterations=grow) & inside


def hide(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`rgb` with the masked pixels painted in the colour of the paper around them (a wide
    blur of the unmasked paper), so neither the specimen nor its outline is left to see."""
    colour = paper_colour(rgb)
    paper = np.linalg.norm(rgb.astype(np.float32) - colour, axis=2) < 2 * MIN_STEP
    keep = (~mask & paper).astype(np.float32)
    sigma = 0.03 * max(mask.shape)
    weight = ndimage.gaussian_filter(keep, sigma)
    fill = np.empty(rgb.shape, np.float32)
    for c in range(3):
        fill[..., c] = ndimage.gaussian_filter(rgb[..., c] * keep, sigma) / np.maximum(weight, 1e-3)
    flat = np.where(weight[..., None] > 1e-3, fill, colour)
    out = rgb.copy()
    out[mask] = np.clip(np.round(flat[mask]), 0, 255).astype(np.uint8)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
