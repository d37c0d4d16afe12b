"""Deep Zoom tiles of a sheet, cut on demand, so a curator zooms into a 4000×6000 scan smoothly.

A Deep Zoom pyramid has levels 0…L with L = ceil(log2(max(w, h))); level l is the sheet scaled
by 2^(l−L), cut into `tile_size` squares that overlap their neighbours by `overlap` pixels
(Microsoft's DZI format, which OpenSeadragon reads). Nothing is cut ahead of time: a viewer
first asks for the few tiles of small levels, which come from a JPEG draft decode (1/8 scale,
~20× faster than a full decode of a 24 MP sheet); the full decode happens once, when the
viewer zooms in (or when the server prefetches it), and every level image stays in memory
while the sheet is open. Cut tiles are cached as JPEG files (atomic writes) in the job folder,
so a second visit or a second reviewer gets them from disk.
"""

from __future__ import annotations

import io
import math
import threading
from pathlib import Path

from PIL import Image

from herbscan.errors import HerbscanError
from herbscan.fileio import atomic_write
from herbscan.images import image_size, open_rgb

TILE_SIZE, OVERLAP, QUALITY = 254, 1, 85


class TileError(HerbscanError):
    """A tile that does not exist (level, column or row out of range)."""


class DeepZoom:
    """The Deep Zoom pyramid of one sheet; `cache` is the folder its tiles are kept in."""

    def __init__(
        self,
        path: str | Path,
        cache: str | Path | None = None,
        *,
        tile_size: int = TILE_SIZE,
        overlap: int = OVERLAP,
        quality: int = QUALITY,
    ):
        self.path = Path(path)
        self.cache = Path(cache) if cache is not None else None
        self.tile_size, self.overlap, self.quality = tile_size, overlap, quality
        self._levels: dict[int, Image.Image] = {}
        self._lock = threading.Lock()  # the dict of level images
        self._decode_lock = threading.Lock()
        self._size: tuple[int, int] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright sheet, from a draft decode (EXIF orientation known)."""
        if self._size is None:
            with self._lock:
                if self._size is None:
                    self._open_small()
        return self._size

    def _open_small(self) -> None:
        w, h = image_size(self.path)
        small = open_rgb(self.path, min_size=(1, 1))  # JPEG: 1/8 scale; others: full
        sw, sh = small.size
        if (w > h) != (sw > sh) and w != h:  # EXIF turned it a quarter
            w, h = h, w
        self._size = (w, h)
        max_level = self.max_level_of(w, h)
        if (sw, sh) == (w, h):
            self._levels[max_level] = small
        else:
            level = max_level - round(math.log2(w / sw))
            self._levels[level] = small  # ≥ the level's size; resized when cut from

    @staticmethod
    def max_level_of(w: int, h: int) -> int:
        return max(0, math.ceil(math.log2(max(w, h, 1))))

    @property
    def max_level(self) -> int:
        return self.max_level_of(*self.size)

    def level_size(self, level: int) -> tuple[int, int]:
        w, h = self.size
        s = 2 ** (self.max_level - level)
        return max(1, math.ceil(w / s)), max(1, math.ceil(h / s))

    def descriptor(self) -> str:
        """The .dzi XML that tells a viewer the sheet's size and tiling."""
        w, h = self.size
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="jpeg" '
            f'Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Width="{w}" Height="{h}"/></Image>\n'
        )

    def grid(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at `level`."""
        lw, lh = self.level_size(level)
        return math.ceil(lw / self.tile_size), math.ceil(lh / self.tile_size)

    def _covering(self, lw: int, lh: int) -> Image.Image | None:
        """The smallest kept image at least lw×lh (call with the lock held)."""
        fits = [im for im in self._levels.values() if im.width >= lw and im.height >= lh]
        return min(fits, key=lambda im: im.width, default=None)

    def _level_image(self, level: int) -> Image.Image:
        """The sheet at `level`'s size: from the smallest kept image that covers it, or by a
        decode (draft for small levels, full for the largest). A decode holds only the decode
        lock, so the overview's tiles are served from the draft while the full sheet decodes."""
        lw, lh = self.level_size(level)
        with self._lock:
            im = self._levels.get(level)
            if im is not None and im.size == (lw, lh):
                return im
            src = self._covering(lw, lh)
        if src is None:
            with self._decode_lock:  # one decode at a time: a second caller finds it done
                with self._lock:
                    src = self._covering(lw, lh)
                if src is None:
                    top = level == self.max_level
                    src = open_rgb(self.path, min_size=None if top else (lw, lh))
                    if src.size == self.size:
                        with self._lock:
                            self._levels[self.max_level] = src
        im = src if src.size == (lw, lh) else src.resize((lw, lh), Image.Resampling.LANCZOS)
        with self._lock:
            self._levels[level] = im
        return im

    def prefetch(self) -> None:
        """Decode the full sheet now (e.g. in a thread, while the reviewer looks at the
        overview), so zooming in finds it ready."""
        self._level_image(self.max_level)

    def tile(self, level: int, col: int, row: int) -> bytes:
        """JPEG bytes of one tile; from the cache folder when cut before."""
        if not 0 <= level <= self.max_level:
            raise TileError(f"level {level} is outside 0–{self.max_level}")
        cols, rows = self.grid(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileError(f"tile {col}_{row} is outside the {cols}×{rows} tiles of level {level}")
        cached = self.cache / str(level) / f"{col}_{row}.jpeg" if self.cache else None
        if cached is not None and cached.is_file():
            return cached.read_bytes()
        im = self._level_image(level)
        ts, ov = self.tile_size, self.overlap
        x0, y0 = col * ts - (ov if col else 0), row * ts - (ov if row else 0)
        x1, y1 = min(im.width, (col + 1) * ts + ov), min(im.height, (row + 1) * ts + ov)
        buf = io.BytesIO()
        im.crop((x0, y0, x1, y1)).save(buf, "JPEG", quality=self.quality)
        data = buf.getvalue()
        if cached is not None:
            atomic_write(cached, data)
        return data
