"""Barcodes on a sheet, decoded with zxing-cpp.

zxing-cpp (PyPI wheel, Apache-2.0) rather than zbar: it installs with pip on Linux, macOS and
Windows with no system library, reads all four symbologies herbaria use (Code 128, Code 39, QR,
DataMatrix; zbar has no DataMatrix), and reports each symbol's corner points.

Barcode labels are small: on a sheet imaged at ~1500 px wide a Code 128 bar is about one pixel,
below what a decoder can resolve. `read_barcodes` therefore tries the image as it is, then
enlarged (×2, ×3) until something decodes, stopping early so that large sheets with readable
barcodes pay for one pass only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from PIL import Image

FORMATS = ("Code128", "Code39", "QRCode", "DataMatrix")
SCALES = (1.0, 2.0, 3.0)
MAX_PIXELS_SCANNED = 60_000_000
"""Enlarged images above this many pixels are not tried (memory and time)."""


@dataclass
class Barcode:
    """One decoded symbol: its value, symbology and box (x, y, w, h) in sheet pixels."""

    value: str
    format: str
    box: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return asdict(self)


def _formats():
    import zxingcpp

    return [getattr(zxingcpp.BarcodeFormat, f) for f in FORMATS]


def read_barcodes(image: Image.Image, *, scales: tuple[float, ...] = SCALES) -> list[Barcode]:
    """Decode every barcode in a sheet image (RGB or grey), largest scale tried last."""
    import zxingcpp

    grey = image.convert("L")
    formats = _formats()
    for scale in scales:
        if grey.width * grey.height * scale * scale > MAX_PIXELS_SCANNED:
            break
        im = (
            grey
            if scale == 1
            else grey.resize(
                (round(grey.width * scale), round(grey.height * scale)), Image.Resampling.BICUBIC
            )
        )
        found = zxingcpp.read_barcodes(im, formats=formats)
        if found:
            return _unique([_barcode(b, scale) for b in found])
    return []


def _barcode(b, scale: float) -> Barcode:
    p = b.position
    xs = [p.top_left.x, p.top_right.x, p.bottom_right.x, p.bottom_left.x]
    ys = [p.top_left.y, p.top_right.y, p.bottom_right.y, p.bottom_left.y]
    x0, y0 = min(xs) / scale, min(ys) / scale
    x1, y1 = max(xs) / scale, max(ys) / scale
    return Barcode(
        value=b.text,
        format=b.format.name,
        box=(round(x0), round(y0), max(1, round(x1 - x0)), max(1, round(y1 - y0))),
    )


def _unique(codes: list[Barcode]) -> list[Barcode]:
    seen, out = set(), []
    for c in sorted(codes, key=lambda c: (c.box[1], c.box[0])):
        if (c.value, c.format) not in seen:
            seen.add((c.value, c.format))
            out.append(c)
    return out
