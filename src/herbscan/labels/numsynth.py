"""Synthetic images of stamped catalogue numbers, to train the number readers without real data.

Accession numbers are stamped with numbering machines and hand stamps: a typewriter-like face,
digits that sit a little off the baseline, ink that is speckled, faded, spread or broken, a rule
printed under or through the digits and bits of the stamp's own lettering at the edges. Each
image here is one such number, rendered in a system font and then damaged in those ways, as the
bands `stamps.number_bands` cuts from a real stamp: grey, ink dark on light paper, the digits
about `DIGIT_SHARE` of the image height, often with blank paper on either side.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HEIGHT = 32
"""Height (px) of the images the reader sees."""
DIGIT_SHARE = 0.62
"""Typical digit height as a share of the image height (the middle band is cut with 0.3 digit
heights above and below); each synthetic image varies it by ±20%, as the other bands do."""
ALPHABET = string.digits + string.ascii_uppercase
"""Characters the reader can emit (a blank is added for CTC)."""

_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
)


@functools.cache
def system_fonts() -> tuple[str, ...]:
    """TrueType/OpenType fonts on this machine (sorted, so training is repeatable); without any,
    Pillow's built-in scalable font is used."""
    found = []
    for d in _FONT_DIRS:
        for ext in ("ttf", "otf", "TTF"):
            found += glob.glob(os.path.join(d, "**", f"*.{ext}"), recursive=True)
    return tuple(
        sorted(f for f in found if not any(s in os.path.basename(f).lower() for s in _NOT_TEXT))
    )


_SLANTED = re.compile(r"italic|oblique|ita\b|ita\.", re.IGNORECASE)
_NOT_TEXT = ("math", "symbol", "emoji", "dingbat", "d050000l", "z003", "chorus")
"""Fonts whose digits are pictures or calligraphy, not print (file-name parts)."""


@functools.cache
def _upright(fonts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f for f in fonts if not _SLANTED.search(os.path.basename(f)))


def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size)


_SERIES = [c for c in string.ascii_uppercase if c not in "IO"]  # I and O read as 1 and 0


def random_number(rng: np.random.Generator) -> str:
    """A catalogue number as stamped: 3–7 digits, sometimes after a letter series ("V 87317")."""
    digits = "".join(rng.choice(list(string.digits), size=int(rng.integers(3, 8))))
    r = rng.random()
    if r < 0.35:
        prefix = str(rng.choice(_SERIES))
    elif r < 0.42:
        prefix = "".join(rng.choice(_SERIES, size=2))
    else:
        return digits
    return prefix + (" " if rng.random() < 0.4 else "") + digits


OLD_STYLE = 0.2
"""Share of numbers set in old-style figures, as on typewriters and numbering machines with a
short 1 (and sometimes 0 and 2) at x-height and 3, 4, 5, 7, 9 dropped below the line."""


def _figure_styles(
    text: str, font, path: str | None, size: int, rng: np.random.Generator, old_style: float
) -> tuple[list, list[float]]:
    """The font of each character and how far it sits below the line, in digit heights."""
    if not old_style or rng.random() >= old_style:  # draws nothing when off
        return [font] * len(text), [0.0] * len(text)
    short = _font(path, max(8, round(size * rng.uniform(0.6, 0.8))))
    small = "1" if rng.random() < 0.5 else "012"
    drop = rng.uniform(0.0, 0.25) if small == "012" else 0.0
    return (
        [short if c in small else font for c in text],
        [drop if c in "34579" else 0.0 for c in text],
    )


def render_number(
    text: str,
    rng: np.random.Generator,
    fonts: tuple[str, ...] | None = None,
    old_style: float = OLD_STYLE,
) -> np.ndarray:
    """One damaged stamped number, grey uint8, `HEIGHT` px tall (width follows the text), in
    old-style figures with probability `old_style`."""
    fonts = system_fonts() if fonts is None else fonts
    path = None
    if fonts:
        upright = _upright(fonts)
        pool = fonts if not upright or rng.random() < 0.15 else upright  # stamps are upright
        path = str(rng.choice(list(pool)))
    size = 64
    font = _font(path, size)
    digit_h = font.getbbox("0")[3] - font.getbbox("0")[1] or size * 0.7
    # bands are cut with more or less paper above and below the digits
    canvas_h = int(digit_h / (DIGIT_SHARE * rng.uniform(0.8, 1.2))) + 1
    spacing = rng.uniform(-0.04, 0.25) * digit_h
    fonts_of, drops = _figure_styles(text, font, path, size, rng, old_style)
    widths = [max(1.0, f.getlength(c)) for c, f in zip(text, fonts_of, strict=True)]
    total = sum(widths) + spacing * (len(text) - 1)
    # the band is cut across the stamp's inside, so the number may sit off centre in blank paper
    left, right = rng.uniform(0.1, 2.5, size=2) * digit_h
    margin = min(left, right)
    w = int(total + left + right) + 2
    ink = Image.new("L", (w, canvas_h), 0)
    draw = ImageDraw.Draw(ink)
    top0 = (canvas_h - digit_h) / 2 - font.getbbox("0")[1] + rng.normal(0, 0.06) * digit_h
    baseline = top0 + font.getmetrics()[0]
    x = left
    for c, cw, f, drop in zip(text, widths, fonts_of, drops, strict=True):
        level = int(255 * rng.uniform(0.75, 1.0))  # numbering-machine wheels ink unevenly
        jitter = rng.normal(0, 0.025)
        if old_style:  # figures that may differ in size are set on one baseline
            draw.text((x, baseline + (drop + jitter) * digit_h), c, font=f, fill=level, anchor="ls")
        else:
            draw.text((x, top0 + jitter * digit_h), c, font=font, fill=level)
        x += cw + spacing
    a = np.asarray(ink, dtype=np.float32) / 255.0
    rule = np.zeros_like(a)
    if rng.random() < 0.6:  # a rule under or through the digits
        y = int(canvas_h / 2 + digit_h * rng.uniform(0.35, 0.65))
        t = max(1, int(digit_h * rng.uniform(0.03, 0.09)))
        x0 = 0 if rng.random() < 0.5 else int(rng.uniform(0, margin))
        # printed with the stamp's own ink, or by the stamp before a paler numbering machine
        target = a if rng.random() < 0.6 else rule
        target[y : y + t, x0 : w - int(rng.uniform(0, margin))] = rng.uniform(0.6, 1.0)
    if rng.random() < 0.3:  # the stamp's lettering or outline cut at the top or bottom edge
        edge = Image.new("L", (w, canvas_h), 0)
        d = ImageDraw.Draw(edge)
        for _ in range(int(rng.integers(1, 5))):
            cx = rng.uniform(0, w)
            cy = rng.choice([rng.uniform(-0.1, 0.05), rng.uniform(0.95, 1.1)])
            r = rng.uniform(0.05, 0.2) * canvas_h
            d.ellipse(
                (cx - r, cy * canvas_h - r, cx + r, cy * canvas_h + r),
                fill=int(rng.uniform(120, 255)),
            )
        a = np.maximum(a, np.asarray(edge, dtype=np.float32) / 255.0)
    if rng.random() < 0.25:  # the outline crossing the band's end
        edge = Image.new("L", (w, canvas_h), 0)
        end = rng.choice([rng.uniform(-0.5, 0.3), w / digit_h - rng.uniform(-0.5, 0.3)])
        cx, r = end * digit_h, rng.uniform(2.0, 5.0) * canvas_h
        side = -1 if end * digit_h < w / 2 else 1
        ImageDraw.Draw(edge).ellipse(
            (cx - side * r - r, canvas_h / 2 - r, cx - side * r + r, canvas_h / 2 + r),
            outline=255,
            width=max(1, int(digit_h * rng.uniform(0.03, 0.1))),
        )
        a = np.maximum(a, np.asarray(edge, dtype=np.float32) / 255.0)
    img = Image.fromarray((a * 255).astype(np.uint8))
    if rng.random() < 0.5:  # ink bled into the paper, or starved: blur, then cut at a level
        soft = (
            np.asarray(
                img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 3.0))), dtype=np.float32
            )
            / 255.0
        )
        img = Image.fromarray(
            (np.clip((soft - rng.uniform(0.2, 0.5)) * 6.0, 0, 1) * 255).astype(np.uint8)
        )
    a = np.asarray(img, dtype=np.float32) / 255.0
    # speckled, broken ink: a blurred noise field eats into the strokes
    grain = (
        np.asarray(
            Image.fromarray((rng.random(a.shape) * 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(rng.uniform(0.8, 2.5))
            ),
            dtype=np.float32,
        )
        / 255.0
    )
    a = a * np.clip(1.0 - rng.uniform(0, 1.6) * np.clip(grain - 0.5, 0, None) * 2.0, 0, 1)
    ink_level = rng.uniform(0.25, 1.0)  # pale blue stamp pad … fresh black ink
    paper = rng.uniform(200, 255)
    grey = paper - np.maximum(a * ink_level, rule) * paper
    img = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 2.0)))
    img = img.rotate(rng.normal(0, 1.2), resample=Image.Resampling.BILINEAR, fillcolor=int(paper))
    out_w = max(8, round(img.width * HEIGHT / img.height * rng.uniform(0.7, 1.3)))
    img = img.resize((out_w, HEIGHT), Image.Resampling.BILINEAR)
    g = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(0, 10), (HEIGHT, out_w))
    return normalise(g)


def normalise(grey: np.ndarray) -> np.ndarray:
    """Stretch a grey band so ink is near 0 and paper 255 (the same for training and reading)."""
    g = grey.astype(np.float32)
    lo, hi = np.percentile(g, 1), np.percentile(g, 70)
    return np.clip((g - lo) / max(hi - lo, 8.0) * 255.0, 0, 255).astype(np.uint8)


def make_batch(
    n: int,
    rng: np.random.Generator,
    fonts: tuple[str, ...] | None = None,
    old_style: float = OLD_STYLE,
) -> tuple[list[np.ndarray], list[str]]:
    """`n` images and their texts (spaces dropped: the reader emits the characters only)."""
    texts = [random_number(rng) for _ in range(n)]
    return (
        [render_number(t, rng, fonts, old_style) for t in texts],
        [t.replace(" ", "") for t in texts],
    )
