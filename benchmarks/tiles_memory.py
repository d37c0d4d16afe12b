"""Tiles per sheet before/after the entropy filter, and peak memory of tiling one sheet.

Each sheet is tiled in a fresh process. The figure is the peak resident memory added by decoding
and tiling it, divided by the size of the decoded sheet (H·W·3 bytes). The sheets are
`../shared/data/highres-sheets` (about 4000×6000) plus a generated 8000×6000 JPEG.

    python benchmarks/tiles_memory.py [--images DIR] [--tile-size 128] [--scale 1.0]

Prints a table, then one JSON object on its last line (`max_ratio`: the worst peak / decoded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = """
import json, sys
import numpy as np
from herbscan.tiles import TileSpec, iter_tiles

def peak_kb():  # VmHWM belongs to this process image (ru_maxrss would include the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))

spec = TileSpec(int(sys.argv[2]), int(sys.argv[2]), float(sys.argv[3]))
before = peak_kb()
n = kept = 0
shape = None
for _sheet, st, j, tile in iter_tiles([sys.argv[1]], spec):
    shape = st.sheet.shape
    n += 1
    kept += int(st.entropy[j] >= float(sys.argv[4]))
    float(tile.mean())
after = peak_kb()
print(json.dumps({"shape": shape, "tiles": n, "kept": kept,
                  "peak_added_mb": (after - before) / 1024}))
"""


def default_images() -> Path:
    root = (
        os.environ.get("HERBSCAN_SHARED_DATA")
        or Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    return Path(root) / "highres-sheets" / "images"


def big_sheet(folder: Path) -> Path:
    """An 8000×6000 (portrait 6000 wide) JPEG with paper, noise and a dark plant-like blob."""
    rng = np.random.default_rng(0)
    h, w = 8000, 6000
    a = np.full((h, w, 3), (232, 226, 210), np.uint8)
    a[2000:6000, 1500:4500] = rng.integers(30, 120, (4000, 3000, 3), dtype=np.uint8)
    p = folder / "sheet_8000x6000.jpg"
    Image.fromarray(a).save(p, quality=85)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, default=default_images())
    ap.add_argument("--tile-size", type=int, default=128)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    from herbscan.tiles import TileSpec, otsu_threshold, sheet_tiles

    spec = TileSpec(args.tile_size, args.tile_size, args.scale)
    paths = sorted(args.images.glob("*.jpg")) if args.images.is_dir() else []
    paths.append(big_sheet(Path(tempfile.mkdtemp(prefix="herbscan-mem-"))))
    ent = np.concatenate(
        [sheet_tiles(p, spec).entropy for p in paths if "8000" not in p.name]
        or [sheet_tiles(paths[-1], spec).entropy]
    )
    threshold = otsu_threshold(ent)
    rows = []
    print(
        f"tiles {spec.size}² at scale {spec.scale:g}; auto entropy threshold "
        f"{threshold:.2f} bits (Otsu over the real sheets)"
    )
    print(f"{'sheet':34}{'decoded':>14}{'tiles':>8}{'kept':>8}{'peak MB':>10}{'ratio':>8}")
    for p in paths:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(p), str(spec.size), str(spec.scale), str(threshold)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        h, w = r["shape"][:2]
        decoded_mb = h * w * 3 / 2**20
        r.update(
            sheet=p.name,
            decoded_mb=round(decoded_mb, 1),
            ratio=round(r["peak_added_mb"] / decoded_mb, 2),
        )
        rows.append(r)
        print(
            f"{p.name[:33]:34}{f'{w}×{h}':>14}{r['tiles']:>8}{r['kept']:>8}"
            f"{r['peak_added_mb']:>10.0f}{r['ratio']:>8.2f}"
        )
    print(
        json.dumps(
            {
                "min_entropy": round(threshold, 3),
                "sheets": rows,
                "max_ratio": max(r["ratio"] for r in rows),
            }
        )
    )


if __name__ == "__main__":
    main()
