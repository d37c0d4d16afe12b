"""Near-duplicate detection: recall on copies, false alarms among look-alike sheets, and what
the collections in ../shared hold.

- Recall: every one of `--copies` ALA sheets is copied five ways (half size, JPEG quality 40,
  cropped by 3% on two sides and 1.5% on the others, colour and brightness shifted, turned 90°)
  and each copy must be paired with its original.
- False alarms: pairs of distinct ALA sheets, the same herbarium layout and often the same
  species, that are called near-duplicates (all 158 sheets: 12,403 pairs; pairs within one
  genus counted apart).
- Found: near-duplicate pairs across all sheets of ../shared (ALA, highres, unlabeled,
  plant-masks), listed.

Prints a table and one JSON object on the last line.

    python benchmarks/neardup.py [--copies 40]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HERBSCAN_SHARED_DATA", REPO.parent / "shared" / "data"))


def copies(im: Image.Image) -> dict[str, Image.Image]:
    w, h = im.size
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=40)
    cx, cy = int(0.03 * w), int(0.03 * h)
    return {
        "half size": im.resize((w // 2, h // 2)),
        "JPEG q40": Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
        "cropped 3%": im.crop((cx, cy, w - cx // 2, h - cy // 2)),
        "colour-shifted": ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.1)).enhance(0.7),
        "turned 90°": im.transpose(Image.Transpose.ROTATE_90),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=40)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from herbscan.images import open_rgb
    from herbscan.neardup import fingerprints, near_pairs
    from herbscan.predict import expand_images

    ala = SHARED / "ala-lycopodiaceae"
    rows = list(csv.DictReader(open(ala / "manifest.csv")))
    ala_paths = [ala / r["file"] for r in rows]
    genus = [r.get("genus", "") for r in rows]

    work = Path(tempfile.mkdtemp(prefix="neardup-"))
    made, origin, kind = [], [], []
    for k, p in enumerate(ala_paths[: args.copies]):
        im = open_rgb(p, min_size=(512, 512))
        for name, c in copies(im).items():
            q = work / f"{k}_{len(made)}.png"
            c.save(q)
            made.append(q)
            origin.append(k)
            kind.append(name)
    t0 = time.perf_counter()
    fp = fingerprints(ala_paths + made)
    seconds = time.perf_counter() - t0
    pairs = {(i, j) for i, j, _, _ in near_pairs(fp)}
    n = len(ala_paths)
    recall = {}
    for name in dict.fromkeys(kind):
        idx = [m for m, kk in enumerate(kind) if kk == name]
        hit = sum((origin[m], n + m) in pairs for m in idx)
        recall[name] = {"found": hit, "of": len(idx)}
    distinct = [(i, j) for i, j in pairs if j < n]
    same_genus = sum(genus[i] == genus[j] for i, j in distinct)
    alarms = {
        "pairs_called_near_duplicates": len(distinct),
        "of_pairs": n * (n - 1) // 2,
        "within_one_genus": same_genus,
        "examples": [(ala_paths[i].name, ala_paths[j].name) for i, j in sorted(distinct)[:10]],
    }

    everything, _ = expand_images(
        [
            ala / "images",
            SHARED / "highres-sheets" / "images",
            SHARED / "unlabeled-sheets",
            SHARED / "plant-masks" / "img",
        ]
    )
    everything = sorted(everything)
    fp_all = fingerprints(everything)
    found = [
        (str(everything[i].relative_to(SHARED)), str(everything[j].relative_to(SHARED)), d, s)
        for i, j, d, s in near_pairs(fp_all)
    ]

    print(f"{'copy':<16} {'found':>7}")
    for name, r in recall.items():
        print(f"{name:<16} {r['found']:>3}/{r['of']}")
    print(
        f"false alarms among {n} distinct ALA sheets: {len(distinct)} of {alarms['of_pairs']} "
        f"pairs ({same_genus} within one genus)"
    )
    print(f"near-duplicates among all {len(everything)} sheets of ../shared: {len(found)}")
    for a, b, d, s in found[:20]:
        print(f"  {a}  ~  {b}  ({d} bits, correlation {s})")
    print(f"fingerprints: {len(ala_paths) + len(made)} files in {seconds:.1f} s")
    print(
        json.dumps(
            {
                "recall": recall,
                "false_alarms": alarms,
                "found": found,
                "seconds_per_file": round(seconds / (len(ala_paths) + len(made)), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
