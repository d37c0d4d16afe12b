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
shapes (e.g. packets and sheets).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from herbscan.errors import ImageError, check_choice

MAX_PIXELS = 250_000_000
"""Refuse images above this many pixels (a 4000×6000 sheet has 24 M; a bomb has billions)."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
FITS = ("stretch", "pad")

# EXIF orientations 5–8 swap width and height.
_SWAPS_AXES = {5, 6, 7, 8}


def _fail(path: Path | str, what: str) -> ImageError:
    return ImageError(f"{path}: {what}; check the file (re-export or remove it)")


def open_rgb(path: str | Path, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode `path` to an upright 8-bit RGB image.

    With `min_size=(w, h)`, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still
    covers (w, h) in upright orientation; the result may be larger than asked, never smaller
    (unless the file itself is).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file; check the path (relative paths in a manifest "
                         "are resolved against the manifest's folder)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise _fail(path, f"too many pixels ({e})") from None
    except Image.DecompressionBombWarning:
        pass  # our own limit below decides
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        raise _fail(path, f"not a readable image ({type(e).__name__}: {e})") from None
    try:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise _fail(path, f"{w}×{h} = {w * h:,} pixels exceeds the limit of {MAX_PIXELS:,}")
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
    except Exception as e:  # noqa: BLE001 - truncated data raises OSError, odd files others
        im.close()
        raise _fail(path, f"cannot decode ({type(e).__name__}: {e})") from None
    if out is not im:
        im.close()
    return out


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as stored in the file, read from its header without decoding pixels."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file; check the path") from None
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


def fit_square(im: Image.Image, size: int, fit: str = "stretch") -> Image.Image:
    """Resize an RGB image to size×size by `fit` ("stretch" or "pad"; see module docstring)."""
    check_choice("fit", fit, FITS)
    w, h = im.size
    if fit == "stretch":
        if w > h:
            im = im.transpose(Image.Transpose.ROTATE_90)
        return im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0)
    border = np.asarray(small)
    colour = tuple(int(c) for c in np.median(
        np.concatenate([border[0], border[-1], border[:, 0], border[:, -1]]), axis=0))
    canvas = Image.new("RGB", (size, size), colour)
    canvas.paste(small, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def load_sheet(path: str | Path, size: int, fit: str = "stretch") -> np.ndarray:
    """A sheet as the model sees it: uint8 array (size, size, 3), decoded at draft scale."""
    check_choice("fit", fit, FITS)
    im = open_rgb(path, min_size=(size, size))
    return np.asarray(fit_square(im, size, fit), dtype=np.uint8)


def thumbnail_jpeg(path: str | Path, max_side: int = 320, quality: int = 80) -> bytes:
    """A small JPEG of the sheet (aspect kept) for galleries in reports."""
    im = open_rgb(path, min_size=(max_side, max_side))
    im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def is_image_file(path: str | Path) -> bool:
    """Whether the path has one of the image suffixes herbscan reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | Path) -> list[Path]:
    """Image files in a folder and below it, sorted."""
    return sorted(f for f in Path(folder).rglob("*") if f.is_file() and is_image_file(f))
