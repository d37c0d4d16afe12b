"""Ink stamps on a sheet and the numbers stamped inside them.

Many herbaria stamp the accession number into an oval or boxed institutional stamp, away from
the label. Tesseract's layout pass skips such stamps (the outline and the curved text around it
read as a picture), so they are found by shape instead: a thin, closed loop of ink of stamp size
that is hollow in the middle. Stamp ink is often pale blue or violet on cream paper, so ink is
measured on the darkest colour channel against the local paper brightness.

The number is the line of characters in the stamp's middle (`number_bands`), read by herbscan's
own number readers (`numreader`, trained on synthetic stamped numbers) rather than tesseract,
which misreads speckled numbering-machine digits crossed by a rule about two times in three.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

FIND_SIDE = 2400
"""Long side (px) of the image searched for stamp outlines (about 150 dpi): a stamp's thin, pale
outline breaks up in coarser images (1200 px found 130 of the 158 ALA stamps, 2400 px 149, and
154 with gaps closed as well)."""
MIN_WIDTH, MAX_WIDTH = 0.06, 0.35
"""A stamp's width as a fraction of the sheet's width (labels are wider, specks narrower)."""
INK = 35
"""How much darker than the local paper (0–255, darkest channel) a pixel must be to be ink."""
NUMBER = re.compile(r"^[A-Z]{0,2}\d{4,8}$")


@dataclass
class Stamp:
    """A stamp outline (x, y, w, h in sheet pixels), the number read inside it ("" if none was
    read) and how many of the reads gave that number."""

    box: tuple[int, int, int, int]
    number: str = ""
    votes: int = 0
    reads: int = 0
    conf: float = 0.0
    """Confidence in `number`: the share of reads that gave it (see `MAX_CONF`)."""

    def to_dict(self) -> dict:
        return asdict(self)


def _darkest(image: Image.Image) -> np.ndarray:
    a = np.asarray(image.convert("RGB"))
    return a.min(axis=2).astype(np.float32)


def find_stamps(sheet: Image.Image, *, side: int = FIND_SIDE) -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h, sheet pixels) of thin closed ink outlines the size of a stamp.

    Outlines are looked for in the ink as it is and with gaps of a few pixels closed (a worn
    stamp prints its outline in pieces); of overlapping boxes the larger is kept."""
    scale = min(1.0, side / max(sheet.size))
    small = sheet
    if scale < 1.0:
        small = sheet.resize(
            (round(sheet.width * scale), round(sheet.height * scale)), Image.Resampling.BILINEAR
        )
    a = _darkest(small)
    ink = (ndi.maximum_filter(a, size=15) - a) > INK
    boxes: list[tuple[int, int, int, int]] = []
    for mask in (ink, ndi.binary_closing(ink, structure=np.ones((5, 5)))):
        for box in _outlines(mask, small.width):
            box = tuple(round(v / scale) for v in box)
            same = [b for b in boxes if _overlap(box, b) > 0.5]
            if all(box[2] * box[3] > b[2] * b[3] for b in same):
                boxes = [b for b in boxes if b not in same] + [box]
    return boxes


def _outlines(ink: np.ndarray, width: int) -> list[tuple[int, int, int, int]]:
    """Boxes of the ink components that are thin, hollow, closed loops of stamp size."""
    labels, _ = ndi.label(ink, structure=np.ones((3, 3)))
    boxes = []
    for i, sl in enumerate(ndi.find_objects(labels), 1):
        if sl is None:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if not (MIN_WIDTH * width <= w <= MAX_WIDTH * width and 0.3 <= h / w <= 1.05):
            continue
        comp = labels[sl] == i
        if comp.mean() > 0.2:  # a blot or a plant, not an outline
            continue
        if comp[h // 4 : h - h // 4, w // 4 : w - w // 4].mean() > 0.02:  # not hollow
            continue
        bands = (comp[: h // 5], comp[-(h // 5) :], comp[:, : w // 5], comp[:, -(w // 5) :])
        if not all(b.any() for b in bands):  # an arc or a bracket, not a closed loop
            continue
        boxes.append((sl[1].start, sl[0].start, w, h))
    return boxes


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / max(1, min(a[2] * a[3], b[2] * b[3]))


CORE = 0.62
"""The number is looked for inside this share of the stamp's half-axes: the middle of an oval or
box, away from the lettering that runs around its edge."""
EDGE = 0.85
"""Elliptical radius (share of the half-axes) beyond which characters belong to the lettering
that runs around the outline, not to the number."""
PAPER_RATIO = 200
"""A pixel is ink below this grey level once the paper is flattened to 255 (pale stamp inks
included)."""
PALE_RATIO = 225
"""A paler ink level, for numbers stamped in pale ink: its line is taken when it is the usual
level's line grown longer (`MIN_GROWTH` to `MAX_GROWTH` times), as broken-up digits join again;
never on its own, where it would read paper texture in a blank stamp."""
MIN_GROWTH, MAX_GROWTH = 1.3, 2.0


def _flat(crop: Image.Image) -> np.ndarray:
    """Darkest channel divided by the local paper brightness: paper 255, ink darker."""
    a = _darkest(crop)
    paper = ndi.maximum_filter(a, size=max(15, crop.height // 8))
    return np.clip(a / np.maximum(paper, 1.0) * 255.0, 0, 255)


def _runs(ink: np.ndarray, length: int) -> np.ndarray:
    """Pixels in horizontal runs of `ink` at least `length` long."""
    padded = np.pad(ink, ((0, 0), (1, 1))).astype(np.int8)
    d = np.diff(padded, axis=1)
    out = np.zeros(ink.shape, dtype=bool)
    for y, x in zip(*np.nonzero(d == 1), strict=True):
        end = x + int(np.argmax(d[y, x:] == -1))
        if end - x >= length:
            out[y, x:end] = True
    return out


def _rules(ink: np.ndarray, length: int) -> np.ndarray:
    """Ink of the straight rules that run across a stamp (and of the outline's top and bottom):
    horizontal runs at least `length` long, and thin strokes that run that long once thickened
    upwards and downwards (a rule stamped at a slant steps from row to row)."""
    thickness = max(3, ink.shape[0] // 40)
    thin = ink & ~ndi.binary_opening(ink, structure=np.ones((thickness + 1, 1)))
    slanted = _runs(ndi.binary_dilation(thin, structure=np.ones((5, 1))), length) & thin
    return _runs(ink, length) | slanted


def _solid(comp: np.ndarray) -> bool:
    """Whether a component is drawn like characters (most columns cross a good share of its
    height) rather than as a thin, slanting line or arc."""
    cols = comp.any(axis=0)
    top = np.argmax(comp, axis=0)
    bottom = comp.shape[0] - np.argmax(comp[::-1], axis=0)
    return bool(np.median((bottom - top)[cols]) >= 0.4 * comp.shape[0])


MAX_CONF = 0.95
"""A stamp's confidence is the share of its reads that agree, at most this. On the 158 ALA
stamps the agreement, not the readers' own per-read probability, told right from wrong: with the
three shipped readers (18 reads), numbers given by 1–3 reads were right 0 times of 7, by 5–6
2 of 5, by 7–9 6 of 6, by 12–14 13 of 15, by 15–17 37 of 38 and by all 18 35 of 35 (zero padding
ignored; no number came from 4, 10 or 11 reads)."""
AGREED = Fraction(2, 3)
"""Share of the reads that must agree before a number is taken on the number readers' word
alone."""
CROSS_CHECKED = 0.55
"""Confidence of a number tesseract also gave while the number readers' reads disagreed: right 7
times of 11 on the ALA stamps with the shipped readers, so still sent for review."""
BAND_PADS = (0.2, 0.3, 0.45)
"""Paper kept above and below the number line, in line heights: one band per pad and per
source (as stamped, rules erased) is read, and the reads vote."""


def number_bands(crop: Image.Image) -> list[np.ndarray]:
    """The line of characters in the middle of a stamp as grey bands (`BAND_PADS` × as stamped
    and with rules erased), or [] when the middle is empty.

    Characters are ink components of text size whose centre lies in the stamp's core (`CORE`),
    grouped by height on the stamp; the group with the most ink is the number, grown along
    characters level with it out to the edge lettering (`EDGE`)."""
    flat = _flat(crop)
    line = _line(flat, flat < PAPER_RATIO)
    if line is None:
        return []
    pale = _line(flat, flat < PALE_RATIO)
    if pale and _extends(pale, line):
        line = pale
    (y0, y1, x0, x1), chars = line
    erased = np.where(ndi.binary_dilation(chars), flat, 255.0)
    bands = []
    for pad in BAND_PADS:
        rows = slice(max(0, y0 - int(pad * (y1 - y0))), y1 + int(pad * (y1 - y0)))
        bands += [flat[rows, x0:x1].astype(np.uint8), erased[rows, x0:x1].astype(np.uint8)]
    return bands


def _extends(pale: tuple, line: tuple) -> bool:
    """Whether the line found in paler ink is the same line, longer: pale digits break up at
    the usual ink level, and only some of them are found."""
    (a0, a1, b0, b1), _ = pale
    (c0, c1, d0, d1), _ = line
    overlap = min(a1, c1) - max(a0, c0)
    return (
        b0 <= d0
        and b1 >= d1
        and overlap >= 0.5 * (c1 - c0)
        and MIN_GROWTH * (d1 - d0) <= b1 - b0 <= MAX_GROWTH * (d1 - d0)
    )


def _line(flat: np.ndarray, ink: np.ndarray) -> tuple | None:
    """The number line's box (y0, y1, x0, x1) and the character ink, or None."""
    h, w = flat.shape
    rules = ndi.binary_dilation(_rules(ink, max(10, int(0.15 * w))), structure=np.ones((3, 1)))
    chars = ink & ~rules
    yy, xx = np.mgrid[0:h, 0:w]
    core = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2 < CORE**2
    labels, _ = ndi.label(
        ndi.binary_closing(chars, structure=np.ones((3, 3))), structure=np.ones((3, 3))
    )
    comps, inner = [], []  # (y0, y1, x0, x1, ink pixels); those with their centre in the core
    for i, sl in enumerate(ndi.find_objects(labels), 1):
        ch, cw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if not (0.06 * h <= ch <= 0.4 * h and cw <= 0.75 * w):
            continue
        comp = labels[sl] == i
        c = (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop, int(comp.sum()))
        comps.append(c)  # a wide one may be digits run together
        if core[(c[0] + c[1]) // 2, (c[2] + c[3]) // 2] and (cw <= 0.3 * w or _solid(comp)):
            inner.append(c)
    if not inner:
        return None
    lines: list[list[tuple]] = []
    for c in sorted(inner, key=lambda c: c[0] + c[1]):
        for ln in lines:
            mid = np.median([(d[0] + d[1]) / 2 for d in ln])
            if abs((c[0] + c[1]) / 2 - mid) < 0.4 * max(
                np.median([d[1] - d[0] for d in ln]), c[1] - c[0]
            ):
                ln.append(c)
                break
        else:
            lines.append([c])
    best = max(lines, key=lambda ln: sum(c[4] for c in ln))
    y0, y1 = min(c[0] for c in best), max(c[1] for c in best)
    x0, x1 = min(c[2] for c in best), max(c[3] for c in best)
    size = float(np.median([c[1] - c[0] for c in best]))
    # the line may run on beyond the core: take in characters level with it, one gap at a
    # time, short of the lettering that runs along the outline (`EDGE`)
    grown = True
    while grown:
        grown = False
        for c in comps:
            level = min(c[1], y1) - max(c[0], y0) >= 0.7 * (c[1] - c[0])
            near = c[3] >= x0 - size and c[2] <= x1 + size
            inside = _radius(c, w, h) < EDGE
            if (
                level
                and near
                and inside
                and 0.6 * size <= c[1] - c[0] <= 1.4 * size
                and (c[2] < x0 or c[3] > x1)
            ):
                x0, x1, grown = min(x0, c[2]), max(x1, c[3]), True
    x0, x1 = max(0, x0 - int(size)), min(w, x1 + int(size))
    return (y0, y1, x0, x1), chars


def _radius(c: tuple, w: int, h: int) -> float:
    """Elliptical radius of a component's centre in a w × h stamp (0 centre, 1 outline)."""
    cx, cy = (c[2] + c[3]) / 2, (c[0] + c[1]) / 2
    return float(np.hypot((cx - w / 2) / (w / 2), (cy - h / 2) / (h / 2)))


def read_stamp(sheet: Image.Image, box: tuple[int, int, int, int]) -> Stamp:
    """The number stamped inside `box`: each band of `number_bands` is read by each number
    reader and the reads vote, each weighted by the reader's confidence. When less than `AGREED`
    of the reads agree, tesseract, a reader trained on other data with other errors, reads the
    bands too: a number both give is taken with `CROSS_CHECKED` confidence."""
    from herbscan.labels.numreader import default_readers

    x, y, w, h = box
    bands = number_bands(sheet.crop((x, y, x + w, y + h)))
    readers = default_readers()
    stamp = Stamp(box=box, reads=len(bands) * len(readers))
    reads = [r for reader in readers for r in reader.read(bands) if NUMBER.match(r.text)]
    weight: dict[str, float] = {}
    for r in reads:
        weight[r.text] = weight.get(r.text, 0.0) + r.conf
    if not weight:
        return stamp
    votes = Counter(r.text for r in reads)
    stamp.number = max(weight, key=weight.get)
    both = []
    if votes[stamp.number] < AGREED * stamp.reads:
        seen = _tesseract_numbers(bands)
        both = [n for n in weight if any(t.endswith(n) for t in seen)]
        stamp.number = max(both, key=weight.get) if both else stamp.number
    stamp.votes = votes[stamp.number]
    stamp.conf = CROSS_CHECKED if both else round(min(MAX_CONF, stamp.votes / stamp.reads), 3)
    return stamp


def _tesseract_numbers(bands: list[np.ndarray]) -> list[str]:
    """Letters and digits tesseract reads on the middle bands (as stamped, rules erased) as
    one line and as one word, text scaled to 40 px."""
    from PIL import ImageOps

    from herbscan.labels.ocr import tesseract

    out = []
    for band in bands[2:4]:
        if band.shape[1] > 15 * band.shape[0]:  # longer than any number: not worth the time
            continue
        img = Image.fromarray(band)
        img = img.resize((max(1, round(img.width * 40 / img.height)), 40), Image.Resampling.BICUBIC)
        img = ImageOps.expand(img, border=16, fill=255)
        for psm in (7, 8):
            text = "".join(w.text for w in tesseract(img, psm=psm).words)
            out.append(re.sub(r"[^A-Z0-9]", "", text.upper()).replace("O", "0"))
    return out


def read_stamps(sheet: Image.Image) -> list[Stamp]:
    """Every stamp outline on the sheet with the number read inside it, most confident first."""
    stamps = [read_stamp(sheet, box) for box in find_stamps(sheet)]
    return sorted(stamps, key=lambda s: -s.conf)
