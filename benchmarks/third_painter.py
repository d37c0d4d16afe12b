"""A third, independent painter of mercury damage on real, clean herbarium sheets.

herbscan's mercury detector is trained on sheets painted by herbscan's own stain generator. To
check that it has learnt mercury and not that generator's habits, it is also scored on real clean
sheets painted by generators written apart from it; this is the third, written from a description
of real damage only. It paints, as optical densities that darken the sheet multiplicatively:
grey-black specks (brush tracks, spray clusters, scatter), blotches, halos along the plant's
outline, tide-line rims, diffuse clouds, a regional grey cast and darkened plant tissue; and marks
that are not mercury (foxing, ink, pencil, dust, fibres, insect frass, glue, water stains, mould,
pin rust, soil, shadows). Every output, clean or stained, goes through a light rescan (blur,
sensor noise, JPEG).

    python benchmarks/third_painter.py --sheet PATH --out contact.png [--seed N]
"""

from __future__ import annotations

import argparse
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

SHEET_LONG_MM = 420.0
REF_AREA_MM2 = 420.0 * 297.0
LUMA = np.array([0.299, 0.587, 0.114], np.float32)

# Relative absorption per channel (mean 1): above 1 darkens that channel more than the others.
NEUTRAL = (1.0, 1.0, 1.0)
BROWN = (0.55, 0.95, 1.5)
RUST = (0.35, 0.85, 1.8)
YELLOW = (0.3, 0.6, 2.1)
BLUE_BLACK = (1.25, 1.05, 0.7)
GREEN_BLACK = (1.05, 0.8, 1.15)
DIRT = (0.85, 1.0, 1.15)

# How each way of applying the poison shifts the mixture. split: shares of the specks laid along
# brush tracks, in spray clusters, scattered near the plant, scattered anywhere.
STYLES = {
    "brushed": {
        "mult": 1.0,
        "split": (0.45, 0.2, 0.25, 0.1),
        "cluster": 5.0,
        "halo": 1.0,
        "tide": 1.5,
        "tissue": 0.8,
        "cloud": 0.8,
    },
    "sprayed": {
        "mult": 1.25,
        "split": (0.0, 0.55, 0.3, 0.15),
        "cluster": 14.0,
        "halo": 0.6,
        "tide": 0.5,
        "tissue": 0.6,
        "cloud": 1.3,
    },
    "dipped": {
        "mult": 0.8,
        "split": (0.0, 0.3, 0.55, 0.15),
        "cluster": 4.0,
        "halo": 1.6,
        "tide": 1.2,
        "tissue": 1.5,
        "cloud": 1.0,
    },
}


@dataclass
class _Sheet:
    """The sheet's geometry in millimetres and where the plant is, on a coarse grid."""

    h: int
    w: int
    ppm: float  # pixels per millimetre
    f: int  # pixels per coarse cell
    cell_mm: float
    mask: np.ndarray  # coarse bool: plant
    soft: np.ndarray  # coarse float in [0, 1]: how plant-like
    dist_mm: np.ndarray  # coarse: distance to the plant, 0 on it
    area_ratio: float  # sheet area / a standard sheet's
    paper: tuple[int, int, int, int]  # the paper's extent in px: y0, y1, x0, x1
    on_paper: np.ndarray  # coarse bool: inside that extent

    def px(self, mm):
        return np.asarray(mm, np.float64) * self.ppm

    def cells(self, mm: float) -> float:
        return mm / self.cell_mm


def _sig(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth noise of unit spread whose blobs are about `scale` cells across."""
    h, w = shape
    s = max(float(scale), 1.0)
    grid = rng.standard_normal((int(h / s) + 2, int(w / s) + 2), dtype=np.float32)
    n = np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.BICUBIC), np.float32)
    return (n - n.mean()) / (n.std() + 1e-6)


def _paper(small: np.ndarray, cell_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The whole sheet's paper colour, and the paper's colour under each cell: that of bright
    blocks of about 12 mm unless far from the whole sheet's (a leaf filling the block)."""
    y = small @ LUMA
    whole = np.median(small[y >= np.percentile(y, 60)], axis=0)
    h, w = y.shape
    bs = max(4, int(round(12 / cell_mm)))
    nby, nbx = -(-h // bs), -(-w // bs)
    pad = np.pad(small, ((0, nby * bs - h), (0, nbx * bs - w), (0, 0)), mode="edge")
    blocks = pad.reshape(nby, bs, nbx, bs, 3).transpose(0, 2, 4, 1, 3).reshape(nby, nbx, 3, -1)
    local = np.percentile(blocks, 80, axis=-1).astype(np.float32)
    local[np.abs((local - whole) @ LUMA) > 40] = whole
    local = ndimage.median_filter(local, size=(3, 3, 1), mode="nearest")
    box = (0.0, 0.0, w / bs, h / bs)
    chans = [
        np.asarray(Image.fromarray(local[..., c], "F").resize((w, h), Image.BILINEAR, box=box))
        for c in range(3)
    ]
    return whole, np.stack(chans, axis=-1)


def _colour_chart(small: np.ndarray, cell_mm: float) -> np.ndarray:
    """Cells in or next to 25 mm blocks of vivid colours of many hues: a colour chart."""
    tint = small - small.mean(axis=-1, keepdims=True)
    vivid = np.linalg.norm(tint, axis=-1) > 40.0
    hue = np.arctan2(math.sqrt(3) * (small[..., 1] - small[..., 2]), 2 * tint[..., 0])
    h, w = vivid.shape
    bs = max(2, int(round(25.0 / cell_mm)))
    nby, nbx = -(-h // bs), -(-w // bs)

    def blocks(x):
        x = np.pad(x.astype(np.float32), ((0, nby * bs - h), (0, nbx * bs - w)))
        return x.reshape(nby, bs, nbx, bs).sum(axis=(1, 3))

    n = blocks(vivid)
    one_hue = np.hypot(blocks(np.cos(hue) * vivid), blocks(np.sin(hue) * vivid)) / np.maximum(n, 1)
    chart = ndimage.binary_dilation((one_hue < 0.45) & (n > 0.3 * bs * bs), np.ones((3, 3), bool))
    return np.repeat(np.repeat(chart, bs, axis=0), bs, axis=1)[:h, :w]


def _plant_parts(lab, n, small, dark, cell_mm) -> np.ndarray:
    """Which labelled regions unlike the paper are plant: a bool per label, 0 included."""
    keep = np.zeros(n + 1, bool)
    if not n:
        return keep
    idx = np.arange(1, n + 1)
    size = np.bincount(lab.ravel(), minlength=n + 1)[1:] * cell_mm**2
    sat = np.linalg.norm(small - small.mean(axis=-1, keepdims=True), axis=-1)
    md, mg = ndimage.mean(dark, lab, idx), ndimage.mean(sat < 10.0, lab, idx)
    h, w = lab.shape
    edge = np.minimum(np.arange(h)[:, None], np.arange(w)[None, :])
    edge = np.minimum(edge, np.minimum(h - 1 - np.arange(h)[:, None], w - 1 - np.arange(w)))
    by_edge = ndimage.mean(edge * cell_mm < 15.0, lab, idx)
    sides = np.array(
        [(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in ndimage.find_objects(lab)]
    )
    sides = sides * cell_mm
    fill = size / sides.prod(axis=1)
    ruled = (sides.min(axis=1) <= 2.5) & (sides.max(axis=1) >= 40.0)  # edges, rules, frames
    card = (size >= 300.0) & (fill > 0.85)
    # Plants are darker than the paper and big. Text and ink are grey or black and in small
    # pieces; white labels on aged paper are lighter than the paper; frames hug the edges.
    keep[1:] = (size >= np.where(mg < 0.5, 20.0, 150.0)) & (md >= 12.0)
    keep[1:] &= ~card & ~ruled & (by_edge < 0.6)
    return keep


def _analyse(sheet: np.ndarray, ppm: float) -> _Sheet:
    """Find the paper's colour, and the plant: cells unlike the paper in hue or darkness."""
    h, w = sheet.shape[:2]
    f = max(1, int(round(0.45 * ppm)))
    small = np.asarray(Image.fromarray(sheet).reduce(f) if f > 1 else sheet, np.float32)
    cell_mm = f / ppm
    whole, local = _paper(small, cell_mm)
    dev = small - local
    dark = np.maximum(-(dev @ LUMA), 0.0)
    chroma = np.linalg.norm(dev - dev.mean(axis=-1, keepdims=True), axis=-1)
    score = dark + 2.0 * chroma
    thr = float(np.clip(4.0 * np.percentile(score, 25), 20.0, 60.0))
    raw = score > thr
    # The paper's extent: the outermost rows and columns with some paper in them. Outside it lie
    # the scanner's background, rulers and colour charts.
    off = small - whole
    paperlike = (np.abs(off @ LUMA) < 35) & (
        np.linalg.norm(off - off.mean(axis=-1, keepdims=True), axis=-1) < 15
    )
    on_paper = np.ones(raw.shape, bool)
    extent = []
    for axis in (1, 0):
        lines = np.flatnonzero(paperlike.mean(axis=axis) > 0.2)
        lo, hi = (lines[0], lines[-1] + 1) if lines.size else (0, raw.shape[1 - axis])
        if axis == 1:
            on_paper[:lo], on_paper[hi:] = False, False
        else:
            on_paper[:, :lo], on_paper[:, hi:] = False, False
        extent += [lo * f, min(hi * f, (h, w)[1 - axis])]
    raw &= on_paper
    rim = max(1, int(round(4.0 / cell_mm)))  # the sheet's edge and its shadow
    raw[:rim], raw[-rim:], raw[:, :rim], raw[:, -rim:] = False, False, False, False
    raw &= ~_colour_chart(small, cell_mm)
    lab, n = ndimage.label(raw, structure=np.ones((3, 3), bool))
    keep = _plant_parts(lab, n, small, dark, cell_mm)
    mask = keep[lab]
    if mask.any():
        dist = ndimage.distance_transform_edt(~mask).astype(np.float32) * cell_mm
        near = dist < 1.5
    else:
        dist = np.full(mask.shape, 1e3, np.float32)
        near = mask
    soft = np.clip((score - 0.6 * thr) / (0.8 * thr), 0, 1).astype(np.float32) * near
    area = (h / ppm) * (w / ppm) / REF_AREA_MM2
    area_ratio = float(np.clip(area, 0.25, 3.0))
    return _Sheet(h, w, ppm, f, cell_mm, mask, soft, dist, area_ratio, tuple(extent), on_paper)


def _near_weight(g: _Sheet, scale_mm: float, on: float, floor: float) -> np.ndarray:
    """A coarse weight map: `on` on the plant, fading from 1 beside it over scale_mm, + floor."""
    w = np.exp(-g.dist_mm / scale_mm)
    w[g.mask] = on
    return (w + floor) * g.on_paper


def _sample(rng: np.random.Generator, g: _Sheet, weight: np.ndarray, n: int):
    """n pixel positions drawn with probability proportional to a coarse weight map."""
    cdf = np.cumsum(weight.ravel(), dtype=np.float64)
    idx = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), cdf.size - 1)
    iy, ix = np.divmod(idx, weight.shape[1])
    y = np.minimum((iy + rng.random(n)) * g.f, g.h - 1)
    x = np.minimum((ix + rng.random(n)) * g.f, g.w - 1)
    return y, x


def _at(g: _Sheet, m: np.ndarray, y, x) -> np.ndarray:
    """Values of a coarse map at pixel positions (clipped to the sheet)."""
    iy = np.clip((np.asarray(y) / g.f).astype(int), 0, m.shape[0] - 1)
    ix = np.clip((np.asarray(x) / g.f).astype(int), 0, m.shape[1] - 1)
    return m[iy, ix]


def _stamp(dst, oy, ox, cy, cx, r, amp, aspect, angle, power, rng, grain=0.5) -> None:
    """Add elliptical dots (radius r px, peak density amp) to dst, whose (0, 0) is (oy, ox).

    Dots under a pixel keep their total density and spread over about a pixel, as a scan would.
    """
    cy, cx = np.asarray(cy, np.float64), np.asarray(cx, np.float64)
    r = np.asarray(r, np.float64)
    re = np.maximum(r, 0.6)
    amp = np.asarray(amp, np.float64) * (r / re) ** 2
    aspect = np.broadcast_to(np.asarray(aspect, np.float64), r.shape)
    angle = np.broadcast_to(np.asarray(angle, np.float64), r.shape)
    power = np.broadcast_to(np.asarray(power, np.float64), r.shape)
    half = np.minimum(np.ceil(2.0 * re * aspect).astype(int) + 1, 120)
    hh, ww = dst.shape
    for hv in np.unique(half):
        sel = np.flatnonzero(half == hv)
        oi = np.arange(-hv, hv + 1)
        o = oi.astype(np.float32)
        iy, ix = np.floor(cy[sel]).astype(np.int64), np.floor(cx[sel]).astype(np.int64)
        dy = o[None, :, None] - (cy[sel] - iy).astype(np.float32)[:, None, None]
        dx = o[None, None, :] - (cx[sel] - ix).astype(np.float32)[:, None, None]
        c = np.cos(angle[sel]).astype(np.float32)[:, None, None]
        s = np.sin(angle[sel]).astype(np.float32)[:, None, None]
        a = (re[sel] * aspect[sel]).astype(np.float32)[:, None, None]
        b = (re[sel] / aspect[sel]).astype(np.float32)[:, None, None]
        q = ((dy * s + dx * c) / a) ** 2 + ((dy * c - dx * s) / b) ** 2
        p = (power[sel] / 2).astype(np.float32)[:, None, None]
        val = amp[sel].astype(np.float32)[:, None, None] * np.exp(-(q**p))
        if grain:
            val *= 1 + grain * (rng.random(val.shape, dtype=np.float32) - 0.5)
        rows = np.broadcast_to((iy - oy)[:, None, None] + oi[None, :, None], val.shape)
        cols = np.broadcast_to((ix - ox)[:, None, None] + oi[None, None, :], val.shape)
        keep = (val > 2e-3) & (rows >= 0) & (rows < hh) & (cols >= 0) & (cols < ww)
        np.add.at(dst, (rows[keep], cols[keep]), val[keep])


def _dots_patch(g: _Sheet, rng, cy, cx, r, amp, aspect=1.0, angle=0.0, power=2.0, grain=0.5):
    """Dots drawn into a patch just big enough for them: (y0, x0, density) or None."""
    cy, cx, r = np.atleast_1d(cy), np.atleast_1d(cx), np.atleast_1d(r)
    reach = 2.0 * np.maximum(r, 0.6) * np.max(np.atleast_1d(aspect)) + 3
    y0 = int(max(0, np.floor((cy - reach).min())))
    x0 = int(max(0, np.floor((cx - reach).min())))
    y1 = int(min(g.h, np.ceil((cy + reach).max()) + 1))
    x1 = int(min(g.w, np.ceil((cx + reach).max()) + 1))
    if y1 <= y0 or x1 <= x0:
        return None
    patch = np.zeros((y1 - y0, x1 - x0), np.float32)
    _stamp(patch, y0, x0, cy, cx, r, amp, aspect, angle, power, rng, grain)
    return y0, x0, patch


def _add(dst: np.ndarray, y0: int, x0: int, patch: np.ndarray) -> None:
    """dst[y0:, x0:] += patch, clipped to dst; y0 and x0 may be negative."""
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + patch.shape[0], dst.shape[0]), min(x0 + patch.shape[1], dst.shape[1])
    if yb > ya and xb > xa:
        dst[ya:yb, xa:xb] += patch[ya - y0 : yb - y0, xa - x0 : xb - x0]


def _darken(img: np.ndarray, y0: int, x0: int, dens: np.ndarray, k=NEUTRAL, add=None) -> None:
    """Multiply a patch of a uint8 image by exp(-density * k), in place; add: an extra offset."""
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + dens.shape[0], img.shape[0]), min(x0 + dens.shape[1], img.shape[1])
    if yb <= ya or xb <= xa:
        return
    k = np.asarray(k, np.float32)
    for ty in range(ya, yb, 512):
        for tx in range(xa, xb, 512):
            ty1, tx1 = min(ty + 512, yb), min(tx + 512, xb)
            d = dens[ty - y0 : ty1 - y0, tx - x0 : tx1 - x0, None]
            if d.max() < 2e-3:
                continue
            sub = img[ty:ty1, tx:tx1].astype(np.float32) * np.exp(-d * k)
            if add is not None:
                sub += add[ty - y0 : ty1 - y0, tx - x0 : tx1 - x0, None]
            img[ty:ty1, tx:tx1] = np.clip(sub + 0.5, 0, 255).astype(np.uint8)


def _blob_field(rng, radius: float, wobble: float, aspect: float = 1.0, margin: float = 3.0):
    """An irregular closed outline of about `radius` px around a patch's centre.

    Returns (signed distance inside the outline in px, polar angle, half size of the patch, step):
    big patches are sampled every `step` px; _grow() brings them to full size.
    """
    hv = int(math.ceil(radius * (1 + 2 * wobble) * max(aspect, 1.0) + margin)) + 1
    step = max(1, hv // 250)
    o = np.arange(-hv, hv + 1, step, dtype=np.float32)
    yy, xx = o[:, None], o[None, :]
    ang = rng.uniform(0, math.pi)
    c, s = math.cos(ang), math.sin(ang)
    u, v = (xx * c + yy * s) / aspect, (yy * c - xx * s) * aspect
    rho, th = np.hypot(u, v), np.arctan2(v, u)
    k = np.arange(2, 8)
    amp = rng.normal(0, wobble, k.size) / (k - 1)
    ph = rng.uniform(0, 2 * math.pi, k.size)
    edge = np.ones_like(th)
    for kk, a, p in zip(k, amp, ph):
        edge += a * np.cos(kk * th + p)
    return radius * np.maximum(edge, 0.3) - rho, th, hv, step


def _grow(dens: np.ndarray, hv: int, step: int) -> np.ndarray:
    """A patch sampled every `step` px, at full size (2 hv + 1 px square)."""
    dens = dens.astype(np.float32)
    if step == 1:
        return dens
    n = 2 * hv + 1
    box = (0.0, 0.0, n / step, n / step)
    return np.asarray(Image.fromarray(dens, "F").resize((n, n), Image.BILINEAR, box=box))


def _ring(th: np.ndarray, rng, strength: float) -> np.ndarray:
    """A smooth factor in [1 - strength, 1] that varies around an outline."""
    acc = np.zeros_like(th)
    for kk in range(1, 5):
        acc += rng.normal(0, 1 / kk) * np.cos(kk * th + rng.uniform(0, 2 * math.pi))
    return 1 - strength * _sig(2.5 * acc)


# ---------------------------------------------------------------------------------------------
# Mercury


def _speck_attrs(rng, g: _Sheet, n: int, s: float):
    """Radius (px), peak density, elongation, angle and edge sharpness of n specks."""
    d_mm = np.clip(rng.lognormal(math.log(0.25 + 0.1 * s), 0.5, n), 0.06, 1.4)
    d_mm *= np.where(rng.random(n) < 0.04, 2.0, 1.0)
    r = g.px(d_mm / 2)
    amp = rng.uniform(0.35, 1.4, n) * (0.6 + 0.4 * math.sqrt(s))
    aspect = np.exp(np.abs(rng.normal(0, 0.3, n)))
    return r, amp, aspect, rng.uniform(0, math.pi, n), rng.uniform(2, 5, n)


def _brush_specks(rng, g: _Sheet, n: int, near: np.ndarray):
    """Specks along a few brush strokes: parallel bristle tracks, kept more where the plant is."""
    if n <= 0:
        return np.zeros(0), np.zeros(0)
    strokes = max(1, int(round(n / rng.uniform(25, 80))))
    heading = rng.uniform(0, math.pi)
    sy, sx = _sample(rng, g, near, strokes)
    th = heading + rng.normal(0, 0.25, strokes)
    length = g.px(rng.uniform(30, 160, strokes))
    width = g.px(rng.uniform(3, 12, strokes))
    bend = rng.normal(0, 0.002, strokes) / g.ppm
    dry = rng.uniform(0, 1.5, strokes)
    tracks = rng.uniform(-0.5, 0.5, (strokes, 8))
    m = 10 * n
    j = rng.integers(0, strokes, m)
    t = rng.uniform(-0.5, 0.5, m) * length[j]
    lat = tracks[j, rng.integers(0, 8, m)] * width[j] + rng.normal(0, g.px(0.15), m)
    lat += bend[j] * t**2
    y = sy[j] + t * np.sin(th[j]) + lat * np.cos(th[j])
    x = sx[j] + t * np.cos(th[j]) - lat * np.sin(th[j])
    inside = (y >= g.paper[0]) & (y < g.paper[1]) & (x >= g.paper[2]) & (x < g.paper[3])
    nmax = near.max()
    p = 0.12 + 0.88 * _at(g, near, y, x) / nmax
    p *= np.exp(-dry[j] * (t / length[j] + 0.5))
    keep = np.flatnonzero(inside & (rng.random(m) < p))[:n]
    return y[keep], x[keep]


def _cluster_specks(rng, g: _Sheet, n: int, near: np.ndarray, mean_size: float):
    """Specks in clusters (spray droplets) of 0.3 to 2.5 mm spread, centred near the plant."""
    if n <= 0:
        return np.zeros(0), np.zeros(0)
    k = max(1, int(round(n / mean_size)))
    cy, cx = _sample(rng, g, near, k)
    sigma = g.px(rng.uniform(0.3, 2.5, k))
    j = rng.integers(0, k, n)
    spread = sigma[j] * rng.lognormal(0, 0.4, n)
    return cy[j] + rng.normal(0, 1, n) * spread, cx[j] + rng.normal(0, 1, n) * spread


def _blotch(rng, g: _Sheet, D: np.ndarray, cy: float, cx: float, s: float):
    """A grey-black deposit of a few millimetres, darker inside, grainy."""
    radius = g.px(np.clip(rng.lognormal(math.log(1.0), 0.5), 0.4, 4.0))
    d, _, hv, step = _blob_field(rng, float(radius), rng.uniform(0.1, 0.35), rng.uniform(1, 1.8))
    inside = _sig(d / max(g.px(rng.uniform(0.08, 0.3)), 0.35, 0.5 * step))
    texture = np.clip(0.8 + 0.25 * _noise(rng, d.shape, max(0.4 * radius / step, 1.5)), 0.4, 1.2)
    core = 0.7 + 0.3 * _sig(d / max(0.3 * radius, 0.5) - 1)
    od = rng.uniform(0.25, 0.9) * (0.7 + 0.3 * s)
    dens = _grow(od * inside * core * texture, hv, step)
    dens *= 1 + 0.5 * (rng.random(dens.shape, dtype=np.float32) - 0.5)
    _add(D, int(cy) - hv, int(cx) - hv, dens)


def _tide_line(rng, g: _Sheet, D: np.ndarray, cy: float, cx: float, s: float):
    """A dried-solution outline: a sharp grey rim fading inwards, over a faint grey fill."""
    radius = float(g.px(rng.uniform(5, 35)))
    d, th, hv, step = _blob_field(rng, radius, rng.uniform(0.08, 0.25), rng.uniform(1, 1.6))
    rim_w = max(g.px(rng.uniform(0.3, 1.2)), 0.7, step)
    edge = max(g.px(0.1), 0.4, 0.5 * step)
    rim = np.exp(-np.maximum(d, 0) / rim_w) * _sig(d / edge)
    dens = (0.4 + 0.6 * s) * rng.uniform(0.08, 0.3) * rim * _ring(th, rng, 0.8)
    dens += s * rng.uniform(0.005, 0.04) * _sig(d / edge)
    _add(D, int(cy) - hv, int(cx) - hv, _grow(dens, hv, step))


def _mottle(rng, g: _Sheet) -> np.ndarray:
    """A grainy factor around 1: mercury greys paper unevenly, in fine grains and patches."""
    fine = _noise(rng, g.mask.shape, g.cells(0.5))
    patchy = _noise(rng, g.mask.shape, g.cells(2.5))
    return np.clip(0.6 + 0.27 * fine + 0.22 * patchy, 0.05, None)


def _mercury(rng: np.random.Generator, g: _Sheet, s: float):
    """Density maps of mercury at severity s: full-resolution, coarse, greying; and its tint."""
    st = STYLES[list(STYLES)[int(rng.integers(len(STYLES)))]]
    # neutral grey, bluish-silvery or brown-black
    tint = [(1.0, 1.0, 1.0), (1.12, 1.0, 0.88), (0.86, 1.0, 1.14)][int(rng.integers(3))]
    tint = np.array(tint) + rng.normal(0, 0.03, 3)
    k = tint / tint.mean()

    D = np.zeros((g.h, g.w), np.float32)
    near = _near_weight(g, rng.uniform(1.5, 4.0), on=rng.uniform(0.3, 0.8), floor=0.015)
    mean_n = (300 * s + 8000 * s**3) * g.area_ratio * st["mult"] * rng.lognormal(0, 0.25)
    n = max(1, int(rng.poisson(mean_n)))
    nb, nc, nn, na = rng.multinomial(n, st["split"])
    parts = [
        _brush_specks(rng, g, nb, near),
        _cluster_specks(rng, g, nc, near, st["cluster"]),
        _sample(rng, g, near, nn),
        _anywhere(rng, g, na),
    ]

    n_blotch = int(rng.poisson(30 * s**2.5 * g.area_ratio * st["mult"]))
    if n_blotch:
        by, bx = _sample(rng, g, _near_weight(g, 4.0, 0.8, 0.01), n_blotch)
        for y, x in zip(by, bx):
            _blotch(rng, g, D, y, x, s)
            m = int(rng.integers(3, 16))
            spread = g.px(rng.uniform(1, 4))
            parts.append((y + rng.normal(0, spread, m), x + rng.normal(0, spread, m)))

    ys = np.concatenate([p[0] for p in parts])
    xs = np.concatenate([p[1] for p in parts])
    y0, y1, x0, x1 = g.paper
    ok = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    ys, xs = ys[ok], xs[ok]
    r, amp, aspect, angle, power = _speck_attrs(rng, g, ys.size, s)
    _stamp(D, 0, 0, ys, xs, r, amp, aspect, angle, power, rng, grain=0.6)

    n_tide = min(8, int(rng.poisson(1.8 * s * st["tide"] * g.area_ratio)))
    if n_tide:
        ty, tx = _sample(rng, g, _near_weight(g, 10.0, 0.5, 0.05), n_tide)
        for y, x in zip(ty, tx):
            _tide_line(rng, g, D, y, x, s)

    shape = g.mask.shape
    Dc = np.zeros(shape, np.float32)
    G = None
    if g.mask.any() and rng.random() < min(1.0, 1.2 * s * st["halo"]):
        gap, wid = rng.uniform(0, 1.2), rng.uniform(1.5, 6.0)
        edge = rng.uniform(0.1, 0.35) if rng.random() < 0.6 else rng.uniform(0.6, 1.5)
        d = g.dist_mm
        band = _sig((d - gap) / 0.35) * _sig((gap + wid - d) / edge)
        band *= 0.6 + 0.4 * np.clip((d - gap) / wid, 0, 1)
        band[g.mask] = 0
        gate = np.clip(0.25 + 0.9 * _noise(rng, shape, g.cells(rng.uniform(12, 35))), 0, 1)
        Dc += rng.uniform(0.06, 0.22) * (0.3 + 0.7 * s) * band * gate * _mottle(rng, g)
    if rng.random() < min(1.0, max(0.0, s - 0.2) * 1.8 * st["cloud"]):
        n_ = sum(
            a * _noise(rng, shape, g.cells(mm)) for a, mm in ((0.55, 4), (0.35, 12), (0.25, 35))
        )
        n_ /= n_.std() + 1e-6
        thr = 1.3 - 1.6 * s + rng.normal(0, 0.2)
        cloud = np.maximum(n_ - thr, 0) ** 1.3 * _mottle(rng, g)
        prox = 0.3 + 0.7 * np.exp(-g.dist_mm / rng.uniform(8, 25))
        Dc += rng.uniform(0.03, 0.1) * (0.4 + 0.6 * s) * cloud * prox
    if rng.random() < max(0.0, s - 0.35) * 1.2:
        yy = (np.arange(shape[0], dtype=np.float32)[:, None] + 0.5) * g.cell_mm
        xx = (np.arange(shape[1], dtype=np.float32)[None, :] + 0.5) * g.cell_mm
        if g.mask.any():
            py, px = np.nonzero(g.mask)
            c0 = (py.mean() * g.cell_mm, px.mean() * g.cell_mm)
        else:
            c0 = (shape[0] * g.cell_mm / 2, shape[1] * g.cell_mm / 2)
        cy, cx = c0[0] + rng.normal(0, 40), c0[1] + rng.normal(0, 40)
        a, b, ang = rng.uniform(60, 200), rng.uniform(60, 200), rng.uniform(0, math.pi)
        u = ((yy - cy) * math.sin(ang) + (xx - cx) * math.cos(ang)) / a
        v = ((yy - cy) * math.cos(ang) - (xx - cx) * math.sin(ang)) / b
        ell = (np.sqrt(u * u + v * v) - 1) * min(a, b)
        Dc += rng.uniform(0.02, 0.07) * s * _sig(-ell / rng.uniform(15, 50))
    if g.mask.any() and rng.random() < min(1.0, 1.5 * s * st["tissue"]):
        mott = np.clip(0.6 + 0.4 * _noise(rng, shape, g.cells(2.0)), 0, 1.5)
        tissue = g.soft * mott
        Dc += rng.uniform(0.05, 0.4) * s**1.2 * tissue
        G = (rng.uniform(0.0, 0.5) * s * tissue).astype(np.float32)
    Dc *= g.on_paper
    return D, (Dc if Dc.any() else None), G, k


# ---------------------------------------------------------------------------------------------
# Look-alikes: each paints one mark, or one small group of marks, of its kind onto img in place.


def _anywhere(rng, g: _Sheet, n: int = 1):
    """n positions anywhere on the paper (px)."""
    y0, y1, x0, x1 = g.paper
    return rng.uniform(y0, y1, n), rng.uniform(x0, x1, n)


def _near_plant(rng, g: _Sheet, n: int = 1, scale_mm: float = 3.0):
    """n positions (px) mostly within a few scale_mm of the plant."""
    return _sample(rng, g, _near_weight(g, scale_mm, 0.5, 0.01), n)


def _put_dots(rng, g, img, cy, cx, r, amp, k, aspect=1.0, angle=0.0, power=2.0, grain=0.5):
    """Dots darkening img; scattered dots are drawn in small groups, each in its own patch."""
    cy, cx = np.atleast_1d(cy), np.atleast_1d(cx)
    n = cy.size
    r, amp, aspect, angle, power = (
        np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in (r, amp, aspect, angle, power)
    )
    tile = np.floor(cy / 256).astype(np.int64) * 1_000_000 + np.floor(cx / 256).astype(np.int64)
    for t in np.unique(tile):
        i = np.flatnonzero(tile == t)
        made = _dots_patch(g, rng, cy[i], cx[i], r[i], amp[i], aspect[i], angle[i], power[i], grain)
        if made is not None:
            _darken(img, made[0], made[1], made[2], k)


def _put_blob(
    rng, g, img, cy, cx, radius_mm, od, k, soft_mm=0.15, wobble=0.2, aspect=1.0, grain=0.0
):
    """An irregular soft spot, grainy where asked; spots below a pixel keep their density."""
    radius = float(g.px(radius_mm))
    if radius < 1.0:
        od, radius = od * radius**2, 1.0
    d, _, hv, step = _blob_field(rng, radius, wobble, aspect, margin=3 * g.px(soft_mm) + 2)
    dens = _grow(od * _sig(d / max(float(g.px(soft_mm)), 0.35, 0.5 * step)), hv, step)
    if grain:
        dens *= np.clip(1 + 0.5 * grain * _noise(rng, dens.shape, max(g.px(0.1), 1.0)), 0, None)
    _darken(img, int(cy) - hv, int(cx) - hv, dens, k)


def _line(rng, g, img, y, x, length_mm, width_mm, od, k, curl, heading=None):
    """A drawn line (pencil, hair): dots spaced densely along a path that turns by about
    `curl` radians per square root of a millimetre."""
    step = max(0.4, float(g.px(width_mm)) * 0.5)
    n = max(2, int(g.px(length_mm) / step))
    turns = rng.normal(0, curl * math.sqrt(step / g.ppm), n)
    th = (rng.uniform(0, 2 * math.pi) if heading is None else heading) + np.cumsum(turns)
    ys, xs = y + np.cumsum(np.sin(th) * step), x + np.cumsum(np.cos(th) * step)
    r = np.full(n, float(g.px(width_mm / 2)))
    # overlapping dots of radius r, `step` apart, sum to a line of density od across its middle
    amp = od * step / (math.sqrt(math.pi) * r) * rng.uniform(0.7, 1.0, n)
    _put_dots(rng, g, img, ys, xs, r, amp, k, grain=0.3)
    return ys, xs


def _foxing(rng, g, img):
    """Rust-brown spots, soft, often with a darker core, in a loose group."""
    cy, cx = _anywhere(rng, g)
    m = int(rng.integers(1, 9))
    spread = g.px(rng.uniform(3, 30))
    for y, x in zip(cy + rng.normal(0, spread, m), cx + rng.normal(0, spread, m)):
        radius = rng.uniform(0.3, 3.0)
        _put_blob(rng, g, img, y, x, radius, rng.uniform(0.08, 0.35), BROWN, radius * 0.5, 0.25)
        if rng.random() < 0.6:
            _put_blob(rng, g, img, y, x, radius * 0.35, rng.uniform(0.1, 0.3), RUST, 0.1, 0.3)


def _ink(rng, g, img):
    """Sharp black or blue-black dots of ink, sometimes a short pen stroke."""
    k = BLUE_BLACK if rng.random() < 0.5 else NEUTRAL
    m = int(rng.integers(1, 7))
    cy, cx = _anywhere(rng, g)
    spread = g.px(rng.uniform(1, 20))
    r = g.px(rng.uniform(0.15, 1.0, m))
    ys, xs = cy + rng.normal(0, spread, m), cx + rng.normal(0, spread, m)
    _put_dots(rng, g, img, ys, xs, r, rng.uniform(1.0, 2.2, m), k, power=6.0, grain=0.1)
    if rng.random() < 0.3:
        _line(rng, g, img, ys[0], xs[0], rng.uniform(2, 12), rng.uniform(0.2, 0.5), 1.5, k, 0.2)


def _pencil(rng, g, img):
    """One to three thin grey graphite strokes."""
    cy, cx = _anywhere(rng, g)
    graphite = (1.05, 1.0, 0.95)
    for _ in range(int(rng.integers(1, 4))):
        y, x = cy + rng.normal(0, g.px(5)), cx + rng.normal(0, g.px(5))
        length, width, od = rng.uniform(2, 25), rng.uniform(0.15, 0.35), rng.uniform(0.15, 0.45)
        _line(rng, g, img, y, x, length, width, od, graphite, rng.uniform(0.01, 0.15))


def _dust(rng, g, img):
    """Tiny grey-brown specks of dirt, over the sheet or in a drift."""
    m = int(rng.integers(10, 80))
    if rng.random() < 0.5:
        ys, xs = _anywhere(rng, g, m)
    else:
        cy, cx = _anywhere(rng, g)
        spread = g.px(rng.uniform(20, 80))
        ys, xs = cy + rng.normal(0, spread, m), cx + rng.normal(0, spread, m)
    r, od = g.px(rng.uniform(0.02, 0.18, m)), rng.uniform(0.2, 0.9, m)
    shape = {"aspect": np.exp(np.abs(rng.normal(0, 0.4, m))), "angle": rng.uniform(0, 3.2, m)}
    _put_dots(rng, g, img, ys, xs, r, od, DIRT, power=3.0, **shape)


def _fibre(rng, g, img):
    """Hairs and paper fibres: thin, dark, gently curved lines."""
    for _ in range(int(rng.integers(1, 5))):
        (y,), (x,) = _anywhere(rng, g) if rng.random() < 0.6 else _near_plant(rng, g)
        k = DIRT if rng.random() < 0.5 else NEUTRAL
        length, width, od = rng.uniform(3, 30), rng.uniform(0.03, 0.12), rng.uniform(0.5, 1.2)
        _line(rng, g, img, y, x, length, width, od, k, rng.uniform(0.05, 0.25))


def _frass(rng, g, img):
    """Insect droppings: dark brown elongated pellets in a cluster beside the plant."""
    m = int(rng.integers(5, 40))
    (cy,), (cx,) = _near_plant(rng, g)
    spread = g.px(rng.uniform(2, 10))
    ys, xs = cy + rng.normal(0, spread, m), cx + rng.normal(0, spread, m)
    r, od = g.px(rng.uniform(0.1, 0.3, m)), rng.uniform(0.9, 1.6, m)
    shape = {"aspect": rng.uniform(1.4, 2.0, m), "angle": rng.uniform(0, math.pi, m)}
    _put_dots(rng, g, img, ys, xs, r, od, (0.8, 1.0, 1.25), power=3.0, grain=0.3, **shape)


def _glue(rng, g, img):
    """A yellowish, glossy smear with a slightly browner rim, where a strap was glued."""
    (cy,), (cx,) = _near_plant(rng, g, scale_mm=2.0)
    radius = float(g.px(rng.uniform(2, 10)))
    d, th, hv, step = _blob_field(rng, radius, 0.2, rng.uniform(1, 2.5))
    inside = _sig(d / max(g.px(0.3), 0.35, 0.5 * step))
    rim = np.exp(-np.maximum(d, 0) / max(g.px(0.4), 0.6, step)) * inside
    dens = _grow(rng.uniform(0.04, 0.14) * inside + rng.uniform(0.02, 0.08) * rim, hv, step)
    shine = _grow(rng.uniform(0, 10) * inside * np.clip(_ring(th, rng, 1.0) - 0.5, 0, 1), hv, step)
    _darken(img, int(cy) - hv, int(cx) - hv, dens, YELLOW, add=shine)


def _water(rng, g, img):
    """A water stain: a brown tide line around a faintly brown patch."""
    (cy,), (cx,) = _anywhere(rng, g)
    radius = float(g.px(rng.uniform(10, 45)))
    d, th, hv, step = _blob_field(rng, radius, rng.uniform(0.1, 0.3), rng.uniform(1, 1.5))
    edge = max(g.px(0.15), 0.4, 0.5 * step)
    rim_w = max(g.px(rng.uniform(0.5, 2.0)), 0.7, step)
    rim = np.exp(-np.maximum(d, 0) / rim_w) * _sig(d / edge)
    dens = rng.uniform(0.08, 0.25) * rim * _ring(th, rng, 0.7)
    dens += rng.uniform(0.01, 0.04) * _sig(d / edge)
    _darken(img, int(cy) - hv, int(cx) - hv, _grow(dens, hv, step), BROWN)


def _mould(rng, g, img):
    """Fuzzy greenish-black or grey colonies with scattered spores."""
    k = GREEN_BLACK if rng.random() < 0.6 else NEUTRAL
    cy, cx = _anywhere(rng, g) if rng.random() < 0.5 else _near_plant(rng, g)
    for _ in range(int(rng.integers(1, 5))):
        y, x = cy[0] + rng.normal(0, g.px(6)), cx[0] + rng.normal(0, g.px(6))
        radius = float(g.px(rng.uniform(0.5, 3.0)))
        if radius < 1.0:
            continue
        d, _, hv, step = _blob_field(rng, radius, 0.3, margin=radius)
        fuzz = np.clip(1 + 0.6 * _noise(rng, d.shape, max(g.px(0.15) / step, 1.0)), 0, 2)
        dens = rng.uniform(0.3, 1.0) * _sig(d / (0.35 * radius)) * fuzz
        _darken(img, int(y) - hv, int(x) - hv, _grow(dens, hv, step), k)
        m = int(rng.integers(5, 30))
        ys, xs = y + rng.normal(0, radius * 1.2, m), x + rng.normal(0, radius * 1.2, m)
        _put_dots(
            rng, g, img, ys, xs, g.px(rng.uniform(0.05, 0.15, m)), rng.uniform(0.3, 0.8, m), k
        )


def _pin_rust(rng, g, img):
    """An orange-brown rust halo around the dark hole of a pin."""
    (cy,), (cx,) = _near_plant(rng, g, scale_mm=5.0)
    halo, od = rng.uniform(1, 4), rng.uniform(0.15, 0.5)
    _put_blob(rng, g, img, cy, cx, halo, od, RUST, rng.uniform(0.3, 1.0), 0.25)
    hole, od = rng.uniform(0.2, 0.5), rng.uniform(0.7, 1.3)
    _put_blob(rng, g, img, cy, cx, hole, od, (0.7, 1.0, 1.3), 0.05, 0.1)


def _soil(rng, g, img):
    """Crumbs of earth around the lowest point of the plant (its roots)."""
    if g.mask.any():
        bottom = np.nonzero(g.mask.any(axis=1))[0][-1]
        cy, cx = (bottom + 0.5) * g.f, (np.nonzero(g.mask[bottom])[0].mean() + 0.5) * g.f
    else:
        (cy,), (cx,) = _anywhere(rng, g)
    spread = g.px(rng.uniform(2, 8))
    base = np.array([0.6, 0.95, 1.45])
    for _ in range(int(rng.integers(3, 25))):
        y, x = cy + rng.normal(0, spread), cx + rng.normal(0, spread)
        k = base + rng.normal(0, 0.1, 3)
        size, od = rng.uniform(0.15, 1.0), rng.uniform(0.4, 1.2)
        _put_blob(rng, g, img, y, x, size, od, k / k.mean(), 0.05, 0.2, rng.uniform(1, 1.6), 0.8)


def _shadow(rng, g, img):
    """A soft one-sided shadow cast by the thick parts of the plant."""
    if not g.mask.any():
        return
    ang = rng.uniform(0, 2 * math.pi)
    off = rng.uniform(0.5, 3.0)
    src = g.soft * np.clip(0.5 + 0.7 * _noise(rng, g.mask.shape, g.cells(20)), 0, 1)
    shifted = ndimage.shift(
        src, (g.cells(off * math.sin(ang)), g.cells(off * math.cos(ang))), order=1, prefilter=False
    )
    blur = ndimage.gaussian_filter(shifted, g.cells(rng.uniform(0.4, 2.0)))
    sh = rng.uniform(0.03, 0.12) * blur * (1 - np.minimum(g.soft * 2, 1))
    rows, cols = np.nonzero(sh > 3e-3)
    if rows.size == 0:
        return
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    y0, y1 = r0 * g.f, min(r1 * g.f, g.h)
    x0, x1 = c0 * g.f, min(c1 * g.f, g.w)
    full = Image.fromarray(sh.astype(np.float32), "F").resize(
        (x1 - x0, y1 - y0), Image.BILINEAR, box=(x0 / g.f, y0 / g.f, x1 / g.f, y1 / g.f)
    )
    _darken(img, y0, x0, np.asarray(full, np.float32))


LOOKALIKES = {
    "foxing": _foxing,
    "ink": _ink,
    "pencil": _pencil,
    "dust": _dust,
    "fibre": _fibre,
    "frass": _frass,
    "glue": _glue,
    "water": _water,
    "mould": _mould,
    "pin_rust": _pin_rust,
    "soil": _soil,
    "shadow": _shadow,
}


# ---------------------------------------------------------------------------------------------
# Composition and rescan


def _upsample(g: _Sheet, m: np.ndarray | None) -> np.ndarray | None:
    if m is None:
        return None
    im = Image.fromarray(m.astype(np.float32), "F")
    box = (0.0, 0.0, g.w / g.f, g.h / g.f)
    return np.asarray(im.resize((g.w, g.h), Image.BILINEAR, box=box), np.float32)


def _compose(rng, base, D, up, grey, k, noise_sigma: float) -> np.ndarray:
    """base * exp(-density * k), greyed where asked, plus sensor noise; strip by strip."""
    h, w = base.shape[:2]
    out = np.empty_like(base)
    kk = np.asarray(k, np.float32) - 1
    step = max(16, (1 << 20) // w)
    amp = np.float32(noise_sigma * math.sqrt(12))
    for y0 in range(0, h, step):
        y1 = min(h, y0 + step)
        x = base[y0:y1].astype(np.float32)
        dens = None if D is None else D[y0:y1]
        if up is not None:
            dens = up[y0:y1] if dens is None else dens + up[y0:y1]
        if grey is not None:
            lum = (x @ LUMA)[..., None]
            x -= (x - lum) * grey[y0:y1, :, None]
        if dens is not None:
            t = np.exp(-dens)
            for c in range(3):
                u = dens * kk[c]  # exp(-dens * k) = t * exp(-u), to second order in u
                x[..., c] *= t * (1 - u + 0.5 * u * u)
        x += (rng.random(x.shape, dtype=np.float32) - 0.5) * amp
        np.clip(x + 0.5, 0, 255, out=x)
        out[y0:y1] = x.astype(np.uint8)
    return out


def _rescan(rng, img: np.ndarray) -> np.ndarray:
    """A mild optical blur, then a JPEG re-encode at a random quality."""
    sigma = rng.uniform(0.25, 0.7)
    w1, w2 = math.exp(-1 / (2 * sigma**2)), math.exp(-1 / sigma**2)
    kern = [w2, w1, w2, w1, 1.0, w1, w2, w1, w2]
    im = Image.fromarray(img).filter(ImageFilter.Kernel((3, 3), kern, scale=sum(kern)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(72, 97)), subsampling=int(rng.choice([0, 2])))
    buf.seek(0)
    with Image.open(buf) as dec:
        return np.array(dec.convert("RGB"))


def paint(
    rng: np.random.Generator,
    sheet: np.ndarray,
    severity: float | None,
    *,
    px_per_mm: float | None = None,
    n_lookalikes: int | None = None,
) -> np.ndarray:
    """Paint mercury damage at `severity` (None: none) and look-alikes on a clean RGB sheet."""
    return _paint(rng, sheet, severity, px_per_mm, n_lookalikes)[0]


def _paint(rng, sheet, severity, px_per_mm, n_lookalikes, keep_density=False):
    """paint(), and where keep_density the density of the mercury's specks, blotches and rims."""
    sheet = np.asarray(sheet)
    if sheet.dtype != np.uint8 or sheet.ndim != 3 or sheet.shape[2] != 3:
        raise ValueError(f"sheet must be uint8 (H, W, 3), got {sheet.dtype} {sheet.shape}")
    if severity is not None:
        severity = float(severity)
        if not (math.isfinite(severity) and 0.0 <= severity <= 1.0):
            raise ValueError(f"severity must be in [0, 1] or None, got {severity}")
    if px_per_mm is None:
        px_per_mm = max(sheet.shape[:2]) / SHEET_LONG_MM
    if not (math.isfinite(px_per_mm) and px_per_mm > 0):
        raise ValueError(f"px_per_mm must be positive, got {px_per_mm}")
    if n_lookalikes is None:
        n_lookalikes = int(rng.integers(0, 5))
    if n_lookalikes < 0:
        raise ValueError(f"n_lookalikes must be >= 0, got {n_lookalikes}")

    base = sheet.copy()
    D = up = grey = None
    k = NEUTRAL
    if severity is not None or n_lookalikes:
        g = _analyse(sheet, float(px_per_mm))
        names = list(LOOKALIKES)
        chosen = rng.choice(len(names), n_lookalikes, replace=n_lookalikes > len(names))
        for i in chosen:
            LOOKALIKES[names[i]](rng, g, base)
        if severity is not None:
            D, Dc, G, k = _mercury(rng, g, severity)
            up, grey = _upsample(g, Dc), _upsample(g, G)
    out = _rescan(rng, _compose(rng, base, D, up, grey, k, rng.uniform(0.8, 3.0)))
    return out, (D if keep_density else None)


# ---------------------------------------------------------------------------------------------
# Contact sheet


def _default_sheet() -> Path:
    env = os.environ.get("HERBSCAN_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    folder = root / "unlabeled-sheets"
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not found:
        raise SystemExit(f"no sheet images under {folder}; pass --sheet")
    return found[0]


def _crop(img: np.ndarray, cy: int, cx: int, half: int, size: int) -> Image.Image:
    h, w = img.shape[:2]
    y0, x0 = (
        min(max(cy - half, 0), max(h - 2 * half, 0)),
        min(max(cx - half, 0), max(w - 2 * half, 0)),
    )
    sub = Image.fromarray(img[y0 : y0 + 2 * half, x0 : x0 + 2 * half])
    method = Image.NEAREST if sub.width < size else Image.LANCZOS
    return sub.resize((size, size), method)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sheet", type=Path, default=None, help="a clean sheet image")
    ap.add_argument("--out", type=Path, default=Path("contact.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lookalikes", type=int, default=None, help="look-alikes per panel")
    ap.add_argument("--px-per-mm", type=float, default=None)
    ap.add_argument("--crop-mm", type=float, default=30.0, help="side of the zoomed crops")
    args = ap.parse_args(argv)

    path = args.sheet or _default_sheet()
    with Image.open(path) as im:
        sheet = np.array(im.convert("RGB"))
    ppm = args.px_per_mm or max(sheet.shape[:2]) / SHEET_LONG_MM
    g = _analyse(sheet, ppm)
    half = max(8, int(args.crop_mm * ppm / 2))
    win = max(1, int(round(g.cells(args.crop_mm))))
    frac = ndimage.uniform_filter(g.mask.astype(np.float32), win)
    edge = (g.dist_mm > 0) & (g.dist_mm < 2)
    if edge.any():
        iy, ix = np.unravel_index(np.argmin(np.where(edge, np.abs(frac - 0.25), 9)), frac.shape)
    else:
        iy, ix = frac.shape[0] // 2, frac.shape[1] // 2
    fixed = (int((iy + 0.5) * g.f), int((ix + 0.5) * g.f))

    tile = 300
    levels = [None, 0.05, 0.15, 0.5, 0.9]
    th = int(round(tile * sheet.shape[0] / sheet.shape[1]))
    canvas = Image.new("RGB", (tile * len(levels), 20 + th + 2 * tile + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for i, sev in enumerate(levels):
        rng = np.random.default_rng([args.seed, i])
        out, dens = _paint(rng, sheet, sev, ppm, args.lookalikes, keep_density=True)
        strongest = fixed
        if dens is not None:
            small = np.asarray(Image.fromarray(dens, "F").reduce(g.f), np.float32)
            cy, cx = np.unravel_index(
                np.argmax(ndimage.uniform_filter(small, max(1, win // 3))), small.shape
            )
            strongest = (int((cy + 0.5) * g.f), int((cx + 0.5) * g.f))
        thumb = Image.fromarray(out).resize((tile, th), Image.LANCZOS)
        td = ImageDraw.Draw(thumb)
        scale = tile / sheet.shape[1]
        for (yy, xx), col in ((fixed, "red"), (strongest, "blue")):
            td.rectangle(
                [
                    (xx - half) * scale,
                    (yy - half) * scale,
                    (xx + half) * scale,
                    (yy + half) * scale,
                ],
                outline=col,
            )
        x0 = i * tile
        canvas.paste(thumb, (x0, 20))
        canvas.paste(_crop(out, *fixed, half, tile - 4), (x0 + 2, 22 + th))
        canvas.paste(_crop(out, *strongest, half, tile - 4), (x0 + 2, 22 + th + tile))
        draw.text((x0 + 4, 4), "clean" if sev is None else f"severity {sev}", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"{path} -> {args.out} (red: a fixed crop near the plant, blue: the densest specks)")


if __name__ == "__main__":
    main()
