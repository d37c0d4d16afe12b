"""Synthetic herbarium sheets, clean or mercury-stained, for the demo and the tests.

Each sheet has paper, a dried plant, tape, a typed label, a barcode and a colour bar. Stained
sheets add what mercury leaves behind: clusters of grey-black speckles, grey halos around the
stems and greyed plant tissue. Both classes get the same confusers (dirt, ink, pencil, foxing,
dust), so a model has to learn the stain pattern rather than "a dark spot".
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from herbscan.errors import ParameterError, check_range

__all__ = ["MANIFEST_COLUMNS", "make_collection", "make_sheet"]

MANIFEST_COLUMNS = ("path", "label", "catalogNumber", "severity", "synthetic")

_BASE_SIZE = (768, 1152)
_LOW = 8  # soft fields (blotches, halos, smudges) are drawn at 1/_LOW resolution

_CHECKER = (
    (115, 82, 68),
    (194, 150, 130),
    (98, 122, 157),
    (87, 108, 67),
    (133, 128, 177),
    (103, 189, 170),
    (214, 126, 44),
    (80, 91, 166),
    (193, 90, 99),
    (94, 60, 108),
    (157, 188, 64),
    (224, 163, 46),
    (56, 61, 150),
    (70, 148, 73),
    (175, 54, 60),
    (231, 199, 31),
    (187, 86, 149),
    (8, 133, 161),
)
_PAPER_TINTS = ((244, 239, 224), (247, 246, 240), (240, 232, 205), (236, 230, 214), (242, 236, 216))
_SYLLABLES = (
    "la",
    "ri",
    "mo",
    "ca",
    "ten",
    "phy",
    "lo",
    "ser",
    "an",
    "tho",
    "cor",
    "vi",
    "bra",
    "dro",
    "sel",
    "gi",
    "nel",
    "pa",
    "ste",
    "ru",
    "mi",
    "qua",
    "tor",
    "ly",
)


# ---------------------------------------------------------------------------------------------
# small helpers


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _jitter(rng: np.random.Generator, colour, amount: float) -> tuple[int, int, int]:
    c = np.asarray(colour, dtype=float) + rng.normal(0.0, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _soft_mask(size: tuple[int, int], small: Image.Image) -> Image.Image:
    """Upsample a low-resolution L field to `size` with smooth edges."""
    return small.resize(size, Image.Resampling.BILINEAR)


def _blend(img: Image.Image, mask: Image.Image, colour) -> Image.Image:
    """`img` with `colour` blended in, weighted by `mask`."""
    return Image.composite(Image.new("RGB", img.size, colour), img, mask)


def _blend_box(img: Image.Image, mask: Image.Image, colour, box: tuple[int, int, int, int]) -> None:
    """Blend `colour` into `img` inside `box`, weighted by `mask` (same size as the box)."""
    region = img.crop(box)
    solid = Image.new("RGB", region.size, colour)
    img.paste(Image.composite(solid, region, mask), box[:2])


def _soft_blobs(
    img: Image.Image,
    blobs: list[tuple[float, float, float, float, float]],
    colour,
    blur: float,
    rings: bool = False,
) -> None:
    """Blend soft ellipses (cx, cy, rx, ry, opacity) of one colour into `img`."""
    if not blobs:
        return
    w, h = img.size
    arr = np.asarray(blobs, dtype=float)
    pad = blur * _LOW * 2.5
    x0 = int(max(0, np.min(arr[:, 0] - arr[:, 2]) - pad))
    y0 = int(max(0, np.min(arr[:, 1] - arr[:, 3]) - pad))
    x1 = int(min(w, np.max(arr[:, 0] + arr[:, 2]) + pad))
    y1 = int(min(h, np.max(arr[:, 1] + arr[:, 3]) + pad))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    sw, sh = max(1, (x1 - x0) // _LOW), max(1, (y1 - y0) // _LOW)
    small = Image.new("L", (sw, sh), 0)
    d = ImageDraw.Draw(small)
    for cx, cy, rx, ry, op in blobs:
        cx, cy = (cx - x0) / _LOW, (cy - y0) / _LOW
        rx, ry = max(rx / _LOW, 0.6), max(ry / _LOW, 0.6)
        val = int(255 * min(op, 1.0))
        if rings:
            d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), outline=val, width=max(1, int(rx / 5)))
        else:
            d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=val)
    small = small.filter(ImageFilter.GaussianBlur(blur))
    _blend_box(img, _soft_mask((x1 - x0, y1 - y0), small), colour, (x0, y0, x1, y1))


def _dots(draw: ImageDraw.ImageDraw, xs, ys, rs, fills) -> None:
    for x, y, r, f in zip(xs.tolist(), ys.tolist(), rs.tolist(), fills):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=f)


# ---------------------------------------------------------------------------------------------
# paper, plant, furniture


def _paper(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    tint = np.asarray(_PAPER_TINTS[rng.integers(len(_PAPER_TINTS))], dtype=np.float32)
    tint = np.clip(tint + rng.normal(0, 3, 3), 200, 255) / 255.0
    sw, sh = max(2, w // _LOW), max(2, h // _LOW)
    coarse = Image.fromarray(rng.random((5, 4), dtype=np.float32) - 0.5)
    field = np.asarray(coarse.resize((sw, sh), Image.Resampling.BICUBIC))
    field = field * rng.uniform(0.03, 0.08) + (rng.random((sh, sw), dtype=np.float32) - 0.5) * 0.02
    if rng.random() < 0.6:  # vignette
        vx = np.linspace(-1, 1, sw, dtype=np.float32) ** 2
        vy = np.linspace(-1, 1, sh, dtype=np.float32) ** 2
        field = field - rng.uniform(0.02, 0.07) * (vx[None, :] + vy[:, None]) / 2
    small = Image.fromarray(np.clip((0.985 + field) * 250.0, 0, 250).astype(np.uint8))
    lum = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR)).copy()
    lum += rng.integers(0, 6, (h, w), dtype=np.uint8)  # fine grain; lum <= 250 so no overflow
    lut = np.clip(np.arange(256)[None, :] * tint[:, None], 0, 255).astype(np.uint8).ravel()
    return Image.fromarray(lum).convert("RGB").point(lut.tolist())


def _leaf_polygons(bases: np.ndarray, q: float, p: float, serrate: float) -> np.ndarray:
    """Leaf outlines for rows (x, y, angle, length, width) as an (n, 2m, 2) array."""
    t = np.linspace(0.0, 1.0, 9)
    prof = np.sin(np.pi * t**q) ** p
    if serrate:
        prof = prof * (1.0 - serrate * (np.arange(t.size) % 2))
    x, y, a, length, width = (bases[:, i : i + 1] for i in range(5))
    u = np.concatenate([t, t[::-1]])[None, :] * length
    v = np.concatenate([prof, -prof[::-1]])[None, :] * width
    ca, sa = np.cos(a), np.sin(a)
    return np.stack([x + u * ca - v * sa, y + u * sa + v * ca], axis=-1)


def _plant(rng: np.random.Generator, w: int, h: int, k: float):
    """Draw a dried plant on a transparent layer; return (layer, stem points (x, y, angle))."""
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    style = ("herb", "fern", "club")[rng.choice(3, p=(0.45, 0.3, 0.25))]
    dark = rng.random() < 0.15
    leaf_base = np.array(
        (70, 62, 40)
        if dark
        else ((108, 112, 62), (122, 120, 72), (96, 104, 58), (128, 110, 70))[rng.integers(4)],
        float,
    )
    stem_col = _jitter(rng, (112, 88, 58) if not dark else (80, 64, 44), 10)
    q, p = rng.uniform(0.6, 1.6), rng.uniform(0.5, 1.2)
    serrate = rng.uniform(0.1, 0.3) if rng.random() < 0.25 else 0.0
    leaf_len = rng.uniform(25, 60) * k * (0.4 if style == "fern" else 1.0)
    leaf_aspect = rng.uniform(0.18, 0.45)

    n_plants = 1 if rng.random() < 0.75 else 2
    stack = []
    for j in range(n_plants):
        x0 = w * (rng.uniform(0.25, 0.65) if n_plants == 1 else rng.uniform(0.2, 0.4) + 0.3 * j)
        y0 = h * rng.uniform(0.78, 0.93)
        length = h * rng.uniform(0.4, 0.68) / (1.0 if n_plants == 1 else 1.25)
        stack.append(
            (x0, y0, -math.pi / 2 + rng.normal(0, 0.2), length, rng.uniform(2.5, 5.0) * k, 0)
        )
        if rng.random() < 0.45:
            _roots(rng, draw, x0, y0, k, stem_col)
    max_depth = int(rng.integers(2, 4))
    stems, leaves, needles = [], [], []
    while stack:
        x, y, a, length, width, depth = stack.pop()
        nseg = max(3, int(length / (10 * k)))
        angs = a + np.cumsum(rng.normal(rng.normal(0, 0.02), 0.05, nseg))
        step = length / nseg
        xs = x + np.concatenate([[0.0], np.cumsum(np.cos(angs) * step)])
        ys = y + np.concatenate([[0.0], np.cumsum(np.sin(angs) * step)])
        draw.line(
            list(zip(xs.tolist(), ys.tolist())),
            fill=stem_col + (255,),
            width=max(1, round(width)),
            joint="curve",
        )
        seg_ang = np.concatenate([angs, angs[-1:]])
        stems.append(np.stack([xs, ys, seg_ang], axis=1))
        if depth < max_depth and length > 25 * k:
            n_child = int(rng.integers(2, 5)) if depth == 0 else int(rng.integers(1, 4))
            for t in np.sort(rng.uniform(0.2, 0.9, n_child)):
                i = int(t * nseg)
                side = 1 if rng.random() < 0.5 else -1
                stack.append(
                    (
                        xs[i],
                        ys[i],
                        angs[min(i, nseg - 1)] + side * rng.uniform(0.35, 0.9),
                        length * rng.uniform(0.4, 0.7),
                        max(1.0, width * 0.65),
                        depth + 1,
                    )
                )
        # foliage along this branch
        spacing = {
            "herb": rng.uniform(14, 28),
            "fern": rng.uniform(5, 9),
            "club": rng.uniform(2.5, 4.0),
        }[style] * k
        n_f = int(length / spacing)
        if n_f < 1 or (style == "herb" and depth == 0 and rng.random() < 0.5):
            continue
        idx = np.minimum((np.linspace(0.12, 1.0, n_f) * nseg).astype(int), nseg)
        sides = np.where(np.arange(n_f) % 2 == 0, 1.0, -1.0)
        taper = 1.0 - 0.6 * np.linspace(0, 1, n_f) if style != "herb" else np.ones(n_f)
        fa = seg_ang[idx] + sides * rng.uniform(0.5, 1.1, n_f)
        if style == "club":
            ln = rng.uniform(8, 18, n_f) * k * taper
            needles.append(np.stack([xs[idx], ys[idx], fa, ln], axis=1))
            other = seg_ang[idx] - sides * rng.uniform(0.5, 1.1, n_f)
            needles.append(
                np.stack([xs[idx], ys[idx], other, ln * rng.uniform(0.7, 1.0, n_f)], axis=1)
            )
        else:
            ln = leaf_len * rng.uniform(0.75, 1.25, n_f) * taper
            rows = np.stack([xs[idx], ys[idx], fa, ln, ln * leaf_aspect], axis=1)
            if style == "fern":  # leaflets on both sides
                rows2 = rows.copy()
                rows2[:, 2] = seg_ang[idx] - sides * rng.uniform(0.6, 1.1, n_f)
                rows = np.concatenate([rows, rows2])
            leaves.append(rows)
    if leaves:
        rows = np.concatenate(leaves)
        polys = _leaf_polygons(rows, q, p, serrate)
        shade = rng.normal(1.0, 0.08, (len(rows), 1)) + rng.normal(0, 0.03, (len(rows), 3))
        cols = np.clip(leaf_base * shade, 0, 255).astype(int).tolist()
        vein = tuple(int(c * 0.8) for c in leaf_base) + (255,)
        for poly, c, r in zip(polys.tolist(), cols, rows.tolist()):
            draw.polygon([tuple(pt) for pt in poly], fill=tuple(c) + (255,))
            if style == "herb" and r[3] > 14 * k:
                draw.line(
                    (
                        r[0],
                        r[1],
                        r[0] + 0.85 * r[3] * math.cos(r[2]),
                        r[1] + 0.85 * r[3] * math.sin(r[2]),
                    ),
                    fill=vein,
                    width=1,
                )
    if needles:
        nd = np.concatenate(needles)
        ends_x = nd[:, 0] + nd[:, 3] * np.cos(nd[:, 2])
        ends_y = nd[:, 1] + nd[:, 3] * np.sin(nd[:, 2])
        shade = rng.normal(1.0, 0.08, (len(nd), 1)) + rng.normal(0, 0.03, (len(nd), 3))
        cols = np.clip(leaf_base * shade, 0, 255).astype(int).tolist()
        nw = max(1, round(2 * k))
        for x, y, ex, ey, c in zip(
            nd[:, 0].tolist(), nd[:, 1].tolist(), ends_x.tolist(), ends_y.tolist(), cols
        ):
            draw.line((x, y, ex, ey), fill=tuple(c) + (255,), width=nw)
    stems = np.concatenate(stems)
    inside = (stems[:, 0] >= 0) & (stems[:, 0] < w) & (stems[:, 1] >= 0) & (stems[:, 1] < h)
    return layer, stems[inside]


def _roots(rng, draw, x0, y0, k, colour) -> None:
    col = tuple(int(c * 0.9) for c in colour) + (255,)
    for _ in range(int(rng.integers(2, 6))):
        a = math.pi / 2 + rng.normal(0, 0.6)
        n = int(rng.integers(6, 14))
        angs = a + np.cumsum(rng.normal(0, 0.25, n))
        step = rng.uniform(4, 9) * k
        xs = x0 + np.concatenate([[0.0], np.cumsum(np.cos(angs) * step)])
        ys = y0 + np.concatenate([[0.0], np.cumsum(np.sin(angs) * step)])
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=col, width=max(1, round(1.5 * k)))


def _tape(rng, img: Image.Image, stems: np.ndarray, k: float) -> None:
    n = int(rng.integers(0, 7))
    if n == 0 or len(stems) == 0:
        return
    draw = ImageDraw.Draw(img, "RGBA")
    colour = _jitter(rng, (246, 244, 236), 4) + (int(rng.integers(170, 230)),)
    for i in rng.integers(0, len(stems), n):
        x, y, a = stems[i]
        a += math.pi / 2 + rng.normal(0, 0.25)
        half_l, half_w = rng.uniform(14, 34) * k, rng.uniform(3.5, 6) * k
        ca, sa = math.cos(a), math.sin(a)
        pts = [
            (x + sx * half_l * ca - sy * half_w * sa, y + sx * half_l * sa + sy * half_w * ca)
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
        draw.polygon(pts, fill=colour)


def _word(rng, n_syl: tuple[int, int]) -> str:
    return "".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), rng.integers(*n_syl)))


def _label_lines(rng) -> list[str]:
    genus = (
        _word(rng, (2, 4)).capitalize() + ("ia", "um", "us", "ella", "opsis", "a")[rng.integers(6)]
    )
    epithet = _word(rng, (1, 3)) + ("ensis", "a", "um", "ii", "ata", "ifolia")[rng.integers(6)]
    author = _word(rng, (1, 3)).capitalize()[:6] + "."
    place = _word(rng, (2, 4)).capitalize()
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    date = f"{rng.integers(1, 29)} {months[rng.integers(12)]} {rng.integers(1870, 1990)}"
    initials = chr(65 + rng.integers(26)) + ". " + chr(65 + rng.integers(26)) + "."
    collector = f"{initials} {_word(rng, (2, 3)).capitalize()}"
    habitat = ("Moist woods", "Dry slope", "Sandy shore", "Meadow")[rng.integers(4)]
    header = (
        "HERBARIUM OF THE UNIVERSITY OF " + place.upper(),
        "PLANTS OF " + place.upper(),
        "FLORA OF " + place.upper() + " COUNTY",
    )[rng.integers(3)]
    return [
        header,
        f"{genus} {epithet} {author}",
        f"Near {_word(rng, (2, 3)).capitalize()} River, {place} Co.",
        f"Alt. {rng.integers(5, 300) * 10} m.   {habitat}",
        f"Coll. {collector}   No. {rng.integers(10, 9999)}",
        date,
    ]


def _label(rng, img: Image.Image, box: tuple[int, int, int, int], k: float) -> None:
    x0, y0, x1, y1 = box
    draw = ImageDraw.Draw(img)
    draw.rectangle(
        box,
        fill=_jitter(rng, (250, 249, 243), 3),
        outline=(90, 90, 90) if rng.random() < 0.5 else None,
        width=max(1, round(k)),
    )
    lines = _label_lines(rng)
    size = max(4, round((y1 - y0) / (len(lines) + 1.5)))
    widest = max(_font(size).getlength(line) for line in lines)
    fsize = max(4, min(round(size * 0.9), int(size * (x1 - x0 - 1.4 * size) / max(widest, 1))))
    ink = _jitter(rng, (35, 33, 38), 6)
    y = y0 + size * 0.6
    for i, line in enumerate(lines):
        draw.text((x0 + size * 0.6, y), line, fill=ink, font=_font(fsize - (i == 0)))
        y += size
    if (x1 - x0) > 40 * k:
        draw.line(
            (x0 + 6 * k, y0 + size * 1.6, x1 - 6 * k, y0 + size * 1.6),
            fill=ink,
            width=max(1, round(k)),
        )


def _barcode(rng, k: float) -> Image.Image:
    """A Code-39-looking barcode with its number underneath, at scale `k`."""
    number = f"{rng.integers(0, 10**8):08d}"
    n_chars = len(number) + 2
    widths = np.ones((n_chars, 10), dtype=int)
    for c in range(n_chars):  # three wide elements out of nine per character, then a gap
        widths[c, rng.choice(9, 3, replace=False)] = 3
    bars = np.tile(np.arange(10) % 2 == 0, n_chars)  # bar, space, bar, ...
    pattern = np.repeat(bars, widths.ravel())
    bar_h, quiet, text_h = 34, 8, 14
    bw, bh = pattern.size + 2 * quiet, bar_h + text_h + 2 * quiet
    arr = np.full((bh, bw), 252, dtype=np.uint8)
    arr[quiet : quiet + bar_h, quiet : quiet + pattern.size] = np.where(pattern, 15, 252)[None, :]
    code = Image.fromarray(arr).convert("RGB")
    ImageDraw.Draw(code).text(
        (bw / 2, quiet + bar_h + 1), number, fill=(20, 20, 20), font=_font(text_h - 2), anchor="mt"
    )
    scale = 1.3 * k
    if abs(scale - 1.0) > 0.05:
        code = code.resize(
            (max(8, round(bw * scale)), max(4, round(bh * scale))), Image.Resampling.BILINEAR
        )
    return code


def _colour_bar(rng, img: Image.Image, edge: str, thick: int) -> None:
    w, h = img.size
    vertical = edge in ("left", "right")
    along = h if vertical else w
    length = int(along * rng.uniform(0.55, 0.9))
    start = int(rng.uniform(0.02, 0.98) * (along - length))
    backing = int(rng.integers(60, 200))
    bar = Image.new("RGB", (thick, length) if vertical else (length, thick), (backing,) * 3)
    d = ImageDraw.Draw(bar)
    greys = [(int(v),) * 3 for v in np.linspace(245, 15, 10)]
    patches = list(_CHECKER) + greys
    cell = length / (len(patches) + 1)
    pad = max(1, int(thick * 0.15))
    for i, c in enumerate(patches):
        a, b = int((i + 0.5) * cell + 1), int((i + 1.5) * cell - 1)
        d.rectangle((pad, a, thick - pad, b) if vertical else (a, pad, b, thick - pad), fill=c)
    if vertical:
        pos = (w - thick if edge == "right" else 0, start)
    else:
        pos = (start, h - thick if edge == "bottom" else 0)
    img.paste(bar, pos)


# ---------------------------------------------------------------------------------------------
# confusers and stains


def _confusers(rng, img: Image.Image, k: float) -> list[str]:
    w, h = img.size
    names = []
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.35:
        names.append("dirt")
        blobs = []
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h
            for _ in range(int(rng.integers(1, 4))):
                r = rng.uniform(15, 60) * k
                blobs.append(
                    (
                        cx + rng.normal(0, r),
                        cy + rng.normal(0, r),
                        r,
                        r * rng.uniform(0.5, 1.2),
                        rng.uniform(0.1, 0.3),
                    )
                )
        _soft_blobs(img, blobs, _jitter(rng, (120, 96, 64), 10), blur=1.5)
    if rng.random() < 0.3:
        names.append("foxing")
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h
            n = int(rng.integers(3, 30))
            xs, ys = cx + rng.normal(0, 25 * k, n), cy + rng.normal(0, 25 * k, n)
            rs = rng.uniform(1.5, 5.0, n) * k
            fills = [_jitter(rng, (172, 126, 84), 10) for _ in range(n)]
            _dots(
                draw, xs, ys, rs * 1.5, [tuple(int(c + (255 - c) * 0.6) for c in f) for f in fills]
            )
            _dots(draw, xs, ys, rs * 0.8, fills)
    if rng.random() < 0.25:
        names.append("ink")
        n = int(rng.integers(1, 5))
        colour = (28, 34, 112) if rng.random() < 0.5 else (22, 22, 26)
        xs, ys = rng.uniform(0.05, 0.95, n) * w, rng.uniform(0.05, 0.95, n) * h
        _dots(draw, xs, ys, rng.uniform(1.5, 4.0, n) * k, [colour] * n)
        if rng.random() < 0.5:
            x, y, a = xs[0], ys[0], rng.uniform(0, math.pi)
            ln = rng.uniform(10, 40) * k
            draw.line(
                (x, y, x + ln * math.cos(a), y + ln * math.sin(a)),
                fill=colour,
                width=max(1, round(2 * k)),
            )
    if rng.random() < 0.35:
        names.append("pencil")
        grey = _jitter(rng, (118, 118, 122), 8)
        for _ in range(int(rng.integers(1, 3))):
            x, y = rng.uniform(0.05, 0.7) * w, rng.uniform(0.05, 0.95) * h
            n = int(rng.integers(12, 40))
            t = np.arange(n)
            xs = x + t * rng.uniform(2.5, 4.5) * k + rng.normal(0, 1.0, n) * k
            ys = y + np.sin(t * rng.uniform(1.2, 2.2)) * rng.uniform(3, 7) * k
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=grey, width=max(1, round(k)))
            if rng.random() < 0.5:
                draw.line(
                    (x, y + 10 * k, xs[-1], y + 10 * k + rng.normal(0, 2)),
                    fill=grey,
                    width=max(1, round(k)),
                )
    if rng.random() < 0.4:
        names.append("dust")
        n = int(rng.integers(8, 50))
        xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
        fills = [(int(v),) * 3 for v in rng.integers(40, 110, n)]
        _dots(draw, xs, ys, rng.uniform(0.8, 2.2, n) * k, fills)
    if rng.random() < 0.12:
        names.append("tideline")
        cx, cy, r = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h, rng.uniform(40, 120) * k
        _soft_blobs(
            img,
            [(cx, cy, r, r * rng.uniform(0.6, 1.0), rng.uniform(0.15, 0.3))],
            _jitter(rng, (190, 160, 95), 10),
            blur=1.0,
            rings=True,
        )
    return names


def _stain(
    rng, img: Image.Image, plant_alpha: Image.Image, stems: np.ndarray, s: float, k: float
) -> Image.Image:
    """Mercury staining of severity `s`: speckle clusters, grey halos and blotches, greyed plant."""
    w, h = img.size
    n_clusters = 1 + round((0.25 + s) * rng.uniform(2.5, 6.5))
    centres = []
    for _ in range(n_clusters):
        if len(stems) and rng.random() < 0.75:
            x, y, _a = stems[rng.integers(len(stems))]
            centres.append((x + rng.normal(0, 20 * k), y + rng.normal(0, 20 * k)))
        else:
            centres.append((rng.uniform(0.08, 0.92) * w, rng.uniform(0.08, 0.92) * h))
    radii = rng.uniform(20, 75, n_clusters) * k

    # soft field marking where the mercury spread, at low resolution
    sw, sh = max(2, w // _LOW), max(2, h // _LOW)
    field = Image.new("L", (sw, sh), 0)
    d = ImageDraw.Draw(field)
    for (cx, cy), r in zip(centres, radii):
        rr = r * rng.uniform(1.3, 2.2) / _LOW
        d.ellipse(
            (
                cx / _LOW - rr,
                cy / _LOW - rr * rng.uniform(0.6, 1.4),
                cx / _LOW + rr,
                cy / _LOW + rr,
            ),
            fill=int(255 * rng.uniform(0.6, 1.0)),
        )
    field_a = np.asarray(field.filter(ImageFilter.GaussianBlur(2.5)), dtype=np.float32) / 255

    plant_small = plant_alpha.resize((sw, sh), Image.Resampling.BOX)
    plant_small = plant_small.filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(1.5))
    near_plant = np.asarray(plant_small, np.float32) / 255
    near_plant = np.clip(near_plant * 2.5, 0, 1)
    blotch = field_a * (rng.uniform(0.1, 0.2) + rng.uniform(0.2, 0.4) * near_plant)
    blotch *= 0.5 + 0.5 * s
    mask = Image.fromarray((np.clip(blotch, 0, 1) * 255).astype(np.uint8))
    img = _blend(img, _soft_mask((w, h), mask), _jitter(rng, (92, 88, 80), 6))
    if rng.random() < 0.4 * s + 0.1:  # grey tide rings, as in old wet-stained sheets
        cx, cy = centres[0]
        r = rng.uniform(40, 110) * k
        _soft_blobs(
            img,
            [(cx, cy, r, r * rng.uniform(0.6, 1.0), 0.2 + 0.3 * s)],
            _jitter(rng, (100, 98, 94), 5),
            blur=1.0,
            rings=True,
        )

    # plant tissue inside the stained area turns grey
    full_field = _soft_mask(
        (w, h), Image.fromarray((field_a * 255 * (0.25 + 0.45 * s)).astype(np.uint8))
    )
    img = _blend(img, ImageChops.multiply(full_field, plant_alpha), (78, 76, 72))

    # the speckles: many small grey-black dots clustered around points and along stems
    speck = Image.new("L", (w, h), 0)
    sd = ImageDraw.Draw(speck)
    darkness = 0.6 + 0.4 * s
    for (cx, cy), r in zip(centres, radii):
        n = int((60 + 280 * s) * rng.uniform(0.6, 1.0))
        if len(stems) and rng.random() < 0.4:  # strung along a stretch of stem
            i0 = int(rng.integers(len(stems)))
            seg = stems[i0 : i0 + max(2, int(r / (5 * k)))]
            j = rng.integers(0, len(seg), n)
            xs = seg[j, 0] + rng.normal(0, 0.25 * r, n)
            ys = seg[j, 1] + rng.normal(0, 0.25 * r, n)
        else:
            n_sub = int(rng.integers(1, 5))
            sub = np.stack(
                [cx + rng.normal(0, 0.4 * r, n_sub), cy + rng.normal(0, 0.4 * r, n_sub)], axis=1
            )
            j = rng.integers(0, n_sub, n)
            spread = rng.uniform(0.2, 0.45) * r
            xs, ys = sub[j, 0] + rng.normal(0, spread, n), sub[j, 1] + rng.normal(0, spread, n)
        rs = np.minimum(1.5 + rng.exponential(0.7, n), 6.0) * k
        ops = np.clip(rng.uniform(0.55, 1.0, n) * darkness, 0, 1)
        halo = rng.random(n) < 0.2
        _dots(sd, xs[halo], ys[halo], rs[halo] * 1.7, [int(v) for v in ops[halo] * 70])
        _dots(sd, xs, ys, rs, [int(v) for v in ops * 255])
    n_scatter = int(s * rng.uniform(50, 300))  # loose speckles elsewhere on a badly stained sheet
    if n_scatter:
        xs, ys = rng.uniform(0, w, n_scatter), rng.uniform(0, h, n_scatter)
        _dots(
            sd,
            xs,
            ys,
            np.minimum(1.2 + rng.exponential(0.6, n_scatter), 4) * k,
            [int(v) for v in rng.uniform(0.5, 1.0, n_scatter) * 255 * darkness],
        )
    return _blend(img, speck, _jitter(rng, (38, 37, 36), 4))


# ---------------------------------------------------------------------------------------------
# public API


def _check_size(size) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) for v in size)
    ):
        raise ParameterError(f"size must be a (width, height) pair of integers; got {size!r}")
    check_range("size[0] (width)", int(size[0]), 64, 8192)
    check_range("size[1] (height)", int(size[1]), 64, 8192)
    return int(size[0]), int(size[1])


def _draw_severity(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.05, 0.3) if rng.random() < 0.15 else rng.uniform(0.3, 1.0))


def make_sheet(
    rng: np.random.Generator,
    *,
    stained: bool,
    severity: float | None = None,
    size: tuple[int, int] = _BASE_SIZE,
) -> tuple[Image.Image, dict]:
    """One synthetic sheet (RGB, size=(width, height)) and a dict describing it:
    {"stained": bool, "severity": float (0.0 when clean), "confusers": list[str]}"""
    if not isinstance(rng, np.random.Generator):
        raise ParameterError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    w, h = _check_size(size)
    if severity is not None:
        check_range("severity", severity, 0.0, 1.0)
        if not stained and severity != 0:
            raise ParameterError(f"severity must be None or 0 for a clean sheet; got {severity!r}")
    # separate streams: the same seed gives the same sheet and confusers, stained or not
    r_layout, r_confuse, r_stain = rng.spawn(3)
    k = min(w / _BASE_SIZE[0], h / _BASE_SIZE[1])

    img = _paper(r_layout, w, h)
    layer, stems = _plant(r_layout, w, h, k)
    plant_alpha = layer.getchannel("A")
    img = Image.composite(layer.convert("RGB"), img, plant_alpha)
    _tape(r_layout, img, stems, k)

    edge = ("right", "left", "top", "bottom")[r_layout.choice(4, p=(0.55, 0.15, 0.15, 0.15))]
    thick = max(8, round(44 * k))
    inner = [0, 0, w, h]
    inner[{"right": 2, "left": 0, "top": 1, "bottom": 3}[edge]] += (
        thick if edge in ("left", "top") else -thick
    )
    margin = 14 * k
    lw = int((inner[2] - inner[0]) * r_layout.uniform(0.34, 0.45))
    lh = int(h * r_layout.uniform(0.1, 0.14))
    if r_layout.random() < 0.8:
        lx = int(inner[2] - margin - lw - r_layout.uniform(0, 20) * k)
    else:
        lx = int(inner[0] + margin + r_layout.uniform(0, 20) * k)
    ly = int(inner[3] - margin - lh - r_layout.uniform(0, 20) * k)
    _label(r_layout, img, (lx, ly, lx + lw, ly + lh), k)
    code = _barcode(r_layout, k)
    gap = int(margin)
    if r_layout.random() < 0.5:  # barcode next to the label
        bx = lx - code.width - gap if lx > (inner[0] + inner[2]) / 2 else lx + lw + gap
        by = ly + lh - code.height
    else:  # or in an upper corner
        bx = inner[0] + gap if r_layout.random() < 0.5 else inner[2] - gap - code.width
        by = inner[1] + gap
    img.paste(code, (max(0, int(bx)), max(0, int(by))))
    if r_layout.random() < 0.3:  # a stamp printed straight on the paper
        fx, fy = inner[0] + margin, inner[3] - margin - h * 0.2
        stamp = ("UNITED STATES", f"{r_layout.integers(10000, 999999)}", "NATIONAL HERBARIUM")
        draw, font = ImageDraw.Draw(img), _font(max(4, round(13 * k)))
        for i, line in enumerate(stamp):
            draw.text((fx, fy + i * 16 * k), line, fill=(50, 50, 60), font=font)

    confusers = _confusers(r_confuse, img, k)
    sev = 0.0
    if stained:
        sev = float(severity) if severity is not None else _draw_severity(r_stain)
        img = _stain(r_stain, img, plant_alpha, stems, sev, k)
    _colour_bar(r_layout, img, edge, thick)
    return img, {"stained": bool(stained), "severity": sev, "confusers": confusers}


def _rephotograph(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    """The same sheet photographed again: small shift and rotation, other exposure, re-encoded."""
    w, h = img.size
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(70, 92)))
    buf.seek(0)
    with Image.open(buf) as again:
        again = again.convert("RGB")
    shift = (float(rng.uniform(-0.02, 0.02) * w), float(rng.uniform(-0.02, 0.02) * h))
    again = again.rotate(
        float(rng.uniform(-2.0, 2.0)),
        resample=Image.Resampling.BILINEAR,
        translate=shift,
        fillcolor=(88, 88, 90),
    )
    return ImageEnhance.Brightness(again).enhance(float(rng.uniform(0.9, 1.1)))


def make_collection(
    out_dir: str | Path,
    *,
    n_specimens: int = 300,
    stained_fraction: float = 0.5,
    duplicate_fraction: float = 0.1,
    size: tuple[int, int] = _BASE_SIZE,
    seed: int = 0,
    quality: int = 90,
) -> Path:
    """Write a synthetic collection and return the path of its manifest.csv."""
    for name, value in (("n_specimens", n_specimens), ("seed", seed), ("quality", quality)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ParameterError(f"{name} must be an integer; got {value!r}")
    check_range("n_specimens", n_specimens, 1)
    check_range("stained_fraction", stained_fraction, 0.0, 1.0)
    check_range("duplicate_fraction", duplicate_fraction, 0.0, 1.0)
    check_range("seed", seed, 0)
    check_range("quality", quality, 1, 100)
    size = _check_size(size)

    out = Path(out_dir)
    for sub in ("clean", "contaminated"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    master = np.random.default_rng([int(seed), 0x5EED])
    stained = np.zeros(n_specimens, dtype=bool)
    stained[master.permutation(n_specimens)[: round(n_specimens * stained_fraction)]] = True
    dup = np.zeros(n_specimens, dtype=bool)
    dup[master.permutation(n_specimens)[: round(n_specimens * duplicate_fraction)]] = True

    rows = []
    for i in range(n_specimens):
        rng = np.random.default_rng([int(seed), i])
        img, info = make_sheet(rng, stained=bool(stained[i]), size=size)
        label = "contaminated" if stained[i] else "clean"
        catalog = f"HS{i + 1:06d}"
        images = [(catalog, img)]
        if dup[i]:
            images.append((catalog + "_b", _rephotograph(rng, img)))
        for stem, im in images:
            rel = f"{label}/{stem}.jpg"
            im.save(out / rel, "JPEG", quality=int(quality))
            rows.append((rel, label, catalog, f"{info['severity']:.3f}", "true"))

    manifest = out / "manifest.csv"
    tmp = out / f".manifest.csv.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(rows)
        os.replace(tmp, manifest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return manifest
