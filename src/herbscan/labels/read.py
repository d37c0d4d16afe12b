"""One sheet → barcodes, label regions and their OCR: the image half of transcription."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from herbscan.errors import check_choice
from herbscan.images import open_rgb
from herbscan.labels.barcodes import Barcode, read_barcodes
from herbscan.labels.ocr import OcrResult, Word, prepare_text_image, tesseract, words_box
from herbscan.labels.regions import Region, crop_label, find_labels, layout, osd_rotation
from herbscan.labels.stamps import Stamp, read_stamps

LAYOUTS = ("sheet", "label", "line")
MAX_LABELS = 10
"""Labels OCR'd per sheet, largest first (a sheet rarely has more; the rest are stray words)."""


@dataclass
class LabelText:
    """One label: where it is and what it says."""

    region: Region
    ocr: OcrResult
    alternatives: list[str] = field(default_factory=list)
    """Other readings of the same image (line layout), for a checklist to choose from."""
    crop: str = ""
    """File name of the saved crop, when crops were asked for."""

    @property
    def text(self) -> str:
        return self.ocr.text

    def box_dict(self) -> dict:
        """The label's region, and its crop file when one was saved."""
        return {**self.region.to_dict(), **({"crop": self.crop} if self.crop else {})}


@dataclass
class SheetReading:
    """Everything read off one sheet image."""

    path: str
    size: tuple[int, int]
    barcodes: list[Barcode] = field(default_factory=list)
    stamps: list[Stamp] = field(default_factory=list)
    labels: list[LabelText] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All label text, labels in reading order (top to bottom, then left to right)."""
        order = sorted(self.labels, key=lambda lt: (lt.region.box[1], lt.region.box[0]))
        return "\n\n".join(lt.text for lt in order if lt.text.strip())

    @property
    def words(self):
        return [w for lt in self.labels for w in lt.ocr.words]

    def word_confidences(self) -> dict[str, float]:
        """Each word's lowest OCR confidence on the sheet, for field confidences."""
        conf: dict[str, float] = {}
        for w in self.words:
            conf[w.text] = min(conf.get(w.text, 100.0), w.conf)
        return conf


def read_label(
    crop: Image.Image, *, lang: str = "eng", psm: int = 4, text_height: float | None = None
) -> OcrResult:
    """OCR one upright label crop after scaling its text (`text_height` px when known) to the
    height tesseract reads best."""
    prepared, _ = prepare_text_image(crop, text_height=text_height)
    return confirm_numbers(prepared, tesseract(prepared, lang=lang, psm=psm))


CONFIRMED = 75.0
"""OCR confidence (0–100) given to a number tesseract was unsure of when the number readers
all read the same characters off the same place."""
_NUMBER_WORD = re.compile(r"\d{3,8}")
_SERIES_WORD = re.compile(r"[A-Z]{1,2}")


def confirm_numbers(image: Image.Image, ocr: OcrResult) -> OcrResult:
    """Raise the confidence of numbers tesseract read but doubted (it sometimes gives a clearly
    printed "accession V 161290" 0%) when the number readers (`numreader`), with other training
    and other errors, all read the same characters in the word's box. A series letter just
    before the number ("V") is read with it, and the number alone when the two together do not
    match ("Plot A 1234"). Words whose reads differ keep tesseract's confidence; `ocr` is
    changed in place."""
    tries: list[list[list]] = []  # per doubted number: word groups to read, best first
    for i, w in enumerate(ocr.words):
        if w.conf >= CONFIRMED or not _NUMBER_WORD.fullmatch(w.text):
            continue
        prev = ocr.words[i - 1] if i else None
        series = prev is not None and prev.line == w.line and _SERIES_WORD.fullmatch(prev.text)
        tries.append([[prev, w], [w]] if series else [[w]])
    if not tries:
        return ocr
    from herbscan.labels.numreader import default_readers

    grey = image.convert("L")
    groups = [g for t in tries for g in t]
    crops = [np.asarray(grey.crop(_box(g, image))) for g in groups]
    texts = [[r.text for r in reader.read(crops)] for reader in default_readers()]
    read_of = {
        id(g): t[0] if len(set(t)) == 1 else "" for g, t in zip(groups, zip(*texts), strict=True)
    }
    for t in tries:
        group = next((g for g in t if read_of[id(g)] == "".join(w.text for w in g)), [])
        for w in group:
            w.conf = max(w.conf, CONFIRMED)
    return ocr


def _box(words: list, image: Image.Image) -> tuple[int, int, int, int]:
    """The words' box with a little paper around, inside the image."""
    x0, y0, x1, y1 = words_box(words)
    pad = (y1 - y0) // 4
    return (
        max(0, x0 - 2 * pad),
        max(0, y0 - pad),
        min(image.width, x1 + 2 * pad),
        min(image.height, y1 + pad),
    )


LINE_READS = ((40, 7), (40, 13), (30, 7), (60, 7), (30, 13), (60, 13))
"""(text height px, page-segmentation mode) of each reading of a single line: 7 is one line,
13 a raw line without layout analysis. Handwriting reads differently at each size, and a
checklist can pick the reading that makes a name (see `names.Checklist.snap_line`)."""


def line_readings(crop: Image.Image, *, lang: str = "eng") -> list[OcrResult]:
    """Every reading of an image holding one line of text (`LINE_READS`), most confident first;
    stray marks read as punctuation at the ends of words are dropped."""
    results = []
    for height in dict.fromkeys(h for h, _ in LINE_READS):
        prepared, _ = prepare_text_image(crop, target=height)
        for _, psm in (r for r in LINE_READS if r[0] == height):
            words = []
            for w in tesseract(prepared, lang=lang, psm=psm).words:
                text = re.sub(r"^[^\w(]+|[^\w.)]+$", "", w.text)
                if text:
                    words.append(Word(text, w.conf, w.box, w.line))
            results.append(OcrResult(words))
    return sorted(results, key=lambda r: -r.mean_conf)


def read_line(crop: Image.Image, *, lang: str = "eng") -> OcrResult:
    """OCR an image holding one line of text (a name cut from a label): the most confident of
    `line_readings`."""
    return line_readings(crop, lang=lang)[0]


def read_sheet(
    path: str | Path,
    *,
    lang: str = "eng",
    layout_mode: str = "sheet",
    barcodes: bool = True,
    stamps: bool = True,
    crops_dir: Path | None = None,
    crop_name: str | None = None,
) -> SheetReading:
    """Decode the barcodes, read numbered stamps, find the labels, and OCR each label at full
    resolution.

    `layout_mode`: "sheet" finds the labels on a herbarium sheet; "label" takes the whole image
    as one label (a packet or a label photographed alone); "line" as one line of text. Label
    crops go to `crops_dir` as `<crop_name>_label<k>.jpg` (`crop_name` defaults to the image's
    file name without its suffix).
    """
    check_choice("layout", layout_mode, LAYOUTS)
    sheet = open_rgb(path)
    reading = SheetReading(path=str(path), size=sheet.size)
    if barcodes and layout_mode != "line":
        reading.barcodes = read_barcodes(sheet)
    whole = Region(box=(0, 0, *sheet.size), words=0, conf=0.0)
    if layout_mode == "line":
        best, *others = line_readings(sheet, lang=lang)
        reading.labels.append(LabelText(whole, best, [r.text for r in others]))
        return reading
    if layout_mode == "label":
        regions = [whole]
    else:
        if stamps:
            reading.stamps = read_stamps(sheet)
        lay = layout(sheet, lang=lang)
        regions = find_labels(
            lay.result, sheet.size, scale=lay.scale, rotation=lay.rotation, image=lay.image
        )[:MAX_LABELS]
    for k, region in enumerate(regions):
        crop = crop_label(sheet, region)
        ocr = read_label(crop, lang=lang, text_height=region.text_height)
        if ocr.mean_conf < 50 and min(crop.size) >= 64:
            turn = osd_rotation(crop)
            if turn:
                turned = read_label(
                    crop.rotate(turn, expand=True), lang=lang, text_height=region.text_height
                )
                if turned.mean_conf > ocr.mean_conf:
                    region.rotation = (region.rotation + turn) % 360
                    crop, ocr = crop.rotate(turn, expand=True), turned
        name = f"{crop_name or Path(path).stem}_label{k + 1}.jpg" if crops_dir else ""
        reading.labels.append(LabelText(region, ocr, crop=name))
        if name:
            crops_dir.mkdir(parents=True, exist_ok=True)
            crop.save(crops_dir / name, quality=90)
    return reading
