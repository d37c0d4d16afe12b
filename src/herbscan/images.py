"""The only place an image file is opened.

Every sheet goes through `open_rgb`: a pixel-count limit against decompression bombs, JPEG
draft decoding straight to the size the caller needs (a 4000×6000 sheet wanted at 256² is decoded
at 1/8 scale, about 3× faster than a full decode), EXIF orientation, and any mode (grey, CMYK,
16-bit, alpha, palette) turned into 8-bit RGB. Anything that goes wrong is an `ImageError` that
names the file.

Fit to a square model input: `fit="stretch"` (default) first turns landscape images upright, then
resizes to size×size. Herbarium sheets share a ~2:3 aspect, so stretching distorts every sheet the
same way and the network learns it once, while padding would spend a third of a 256² input on
blank border and lose that much resolution on stains that are a few pixels wide. `fit="pad"`
keeps the aspect ratio and pads with the sheet's own border colour, for collections of mixed
shapes (e.g. packets and sheets). `fit="sheet"` turns the sheet upright and resizes it to the
herbarium sheet's 2:3 portrait, size wide and 1.5×size high: no distortion and no border, for
models that look for millimetre-sized marks (the stain detector).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from herbscan.errors import ImageError, ParameterError, check_choice, check_range

MAX_PIXELS = 300_000_000
"""Default limit on pixels per image: a 4000×6000 sheet has 24 M, a 30×42 cm sheet at 800 dpi
125 M and at 1200 dpi 280 M; a decompression bomb has billions. `HERBSCAN_MAX_PIXELS` (the CLI's
`--max-pixels`) changes it, in this process and in the worker processes it starts."""

MAX_PIXELS_ENV = "HERBSCAN_MAX_PIXELS"

# Raster formats a sheet may come in; a suffix counts when the installed Pillow can open it.
_SHEET_FORMATS = {
    "JPEG",
    "PNG",
    "TIFF",
    "WEBP",
    "BMP",
    "DIB",
    "JPEG2000",
    "GIF",
    "PPM",
    "MPO",
    "TGA",
    "QOI",
    "AVIF",
    "HEIF",
}
Image.init()
# herbscan's own limit (`max_pixels`) decides; Pillow's fixed 89 / 179 MP check would fire first.
Image.MAX_IMAGE_PIXELS = None
IMAGE_SUFFIXES = tuple(
    sorted(
        ext
        for ext, fmt in Image.registered_extensions().items()
        if fmt in _SHEET_FORMATS and fmt in Image.OPEN
    )
)
FITS = ("stretch", "pad", "sheet")

# EXIF orientations 5–8 swap width and height.
_SWAPS_AXES = {5, 6, 7, 8}


def _fail(path: Path | str, what: str) -> ImageError:
    return ImageError(f"{path}: {what}; check the file (re-export or remove it)")


def max_pixels() -> int:
    """The pixel limit in force: `HERBSCAN_MAX_PIXELS` when set, else `MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(float(value)) if value else MAX_PIXELS
    except ValueError:
        raise ParameterError(
            f"{MAX_PIXELS_ENV} must be a number of pixels; got {value!r}"
        ) from None


def set_max_pixels(limit: int | None) -> None:
    """Set the pixel limit for this process and the workers it starts (None: the default)."""
    if limit is None:
        os.environ.pop(MAX_PIXELS_ENV, None)
        return
    check_range("max_pixels", limit, 1)
    os.environ[MAX_PIXELS_ENV] = str(int(limit))


def _missing(path: Path) -> ImageError:
    if path.is_symlink():
        return ImageError(
            f"{path}: a broken symbolic link (its target {os.readlink(path)} does "
            "not exist); fix or remove the link"
        )
    if path.is_dir():
        return ImageError(
            f"{path}: is a folder, not an image; give the images inside it or "
            "the folder itself as the source"
        )
    return ImageError(
        f"{path}: no such file; check the path (relative paths in a manifest are "
        "resolved against the manifest's folder)"
    )


def _too_large(path: Path, w: int, h: int, limit: int) -> ImageError:
    return ImageError(
        f"{path}: {w}×{h} = {w * h:,} pixels exceeds the limit of {limit:,}; if the "
        f"file is a real sheet, raise it with --max-pixels (or {MAX_PIXELS_ENV})"
    )


def open_rgb(path: str | Path, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode `path` to an upright 8-bit RGB image.

    With `min_size=(w, h)`, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still
    covers (w, h) in upright orientation; the result may be larger than asked, never smaller
    (unless the file itself is). Images above `max_pixels()` are refused before decoding.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    limit = max_pixels()
    try:
        im = Image.open(path)
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        raise _fail(path, f"not a readable image ({type(e).__name__}: {e})") from None
    try:
        w, h = im.size
        if w * h > limit:
            raise _too_large(path, w, h, limit)
        orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
        if min_size is not None and im.format == "JPEG":
            tw, th = min_size
            if orientation in _SWAPS_AXES:
                tw, th = th, tw
            im.draft("RGB" if im.mode == "RGB" else None, (tw, th))
        im.load()
        out = to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        im.close()
        raise
    except MemoryError:
        im.close()
        raise _fail(
            path,
            f"not enough memory to decode {w}×{h} pixels; lower --max-pixels to "
            "skip such sheets, or use a machine with more memory",
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated data raises OSError, odd files others
        im.close()
        raise _fail(path, f"cannot decode ({type(e).__name__}: {e})") from None
    if out is not im:
        im.close()
    return out


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as stored in the file, read from its header without decoding pixels."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        raise _fail(path, f"not a readable image ({type(e).__name__}: {e})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB; transparency is composited onto white paper."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        paper = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, im).convert("RGB")
    return im.convert("RGB")


def input_shape(size: int, fit: str = "stretch") -> tuple[int, int]:
    """(height, width) of the model input for `size` and `fit`."""
    return (size * 3 // 2, size) if fit == "sheet" else (size, size)


def fit_square(im: Image.Image, size: int, fit: str = "stretch") -> Image.Image:
    """Resize an RGB image to the model input `input_shape(size, fit)` (see module docstring)."""
    check_choice("fit", fit, FITS)
    w, h = im.size
    if fit in ("stretch", "sheet"):
        if w > h:
            im = im.transpose(Image.Transpose.ROTATE_90)
        oh, ow = input_shape(size, fit)
        return im.resize((ow, oh), Image.Resampling.BILINEAR, reducing_gap=2.0)
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)
    border = np.asarray(small)
    colour = tuple(
        int(c)
        for c in np.median(
            np.concatenate([border[0], border[-1], border[:, 0], border[:, -1]]), axis=0
        )
    )
    canvas = Image.new("RGB", (size, size), colour)
    canvas.paste(small, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def load_sheet(path: str | Path, size: int, fit: str = "stretch") -> np.ndarray:
    """A sheet as the model sees it: uint8 array (*input_shape(size, fit), 3), decoded at draft
    scale."""
    check_choice("fit", fit, FITS)
    oh, ow = input_shape(size, fit)
    im = open_rgb(path, min_size=(ow, oh))
    return np.asarray(fit_square(im, size, fit), dtype=np.uint8)


def thumbnail_jpeg(path: str | Path, max_side: int = 320, quality: int = 80) -> bytes:
    """A small JPEG of the sheet (aspect kept) for galleries in reports."""
    im = open_rgb(path, min_size=(max_side, max_side))
    im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# The IJG standard luminance table (JPEG spec, Annex K), which libjpeg scales for each quality
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57,
     69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64,
     81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def jpeg_quality(luma_table) -> float:
    """The libjpeg quality (1–100) whose scaled standard table is closest to `luma_table`.

    Pillow keeps a table in zig-zag order and the standard one is in row order, but the mean
    ratio does not depend on the order."""
    t = np.asarray(luma_table, dtype=np.float64)
    scale = 100.0 * float(np.mean(t / _IJG_LUMA))
    q = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(np.clip(q, 1.0, 100.0))


def file_facts(path: str | Path) -> dict:
    """What a file says about how it was made, read from its header without decoding pixels:
    size, bytes, format, JPEG quality and chroma subsampling, EXIF camera and year."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            facts = {
                "width": w,
                "height": h,
                "file_bytes": path.stat().st_size,
                "format": im.format or "",
                "mode": im.mode,
                "jpeg_quality": None,
                "subsampling": "",
                "camera": "",
                "year": None,
            }
            tables = getattr(im, "quantization", None)
            if im.format == "JPEG" and tables:
                facts["jpeg_quality"] = round(jpeg_quality(tables[min(tables)]), 1)
                from PIL import JpegImagePlugin

                facts["subsampling"] = _SUBSAMPLING.get(JpegImagePlugin.get_sampling(im), "other")
            exif = im.getexif()
            camera = " ".join(str(exif.get(t, "")).strip() for t in (0x010F, 0x0110)).strip()
            facts["camera"] = camera.replace("\x00", "")
            when = str(exif.get_ifd(0x8769).get(0x9003, "") or exif.get(0x0132, "") or "")
            if len(when) >= 4 and when[:4].isdigit():
                facts["year"] = int(when[:4])
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        raise _fail(path, f"not a readable image ({type(e).__name__}: {e})") from None
    return facts


def reencode_jpeg(array: np.ndarray, quality: int) -> np.ndarray:
    """The uint8 HWC `array` after a round trip through JPEG at `quality` (4:2:0, as most
    scanners save), so training sees the blocking and colour bleeding of other collections."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def is_image_file(path: str | Path) -> bool:
    """Whether the path has one of the image suffixes herbscan reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


@dataclass
class FolderScan:
    """Every entry of a folder tree: the images to read and the rest with the reason why not."""

    images: list[Path]
    skipped: list[tuple[Path, str]]


def scan_folder(folder: str | Path) -> FolderScan:
    """Walk `folder` (symbolic links followed, each real folder once) and account for every entry
    that is not a folder: an image herbscan can read, or a skipped entry with its reason. A
    folder named like an image (`x.jpg/`) is reported too; its contents are scanned."""
    images, skipped = [], []
    seen = {os.path.realpath(folder)}
    for root, dirs, files in os.walk(folder, followlinks=True):
        base = Path(root)
        dirs.sort()
        for d in list(dirs):
            p = base / d
            real = os.path.realpath(p)
            if real in seen:  # a link back up the tree, or a second link to one folder
                dirs.remove(d)
                skipped.append((p, "a symbolic link to a folder already scanned"))
                continue
            seen.add(real)
            if is_image_file(p):
                skipped.append((p, "a folder named like an image (its contents are scanned)"))
        for name in sorted(files):
            p = base / name
            if p.is_symlink() and not p.exists():
                skipped.append((p, f"a broken symbolic link (target {os.readlink(p)} missing)"))
            elif is_image_file(p):
                images.append(p)
            elif name.startswith("."):
                skipped.append((p, "a hidden file"))
            else:
                why = f"not an image format herbscan reads (suffix '{p.suffix or 'none'}'"
                skipped.append((p, f"{why}; readable: {_READABLE})"))
    images.sort()
    return FolderScan(images, sorted(skipped))


_READABLE = (
    ", ".join(s for s in (".jpg", ".png", ".tif", ".webp", ".bmp", ".jp2") if s in IMAGE_SUFFIXES)
    + ", …"
)


def list_images(folder: str | Path) -> list[Path]:
    """Image files in a folder and below it, sorted (see `scan_folder` for what is left out)."""
    return scan_folder(folder).images
