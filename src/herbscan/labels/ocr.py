"""Tesseract through a thin subprocess wrapper, and the image preparation that helps it.

Tesseract is a program, not a Python package: `find_tesseract` looks for it (or
`$HERBSCAN_TESSERACT`) and, when it is missing, raises one line saying what to install. Every
call runs with `OMP_THREAD_LIMIT=1` (3.5× faster per process than tesseract's own threads on a
small machine); parallelism comes from running several processes.

`prepare_text_image` turns a crop into what tesseract reads best: grey, composited onto white,
scaled so that a text line is about `LINE_HEIGHT` pixels tall (tesseract's classifier is trained
on text of roughly that size and misreads small or huge print), given a white margin.
`binarize` (Sauvola-style local threshold) is separate because whether it helps depends on the
material; the taxon-line benchmark decided the default.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from herbscan.errors import HerbscanError
from herbscan.images import to_rgb

LINE_HEIGHT = 40
"""Pixels from ascender to descender that prepared text lines are scaled to."""

INSTALL_HINT = (
    "install Tesseract OCR: Debian/Ubuntu `sudo apt install tesseract-ocr tesseract-ocr-eng "
    "tesseract-ocr-lat`, macOS `brew install tesseract tesseract-lang`, conda `conda install "
    "-c conda-forge tesseract`; or point HERBSCAN_TESSERACT at the tesseract program"
)


class OcrError(HerbscanError):
    """Tesseract is missing, lacks a language, or failed on an image."""


@dataclass
class Word:
    """One recognised word: text, confidence 0–100 and box (x, y, w, h) in the OCR'd image."""

    text: str
    conf: float
    box: tuple[int, int, int, int]
    line: tuple[int, int, int]  # (block, paragraph, line) numbers, to rebuild lines


@dataclass
class OcrResult:
    """The words of one OCR call and the text rebuilt from them, one line per text line."""

    words: list[Word] = field(default_factory=list)

    @property
    def text(self) -> str:
        lines: dict[tuple[int, int, int], list[str]] = {}
        for w in self.words:
            lines.setdefault(w.line, []).append(w.text)
        return "\n".join(" ".join(ws) for ws in lines.values())

    @property
    def mean_conf(self) -> float:
        """Character-weighted mean word confidence (0–100); 0 when nothing was read."""
        n = sum(len(w.text) for w in self.words)
        return sum(w.conf * len(w.text) for w in self.words) / n if n else 0.0


def words_box(words: list[Word]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the words' boxes."""
    return (
        min(w.box[0] for w in words),
        min(w.box[1] for w in words),
        max(w.box[0] + w.box[2] for w in words),
        max(w.box[1] + w.box[3] for w in words),
    )


def find_tesseract() -> str:
    """Path of the tesseract program, or an OcrError saying what to install."""
    exe = os.environ.get("HERBSCAN_TESSERACT") or shutil.which("tesseract")
    if not exe or not (shutil.which(exe) or os.path.isfile(exe)):
        raise OcrError(f"tesseract not found; {INSTALL_HINT}")
    return exe


@functools.cache
def languages(exe: str | None = None) -> frozenset[str]:
    """The language packs tesseract has installed."""
    exe = exe or find_tesseract()
    out = subprocess.run(
        [exe, "--list-langs"], capture_output=True, text=True, env=_env(), check=False
    )
    return frozenset(ln.strip() for ln in out.stdout.splitlines()[1:] if ln.strip())


def check_languages(lang: str) -> None:
    """Raise one line naming the missing Debian package when a language pack is absent."""
    have = languages()
    missing = [x for x in lang.split("+") if x not in have]
    if missing:
        pkgs = " ".join(f"tesseract-ocr-{x}" for x in missing)
        raise OcrError(
            f"tesseract has no language pack {', '.join(missing)} (installed: "
            f"{', '.join(sorted(have)) or 'none'}); install it, e.g. `sudo apt "
            f"install {pkgs}`, or choose --lang from the installed ones"
        )


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_THREAD_LIMIT": "1"}


def tesseract(
    image: Image.Image, *, lang: str = "eng", psm: int = 6, dpi: int = 300, timeout: float = 120.0
) -> OcrResult:
    """OCR an image with tesseract and return its words with confidences.

    The image goes in through stdin as PNG and the TSV comes back through stdout, so no temporary
    files are left behind by a killed job.
    """
    exe = find_tesseract()
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    cmd = [exe, "stdin", "stdout", "-l", lang, "--psm", str(psm), "--dpi", str(dpi), "tsv"]
    try:
        proc = subprocess.run(
            cmd, input=buf.getvalue(), capture_output=True, env=_env(), timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise OcrError(f"tesseract took more than {timeout:.0f} s on one image") from None
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise OcrError(f"tesseract failed: {msg[-1] if msg else proc.returncode}")
    return parse_tsv(proc.stdout.decode("utf-8", errors="replace"))


def parse_tsv(tsv: str) -> OcrResult:
    """Words (level 5 rows with text) from tesseract's TSV output."""
    words = []
    reader = csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    for r in reader:
        if r.get("level") != "5":
            continue
        text = (r.get("text") or "").strip()
        if not text:
            continue
        words.append(
            Word(
                text=text,
                conf=max(0.0, float(r["conf"])),
                box=(int(r["left"]), int(r["top"]), int(r["width"]), int(r["height"])),
                line=(int(r["block_num"]), int(r["par_num"]), int(r["line_num"])),
            )
        )
    return OcrResult(words)


def to_grey(im: Image.Image) -> Image.Image:
    """8-bit grey with any transparency composited onto white (as images.to_rgb does)."""
    return im if im.mode == "L" else to_rgb(im).convert("L")


def ink_threshold(grey: np.ndarray) -> int:
    """Otsu's threshold between ink and paper on a grey array."""
    hist = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * omega - mu) ** 2 / (omega * (1.0 - omega))
    between = np.nan_to_num(between)
    return int(np.argmax(between))


def line_height(grey: np.ndarray) -> float | None:
    """Median height in pixels of the text lines (runs of rows containing ink), or None."""
    if grey.size == 0:
        return None
    ink = grey <= ink_threshold(grey)
    rows = ink.mean(axis=1) > 0.01
    runs, n = [], 0
    for r in rows:
        if r:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    if n:
        runs.append(n)
    runs = [r for r in runs if r >= 4]
    return float(np.median(runs)) if runs else None


def prepare_text_image(
    im: Image.Image,
    *,
    target: int = LINE_HEIGHT,
    max_scale: float = 4.0,
    min_scale: float = 0.25,
    margin: int = 16,
    binarise: bool = False,
    text_height: float | None = None,
) -> tuple[Image.Image, float]:
    """Grey, rescaled and padded crop for tesseract, and the scale that was applied.

    `text_height`: the line height expected from words already read on the crop's area. It
    replaces the measured `line_height` when that is off by more than 2×, as graphics on a label
    (a DataMatrix, a rule) or tilted lines can make it."""
    grey = to_grey(im)
    h = line_height(np.asarray(grey))
    if text_height and (h is None or not 0.5 <= h / text_height <= 2.0):
        h = text_height
    scale = 1.0 if h is None else min(max(target / h, min_scale), max_scale)
    if abs(scale - 1.0) > 0.1:
        grey = grey.resize(
            (max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
            Image.Resampling.LANCZOS,
        )
    else:
        scale = 1.0
    if binarise:
        grey = binarize(grey)
    return ImageOps.expand(grey, border=margin, fill=255), scale


def binarize(grey: Image.Image, *, window: int = 31, k: float = 0.2) -> Image.Image:
    """Local (Sauvola) threshold: ink where a pixel is darker than its neighbourhood allows.

    Local rather than global so that stained or shadowed label paper and faded ink next to dark
    print are both kept.
    """
    g = np.asarray(grey, dtype=np.float64)
    mean = np.asarray(grey.filter(ImageFilter.BoxBlur(window // 2)), dtype=np.float64)
    sq = Image.fromarray(np.clip(g * g / 255.0, 0, 255).astype(np.uint8))
    mean_sq = np.asarray(sq.filter(ImageFilter.BoxBlur(window // 2)), dtype=np.float64) * 255.0
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    thresh = mean * (1.0 + k * (std / 128.0 - 1.0))
    return Image.fromarray(np.where(g > thresh, 255, 0).astype(np.uint8), "L")
