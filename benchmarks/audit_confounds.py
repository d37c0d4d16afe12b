"""Does `herbscan audit` raise the alarm when the label is carried by the imaging, and only then?

From the 158 real ALA sheets, specimens get a random label A or B (so nothing about the plant
predicts it), and every sheet is saved again the same way, except for one confound per set:

- **none**: all sheets re-saved at JPEG quality 90 (the control: no probe may fire);
- **jpeg**: B sheets saved at quality 40, A at 90;
- **resolution**: B sheets shrunk to 70% before saving;
- **colour cast**: B sheets warmer (red +10, blue −10), as another lamp or scanner would give.

Each set is audited (metadata, background and border probes, 5-fold CV by specimen). Prints a
table of balanced accuracies (95% interval) and alarms per set, then one JSON object.

    python benchmarks/audit_confounds.py [--sets none,jpeg,resolution,colour] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HERBSCAN_SHARED_DATA", REPO.parent / "shared" / "data"))
ALA = SHARED / "ala-lycopodiaceae"
SETS = ("none", "jpeg", "resolution", "colour")


def make_set(kind: str, rows: list[dict], labels: dict[str, str], out: Path) -> Path:
    """Write the re-saved sheets of one set and its manifest."""
    from PIL import Image

    from herbscan.images import open_rgb

    manifest = out / "manifest.csv"
    if manifest.is_file():
        return manifest
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for r in rows:
        label = labels[r["catalog_number"]]
        im = open_rgb(ALA / r["file"])
        quality = 90
        if label == "B":
            if kind == "jpeg":
                quality = 40
            elif kind == "resolution":
                im = im.resize((round(im.width * 0.7), round(im.height * 0.7)), Image.BILINEAR)
            elif kind == "colour":
                a = np.asarray(im).astype(np.int16)
                a[..., 0] += 10
                a[..., 2] -= 10
                im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        name = f"images/{Path(r['file']).stem}.jpg"
        im.save(out / name, quality=quality)
        lines.append({"path": name, "label": label, "specimen_id": r["catalog_number"]})
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, ["path", "label", "specimen_id"])
        w.writeheader()
        w.writerows(lines)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    if not ALA.is_dir():
        sys.exit(f"{ALA} not found (set HERBSCAN_SHARED_DATA)")
    warnings.simplefilter("ignore")
    from herbscan.audit import audit

    with open(ALA / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    specimens = sorted({r["catalog_number"] for r in rows})
    rng = np.random.default_rng(a.seed)
    labels = dict(zip(specimens, rng.permutation(["A", "B"] * (len(specimens) // 2 + 1))))
    work = Path(a.work or tempfile.mkdtemp(prefix="herbscan-audit-confounds-"))
    results = {}
    for kind in [s for s in a.sets.split(",") if s]:
        manifest = make_set(kind, rows, labels, work / kind)
        t0 = time.perf_counter()
        r = audit(manifest, work / kind / "audit", progress=False, seed=a.seed)
        results[kind] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "warnings": r["warnings"],
            "probes": {
                name: {
                    "balanced_accuracy": p["balanced_accuracy"],
                    "interval": p["balanced_accuracy_interval"],
                    "alarm": p["alarm"],
                }
                for name, p in r["probes"].items()
            },
            "best_metadata_field": r["probes"]["metadata"]["fields"][0]["field"]
            if r["probes"]["metadata"].get("fields")
            else None,
        }
        print(kind, json.dumps(results[kind]["probes"]), flush=True)

    print(f"\nALA sheets ({len(rows)}), random labels A/B by specimen, one confound per set")
    print(f"{'confound':<12} {'metadata':<24} {'background':<24} {'border':<24} {'time':>6}")
    for kind, r in results.items():
        cells = []
        for name in ("metadata", "background", "border"):
            p = r["probes"][name]
            lo, hi = p["interval"]
            flag = " ALARM" if p["alarm"] else ""
            cells.append(f"{p['balanced_accuracy']:.2f} ({lo:.2f}–{hi:.2f}){flag}")
        print(f"{kind:<12} {cells[0]:<24} {cells[1]:<24} {cells[2]:<24} {r['seconds']:>5.0f}s")
    print(json.dumps({"results": results, "n": len(rows), "seed": a.seed}))


if __name__ == "__main__":
    main()
