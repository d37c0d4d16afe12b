"""Where the labels are on a sheet, which way up they are, and how skewed.

A first, quick OCR pass over the whole sheet at a working resolution gives tesseract's layout
analysis: words with boxes and confidences. Labels are where confident words cluster — the
institutional label's dense block, annotation slips, stamps with a number — while plant parts
and shadows produce only scattered low-confidence fragments. Clusters of confident lines, grown
by a gap relative to their own text height and joined across lines the pass could not read
(ink without a blank band between them), become label boxes in full-resolution sheet pixels;
`crop_label` cuts each one from the full-resolution sheet and deskews it by the slope of its
word baselines.

Orientation: when the upright pass finds almost nothing, tesseract's orientation detector (OSD)
is asked which way the sheet is turned, and the pass is repeated on the turned image. Per label,
a crop that reads badly is checked the same way, for sideways annotation slips.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from herbscan.labels.ocr import OcrResult, Word, _env, find_tesseract, tesseract, words_box

WORK_SIDE = 3400
"""Long side (px) of the image the layout pass reads, about 200 dpi for a 42 cm sheet: smaller
sheets are enlarged (up to 2×), since tesseract's layout analysis skips print under ~10 px;
finer is slower."""

LAYOUT_PSM = 3
MAX_SKEW = 15.0
MIN_CONF = 55.0
MIN_WORDS = 4
"""A sheet with fewer confident words than this is checked for being turned."""


@dataclass
class Region:
    """A label on the sheet: box (x, y, w, h) in full-resolution pixels, rotation applied to read
    it (0, 90, 180, 270, counter-clockwise) and its deskew angle in degrees."""

    box: tuple[int, int, int, int]
    words: int
    conf: float
    rotation: int = 0
    angle: float = 0.0
    text_height: float = 0.0
    """Median height of its words in sheet pixels (0 when unknown)."""

    def to_dict(self) -> dict:
        return asdict(self)


def good_word(w: Word, min_conf: float = MIN_CONF) -> bool:
    """Whether a layout-pass word is real text rather than texture read as letters."""
    alnum = re.sub(r"[^0-9A-Za-z]", "", w.text)
    if len(alnum) >= 4 and alnum.isdigit():
        return w.conf >= min_conf - 15  # stamped numbers read with lower confidence
    return len(alnum) >= 2 and w.conf >= min_conf and len(alnum) >= 0.5 * len(w.text)


def osd_rotation(image: Image.Image) -> int:
    """Degrees (counter-clockwise) to turn the image to make its text upright, by tesseract OSD.

    0 when OSD cannot decide (too little text).
    """
    import io

    buf = io.BytesIO()
    image.convert("L").save(buf, "PNG", compress_level=1)
    proc = subprocess.run(
        [find_tesseract(), "stdin", "stdout", "--psm", "0"],
        input=buf.getvalue(),
        capture_output=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    m = re.search(rb"Rotate:\s*(\d+)", proc.stdout)
    conf = re.search(rb"Orientation confidence:\s*([\d.]+)", proc.stdout)
    if not m or not conf or float(conf.group(1)) < 1.5:
        return 0
    # OSD's "Rotate" is clockwise; PIL's rotate() is counter-clockwise.
    return (360 - int(m.group(1))) % 360


def working_image(sheet: Image.Image, side: int = WORK_SIDE) -> tuple[Image.Image, float]:
    """Grey sheet with its long side scaled to `side` (enlarged at most 2×), and the scale."""
    scale = min(2.0, side / max(sheet.size))
    grey = sheet.convert("L")
    if abs(scale - 1.0) > 0.02:
        size = (round(sheet.width * scale), round(sheet.height * scale))
        grey = (
            grey.resize(size, Image.Resampling.LANCZOS)
            if scale > 1.0
            else grey.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        )
    else:
        scale = 1.0
    return grey, scale


@dataclass
class Layout:
    """The layout pass over a sheet: its words, and the working image they were read on (scaled
    by `scale` from the sheet and turned `rotation` degrees counter-clockwise)."""

    result: OcrResult
    scale: float
    rotation: int
    image: Image.Image


def layout(sheet: Image.Image, *, lang: str = "eng") -> Layout:
    """The layout pass: words on the working image, turned upright when the sheet is not."""
    work, scale = working_image(sheet)
    result = tesseract(work, lang=lang, psm=LAYOUT_PSM)
    if not _reads_upright(result):
        rotation = osd_rotation(work)
        if rotation:
            turned_image = work.rotate(rotation, expand=True)
            turned = tesseract(turned_image, lang=lang, psm=LAYOUT_PSM)
            if sum(good_word(w) for w in turned.words) > sum(good_word(w) for w in result.words):
                return Layout(turned, scale, rotation, turned_image)
    return Layout(result, scale, 0, work)


def _reads_upright(result: OcrResult) -> bool:
    """Enough confident words, and mostly wider than tall (sideways text reads as tall words)."""
    good = [w for w in result.words if good_word(w)]
    tall = sum(1 for w in good if len(w.text) >= 3 and w.box[3] > 1.5 * w.box[2])
    return len(good) >= MIN_WORDS and tall <= 0.3 * len(good)


def find_labels(
    result: OcrResult,
    image_size: tuple[int, int],
    *,
    scale: float = 1.0,
    rotation: int = 0,
    pad: float = 0.6,
    image: Image.Image | None = None,
) -> list[Region]:
    """Cluster the confident lines of a layout pass into label boxes in sheet pixels.

    `image_size` is the full-resolution sheet's (w, h); `scale` and `rotation` are how the layout
    pass's image was made from it, and `image` that image, when given, lets parts of one label be
    joined across lines the pass missed. Boxes are padded by `pad` × the cluster's line height.
    """
    lines: dict[tuple, list[Word]] = {}
    for w in result.words:
        if good_word(w):
            lines.setdefault(w.line, []).append(w)
    boxes = []
    for ws in lines.values():
        x0, y0, x1, y1 = words_box(ws)
        h = float(np.median([w.box[3] for w in ws]))
        boxes.append([x0, y0, x1, y1, h, ws])
    clusters = _stack(_cluster(boxes), image)
    regions = []
    for c in clusters:
        ws = [w for b in c for w in b[5]]
        h = float(np.median([b[4] for b in c]))
        x0 = min(b[0] for b in c) - pad * h
        y0 = min(b[1] for b in c) - pad * h
        x1 = max(b[2] for b in c) + pad * h
        y1 = max(b[3] for b in c) + pad * h
        box = _to_sheet((x0, y0, x1, y1), scale, rotation, image_size)
        conf = float(np.mean([w.conf for w in ws]))
        regions.append(
            Region(
                box=box,
                words=len(ws),
                conf=round(conf, 1),
                rotation=rotation,
                angle=round(skew_angle(c), 2),
                text_height=round(h / scale, 1),
            )
        )
    regions.sort(key=lambda r: (-r.words, r.box[1]))
    return regions


def _cluster(boxes: list[list]) -> list[list[list]]:
    """Single-linkage clusters of line boxes closer than 3 line heights vertically and
    ~4 horizontally (labels are compact; separate labels are further apart than their lines)."""
    n = len(boxes)
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            a, b = boxes[i], boxes[j]
            h = max(a[4], b[4])
            gap_x = max(0, max(a[0], b[0]) - min(a[2], b[2]))
            gap_y = max(0, max(a[1], b[1]) - min(a[3], b[3]))
            if gap_x <= 4.0 * h and gap_y <= 3.0 * h:
                parent[root(i)] = root(j)
    groups: dict[int, list] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(boxes[i])
    return list(groups.values())


STACK_REACH = 15.0
"""Line heights two stacked clusters may be apart and still be one label (see `_stack`)."""
BLANK_BAND = 4.0
"""Line heights of blank paper that separate two labels; within a label lines are closer."""


def _stack(clusters: list[list[list]], image: Image.Image | None) -> list[list[list]]:
    """Join clusters stacked above one another (sharing a third of the narrower one's width)
    when the paper between them holds ink with no blank band wider than `BLANK_BAND` line
    heights: parts of one label whose middle lines (a name in another typeface, typewriting,
    handwriting) the layout pass could not read confidently. Without the image nothing is
    joined."""
    if image is None:
        return clusters
    grey = np.asarray(image.convert("L"), dtype=np.int16)

    def extent(c):
        return (
            min(b[0] for b in c),
            min(b[1] for b in c),
            max(b[2] for b in c),
            max(b[3] for b in c),
            float(np.median([b[4] for b in c])),
        )

    def joinable(c1, c2) -> bool:
        a, b = sorted((extent(c1), extent(c2)), key=lambda e: e[1])  # a above b
        x0, x1 = max(a[0], b[0]), min(a[2], b[2])
        h = max(a[4], b[4])
        if x1 - x0 < 0.33 * min(a[2] - a[0], b[2] - b[0]) or b[1] - a[3] > STACK_REACH * h:
            return False
        return _longest_blank(grey[int(a[3]) : int(b[1]), int(x0) : int(x1)]) <= BLANK_BAND * h

    while True:
        pair = next(
            (
                (i, j)
                for i in range(len(clusters))
                for j in range(i + 1, len(clusters))
                if joinable(clusters[i], clusters[j])
            ),
            None,
        )
        if pair is None:
            return clusters
        i, j = pair
        clusters[i] = clusters[i] + clusters.pop(j)


def _longest_blank(band: np.ndarray) -> int:
    """Rows in the longest run without ink (pixels 60 grey levels darker than the paper)."""
    if band.size == 0:
        return 0
    ink = (band < np.median(band) - 60).mean(axis=1) > 0.002
    longest = run = 0
    for row in ink:
        run = 0 if row else run + 1
        longest = max(longest, run)
    return longest


def skew_angle(lines: list[list]) -> float:
    """Median baseline slope in degrees over lines of ≥ 3 words (0 when none).

    Positive when the text runs downhill to the right (image y grows downwards).
    """
    slopes = []
    for b in lines:
        ws = b[5]
        if len(ws) < 3:
            continue
        xs = np.array([w.box[0] + w.box[2] / 2 for w in ws], dtype=np.float64)
        ys = np.array([w.box[1] + w.box[3] for w in ws], dtype=np.float64)
        if np.ptp(xs) <= 0:
            continue
        slopes.append(np.polyfit(xs, ys, 1)[0])
    if not slopes:
        return 0.0
    angle = float(np.degrees(np.arctan(np.median(slopes))))
    # Beyond MAX_SKEW the "lines" are not lines of this orientation; turning, not deskewing,
    # is what such a label needs (see osd_rotation).
    return angle if abs(angle) <= MAX_SKEW else 0.0


def _to_sheet(box, scale: float, rotation: int, size: tuple[int, int]) -> tuple[int, ...]:
    """A box in the (scaled, rotated) layout image → (x, y, w, h) in the upright sheet."""
    w, h = size
    x0, y0, x1, y1 = (v / scale for v in box)
    # undo a counter-clockwise rotation by `rotation` degrees of a w×h image
    if rotation == 90:  # rotated image is h×w; (x, y) there came from (w - y, x)
        x0, y0, x1, y1 = w - y1, x0, w - y0, x1
    elif rotation == 180:
        x0, y0, x1, y1 = w - x1, h - y1, w - x0, h - y0
    elif rotation == 270:
        x0, y0, x1, y1 = y0, h - x1, y1, h - x0
    x0, y0 = max(0, int(x0)), max(0, int(y0))
    x1, y1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    return (x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def crop_label(sheet: Image.Image, region: Region) -> Image.Image:
    """The region cut from the full-resolution sheet, turned upright and deskewed."""
    x, y, w, h = region.box
    crop = sheet.crop((x, y, x + w, y + h))
    if region.rotation:
        crop = crop.rotate(region.rotation, expand=True)
    if abs(region.angle) >= 0.3:
        fill = (255,) * len(crop.getbands())
        crop = crop.rotate(
            region.angle,
            resample=Image.Resampling.BICUBIC,
            expand=True,
            fillcolor=fill if len(fill) > 1 else 255,
        )
    return crop
