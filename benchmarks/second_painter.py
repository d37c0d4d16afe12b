"""A second, independent painter of mercuric-chloride stains on herbarium sheets.

herbscan's stain detector is trained on sheets painted by herbscan's own stain generator. A
detector can learn the habits of the generator that trained it (its shapes, size laws, colours,
placement rules) instead of the stain. This module paints mercury damage, and marks that are *not*
mercury, with different habits: it was written from a description of real damage only, without
reading herbscan's generator. A detector that holds up on these sheets has learnt the stain; one
that only holds up on its own generator's sheets has learnt the generator.

Mercury is painted as an optical density that darkens (multiplies) the sheet, neutral grey to
slightly bluish or brownish black: speckle sprays along brush strokes, speckle clusters, scattered
specks, small blotches, diffuse ragged clouds (often speckled), grey tide-line patches, halos that
follow the plant's outline a few mm out, outlines of a plant part that has since fallen off, a grey
cast over part of the sheet, and greying of the plant tissue. Most of it lands on and near the
plant, found roughly as what differs from the paper colour. Look-alikes are foxing, ink dots and
blots, pencil strokes, dust and fibres, insect frass, soil crumbs and seeds, a water stain with a
brown tide line, glue, and soft shadows. Every size is drawn in millimetres (the long side of a
sheet is 420 mm), so a severity means the same at any resolution. A light rescan (blur, noise,
JPEG) comes last.

    python benchmarks/second_painter.py --out /tmp/contact.png [--sheet PATH] [--seed N]

writes a contact sheet (clean, severity 0.05, 0.15, 0.5, 0.9, each with a zoomed crop) for a
person to judge realism.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage as ndi

SHEET_LONG_MM = 420.0
DEFAULT_SHEETS = Path("/work/shared/data/unlabeled-sheets")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

# Relative optical density per RGB channel of each kind of mark (multiplied by its density).
_FOXING = np.array([0.25, 0.65, 1.35], np.float32)
_BLUE_INK = np.array([1.45, 1.05, 0.3], np.float32)
_BLACK_INK = np.array([1.0, 1.0, 0.92], np.float32)
_GALL_INK = np.array([0.85, 1.0, 1.25], np.float32)
_GRAPHITE = np.array([1.0, 1.0, 0.96], np.float32)
_DIRT = np.array([0.8, 1.0, 1.3], np.float32)
_WATER = np.array([0.45, 0.8, 1.5], np.float32)
_GLUE = np.array([0.35, 0.7, 1.45], np.float32)
_SHADOW = np.array([1.04, 1.0, 0.93], np.float32)


@dataclass
class _Sheet:
    """What the painter knows about a sheet, mostly on a coarse grid of ~0.5 mm cells."""

    h: int
    w: int
    ppm: float  # pixels per mm
    f: int  # grid cell side in pixels
    gh: int
    gw: int
    plant: np.ndarray  # bool, grid: darker or more coloured than the paper
    dist_mm: np.ndarray  # grid: distance to the plant in mm
    on_sheet: np.ndarray  # bool, grid: not scanner background
    has_plant: bool

    @property
    def cell_mm(self) -> float:
        return self.f / self.ppm


# --------------------------------------------------------------------------------------------
# Small helpers


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth Gaussian noise with unit spread and correlation length `sigma` (in cells)."""
    sigma = max(float(sigma), 0.5)
    step = max(1, int(sigma / 3))
    if step == 1:
        n = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    else:
        cs = (shape[0] // step + 3, shape[1] // step + 3)
        c = ndi.gaussian_filter(rng.standard_normal(cs, dtype=np.float32), sigma / step)
        box = (1, 1, cs[1] - 2, cs[0] - 2)
        n = np.asarray(Image.fromarray(c).resize(shape[::-1], Image.BILINEAR, box=box))
    s = n.std()
    return (n - n.mean()) / s if s > 0 else n


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    """Bilinear resize of a float32 map."""
    return np.array(
        Image.fromarray(np.ascontiguousarray(a, np.float32)).resize((w, h), Image.BILINEAR)
    )


def _support(g: np.ndarray, sh: _Sheet, eps: float = 1e-4):
    """Full-resolution box (y0, y1, x0, x1) around where a grid map is non-zero, or None."""
    rows = np.flatnonzero(np.abs(g).max(1) > eps)
    if not rows.size:
        return None
    cols = np.flatnonzero(np.abs(g).max(0) > eps)
    y0, y1 = max(rows[0] - 1, 0) * sh.f, min((rows[-1] + 2) * sh.f, sh.h)
    x0, x1 = max(cols[0] - 1, 0) * sh.f, min((cols[-1] + 2) * sh.f, sh.w)
    return y0, y1, x0, x1


def _bilinear(g: np.ndarray, sh: _Sheet, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """A grid map bilinearly upsampled to full resolution, pixels [y0:y1, x0:x1] of it."""

    def axis(a: int, b: int, n: int):
        t = (np.arange(a, b, dtype=np.float32) + 0.5) / sh.f - 0.5
        i0 = np.clip(np.floor(t).astype(int), 0, n - 1)
        return i0, np.minimum(i0 + 1, n - 1), np.clip(t - i0, 0, 1).astype(np.float32)[:, None]

    i0, i1, fx = axis(x0, x1, sh.gw)
    j0, j1, fy = axis(y0, y1, sh.gh)
    lo = j0[0]
    rows = g[lo : j1[-1] + 1].T  # columns first, so the x interpolation is over rows
    a = (rows[i0] * (1 - fx) + rows[i1] * fx).T
    out = a[j0 - lo]
    out *= 1 - fy
    out += a[j1 - lo] * fy
    return out


def _row_chunks(y0: int, y1: int, n: int = 256):
    """Slices of at most n rows covering [y0, y1): full-resolution work in cache-sized bites."""
    return [slice(a, min(a + n, y1)) for a in range(y0, y1, n)]


def _cover_to_od(cov: np.ndarray, od: float | np.ndarray) -> np.ndarray:
    """Optical density of a pixel a mark of density `od` covers by the fraction `cov`."""
    return -np.log1p(-np.clip(cov, 0, 1) * (1 - np.exp(-od)))


def _add_patch(acc: np.ndarray, x0: int, y0: int, patch: np.ndarray) -> None:
    """acc[y0:, x0:] += patch, clipped to acc (acc may be 2-D or 3-D, patch matches its ndim)."""
    h, w = acc.shape[:2]
    ph, pw = patch.shape[:2]
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + ph, h), min(x0 + pw, w)
    if ya < yb and xa < xb:
        acc[ya:yb, xa:xb] += patch[ya - y0 : yb - y0, xa - x0 : xb - x0]


def _apply_od(img: np.ndarray, x0: int, y0: int, od: np.ndarray, k: np.ndarray) -> None:
    """Darken img[y0:, x0:] (float, H x W x 3) by the density map `od` with channel weights k."""
    h, w = img.shape[:2]
    ph, pw = od.shape
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + ph, h), min(x0 + pw, w)
    if ya < yb and xa < xb:
        sub = od[ya - y0 : yb - y0, xa - x0 : xb - x0, None]
        img[ya:yb, xa:xb] *= np.exp(-sub * k)


def _blob(
    rng: np.random.Generator,
    r: float,
    rough: float = 0.3,
    aspect: float = 1.0,
    angle: float = 0.0,
    pad: float = 1.6,
) -> np.ndarray:
    """Signed distance (pixels, > 0 inside) of an irregular blob of mean radius r px."""
    half = int(np.ceil(r * pad * max(aspect, 1.0) + 3))
    k = np.arange(-half, half + 1, dtype=np.float32) + np.float32(rng.uniform(-0.5, 0.5))
    y, x = k[:, None], k[None, :]
    c, s = np.cos(angle), np.sin(angle)
    u = (x * c + y * s) / np.sqrt(aspect)
    v = (-x * s + y * c) * np.sqrt(aspect)
    rho = np.hypot(u, v) / r
    shape = (2 * half + 1, 2 * half + 1)
    field = 1 - rho + rough * _noise(rng, shape, r * 0.45)
    field += 0.4 * rough * _noise(rng, shape, max(0.8, r * 0.12))
    return field * r


def _curve(
    rng: np.random.Generator,
    x0: float,
    y0: float,
    length: float,
    bend: float,
    step: float = 0.5,
    heading: float | None = None,
) -> np.ndarray:
    """Points (n x 2, x y) every `step` px along a smooth random curve of `length` px."""
    n = max(4, int(length / step))
    th0 = rng.uniform(0, 2 * np.pi) if heading is None else heading
    turn = np.cumsum(ndi.gaussian_filter1d(rng.standard_normal(n), n / 6, mode="nearest"))
    turn = turn / (np.abs(turn).max() + 1e-9) * bend
    th = th0 + turn
    pts = np.stack([np.cos(th), np.sin(th)], 1) * step
    return np.cumsum(pts, 0) + [x0, y0]


def _line_cover(pts: np.ndarray, width: float) -> tuple[np.ndarray, int, int]:
    """Anti-aliased coverage of a line of `width` px through dense points; (patch, x0, y0)."""
    sigma = max(0.55, width / 2.5)
    pad = int(np.ceil(3 * sigma + 2))
    x0 = int(np.floor(pts[:, 0].min())) - pad
    y0 = int(np.floor(pts[:, 1].min())) - pad
    w = int(np.ceil(pts[:, 0].max())) + pad - x0 + 1
    h = int(np.ceil(pts[:, 1].max())) + pad - y0 + 1
    acc = np.zeros((h, w), np.float32)
    seg = np.hypot(*np.diff(pts, axis=0).T)
    mass = np.r_[seg, seg[-1:]] * width
    px, py = pts[:, 0] - x0 - 0.5, pts[:, 1] - y0 - 0.5
    ix, iy = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - ix, py - iy
    for dy, dx, wt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(acc, (iy + dy, ix + dx), mass * wt)
    return np.minimum(ndi.gaussian_filter(acc, sigma), 1.0), x0, y0


def _specks(
    acc: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    r: np.ndarray,
    od: np.ndarray,
    rng: np.random.Generator,
    *,
    rough: float = 0.18,
    max_aspect: float = 1.7,
    soft: float = 0.8,
    core: float = 0.5,
) -> None:
    """Add irregular, anti-aliased specks to the density map `acc` in place.

    xs, ys: centres in acc's pixels; r: mean radii in px (sub-pixel is fine: a speck smaller
    than a pixel darkens it partly); od: optical density of each speck at its darkest.
    """
    n = len(xs)
    if n == 0:
        return
    xs, ys = np.asarray(xs, np.float32), np.asarray(ys, np.float32)
    r = np.maximum(np.asarray(r, np.float32), 0.05)
    od = np.asarray(od, np.float32)
    asp = np.sqrt(1 + (max_aspect - 1) * rng.random(n, dtype=np.float32))  # sqrt of aspect
    ang = rng.uniform(0, np.pi, n).astype(np.float32)
    amp = np.abs(rng.normal(0, rough, (n, 3)) * [1.0, 0.7, 0.3]).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 3)).astype(np.float32)
    darkcore = rng.uniform(0, core, n).astype(np.float32)
    halves = np.ceil(np.maximum(r * asp * (1 + amp.sum(1)) + 1.5, 2.0)).astype(int)
    h_acc, w_acc = acc.shape
    for hv in np.unique(halves):
        sel = np.flatnonzero(halves == hv)
        k = np.arange(-hv, hv + 1, dtype=np.float32)
        ix0 = np.floor(xs[sel]).astype(int)
        iy0 = np.floor(ys[sel]).astype(int)
        dx = (ix0 + 0.5 - xs[sel])[:, None, None] + k[None, None, :]
        dy = (iy0 + 0.5 - ys[sel])[:, None, None] + k[None, :, None]
        c = np.cos(ang[sel])[:, None, None]
        s = np.sin(ang[sel])[:, None, None]
        a = asp[sel][:, None, None]
        u = (dx * c + dy * s) / a
        v = (-dx * s + dy * c) * a
        rho = np.hypot(u, v)
        th = np.arctan2(v, u)
        rs = r[sel][:, None, None]
        am, ph = amp[sel], phase[sel]
        rad = rs * (
            1
            + am[:, 0, None, None] * np.cos(2 * th + ph[:, 0, None, None])
            + am[:, 1, None, None] * np.cos(3 * th + ph[:, 1, None, None])
            + am[:, 2, None, None] * np.cos(5 * th + ph[:, 2, None, None])
        )
        disc = np.clip((rad - rho) / soft + 0.5, 0, 1)
        gauss = np.minimum(rs * rs / 0.6 * np.exp(-(dx * dx + dy * dy) / 0.6), 1)
        t = np.clip((rs - 0.5) / 0.6, 0, 1)
        cov = t * disc + (1 - t) * gauss
        shade = 1 - darkcore[sel][:, None, None] * np.clip(rho / rad, 0, 1) ** 2
        dens = _cover_to_od(cov, od[sel][:, None, None] * shade).astype(np.float32)
        for j in range(len(sel)):
            y0, x0 = iy0[j] - hv, ix0[j] - hv
            if min(x0, y0) >= 0 and y0 + 2 * hv < h_acc and x0 + 2 * hv < w_acc:
                acc[y0 : y0 + 2 * hv + 1, x0 : x0 + 2 * hv + 1] += dens[j]
            else:
                _add_patch(acc, x0, y0, dens[j])


def _speck_patch(rng, xs, ys, r, od, pad: int, **kw) -> tuple[np.ndarray, int, int]:
    """A density map just large enough for specks at (xs, ys), with the specks added; and its
    origin (x0, y0) in the sheet."""
    x0, y0 = int(xs.min()) - pad, int(ys.min()) - pad
    acc = np.zeros((int(ys.max()) - y0 + pad, int(xs.max()) - x0 + pad), np.float32)
    _specks(acc, xs - x0, ys - y0, r, od, rng, **kw)
    return acc, x0, y0


def _speck_sizes(rng: np.random.Generator, n: int, median_mm: float, ppm: float) -> np.ndarray:
    """Speck radii in px, diameters log-normal around `median_mm`, 0.08-1.0 mm."""
    d = np.exp(rng.normal(np.log(median_mm), 0.5, n))
    return np.clip(d, 0.08, 1.0) / 2 * ppm


# --------------------------------------------------------------------------------------------
# Where is the plant?


def _analyse(sheet: np.ndarray, ppm: float) -> _Sheet:
    """Estimate the paper colour and a rough plant mask on a grid of ~0.5 mm cells."""
    h, w = sheet.shape[:2]
    f = max(1, int(round(ppm * 0.5)))
    gw, gh = -(-w // f), -(-h // f)
    small = np.asarray(Image.fromarray(sheet).resize((gw, gh), Image.BOX), np.float32)
    lum = small @ _LUMA

    # Paper: the commonest colour among the brighter half of the sheet, then its spread.
    sub, sub_l = small[::3, ::3].reshape(-1, 3), lum[::3, ::3].ravel()
    bright = sub[sub_l >= np.percentile(sub_l, 40)]
    q = (bright // 8).astype(np.int32)
    mode = np.bincount(q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2]).argmax()
    mode_rgb = (np.array([mode // 1024, mode // 32 % 32, mode % 32]) + 0.5) * 8
    near = bright[np.abs(bright - mode_rgb).max(1) < 24]
    paper = np.median(near, 0) if len(near) else mode_rgb
    tol = (
        float(np.clip(4 * np.median(np.abs(near - paper).max(1)) + 12, 22, 45)) if len(near) else 30
    )
    paper_l = float(paper @ _LUMA)
    diff = np.abs(small - paper).max(2)

    # The sheet: the bounding box of the large paper-coloured regions (scans are upright), so
    # that scanner background, colour bars and margins with logos get no stains.
    lab, n = ndi.label(ndi.binary_opening(diff <= tol, iterations=2))
    on_sheet = np.ones_like(diff, bool)
    if n:
        sizes = ndi.sum_labels(lab > 0, lab, np.arange(1, n + 1))
        big = np.flatnonzero(sizes > 0.01 * lab.size)
        if sizes[big].sum() > 0.2 * lab.size:
            boxes = [ndi.find_objects(lab)[i] for i in big]
            on_sheet[:] = False
            on_sheet[
                min(b[0].start for b in boxes) : max(b[0].stop for b in boxes),
                min(b[1].start for b in boxes) : max(b[1].stop for b in boxes),
            ] = True

    plant = ((lum < paper_l - max(35.0, tol)) | (diff > tol + 10)) & on_sheet
    plant = ndi.binary_opening(plant)
    # Drop solid rectangles (colour charts, barcodes, labels with a frame or a dark fill).
    filled = ndi.binary_fill_holes(plant)
    lab, n = ndi.label(filled)
    if n:
        areas = ndi.sum_labels(filled, lab, np.arange(1, n + 1))
        min_area = (8 / (f / ppm)) ** 2
        for i, sl in enumerate(ndi.find_objects(lab)):
            box = (sl[0].stop - sl[0].start) * (sl[1].stop - sl[1].start)
            if areas[i] > min_area and areas[i] > 0.8 * box:
                plant[sl][lab[sl] == i + 1] = False
    has_plant = plant.sum() > 0.002 * plant.size
    if has_plant:
        dist = ndi.distance_transform_edt(~plant).astype(np.float32) * (f / ppm)
    else:
        dist = np.full(plant.shape, 1e3, np.float32)
    return _Sheet(h, w, ppm, f, gh, gw, plant, dist, on_sheet, bool(has_plant))


def _placement(rng: np.random.Generator, sh: _Sheet, reach_mm: float, open_frac: float):
    """Where marks go (cumulative grid weights): near the plant, some on open paper, patchily."""
    # Near the plant, less on it (the plant itself is darker, so marks there show less).
    near = np.exp(-sh.dist_mm / reach_mm) * sh.on_sheet * np.where(sh.plant, 0.35, 1.0)
    flat = sh.on_sheet.astype(np.float32)
    wgt = (1 - open_frac) * near / max(near.sum(), 1e-9) + open_frac * flat / max(flat.sum(), 1)
    patchy = np.exp(rng.uniform(0.3, 1.2) * _noise(rng, wgt.shape, 40 / sh.cell_mm))
    return np.cumsum(wgt * patchy, dtype=np.float64)


def _sample(rng: np.random.Generator, sh: _Sheet, wgt: np.ndarray, n: int):
    """n points (x, y in full-resolution px) drawn from grid weights (or their cumsum, 1-D)."""
    cdf = wgt if wgt.ndim == 1 else np.cumsum(wgt, dtype=np.float64)
    idx = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), cdf.size - 1)
    gy, gx = np.divmod(idx, sh.gw)
    xs = np.minimum((gx + rng.random(n)) * sh.f, sh.w - 1e-3)
    ys = np.minimum((gy + rng.random(n)) * sh.f, sh.h - 1e-3)
    return xs, ys


def _window(sh: _Sheet, gx: float, gy: float, half: float):
    """Grid slices around (gx, gy) and local cell coordinates relative to the centre."""
    half = int(np.ceil(half))
    y0, y1 = max(0, int(gy) - half), min(sh.gh, int(gy) + half + 1)
    x0, x1 = max(0, int(gx) - half), min(sh.gw, int(gx) + half + 1)
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - gy
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - gx
    return (slice(y0, y1), slice(x0, x1)), xx, yy


# --------------------------------------------------------------------------------------------
# Mercury


def _tint(rng: np.random.Generator) -> np.ndarray:
    """Channel weights of the sheet's mercury: neutral, a little bluish or a little brownish."""
    t = rng.uniform(-1, 1)
    v = [0.05, 0.02, -0.08] if t < 0 else [-0.06, 0.0, 0.1]
    k = 1 + abs(t) * np.array(v, np.float32)
    return (k / k.mean()).astype(np.float32)


def _cloud(rng, sh: _Sheet, dg: np.ndarray, place: np.ndarray, s: float) -> np.ndarray:
    """A diffuse, ragged, mottled grey cloud; returns its grid mask (for speckling it)."""
    gx, gy = (v / sh.f for v in _sample(rng, sh, place, 1))
    rad = rng.uniform(4, 10 + 35 * s) / sh.cell_mm
    sl, xx, yy = _window(sh, gx[0], gy[0], 2.2 * rad)
    shape = (yy.shape[0], xx.shape[1])
    aspect = rng.uniform(1, 2.5)
    ang = rng.uniform(0, np.pi)
    u = (xx * np.cos(ang) + yy * np.sin(ang)) / np.sqrt(aspect)
    v = (-xx * np.sin(ang) + yy * np.cos(ang)) * np.sqrt(aspect)
    field = 1 - np.hypot(u, v) / rad + 0.5 * _noise(rng, shape, rad / 3)
    field += 0.25 * _noise(rng, shape, max(1.0, rad / 8))
    field += 0.1 * _noise(rng, shape, 1.0)
    m = np.clip(field / rng.uniform(0.25, 0.9), 0, 1)
    m = m * m * (3 - 2 * m)
    grain = _noise(rng, shape, max(1.0, 1.5 / sh.cell_mm)) + 0.8 * _noise(rng, shape, 1.0)
    mottle = np.clip(0.6 + 0.3 * grain, 0.05, 1.3)
    amp = rng.uniform(0.02, 0.06) + s * rng.uniform(0.02, 0.16)
    dens = amp * m * mottle
    if rng.random() < 0.3:  # darker, ragged rim where the liquid stopped
        rim = np.exp(-0.5 * (field / rng.uniform(0.04, 0.1)) ** 2) * (field > -0.05)
        dens += amp * rng.uniform(0.3, 0.8) * rim * mottle
    dg[sl] += dens
    mask = np.zeros_like(dg)
    mask[sl] = m
    return mask


def _tide_patch(rng, sh: _Sheet, dg: np.ndarray, place: np.ndarray, s: float) -> None:
    """A rounded patch where a mercury solution spread and dried: faint fill, darker edge."""
    gx, gy = (v / sh.f for v in _sample(rng, sh, place, 1))
    rad = rng.uniform(5, 30) / sh.cell_mm
    sl, xx, yy = _window(sh, gx[0], gy[0], 1.8 * rad)
    shape = (yy.shape[0], xx.shape[1])
    field = 1 - np.hypot(xx, yy * rng.uniform(0.7, 1.4)) / rad + 0.25 * _noise(rng, shape, rad / 3)
    field += 0.08 * _noise(rng, shape, max(1.0, rad / 10))
    sd = field * rad * sh.cell_mm  # mm, > 0 inside
    fill = np.clip(sd / 1.0 + 0.5, 0, 1)
    rim_w = rng.uniform(0.3, 1.2)
    rim = np.exp(-0.5 * ((sd - rim_w) / rim_w) ** 2)
    amp = rng.uniform(0.02, 0.06) + 0.08 * s * rng.random()
    dg[sl] += amp * fill + rng.uniform(1.0, 3.0) * amp * rim


def _halo(rng, sh: _Sheet, dg: np.ndarray, s: float, dist_mm: np.ndarray | None = None) -> None:
    """A grey, blotchy halo a few mm outside the plant's outline, along parts of it."""
    d = sh.dist_mm if dist_mm is None else dist_mm
    off = rng.uniform(0.5, 6)
    wid = rng.uniform(0.8, 4)
    ring = np.exp(-0.5 * ((d - off) / wid) ** 2)
    fill = rng.uniform(0.1, 0.9)
    ring = np.where(d < off, fill + (1 - fill) * ring, ring) * (d > 0)
    blotch = _noise(rng, d.shape, rng.uniform(1.5, 6) / sh.cell_mm)
    grain = _noise(rng, d.shape, 1.0)
    ring *= np.clip(0.75 + 0.45 * blotch + 0.2 * grain, 0, None)
    thr = rng.uniform(-0.3, 1.0)
    part = np.clip((_noise(rng, d.shape, rng.uniform(15, 60) / sh.cell_mm) - thr) * 2.5, 0, 1)
    dg += s**0.7 * rng.uniform(0.05, 0.3) * ring * part


def _ghost(rng, sh: _Sheet, dg: np.ndarray, place: np.ndarray, s: float) -> None:
    """The halo of a leaf or shoot that has since fallen off: an outline on open paper."""
    gx, gy = (v / sh.f for v in _sample(rng, sh, place, 1))
    size = rng.uniform(15, 60) / sh.cell_mm
    sl, xx, yy = _window(sh, gx[0], gy[0], size + 12 / sh.cell_mm)
    shape = np.zeros((yy.shape[0], xx.shape[1]), bool)
    for _ in range(rng.integers(1, 4)):
        ang = rng.uniform(0, np.pi)
        cx, cy = rng.normal(0, size / 4, 2)
        u = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
        v = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
        a, b = size / 2 * rng.uniform(0.5, 1), size / 2 * rng.uniform(0.12, 0.4)
        shape |= (u / a) ** 2 + (v / b) ** 2 <= 1
    if not shape.any():
        return
    dist = np.full(dg.shape, 1e3, np.float32)
    dist[sl] = ndi.distance_transform_edt(~shape) * sh.cell_mm
    _halo(rng, sh, dg, s, dist_mm=dist)


def _cast(rng, sh: _Sheet, dg: np.ndarray, s: float) -> None:
    """A general grey cast over part of the sheet, fading across it."""
    yy, xx = np.mgrid[0 : sh.gh, 0 : sh.gw].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    t = (xx - sh.gw / 2) * np.cos(ang) + (yy - sh.gh / 2) * np.sin(ang)
    t = t / max(sh.gw, sh.gh) - rng.uniform(-0.3, 0.4)
    ramp = 1 / (1 + np.exp(-t / rng.uniform(0.05, 0.25)))
    ramp *= np.clip(1 + 0.35 * _noise(rng, ramp.shape, 30 / sh.cell_mm), 0, None)
    dg += (rng.uniform(0.01, 0.03) + s * rng.uniform(0.02, 0.14)) * ramp * sh.on_sheet


def _plant_grey(rng, sh: _Sheet, dg: np.ndarray, grey: np.ndarray, s: float) -> None:
    """Greyish, silvery darkening of parts of the plant tissue."""
    soft = ndi.gaussian_filter(sh.plant.astype(np.float32), 0.7)
    part = np.clip(
        _noise(rng, soft.shape, rng.uniform(10, 50) / sh.cell_mm) + rng.uniform(0, 1.5), 0, 1
    )
    amt = soft * part
    grey += s**0.5 * rng.uniform(0.15, 0.6) * amt
    dg += s**0.7 * rng.uniform(0.03, 0.25) * amt


def _mercury(rng: np.random.Generator, sh: _Sheet, s: float, img: np.ndarray) -> None:
    """Paint mercury damage of severity s in (0, 1] onto img (float, in place)."""
    k = _tint(rng)
    dg = np.zeros((sh.gh, sh.gw), np.float32)
    grey = np.zeros_like(dg)
    place = _placement(rng, sh, rng.uniform(3, 25), rng.uniform(0.1, 0.4))

    cloud_mask = np.zeros_like(dg)
    n_cloud_specks = 0
    for _ in range(rng.poisson(0.25 + 5 * s**1.5)):
        m = _cloud(rng, sh, dg, place, s)
        cloud_mask += m
        if rng.random() < 0.7:  # speckled cloud
            n_cloud_specks += rng.poisson(m.sum() * sh.cell_mm**2 * rng.uniform(0.01, 0.15) * s)
    for _ in range(rng.poisson(1.8 * s**1.2)):
        _tide_patch(rng, sh, dg, place, s)
    if sh.has_plant and rng.random() < 0.1 + 0.8 * s:
        _halo(rng, sh, dg, s)
    if rng.random() < 0.45 * s:
        _ghost(rng, sh, dg, place, s)
    if rng.random() < 0.65 * s:
        _cast(rng, sh, dg, s)
    if sh.has_plant and rng.random() < 0.1 + 0.7 * s:
        _plant_grey(rng, sh, dg, grey, s)

    # Specks: sprays along brush strokes, clusters, scattered, and in clouds.
    n_total = int(round((3 + 2200 * s**2.4) * np.exp(rng.normal(0, 0.35))))
    n_spray, n_clust, n_scat = rng.multinomial(n_total, rng.dirichlet([1.2, 1.0, 1.0]))
    xs, ys = [], []
    if n_spray:
        n_strokes = max(1, int(round(n_spray / rng.uniform(15, 60))))
        counts = rng.multinomial(n_spray, rng.dirichlet(np.ones(n_strokes)))
        sx, sy = _sample(rng, sh, place, n_strokes)
        for x0, y0, c in zip(sx, sy, counts, strict=True):
            if c == 0:
                continue
            length = rng.uniform(15, 120) * sh.ppm
            path = _curve(rng, x0, y0, length, rng.uniform(0, 1.5), step=max(1.0, length / 200))
            t = rng.random(c) ** rng.uniform(0.6, 1.5)
            i = (t * (len(path) - 1)).astype(int)
            spread = rng.uniform(1.5, 10) * sh.ppm * (0.4 + t)
            d = np.diff(path, axis=0, prepend=path[:1] - [1, 0])
            nrm = np.stack([-d[:, 1], d[:, 0]], 1) / (np.hypot(*d.T)[:, None] + 1e-9)
            off = rng.normal(0, 1, c) * spread
            xs.append(path[i, 0] + nrm[i, 0] * off + rng.normal(0, 0.3, c) * spread)
            ys.append(path[i, 1] + nrm[i, 1] * off + rng.normal(0, 0.3, c) * spread)
    if n_clust:
        n_c = max(1, int(round(n_clust / rng.uniform(5, 30))))
        counts = rng.multinomial(n_clust, rng.dirichlet(np.ones(n_c)))
        cx, cy = _sample(rng, sh, place, n_c)
        for x0, y0, c in zip(cx, cy, counts, strict=True):
            sig = rng.uniform(0.7, 7) * sh.ppm
            tail = 1 / np.sqrt(rng.gamma(2.0, 0.5, c))  # heavy-tailed: a few strays
            xs.append(x0 + rng.normal(0, sig, c) * tail)
            ys.append(y0 + rng.normal(0, sig, c) * tail)
    if n_scat:
        x, y = _sample(rng, sh, place, n_scat)
        xs.append(x)
        ys.append(y)
    if n_cloud_specks:
        x, y = _sample(rng, sh, cloud_mask**2 + 1e-9, n_cloud_specks)
        xs.append(x)
        ys.append(y)

    d_full = np.zeros((sh.h, sh.w), np.float32)
    box = _support(dg, sh)
    if box is not None:
        y0, y1, x0, x1 = box
        for rs in _row_chunks(y0, y1):
            d_full[rs, x0:x1] = _bilinear(dg, sh, rs.start, rs.stop, x0, x1)

    # Blotches, each with a few satellite specks.
    for bx, by in zip(*_sample(rng, sh, place, rng.poisson(14 * s**1.8)), strict=True):
        r = rng.uniform(0.5, 2.5) * sh.ppm
        sd = _blob(
            rng,
            r,
            rough=rng.uniform(0.15, 0.45),
            aspect=rng.uniform(1, 2),
            angle=rng.uniform(0, np.pi),
        )
        cov = np.clip(sd / max(0.9, rng.uniform(0.05, 0.3) * sh.ppm) + 0.5, 0, 1)
        od = rng.uniform(0.2, 0.8) * (0.7 + 0.3 * _noise(rng, sd.shape, max(1.0, r / 4)))
        if rng.random() < 0.3:  # a dried drop, darker at its rim
            od = od + rng.uniform(0.1, 0.4) * np.exp(-0.5 * (sd / max(1.0, 0.12 * r)) ** 2)
        half = sd.shape[0] // 2
        _add_patch(d_full, int(bx) - half, int(by) - half, _cover_to_od(cov, np.clip(od, 0, 3)))
        m = rng.integers(2, 15)
        ang, dist = rng.uniform(0, 2 * np.pi, m), r * rng.uniform(1.0, 3.0, m)
        xs.append(bx + np.cos(ang) * dist)
        ys.append(by + np.sin(ang) * dist)

    if xs:
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = (x >= 0) & (x < sh.w) & (y >= 0) & (y < sh.h)
        x, y = x[keep], y[keep]
        gi = np.minimum((y / sh.f).astype(int), sh.gh - 1)
        gj = np.minimum((x / sh.f).astype(int), sh.gw - 1)
        keep = sh.on_sheet[gi, gj]
        x, y = x[keep], y[keep]
        r = _speck_sizes(rng, len(x), 0.25 + 0.2 * s, sh.ppm)
        od = rng.uniform(0.3, 1.6, len(x)) * (0.6 + 0.4 * s)
        _specks(d_full, x, y, r, od, rng, soft=max(0.8, rng.uniform(0.03, 0.12) * sh.ppm))

    box = _support(grey, sh)
    if box is not None:  # desaturate the plant towards grey
        y0, y1, x0, x1 = box
        for rs in _row_chunks(y0, y1):
            g = _bilinear(grey, sh, rs.start, rs.stop, x0, x1)
            sub = img[rs, x0:x1]
            lum = sub @ _LUMA
            for c in range(3):
                sub[..., c] += g * (lum - sub[..., c])
    rows = np.flatnonzero(d_full.any(1))
    if rows.size:
        cols = np.flatnonzero(d_full[rows[0] : rows[-1] + 1].any(0))
        xs_ = slice(cols[0], cols[-1] + 1)
        for rs in _row_chunks(rows[0], rows[-1] + 1):
            img[rs, xs_] *= np.exp(-d_full[rs, xs_, None] * k)


# --------------------------------------------------------------------------------------------
# Look-alikes: marks on clean and stained sheets alike that are not mercury


def _near_plant(rng, sh: _Sheet, reach_mm: float = 8.0, n: int = 1):
    return _sample(rng, sh, _placement(rng, sh, reach_mm, 0.1), n)


def _anywhere(rng, sh: _Sheet, n: int = 1):
    return _sample(rng, sh, sh.on_sheet.astype(np.float32) + 1e-9, n)


def _foxing(rng, sh: _Sheet, img: np.ndarray) -> None:
    """Rusty-brown foxing spots, a darker core in a soft halo, often a few together."""
    (cx,), (cy,) = _anywhere(rng, sh)
    for _ in range(rng.integers(1, 9)):
        spread = rng.uniform(2, 25) * sh.ppm
        x, y = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
        r = rng.uniform(0.2, 1.6) * sh.ppm
        sd = _blob(rng, r * rng.uniform(2, 3.5), rough=0.35, pad=1.3)
        half = sd.shape[0] // 2
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
        core = np.clip((r - np.hypot(xx, yy)) / max(1.0, 0.4 * r) + 0.5, 0, 1)
        od = rng.uniform(0.04, 0.15) * np.clip(sd / (0.5 * r) + 0.5, 0, 1) ** 2
        od = od + rng.uniform(0.2, 0.7) * core * (0.8 + 0.2 * _noise(rng, sd.shape, 1.0))
        _apply_od(img, int(x) - half, int(y) - half, od.astype(np.float32), _FOXING)


def _ink(rng, sh: _Sheet, img: np.ndarray) -> None:
    """A pen dot, a row of dots, or a small blot with splatter; blue, black or iron-gall ink."""
    k = [_BLUE_INK, _BLACK_INK, _GALL_INK][rng.integers(3)]
    dens = rng.uniform(0.9, 2.2)
    (x,), (y,) = _anywhere(rng, sh)
    kind = rng.integers(3)
    if kind == 0:
        xs, ys = np.array([x]), np.array([y])
        r = np.array([rng.uniform(0.15, 0.5)]) * sh.ppm
    elif kind == 1:
        m = rng.integers(2, 6)
        step = rng.uniform(1.5, 6) * sh.ppm
        ang = rng.uniform(0, 2 * np.pi)
        t = np.arange(m) * step
        xs, ys = x + np.cos(ang) * t, y + np.sin(ang) * t
        r = rng.uniform(0.15, 0.45, m) * sh.ppm
    else:
        rb = rng.uniform(0.6, 2.0) * sh.ppm
        sd = _blob(rng, rb, rough=rng.uniform(0.2, 0.5))
        half = sd.shape[0] // 2
        _apply_od(img, int(x) - half, int(y) - half, _cover_to_od(sd / 0.7 + 0.5, dens), k)
        m = rng.integers(0, 8)
        a, dist = rng.uniform(0, 2 * np.pi, m), rb * rng.uniform(1.3, 4, m)
        xs, ys = x + np.cos(a) * dist, y + np.sin(a) * dist
        r = rng.uniform(0.05, 0.3, m) * sh.ppm
    if len(xs):
        acc, x0, y0 = _speck_patch(
            rng, xs, ys, r, np.full(len(xs), dens), int(r.max() * 2 + 4),
            rough=0.08, soft=0.6, max_aspect=1.2, core=0.0,
        )  # fmt: skip
        _apply_od(img, x0, y0, acc, k)


def _pencil(rng, sh: _Sheet, img: np.ndarray) -> None:
    """Grey graphite strokes: a line, a tick, or a few hatch marks, grainy."""
    (x,), (y,) = _anywhere(rng, sh)
    heading = rng.uniform(0, 2 * np.pi)
    strokes = []
    for i in range(rng.integers(1, 4)):
        length = rng.uniform(3, 40) * sh.ppm
        off = np.array([np.cos(heading + np.pi / 2), np.sin(heading + np.pi / 2)]) * i * 1.5
        strokes.append(
            _curve(
                rng,
                x + off[0] * sh.ppm,
                y + off[1] * sh.ppm,
                length,
                rng.uniform(0, 0.6),
                heading=heading + rng.normal(0, 0.3),
            )
        )
    width = rng.uniform(0.15, 0.45) * sh.ppm
    dens = rng.uniform(0.2, 0.7)
    for pts in strokes:
        cov, x0, y0 = _line_cover(pts, width)
        grain = np.clip(0.65 + 0.3 * _noise(rng, cov.shape, 0.7), 0.2, 1)
        _apply_od(img, x0, y0, _cover_to_od(cov * grain, dens), _GRAPHITE)


def _dust(rng, sh: _Sheet, img: np.ndarray) -> None:
    """Dust specks and a fibre or hair or two."""
    (cx,), (cy,) = _anywhere(rng, sh)
    spread = rng.uniform(10, 80) * sh.ppm
    k = _BLACK_INK if rng.random() < 0.5 else _DIRT
    m = rng.integers(2, 15)
    xs, ys = cx + rng.normal(0, spread, m), cy + rng.normal(0, spread, m)
    r, od = rng.uniform(0.03, 0.12, m) * sh.ppm, rng.uniform(0.3, 1.2, m)
    acc, x0, y0 = _speck_patch(rng, xs, ys, r, od, int(0.3 * sh.ppm + 4), rough=0.3, max_aspect=2.5)
    _apply_od(img, x0, y0, acc, k)
    for _ in range(rng.integers(0, 3)):
        pts = _curve(
            rng,
            cx + rng.normal(0, spread),
            cy + rng.normal(0, spread),
            rng.uniform(2, 20) * sh.ppm,
            rng.uniform(0.5, 4),
            step=0.5,
        )
        cov, x1, y1 = _line_cover(pts, rng.uniform(0.03, 0.1) * sh.ppm)
        _apply_od(img, x1, y1, _cover_to_od(cov, rng.uniform(0.8, 1.8)), k)


def _frass(rng, sh: _Sheet, img: np.ndarray) -> None:
    """Insect frass: a cluster of dark-brown elongated pellets on or beside the plant."""
    (cx,), (cy,) = _near_plant(rng, sh, 4.0)
    m = rng.integers(4, 30)
    spread = rng.uniform(1, 8) * sh.ppm
    xs, ys = cx + rng.normal(0, spread, m), cy + rng.normal(0, spread, m)
    r, od = rng.uniform(0.12, 0.4, m) * sh.ppm, rng.uniform(1.0, 2.2, m)
    acc, x0, y0 = _speck_patch(
        rng, xs, ys, r, od, int(1.2 * sh.ppm + 4), rough=0.08, max_aspect=3.5, soft=0.6, core=0.0
    )
    _apply_od(img, x0, y0, acc, _DIRT)


def _soil(rng, sh: _Sheet, img: np.ndarray) -> None:
    """Soil crumbs and a few seeds near the bottom of the plant."""
    if sh.has_plant:
        gy, gx = np.nonzero(sh.plant)
        low = gy >= np.percentile(gy, 90)
        i = rng.choice(np.flatnonzero(low))
        cx, cy = (gx[i] + 0.5) * sh.f, (gy[i] + 0.5) * sh.f
    else:
        (cx,), (cy,) = _anywhere(rng, sh)
    m = rng.integers(3, 25)
    spread = rng.uniform(2, 15) * sh.ppm
    xs, ys = cx + rng.normal(0, spread, m), cy + np.abs(rng.normal(0, spread, m))
    r = np.exp(rng.normal(np.log(0.2), 0.5, m)).clip(0.06, 0.7) * sh.ppm
    od = rng.uniform(0.8, 2.2, m)
    acc, x0, y0 = _speck_patch(rng, xs, ys, r, od, int(r.max() * 3 + 4), rough=0.35, max_aspect=2.0)
    acc *= np.clip(0.8 + 0.25 * _noise(rng, acc.shape, 0.8), 0.3, 1.2)  # crumbly texture
    _apply_od(img, x0, y0, acc, _DIRT * np.array([1, 1, rng.uniform(0.9, 1.2)], np.float32))


def _water(rng, sh: _Sheet, img: np.ndarray) -> None:
    """A water stain: faint beige fill and a brown tide line."""
    (x,), (y,) = _anywhere(rng, sh)
    rad = rng.uniform(10, 70) / sh.cell_mm
    sl, xx, yy = _window(sh, x / sh.f, y / sh.f, 1.6 * rad)
    shape = (yy.shape[0], xx.shape[1])
    field = 1 - np.hypot(xx, yy * rng.uniform(0.6, 1.5)) / rad + 0.3 * _noise(rng, shape, rad / 3)
    field += 0.1 * _noise(rng, shape, max(1.0, rad / 10))
    sd = field * rad * sh.cell_mm
    w = rng.uniform(0.3, 1.5)
    od = rng.uniform(0.01, 0.05) * np.clip(sd + 0.5, 0, 1) + rng.uniform(0.08, 0.3) * np.exp(
        -0.5 * ((sd - w) / w) ** 2
    )
    x0, y0 = sl[1].start * sh.f, sl[0].start * sh.f
    full = _resize(od, shape[1] * sh.f, shape[0] * sh.f)
    _apply_od(img, x0, y0, full, _WATER)


def _glue(rng, sh: _Sheet, img: np.ndarray) -> None:
    """An amber smear of glue beside the plant, with a slightly darker edge."""
    (x,), (y,) = _near_plant(rng, sh, 3.0)
    r = rng.uniform(1, 5) * sh.ppm
    sd = _blob(rng, r, rough=0.25, aspect=rng.uniform(1.5, 5), angle=rng.uniform(0, np.pi))
    od = rng.uniform(0.04, 0.15) * np.clip(sd / 1.5 + 0.5, 0, 1)
    od += rng.uniform(0.02, 0.1) * np.exp(-0.5 * (sd / max(1.0, 0.1 * r)) ** 2)
    half = sd.shape[0] // 2
    _apply_od(img, int(x) - half, int(y) - half, od.astype(np.float32), _GLUE)


def _shadow(rng, sh: _Sheet, img: np.ndarray) -> None:
    """A soft grey shadow along a sheet edge or along a lifted strap or label edge."""
    width = rng.uniform(1.5, 12) * sh.ppm
    dens = rng.uniform(0.08, 0.35)
    vertical = rng.random() < 0.5
    long_side = sh.h if vertical else sh.w
    span = int(long_side * rng.uniform(0.15, 1.0))
    start = int(rng.integers(0, long_side - span + 1))
    depth = int(min(5 * width, (sh.w if vertical else sh.h) - 1))
    t = np.arange(depth, dtype=np.float32) + 0.5
    along = np.clip(_noise(rng, (span, 1), span / 6)[:, 0] * 0.3 + 1, 0, None)
    taper = np.minimum(1, np.minimum(np.arange(span), np.arange(span)[::-1]) / (2 * width + 1))
    od = dens * np.exp(-t / width)[None, :] * (along * taper)[:, None]
    if rng.random() < 0.5:  # sheet edge
        at_far = rng.random() < 0.5
        if at_far:
            od = od[:, ::-1]
        pos = (sh.w if vertical else sh.h) - depth if at_far else 0
    else:  # an edge inside the sheet, shadow falling to one side
        pos = int(rng.integers(0, max(1, (sh.w if vertical else sh.h) - depth)))
    od = od.astype(np.float32)
    if vertical:
        _apply_od(img, pos, start, od, _SHADOW)
    else:
        _apply_od(img, start, pos, od.T.copy(), _SHADOW)


_LOOKALIKES = (_foxing, _ink, _pencil, _dust, _frass, _soil, _water, _glue, _shadow)


# --------------------------------------------------------------------------------------------


def _rescan(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Light rescan: sensor noise, slight blur, JPEG round trip at quality 75-95."""
    if rng.random() < 0.6:
        sigma = rng.uniform(0.5, 2.0)  # uniform noise of this spread, cheaper than Gaussian
        noise = rng.random(img.shape[:2], dtype=np.float32) - np.float32(0.5)
        noise *= np.float32(sigma * 12**0.5)
        img += noise[..., None]
    img += 0.5
    np.clip(img, 0, 255, out=img)
    im = Image.fromarray(img.astype(np.uint8))
    if rng.random() < 0.7:  # slight optical blur: 3-tap [r, 1, r] / (1 + 2r), sigma 0.3-0.7 px
        im = im.filter(ImageFilter.BoxBlur(rng.uniform(0.05, 0.9)))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(75, 96)))
    buf.seek(0)
    with Image.open(buf) as jpg:
        return np.array(jpg.convert("RGB") if jpg.mode != "RGB" else jpg)


def paint(
    rng: np.random.Generator,
    sheet: np.ndarray,
    severity: float | None,
    *,
    px_per_mm: float | None = None,
    n_lookalikes: int | None = None,
) -> np.ndarray:
    """Return a painted copy of `sheet` (uint8, H x W x 3, a whole herbarium sheet, any resolution).

    severity None: clean (only look-alikes). Severity in (0, 1]: mercury whose amount grows with
    severity; 0.02-0.2 is 'faint' (a handful to a few dozen specks, maybe a faint cloud), 0.6-1.0
    'heavy'. px_per_mm defaults to max(H, W) / 420. n_lookalikes defaults to 0-3 at random.
    """
    return _paint(rng, sheet, severity, px_per_mm, n_lookalikes)[0]


def _paint(rng, sheet, severity, px_per_mm, n_lookalikes, keep: bool = False):
    """paint(), and with `keep` the image before the rescan (float), to see where marks went."""
    sheet = np.asarray(sheet)
    if sheet.ndim != 3 or sheet.shape[2] != 3 or sheet.dtype != np.uint8:
        raise ValueError(f"sheet must be uint8 H x W x 3, got {sheet.dtype} {sheet.shape}")
    if severity is not None and not 0 < severity <= 1:
        raise ValueError(f"severity must be None or in (0, 1], got {severity}")
    h, w = sheet.shape[:2]
    ppm = float(px_per_mm) if px_per_mm else max(h, w) / SHEET_LONG_MM
    sh = _analyse(sheet, ppm)
    img = sheet.astype(np.float32)
    if n_lookalikes is None:
        n_lookalikes = int(rng.integers(0, 4))
    kinds = rng.choice(len(_LOOKALIKES), n_lookalikes, replace=n_lookalikes > len(_LOOKALIKES))
    for i in kinds:
        _LOOKALIKES[i](rng, sh, img)
    if severity is not None:
        _mercury(rng, sh, float(severity), img)
    before = img.copy() if keep else None
    return _rescan(rng, img), before


# --------------------------------------------------------------------------------------------
# Contact sheet


def _first_sheet() -> Path:
    exts = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
    files = sorted(p for p in DEFAULT_SHEETS.rglob("*") if p.suffix.lower() in exts)
    if not files:
        raise SystemExit(f"no images under {DEFAULT_SHEETS}")
    return files[0]


def contact_sheet(sheet: np.ndarray, seed: int = 0, col_w: int = 360) -> Image.Image:
    """Clean sheet (with look-alikes) and severities 0.05, 0.15, 0.5, 0.9, each over a 3x crop."""
    h, w = sheet.shape[:2]
    scale = col_w / w
    th = int(round(h * scale))
    crop = col_w // 3  # native pixels, shown at 3x
    cols = [
        ("clean + 3 look-alikes", None, 3),
        ("severity 0.05", 0.05, 0),
        ("severity 0.15", 0.15, 0),
        ("severity 0.5", 0.5, 0),
        ("severity 0.9", 0.9, 0),
    ]
    out = Image.new("RGB", (len(cols) * (col_w + 10) + 10, th + col_w + 50), "white")
    draw = ImageDraw.Draw(out)
    for j, (title, sev, n_la) in enumerate(cols):
        rng = np.random.default_rng([seed, j])
        painted, before = _paint(rng, sheet, sev, None, n_la, keep=True)
        dark = np.abs(sheet - before).sum(2) ** 2  # squared: favours distinct marks over haze
        dark = ndi.uniform_filter(dark, crop, mode="constant")
        cy, cx = np.unravel_index(np.argmax(dark), dark.shape)
        x0 = int(np.clip(cx - crop // 2, 0, w - crop))
        y0 = int(np.clip(cy - crop // 2, 0, h - crop))
        x = 10 + j * (col_w + 10)
        im = Image.fromarray(painted)
        thumb = im.resize((col_w, th), Image.LANCZOS)
        ImageDraw.Draw(thumb).rectangle(
            [x0 * scale, y0 * scale, (x0 + crop) * scale, (y0 + crop) * scale], outline="red"
        )
        out.paste(thumb, (x, 30))
        zoom = im.crop((x0, y0, x0 + crop, y0 + crop)).resize((col_w, col_w), Image.NEAREST)
        out.paste(zoom, (x, th + 40))
        draw.text((x, 10), title, fill="black")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sheet",
        type=Path,
        default=None,
        help=f"sheet image (default: first one in {DEFAULT_SHEETS})",
    )
    ap.add_argument("--out", type=Path, required=True, help="contact sheet PNG to write")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = args.sheet or _first_sheet()
    sheet = np.asarray(Image.open(path).convert("RGB"))
    contact_sheet(sheet, args.seed).save(args.out)
    print(f"{path} -> {args.out}")


if __name__ == "__main__":
    main()
