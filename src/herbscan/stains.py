"""Paint mercury stains, and marks that are not mercury, onto real sheet images.

A museum's collection is 95-98% clean sheets in its own imaging; painting synthetic mercury onto
them gives a stain detector training data of any size without labelling anything. Everything is
sized in millimetres (`pixels_per_mm`, from a 42 cm sheet's long side), so a severity means the
same at any scan resolution, and every parameter is drawn from wide ranges: the detector is judged
on stains from generators it has not seen.

Stains (`STAIN_KINDS`), after what mercuric chloride leaves (Schuettpelz et al. 2017, and the US
National Herbarium sheets in `../shared/data/mercury-reference`): clustered grey-black speckles
from a few dots to hundreds, loose scattered speckles, grey clouds and blotches, grey halos
around the plant, greyed plant tissue and grey tide lines. Look-alikes (`NEGATIVE_KINDS`): dust,
ink, pencil, foxing, glue, water stains, shadows, colour charts, rulers, barcodes, plant debris,
typed text, the mottled, veined texture of dried leaves, and what the top-scoring cells of clean
sheets of other herbaria showed: printed label forms with dotted leader lines and rules, dark
scanner frames with rulers, scale bars and colour bars on them, coins, finger tips, sparse paper
specks and fibres, dark branching stems, and aged paper (yellow-brown patches, a browned side).
Text, leaf texture, label forms and aged paper are added to half of the sheets besides: the first
detectors, trained without them, called the labels and leaves of other herbaria's sheets mercury.

`paint(rng, image, ...)` returns the painted image and a per-pixel stain strength map (how much
each pixel was darkened by stains, 0-1), which the detector learns from cell by cell. `Style`
changes the generator's habits (dot shapes, colours, clustering) so validation can use settings
training never saw.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from herbscan.errors import ParameterError

__all__ = [
    "NEGATIVE_KINDS",
    "STAIN_KINDS",
    "STYLES",
    "Style",
    "paint",
    "pixels_per_mm",
    "plant_mask",
    "scanner",
]

SHEET_LONG_MM = 420.0  # a herbarium sheet is about 29 × 42 cm
STAIN_KINDS = ("speckles", "scatter", "blotch", "halo", "tissue", "tideline")
NEGATIVE_KINDS = (
    "dust",
    "ink",
    "pencil",
    "foxing",
    "glue",
    "water",
    "shadow",
    "chart",
    "ruler",
    "barcode",
    "debris",
    "texture",
    "text",
    "form",
    "frame",
    "coin",
    "finger",
    "specks",
    "stems",
    "ageing",
)
_COMMON = ("texture", "text", "form", "ageing")  # most real sheets have these: half get each
_SUPER = 3  # dots are drawn 3× supersampled: a 0.2 mm speck at 4 px/mm is a grey pixel


@dataclass(frozen=True)
class Style:
    """Generator habits. `ragged` dots are irregular polygons rather than ellipses; `tint` is the
    largest colour cast of a stain (mercury is grey-black, sometimes brownish or bluish);
    `cluster` scales how tightly speckles gather."""

    name: str
    ragged: float
    tint: float
    cluster: float
    grey: tuple[float, float]


STYLES = {
    "train": Style("train", ragged=0.3, tint=0.05, cluster=1.0, grey=(0.04, 0.45)),
    "holdout": Style("holdout", ragged=0.9, tint=0.1, cluster=1.6, grey=(0.1, 0.55)),
}


def pixels_per_mm(shape: tuple[int, ...]) -> float:
    """Scale of an image of a whole sheet: its long side is 420 mm."""
    return max(shape[0], shape[1]) / SHEET_LONG_MM


def _as_float(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ParameterError(f"image must be an (h, w, 3) RGB array; got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    return image.astype(np.float32, copy=True)


def _lum(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


def plant_mask(image: np.ndarray) -> np.ndarray:
    """Bool (h, w): pixels that are neither paper nor neutral grey — mostly plant, also coloured
    labels and charts. Paper is the median colour of the brightest half of the image."""
    img = _as_float(image)
    lum = _lum(img)
    bright = img[lum >= np.median(lum)]
    paper = np.median(bright, axis=0) if len(bright) else np.ones(3, np.float32)
    dist = np.abs(img - paper).max(axis=2)
    chroma = img.max(axis=2) - img.min(axis=2)
    return (dist > 0.12) & (chroma > 0.05)


def _soft(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Gaussian-blurred copy of a [0, 1] float mask (blurred at reduced size when wide)."""
    if radius_px < 0.3:
        return mask
    h, w = mask.shape
    f = max(1, int(radius_px // 4))
    im = Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8))
    if f > 1:
        im = im.resize((max(1, w // f), max(1, h // f)), Image.Resampling.BOX)
    im = im.filter(ImageFilter.GaussianBlur(radius_px / f))
    if f > 1:
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(im, np.float32) / 255


def _noise_field(rng, shape, cell_px: float) -> np.ndarray:
    """Smooth random field in [0, 1] with features about `cell_px` wide."""
    h, w = shape
    gh, gw = max(2, int(h / max(cell_px, 1)) + 2), max(2, int(w / max(cell_px, 1)) + 2)
    small = rng.random((gh, gw)).astype(np.float32)
    im = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(im, np.float32) / 255


def _dots(rng, shape, xs, ys, rs, values, ragged: float = 0.0, aspect=(1.0, 1.0)) -> np.ndarray:
    """Float mask (h, w) with a dot of radius rs (px) and opacity values at each (x, y), drawn
    supersampled; a fraction `ragged` of the dots are irregular polygons."""
    h, w = shape
    s = _SUPER
    im = Image.new("L", (w * s, h * s), 0)
    d = ImageDraw.Draw(im)
    for x, y, r, v in zip(xs, ys, rs, values):
        if not (-4 * r <= x <= w + 4 * r and -4 * r <= y <= h + 4 * r):
            continue
        fill = int(np.clip(v, 0, 1) * 255)
        rx, ry = r * s * rng.uniform(*aspect), r * s * rng.uniform(*aspect)
        cx, cy = x * s, y * s
        if rng.random() < ragged and r * s > 2:
            n = int(rng.integers(5, 10))
            a = np.sort(rng.uniform(0, 2 * np.pi, n))
            k = rng.uniform(0.5, 1.3, n)
            pts = list(zip((cx + rx * k * np.cos(a)).tolist(), (cy + ry * k * np.sin(a)).tolist()))
            d.polygon(pts, fill=fill)
        else:
            d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
    return np.asarray(im.resize((w, h), Image.Resampling.BOX), np.float32) / 255


def _blend(img: np.ndarray, alpha: np.ndarray, colour) -> np.ndarray:
    a = np.clip(alpha, 0, 1).astype(np.float32, copy=False)[..., None]
    return img * (1 - a) + np.asarray(colour, np.float32) * a


def _stain_colour(rng, style: Style) -> np.ndarray:
    g = rng.uniform(*style.grey)
    return np.clip(g + rng.uniform(-style.tint, style.tint, 3), 0, 1).astype(np.float32)


def _centres(rng, shape, plant, n, near_plant: float):
    """n points, a fraction near_plant of them on the plant when there is plant."""
    h, w = shape
    ys, xs = np.nonzero(plant) if plant is not None else ((), ())
    out = []
    for _ in range(n):
        if len(xs) and rng.random() < near_plant:
            i = rng.integers(len(xs))
            out.append((float(xs[i]), float(ys[i])))
        else:
            out.append((rng.uniform(0, w), rng.uniform(0, h)))
    return out


# ---------------------------------------------------------------------------------------------
# stains


def _speckles(rng, img, ppm, s, style, plant):
    h, w = img.shape[:2]
    n_clusters = 1 + int(rng.integers(0, 1 + round(6 * s)))
    alpha = np.zeros((h, w), np.float32)
    for cx, cy in _centres(rng, (h, w), plant, n_clusters, 0.6):
        n = int(3 + (s**1.3) * rng.uniform(20, 400))
        spread = rng.uniform(1.5, 20) * style.cluster * ppm * (0.4 + s)
        ang = rng.uniform(0, np.pi)
        stretch = rng.uniform(1, 3)
        u, v = rng.normal(0, spread, n), rng.normal(0, spread / stretch, n)
        xs = cx + u * np.cos(ang) - v * np.sin(ang)
        ys = cy + u * np.sin(ang) + v * np.cos(ang)
        r_mm = np.clip(rng.lognormal(np.log(rng.uniform(0.1, 0.35)), 0.6, n), 0.05, 1.5)
        ops = rng.uniform(0.35, 1.0, n) * rng.uniform(0.6, 1.0)
        alpha = np.maximum(alpha, _dots(rng, (h, w), xs, ys, r_mm * ppm, ops, style.ragged))
        if rng.random() < 0.35:  # faint halo around the dense part of the cluster
            halo = _dots(rng, (h, w), xs, ys, r_mm * ppm * rng.uniform(2, 4), ops * 0.15)
            alpha = np.maximum(alpha, halo)
    return _blend(img, alpha, _stain_colour(rng, style))


def _scatter(rng, img, ppm, s, style, plant):
    h, w = img.shape[:2]
    area_cm2 = h * w / (ppm * 10) ** 2
    n = int(max(3, area_cm2 * rng.uniform(0.05, 1.5) * (0.2 + s)))
    xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
    r_mm = np.clip(rng.lognormal(np.log(0.15), 0.5, n), 0.05, 0.8)
    alpha = _dots(rng, (h, w), xs, ys, r_mm * ppm, rng.uniform(0.4, 1.0, n), style.ragged)
    return _blend(img, alpha, _stain_colour(rng, style))


def _blotch(rng, img, ppm, s, style, plant):
    h, w = img.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    for cx, cy in _centres(rng, (h, w), plant, 1 + int(rng.integers(0, 1 + round(3 * s))), 0.5):
        r = rng.uniform(3, 30) * ppm
        yy, xx = np.ogrid[:h, :w]
        blob = np.exp(-(((xx - cx) / r) ** 2 + ((yy - cy) / (r * rng.uniform(0.5, 1.5))) ** 2))
        tex = _noise_field(rng, (h, w), rng.uniform(0.5, 3) * ppm)
        mottled = blob * (0.4 + 0.6 * tex) * rng.uniform(0.12, 0.45) * (0.5 + 0.5 * s)
        alpha = np.maximum(alpha, mottled.astype(np.float32))
    return _blend(img, alpha, _stain_colour(rng, style))


def _halo(rng, img, ppm, s, style, plant):
    if plant is None or not plant.any():
        return _blotch(rng, img, ppm, s, style, plant)
    h, w = img.shape[:2]
    ring = _soft(plant.astype(np.float32), rng.uniform(0.5, 3) * ppm) * (1 - plant)
    region = _noise_field(rng, (h, w), rng.uniform(10, 40) * ppm)
    region = np.clip((region - rng.uniform(0.2, 0.6)) * 3, 0, 1)
    alpha = np.clip(ring * 2.5, 0, 1) * region * rng.uniform(0.15, 0.5) * (0.5 + 0.5 * s)
    return _blend(img, alpha, _stain_colour(rng, style))


def _tissue(rng, img, ppm, s, style, plant):
    if plant is None or not plant.any():
        return _speckles(rng, img, ppm, s, style, plant)
    h, w = img.shape[:2]
    region = _noise_field(rng, (h, w), rng.uniform(8, 30) * ppm)
    region = np.clip((region - rng.uniform(0.3, 0.6)) * 3, 0, 1)
    a = plant * region * rng.uniform(0.3, 0.7) * (0.5 + 0.5 * s)
    grey = _lum(img)[..., None] * rng.uniform(0.4, 0.7)
    out = img * (1 - a[..., None]) + grey * a[..., None]
    return _speckles(rng, out, ppm, 0.3 * s, style, plant) if rng.random() < 0.5 else out


def _ring(rng, shape, cx, cy, r, width_px) -> np.ndarray:
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    ang = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + sum(
        rng.uniform(0, 0.12) * np.sin(k * ang + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    dist = np.hypot(xx - cx, yy - cy) / wobble
    edge = np.exp(-(((dist - r) / max(width_px, 0.5)) ** 2))
    inside = (dist < r) * rng.uniform(0.0, 0.3)
    return np.maximum(edge, inside).astype(np.float32)


def _tideline(rng, img, ppm, s, style, plant):
    h, w = img.shape[:2]
    ((cx, cy),) = _centres(rng, (h, w), plant, 1, 0.5)
    alpha = _ring(rng, (h, w), cx, cy, rng.uniform(5, 40) * ppm, rng.uniform(0.3, 1.5) * ppm)
    return _blend(img, alpha * rng.uniform(0.2, 0.5) * (0.6 + 0.4 * s), _stain_colour(rng, style))


_STAINS = {
    "speckles": _speckles,
    "scatter": _scatter,
    "blotch": _blotch,
    "halo": _halo,
    "tissue": _tissue,
    "tideline": _tideline,
}
_STAIN_P = {
    "speckles": 0.5,
    "scatter": 0.1,
    "blotch": 0.12,
    "halo": 0.1,
    "tissue": 0.1,
    "tideline": 0.08,
}


# ---------------------------------------------------------------------------------------------
# look-alikes that are not mercury


def _dust(rng, img, ppm, plant):
    h, w = img.shape[:2]
    n = int(rng.integers(1, 12))
    xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
    r = np.clip(rng.lognormal(np.log(0.12), 0.4, n), 0.05, 0.4) * ppm
    alpha = _dots(rng, (h, w), xs, ys, r, rng.uniform(0.3, 0.9, n))
    if rng.random() < 0.4:  # a hair or fibre
        im = Image.new("L", (w, h), 0)
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        pts = [(x, y)]
        for _ in range(int(rng.integers(4, 12))):
            x, y = x + rng.normal(0, 2 * ppm), y + rng.normal(0, 2 * ppm)
            pts.append((x, y))
        ImageDraw.Draw(im).line(pts, fill=int(rng.uniform(80, 200)), width=1)
        alpha = np.maximum(alpha, np.asarray(im, np.float32) / 255)
    return _blend(img, alpha, (rng.uniform(0.1, 0.4),) * 3)


def _ink(rng, img, ppm, plant):
    h, w = img.shape[:2]
    colour = [(0.1, 0.12, 0.45), (0.05, 0.05, 0.07), (0.45, 0.08, 0.1)][int(rng.integers(3))]
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    for _ in range(int(rng.integers(1, 6))):  # pen strokes, as in handwriting
        pts = [(x, y)]
        for _ in range(int(rng.integers(3, 15))):
            x, y = x + rng.normal(1.5, 1.5) * ppm, y + rng.normal(0, 1.2) * ppm
            pts.append((x, y))
        d.line(pts, fill=255, width=max(1, round(rng.uniform(0.2, 0.6) * ppm)))
    alpha = np.asarray(im, np.float32) / 255
    n = int(rng.integers(0, 4))  # and a few blots
    alpha = np.maximum(
        alpha,
        _dots(
            rng,
            (h, w),
            rng.uniform(0, w, n),
            rng.uniform(0, h, n),
            rng.uniform(0.2, 1.0, n) * ppm,
            np.ones(n),
        ),
    )
    return _blend(img, alpha * rng.uniform(0.7, 1.0), colour)


def _pencil(rng, img, ppm, plant):
    h, w = img.shape[:2]
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        n = int(rng.integers(5, 30))
        t = np.arange(n)
        xs = x + t * rng.uniform(0.5, 1.5) * ppm
        ys = y + np.sin(t * rng.uniform(0.8, 2.5)) * rng.uniform(0.5, 2) * ppm
        d.line(
            list(zip(xs.tolist(), ys.tolist())),
            fill=int(rng.uniform(90, 200)),
            width=max(1, round(0.3 * ppm)),
        )
    alpha = _soft(np.asarray(im, np.float32) / 255, 0.4)
    return _blend(img, alpha, (rng.uniform(0.35, 0.55),) * 3)


def _foxing(rng, img, ppm, plant):
    h, w = img.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy, n = rng.uniform(0, w), rng.uniform(0, h), int(rng.integers(3, 40))
        xs, ys = cx + rng.normal(0, 6 * ppm, n), cy + rng.normal(0, 6 * ppm, n)
        r = rng.uniform(0.3, 2.5, n) * ppm
        alpha = np.maximum(
            alpha, _soft(_dots(rng, (h, w), xs, ys, r, rng.uniform(0.3, 0.8, n)), 0.3 * ppm)
        )
    brown = (rng.uniform(0.55, 0.75), rng.uniform(0.35, 0.5), rng.uniform(0.15, 0.3))
    return _blend(img, alpha, brown)


def _glue(rng, img, ppm, plant):
    h, w = img.shape[:2]
    ((cx, cy),) = _centres(rng, (h, w), plant, 1, 0.8)
    n = int(rng.integers(1, 4))
    alpha = _soft(
        _dots(
            rng,
            (h, w),
            cx + rng.normal(0, 2 * ppm, n),
            cy + rng.normal(0, 2 * ppm, n),
            rng.uniform(1, 5, n) * ppm,
            np.ones(n),
            aspect=(0.5, 2.0),
        ),
        0.5 * ppm,
    )
    yellow = (rng.uniform(0.75, 0.9), rng.uniform(0.65, 0.8), rng.uniform(0.35, 0.55))
    return _blend(img, alpha * rng.uniform(0.2, 0.5), yellow)


def _water(rng, img, ppm, plant):
    h, w = img.shape[:2]
    alpha = _ring(
        rng,
        (h, w),
        rng.uniform(0, w),
        rng.uniform(0, h),
        rng.uniform(8, 60) * ppm,
        rng.uniform(0.5, 3) * ppm,
    )
    brown = (rng.uniform(0.6, 0.8), rng.uniform(0.5, 0.65), rng.uniform(0.3, 0.45))
    return _blend(img, alpha * rng.uniform(0.15, 0.4), brown)


def _shadow(rng, img, ppm, plant):
    h, w = img.shape[:2]
    if plant is not None and plant.any() and rng.random() < 0.6:  # thick specimen's shadow
        dx, dy = (int(v) for v in rng.normal(0, 1.5 * ppm, 2))
        shifted = np.roll(np.roll(plant, dy, axis=0), dx, axis=1).astype(np.float32)
        alpha = _soft(shifted, rng.uniform(0.5, 2) * ppm) * (1 - plant)
    else:  # uneven lighting or a curled edge
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(a) * xx + np.sin(a) * yy) / max(h, w)
        alpha = np.clip((ramp - ramp.max() + rng.uniform(0.05, 0.3)) * 4, 0, 1)
    return _blend(img, alpha * rng.uniform(0.1, 0.35), (0.1, 0.1, 0.1))


def _ageing(rng, img, ppm, plant):
    """Old paper: patchy yellow-brown discolouration, a browned side and fibre grain. Paper
    browns as it ages (blue is lost first), while mercury greys it: the hue tells them apart."""
    h, w = img.shape[:2]
    coarse = _noise_field(rng, (h, w), rng.uniform(10, 60) * ppm)
    patches = _noise_field(rng, (h, w), rng.uniform(1.5, 8) * ppm)
    field = rng.uniform(0.04, 0.2) * coarse + rng.uniform(0.0, 0.12) * patches**2
    if rng.random() < 0.5:  # a side browned by light or handling
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(a) * xx + np.sin(a) * yy) / max(h, w)
        field = field + rng.uniform(0.03, 0.15) * np.clip(ramp - ramp.mean() + 0.5, 0, 1) ** 2
    grain = _noise_field(rng, (h, w), rng.uniform(0.15, 0.5) * ppm) - 0.5
    loss = np.array([rng.uniform(0.1, 0.3), rng.uniform(0.3, 0.55), 1.0], np.float32)
    factor = 1 - field[..., None] * loss - rng.uniform(0.0, 0.05) * grain[..., None]
    paper = 1 - plant[..., None].astype(np.float32) if plant is not None else 1.0
    return img * (1 + (factor - 1) * paper)


def _chart(rng, img, ppm, plant):
    h, w = img.shape[:2]
    out = img.copy()
    patch = max(2, int(rng.uniform(5, 12) * ppm))
    n = int(rng.integers(4, 12))
    vertical = rng.random() < 0.5
    x0, y0 = int(rng.uniform(0, max(1, w - patch))), int(rng.uniform(0, max(1, h - patch)))
    for i in range(n):
        grey = rng.random() < 0.5
        c = np.full(3, i / max(1, n - 1), np.float32) if grey else rng.random(3).astype(np.float32)
        x, y = (x0, y0 + i * patch) if vertical else (x0 + i * patch, y0)
        out[y : y + patch, x : x + patch] = c
    return out


def _ruler(rng, img, ppm, plant):
    h, w = img.shape[:2]
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
    for i in range(int(rng.integers(10, 80))):
        x = x0 + i * ppm
        d.line(
            (x, y0, x, y0 + (3 if i % 10 else 6) * ppm), fill=255, width=max(1, round(0.2 * ppm))
        )
    d.line((x0, y0, x0 + 80 * ppm, y0), fill=255, width=max(1, round(0.3 * ppm)))
    return _blend(img, np.asarray(im, np.float32) / 255, (0.05, 0.05, 0.05))


def _barcode(rng, img, ppm, plant):
    h, w = img.shape[:2]
    out = img.copy()
    bw, bh = int(rng.uniform(25, 45) * ppm), int(rng.uniform(6, 14) * ppm)
    x0, y0 = int(rng.uniform(0, max(1, w - bw))), int(rng.uniform(0, max(1, h - bh)))
    out[y0 : y0 + bh, x0 : x0 + bw] = 0.97
    x = x0 + 1
    while x < x0 + bw - 1:
        t = max(1, int(rng.integers(1, 4) * 0.25 * ppm))
        if rng.random() < 0.5:
            out[y0 + 1 : y0 + bh - 1, x : x + t] = 0.05
        x += t
    return out


def _texture(rng, img, ppm, plant):
    """Mottling and veins on plant tissue: real dried leaves are never flat."""
    if plant is None or not plant.any():
        return img
    h, w = img.shape[:2]
    fine = _noise_field(rng, (h, w), rng.uniform(0.3, 1.0) * ppm)
    coarse = _noise_field(rng, (h, w), rng.uniform(1.5, 5.0) * ppm)
    mottle = (
        1 + rng.uniform(0.1, 0.35) * (fine - 0.5) * 2 + rng.uniform(0.05, 0.2) * (coarse - 0.5) * 2
    )
    tint = 1 + rng.uniform(-0.08, 0.08, 3).astype(np.float32)
    veins = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(veins)
    ys, xs = np.nonzero(plant)
    for _ in range(int(rng.integers(5, 40))):
        i = rng.integers(len(xs))
        x, y, a = float(xs[i]), float(ys[i]), rng.uniform(0, 2 * np.pi)
        length = rng.uniform(2, 15) * ppm
        d.line(
            (x, y, x + length * np.cos(a), y + length * np.sin(a)),
            fill=255,
            width=max(1, round(rng.uniform(0.1, 0.4) * ppm)),
        )
    vein = (np.asarray(veins, np.float32) / 255) * plant
    shade = rng.choice([0.75, 1.2])
    p = plant[..., None].astype(np.float32)
    out = img * (1 - p) + img * mottle[..., None] * tint * p
    return out * (1 + (shade - 1) * vein[..., None])


def _debris(rng, img, ppm, plant):
    """Plant fragments, seeds and insect frass: small dark specks that are coloured, not grey."""
    h, w = img.shape[:2]
    n = int(rng.integers(3, 40))
    pts = _centres(rng, (h, w), plant, n, 0.7)
    xs = np.array([p[0] for p in pts]) + rng.normal(0, 3 * ppm, n)
    ys = np.array([p[1] for p in pts]) + rng.normal(0, 3 * ppm, n)
    r = np.clip(rng.lognormal(np.log(0.4), 0.5, n), 0.1, 2.0) * ppm
    alpha = _dots(rng, (h, w), xs, ys, r, rng.uniform(0.6, 1.0, n), ragged=0.8, aspect=(0.4, 1.6))
    colour = [(0.35, 0.24, 0.12), (0.2, 0.25, 0.1), (0.25, 0.15, 0.08), (0.45, 0.35, 0.15)]
    base = np.asarray(colour[int(rng.integers(len(colour)))], np.float32)
    return _blend(img, alpha, np.clip(base + rng.uniform(-0.05, 0.05, 3), 0, 1))


_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,-/: "


def _text(rng, img, ppm, plant):
    """A block of typed or stamped text: at a few pixels per millimetre, letters are clusters
    of dark specks, the look-alike every sheet carries on its labels."""
    h, w = img.shape[:2]
    s = _SUPER + 1  # drawn large and shrunk: strokes come out soft and grey, as in a scan
    size = max(4, round(rng.uniform(1.5, 5.0) * ppm * s))  # em of 6-14 pt type
    font = ImageFont.load_default(size=size)
    lines = [
        "".join(rng.choice(list(_GLYPHS), size=int(rng.integers(5, 40))))
        for _ in range(int(rng.integers(1, 10)))
    ]
    x0, y0 = rng.uniform(-0.1, 0.8) * w, rng.uniform(-0.1, 0.9) * h
    step = size * rng.uniform(1.1, 1.6)  # line spacing, in drawing pixels
    ox, oy = max(0, int(x0)), max(0, int(y0))  # the block's visible box, in image pixels
    bw = min(w, int(x0 + max(len(t) for t in lines) * size / s) + 1) - ox
    bh = min(h, int(y0 + (len(lines) * step + size) / s) + 1) - oy
    alpha = np.zeros((h, w), np.float32)
    if bw > 0 and bh > 0:  # draw only that box, at s× scale
        big = Image.new("L", (bw * s, bh * s))
        d = ImageDraw.Draw(big)
        for i, line in enumerate(lines):
            d.text(((x0 - ox) * s, (y0 - oy) * s + i * step), line, fill=255, font=font)
        small = np.asarray(big.resize((big.width // s, big.height // s), Image.Resampling.BOX))
        small = small[: h - oy, : w - ox].astype(np.float32) / 255
        alpha[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
    out = img
    if rng.random() < 0.5:  # printed on a label slip
        ys, xs = np.nonzero(alpha > 0)
        if len(xs):
            pad = int(2 * ppm)
            box = (max(0, ys.min() - pad), ys.max() + pad, max(0, xs.min() - pad), xs.max() + pad)
            out = img.copy()
            slip = rng.uniform(0.86, 1.0) + rng.uniform(-0.03, 0.03, 3)
            out[box[0] : box[1], box[2] : box[3]] = np.clip(slip, 0, 1).astype(np.float32)
    colour = [(0.05, 0.05, 0.06), (0.25, 0.25, 0.28), (0.1, 0.12, 0.4), (0.4, 0.1, 0.1)]
    return _blend(out, alpha * rng.uniform(0.6, 1.0), colour[int(rng.integers(len(colour)))])


# --- look-alikes found on real sheets of other herbaria (the top-scoring cells of clean sheets)

_PRINT_INKS = [(0.04, 0.04, 0.05), (0.2, 0.2, 0.22), (0.08, 0.1, 0.35), (0.3, 0.2, 0.12)]


def _paste_alpha(shape, x0: float, y0: float, big: Image.Image, s: int) -> np.ndarray:
    """A full-size alpha map with `big` (drawn at s× scale, its origin at image pixel
    (x0, y0) rounded down to >= 0) shrunk into place."""
    h, w = shape
    ox, oy = max(0, int(x0)), max(0, int(y0))
    alpha = np.zeros((h, w), np.float32)
    small = np.asarray(big.resize((big.width // s, big.height // s), Image.Resampling.BOX))
    small = small[: h - oy, : w - ox].astype(np.float32) / 255
    alpha[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
    return alpha


def _words(rng, lo: int, hi: int) -> str:
    return "".join(rng.choice(list(_GLYPHS), size=int(rng.integers(lo, hi + 1))))


def _form(rng, img, ppm, plant):
    """A printed label form: rows of dotted leader lines (". . . . .", dots 0.2-0.6 mm at a
    regular pitch) and rule lines for the collector to fill in, with or without printed field
    names and typed entries. At 3-4 px/mm a leader line is a row of grey specks."""
    h, w = img.shape[:2]
    s = _SUPER + 1
    lw, lh = rng.uniform(40, 130) * ppm, rng.uniform(15, 80) * ppm  # label size, px
    x0, y0 = rng.uniform(-0.3, 0.9) * w, rng.uniform(-0.3, 0.9) * h
    ox, oy = max(0, int(x0)), max(0, int(y0))
    bw, bh = min(w, int(x0 + lw) + 1) - ox, min(h, int(y0 + lh) + 1) - oy
    if bw <= 0 or bh <= 0:
        return img
    printed = Image.new("L", (bw * s, bh * s), 0)
    typed = Image.new("L", (bw * s, bh * s), 0)
    dp, dt = ImageDraw.Draw(printed), ImageDraw.Draw(typed)

    def px(mm_x: float, mm_y: float) -> tuple[float, float]:  # label mm -> drawing px
        return ((x0 - ox) + mm_x * ppm) * s, ((y0 - oy) + mm_y * ppm) * s

    em = rng.uniform(1.5, 3.5)  # type size, mm
    font = ImageFont.load_default(size=max(4, round(em * ppm * s)))
    dot_r = rng.uniform(0.1, 0.3)  # leader dots 0.2-0.6 mm across
    pitch = max(rng.uniform(0.6, 2.5), 2.2 * dot_r + 0.25)  # mm between dot centres
    typed_dots = rng.random() < 0.3  # leaders typeset as periods rather than drawn dots
    p_dots = rng.choice([1.0, 0.8, 0.5, 0.0])  # the rest of the rows are rule lines
    rule_w = max(1, round(rng.uniform(0.08, 0.35) * ppm * s))
    names, fill = rng.random() < 0.75, rng.uniform(0.0, 0.8)  # field names; filled-in share
    margin = rng.uniform(2, 6)
    lw_mm, lh_mm = lw / ppm, lh / ppm
    y = margin
    if rng.random() < 0.6:  # a title line
        y += em * 1.6
        dp.text(px(margin, y - em * 1.3), _words(rng, 8, 30).upper(), fill=255, font=font)
    row_h = rng.uniform(max(3.0, em * 1.3), 9.0)
    while y + row_h < lh_mm - margin / 2:
        y += row_h
        x = margin
        for _field in range(int(rng.integers(1, 3))):
            x_end = lw_mm - margin if _field else x + rng.uniform(0.4, 1.0) * (lw_mm - margin - x)
            if names:
                name = _words(rng, 3, 12) + rng.choice([":", "", "."])
                dp.text(px(x, y - em), name, fill=255, font=font, anchor="ls")
                x += dp.textlength(name, font=font) / (ppm * s) + rng.uniform(0.5, 2)
            if x_end - x < 3:
                break
            if rng.random() < p_dots:
                if typed_dots:
                    gap = " " if rng.random() < 0.5 else ""
                    unit = dp.textlength("." + gap, font=font) / (ppm * s)
                    dp.text(px(x, y), ("." + gap) * int((x_end - x) / unit), 255, font, "ls")
                else:
                    for xd in np.arange(x + dot_r, x_end, pitch):
                        cx, cy = px(float(xd), y)
                        r = dot_r * ppm * s
                        dp.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
            else:
                dp.line((*px(x, y + 0.3), *px(x_end, y + 0.3)), fill=255, width=rule_w)
            if rng.random() < fill:  # typed or stamped entry on the line
                dt.text(px(x + rng.uniform(0, 4), y - 0.4), _words(rng, 4, 30), 255, font, "ls")
            x = x_end + rng.uniform(2, 6)
            if x > lw_mm - margin - 10:
                break
    if rng.random() < 0.4:  # a printed border
        dp.rectangle((*px(1, 1), *px(lw_mm - 1, lh_mm - 1)), outline=255, width=rule_w)
    out = img
    if rng.random() < 0.7:  # on its own slip of paper
        out = img.copy()
        slip = rng.uniform(0.85, 1.0) + rng.uniform(-0.04, 0.03, 3)
        out[oy : oy + bh, ox : ox + bw] = np.clip(slip, 0, 1).astype(np.float32)
    ink = _PRINT_INKS[int(rng.integers(len(_PRINT_INKS)))]
    out = _blend(out, _paste_alpha((h, w), x0, y0, printed, s) * rng.uniform(0.5, 1.0), ink)
    entry = _PRINT_INKS[int(rng.integers(len(_PRINT_INKS)))]
    return _blend(out, _paste_alpha((h, w), x0, y0, typed, s) * rng.uniform(0.6, 1.0), entry)


def _strip(rng, ppm: float, length: int, thick: int, frame) -> np.ndarray:
    """A reference strip lying on a scanner frame, (thick, length, 3): a ruler, a black and
    white scale bar, a grey scale or a colour bar."""
    kind = rng.choice(["ruler", "checker", "grey", "colour"])
    out = np.empty((thick, length, 3), np.float32)
    out[:] = frame
    if kind == "ruler":
        light = rng.random() < 0.6
        bg, fg = (rng.uniform(0.82, 0.97), rng.uniform(0.0, 0.12))[:: 1 if light else -1]
        out[:] = bg
        s = _SUPER
        im = Image.new("L", (length * s, thick * s), 0)
        d = ImageDraw.Draw(im)
        tw = max(1, round(rng.uniform(0.1, 0.3) * ppm * s))
        for i, x in enumerate(np.arange(rng.uniform(0, 3), length / ppm, 1.0)):
            tl = (0.25, 0.4, 0.6)[2 if i % 10 == 0 else 1 if i % 5 == 0 else 0]
            d.line((x * ppm * s, 0, x * ppm * s, tl * thick * s), fill=255, width=tw)
        a = np.asarray(im.resize((length, thick), Image.Resampling.BOX), np.float32) / 255
        return _blend(out, a, (fg,) * 3)
    if kind == "checker":
        block = max(1, int(rng.choice([5.0, 10.0]) * ppm))
        rows = 2 if rng.random() < 0.3 else 1
        yy, xx = np.mgrid[:thick, :length]
        on = ((xx // block) + (yy * rows // max(1, thick))) % 2 == 0
        out[:] = np.where(on[..., None], rng.uniform(0.0, 0.1), rng.uniform(0.85, 0.98))
        return out
    n = int(rng.integers(6, 25))
    patch = length / n
    gap = int(rng.uniform(0, 1.5) * ppm)
    values = np.linspace(rng.uniform(0.0, 0.1), rng.uniform(0.85, 1.0), n)
    for i in range(n):
        x, x1 = int(i * patch), int((i + 1) * patch) - gap
        c = (values[i],) * 3 if kind == "grey" else rng.random(3)
        out[:, x : max(x + 1, x1)] = np.asarray(c, np.float32)
    return out


def _frame(rng, img, ppm, plant):
    """A dark scanner frame or background margin along one to three edges of the image (the
    sheet did not fill the scan), often with a ruler, scale bar, grey scale or colour bar."""
    h, w = img.shape[:2]
    if rng.random() < 0.7:
        col = np.full(3, rng.uniform(0.0, 0.12), np.float32) + rng.uniform(-0.02, 0.02, 3)
    else:  # grey, blue, green or brown backing
        col = rng.uniform(0.05, 0.4, 3).astype(np.float32)
    yy, xx = np.ogrid[:h, :w]
    mask = np.zeros((h, w), np.float32)
    bands = []
    for side in rng.choice(4, size=int(rng.integers(1, 4)), replace=False):
        width = rng.uniform(2, 45) * ppm
        tilt = rng.uniform(-0.02, 0.02)
        along, across, n = (xx, yy, h) if side < 2 else (yy, xx, w)
        dist = across if side % 2 == 0 else (n - 1 - across)
        edge = width + tilt * (along - along.mean())
        mask = np.maximum(mask, np.clip(edge - dist + 0.5, 0, 1))
        bands.append((int(side), width))
    mask = _soft(mask, rng.uniform(0, 0.6) * ppm)
    grain = _noise_field(rng, (h, w), rng.uniform(0.5, 10) * ppm) - 0.5
    colour = np.clip(col + rng.uniform(0, 0.08) * grain[..., None], 0, 1)
    a = mask[..., None]
    out = img * (1 - a) + colour * a
    for side, width in bands:
        if rng.random() > 0.6:
            continue
        n_along = w if side < 2 else h
        length = int(min(n_along, rng.uniform(40, 250) * ppm))
        thick = max(2, int(min(width * rng.uniform(0.4, 1.3), rng.uniform(4, 20) * ppm)))
        strip = _strip(rng, ppm, length, thick, col)
        start = int(rng.uniform(-0.2, 1.0) * max(1, n_along - length))
        off = int(rng.uniform(0, max(1.0, width - thick)))
        if side % 2 == 1:  # far edge: the strip's ticks still face the sheet's edge
            strip = strip[::-1]
        if side >= 2:
            strip = strip.transpose(1, 0, 2)
        sh, sw = strip.shape[:2]
        if side == 0:
            y, x = off, start
        elif side == 1:
            y, x = h - off - sh, start
        elif side == 2:
            y, x = start, off
        else:
            y, x = start, w - off - sw
        ys, xs = max(0, y), max(0, x)
        ye, xe = min(h, y + sh), min(w, x + sw)
        if ye > ys and xe > xs:
            out[ys:ye, xs:xe] = strip[ys - y : ye - y, xs - x : xe - x]
    return out


def _coin(rng, img, ppm, plant):
    """A coin, washer or other small metallic disc lying on the sheet, with its shadow."""
    h, w = img.shape[:2]
    r = rng.uniform(4, 15) * ppm  # 8-30 mm across
    cx, cy = rng.uniform(-0.05, 1.05) * w, rng.uniform(-0.05, 1.05) * h
    x0, x1 = max(0, int(cx - 1.3 * r)), min(w, int(cx + 1.3 * r) + 2)
    y0, y1 = max(0, int(cy - 1.3 * r)), min(h, int(cy + 1.3 * r) + 2)
    if x1 <= x0 or y1 <= y0:
        return img
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    d = np.hypot(dx, dy)
    disc = np.clip(r - d + 0.5, 0, 1)
    metal = [(0.6, 0.6, 0.62), (0.62, 0.42, 0.26), (0.7, 0.6, 0.32), (0.35, 0.35, 0.36)]
    base = np.asarray(metal[int(rng.integers(len(metal)))], np.float32) * rng.uniform(0.7, 1.2)
    a = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0.1, 0.4) * (np.cos(a) * dx + np.sin(a) * dy) / r
    rim = 1 - rng.uniform(0.1, 0.4) * np.exp(-(((d / r - 0.9) / 0.04) ** 2))
    relief = _noise_field(rng, d.shape, rng.uniform(0.4, 2) * ppm) - 0.5
    shade = light * rim * (1 + rng.uniform(0, 0.4) * relief * (d < 0.82 * r))
    colour = np.clip(base * shade[..., None], 0, 1)
    out = img.copy()
    patch = out[y0:y1, x0:x1]
    sx, sy = rng.normal(0, 0.6 * ppm, 2)
    shadow = _soft(np.clip(r - np.hypot(dx - sx, dy - sy) + 0.5, 0, 1), rng.uniform(0.3, 1.5) * ppm)
    patch = _blend(patch, shadow * rng.uniform(0.1, 0.4), (0.1, 0.1, 0.1))
    a = disc[..., None]
    out[y0:y1, x0:x1] = patch * (1 - a) + colour * a
    return out


def _finger(rng, img, ppm, plant):
    """A finger tip (bare or gloved) reaching in from an edge of the image, holding the sheet."""
    h, w = img.shape[:2]
    side = int(rng.integers(4))
    rad = rng.uniform(6, 11) * ppm
    reach = rng.uniform(5, 60) * ppm
    t = rng.uniform(0, 1)
    ang = rng.normal(0, 0.4) + (np.pi / 2, -np.pi / 2, 0.0, np.pi)[side]
    bx, by = [(t * w, 0), (t * w, h), (0, t * h), (w, t * h)][side]
    ux, uy = np.cos(ang), np.sin(ang)
    tx, ty = bx + reach * ux, by + reach * uy  # tip centre
    sx, sy = tx - (reach + 4 * rad) * ux, ty - (reach + 4 * rad) * uy  # far outside
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    vx, vy = tx - sx, ty - sy
    along = np.clip(((xx - sx) * vx + (yy - sy) * vy) / (vx * vx + vy * vy), 0, 1)
    px_, py_ = sx + along * vx - xx, sy + along * vy - yy
    d = np.hypot(px_, py_)
    mask = np.clip(rad - d + 0.5, 0, 1)
    if not mask.any():
        return img
    skins = [(0.87, 0.68, 0.57), (0.76, 0.56, 0.44), (0.55, 0.38, 0.28), (0.38, 0.26, 0.2)]
    gloves = [(0.35, 0.45, 0.8), (0.5, 0.4, 0.75), (0.92, 0.92, 0.9)]
    pal = gloves if rng.random() < 0.25 else skins
    base = np.asarray(pal[int(rng.integers(len(pal)))], np.float32) + rng.uniform(-0.04, 0.04, 3)
    shade = 1 - rng.uniform(0.2, 0.45) * (d / rad) ** 2  # rounded: darker at the sides
    colour = np.clip(base * shade[..., None], 0, 1)
    if pal is skins and rng.random() < 0.6:  # a nail near the tip
        nx, ny = tx - 0.45 * rad * ux, ty - 0.45 * rad * uy
        nd = np.hypot(((xx - nx) * ux + (yy - ny) * uy) / 0.55, (xx - nx) * -uy + (yy - ny) * ux)
        nail = np.clip(0.5 * rad - nd + 0.5, 0, 1)[..., None] * rng.uniform(0.3, 0.7)
        colour = colour * (1 - nail) + np.asarray((0.93, 0.8, 0.78), np.float32) * nail
    shadow = _soft(mask, rng.uniform(0.5, 2) * ppm) * rng.uniform(0.1, 0.35)
    out = _blend(img, shadow, (0.1, 0.1, 0.1))
    a = _soft(mask, 0.4)[..., None]
    return out * (1 - a) + colour * a


def _specks(rng, img, ppm, plant):
    """Paper inclusions: tiny dark fibres and dots scattered sparsely and evenly over the sheet,
    each one on its own (mercury's speckles gather in clusters)."""
    h, w = img.shape[:2]
    area_cm2 = h * w / (ppm * 10) ** 2
    n = 1 + int(rng.poisson(area_cm2 * rng.uniform(0.01, 0.12)))
    # jittered grid, so that no two specks are close: sparse and even, never a cluster
    g = max(1, int(np.ceil(np.sqrt(n * 2))))
    cells = rng.choice(g * g, size=min(n, g * g), replace=False)
    xs = (cells % g + rng.uniform(0.15, 0.85, len(cells))) * w / g
    ys = (cells // g + rng.uniform(0.15, 0.85, len(cells))) * h / g
    fibre = rng.random(len(cells)) < rng.uniform(0.2, 0.8)
    out = img
    colours = [(0.1, 0.1, 0.1), (0.3, 0.22, 0.15), (0.12, 0.15, 0.35), (0.4, 0.4, 0.4)]
    group = rng.integers(0, 2, len(cells))
    palette = rng.choice(len(colours), 2)
    for k in range(2):
        pick = ~fibre & (group == k)
        r = np.clip(rng.lognormal(np.log(0.1), 0.4, pick.sum()), 0.05, 0.3) * ppm
        alpha = _dots(rng, (h, w), xs[pick], ys[pick], r, rng.uniform(0.3, 0.9, pick.sum()))
        s = _SUPER
        im = Image.new("L", (w * s, h * s), 0)
        d = ImageDraw.Draw(im)
        for x, y in zip(xs[fibre & (group == k)], ys[fibre & (group == k)]):
            a, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 4) * ppm
            pts = [(x * s, y * s)]
            for _ in range(3):
                a += rng.normal(0, 0.5)
                x, y = x + length / 3 * np.cos(a), y + length / 3 * np.sin(a)
                pts.append((x * s, y * s))
            width = max(1, round(rng.uniform(0.05, 0.2) * ppm * s))
            d.line(pts, fill=int(rng.uniform(100, 230)), width=width)
        alpha = np.maximum(alpha, np.asarray(im.resize((w, h), Image.Resampling.BOX)) / 255)
        out = _blend(out, alpha, colours[int(palette[k])])
    return out


def _stems(rng, img, ppm, plant):
    """Dark stems, twigs and petioles: long tapering strokes, brown to near black with a darker
    outline and a lighter core, bending and branching, with nodes."""
    h, w = img.shape[:2]
    s = 2
    outline = Image.new("L", (w * s, h * s), 0)
    core = Image.new("L", (w * s, h * s), 0)
    do, dc = ImageDraw.Draw(outline), ImageDraw.Draw(core)

    def stem(x, y, a, length, width, depth):
        step = rng.uniform(1.5, 5) * ppm
        n = max(2, int(length / step))
        for i in range(n):
            wd = width * (1 - 0.7 * i / n)
            a += rng.normal(0, 0.12)
            x1, y1 = x + step * np.cos(a), y + step * np.sin(a)
            wp = max(1, round(wd * s))
            do.line((x * s, y * s, x1 * s, y1 * s), fill=255, width=wp)
            r = wd * s / 2
            do.ellipse((x1 * s - r, y1 * s - r, x1 * s + r, y1 * s + r), fill=255)
            if wd * 0.4 * s >= 1:
                dc.line((x * s, y * s, x1 * s, y1 * s), fill=255, width=round(wd * 0.4 * s))
            if rng.random() < 0.08:  # a node
                r = wd * s * rng.uniform(0.6, 0.9)
                do.ellipse((x1 * s - r, y1 * s - r, x1 * s + r, y1 * s + r), fill=255)
            if depth < 2 and rng.random() < 0.12:
                side = rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)
                stem(x1, y1, a + side, length * rng.uniform(0.2, 0.5), wd * 0.6, depth + 1)
            x, y = x1, y1

    for x, y in _centres(rng, (h, w), plant, int(rng.integers(1, 4)), 0.5):
        stem(
            x,
            y,
            rng.uniform(0, 2 * np.pi),
            rng.uniform(20, 200) * ppm,
            rng.uniform(0.5, 3) * ppm,
            0,
        )
    a_out = np.asarray(outline.resize((w, h), Image.Resampling.BOX), np.float32) / 255
    a_core = np.asarray(core.resize((w, h), Image.Resampling.BOX), np.float32) / 255
    browns = [(0.22, 0.15, 0.09), (0.1, 0.09, 0.07), (0.24, 0.24, 0.12), (0.32, 0.16, 0.1)]
    base = np.asarray(browns[int(rng.integers(len(browns)))], np.float32)
    out = _blend(img, a_out, base)
    return _blend(out, a_core * rng.uniform(0.3, 0.8), np.clip(base * rng.uniform(1.3, 2.0), 0, 1))


_NEGATIVES = {
    "dust": _dust,
    "ink": _ink,
    "pencil": _pencil,
    "foxing": _foxing,
    "glue": _glue,
    "water": _water,
    "shadow": _shadow,
    "chart": _chart,
    "ruler": _ruler,
    "barcode": _barcode,
    "debris": _debris,
    "texture": _texture,
    "text": _text,
    "form": _form,
    "frame": _frame,
    "coin": _coin,
    "finger": _finger,
    "specks": _specks,
    "stems": _stems,
    "ageing": _ageing,
}


# ---------------------------------------------------------------------------------------------
# public API


def _check_kinds(kinds, allowed, what: str) -> tuple[str, ...]:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise ParameterError(f"unknown {what} kind {bad[0]!r}; choose from {', '.join(allowed)}")
    return kinds


def paint(
    rng: np.random.Generator,
    image: np.ndarray,
    *,
    stained: bool,
    severity: float | None = None,
    kinds=STAIN_KINDS,
    negatives=NEGATIVE_KINDS,
    n_negatives: int | None = None,
    style: Style = STYLES["train"],
    ppm: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Paint look-alikes (and stains when `stained`) onto an (h, w, 3) RGB image.

    `ppm` is the image's pixels per millimetre (default: the image is a whole sheet). When
    `n_negatives` is None it is drawn (0-4), and leaf texture, text and a label form are each
    added to half of the images besides. Returns
    (float32 image in [0, 1], float32 (h, w) stain strength in [0, 1], description).
    """
    kinds = _check_kinds(kinds, STAIN_KINDS, "stain")
    negatives = _check_kinds(negatives, NEGATIVE_KINDS, "look-alike")
    if stained and not kinds:
        raise ParameterError("a stained sheet needs at least one stain kind")
    img = _as_float(image)
    ppm = float(ppm or pixels_per_mm(img.shape))
    plant = plant_mask(img)
    drawn = n_negatives is None
    if drawn:
        n_negatives = int(rng.choice([0, 1, 1, 2, 2, 3, 4]))
    used_neg = [str(k) for k in rng.choice(negatives, size=n_negatives)] if negatives else []
    for common in _COMMON if drawn else ():
        if common in negatives and common not in used_neg and rng.random() < 0.5:
            used_neg.insert(0, common)
    for k in used_neg:
        img = np.clip(_NEGATIVES[k](rng, img, ppm, plant), 0, 1).astype(np.float32, copy=False)
    strength = np.zeros(img.shape[:2], np.float32)
    sev, used = 0.0, []
    if stained:
        sev = float(severity if severity is not None else rng.random() ** 1.5)
        p = np.array([_STAIN_P[k] for k in kinds])
        n = 1 + int(rng.random() < 0.4 * sev + 0.1) + int(rng.random() < 0.3 * sev)
        used = sorted({str(k) for k in rng.choice(kinds, size=n, p=p / p.sum())})
        before = _lum(img)
        for k in used:
            img = np.clip(_STAINS[k](rng, img, ppm, sev, style, plant), 0, 1).astype(
                np.float32, copy=False
            )
        strength = np.clip((before - _lum(img)) / 0.25, 0, 1)
    return (
        img,
        strength,
        {"stained": bool(stained), "severity": sev, "kinds": used, "negatives": used_neg},
    )


def scanner(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Imaging variation on a float RGB image: white balance, exposure, gamma, blur, noise and
    JPEG re-encoding; returns uint8."""
    img = image * rng.uniform(0.96, 1.04, 3).astype(np.float32) * rng.uniform(0.88, 1.08)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)
    img = img + rng.normal(0, rng.uniform(0, 0.02), img.shape).astype(np.float32)
    im = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.4:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    if rng.random() < 0.7:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(40, 96)))
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
    return np.array(im, np.uint8)
