"""Tile runs tested on larger sheets than they were trained on: the aggregation rule, before and
after choosing it with a paired test among tile-count-invariant rules only.

Training sheets: the 158 ALA scans (1500 × 2253), half of the specimens painted with synthetic
mercury (`herbscan.stains.paint`), the rest with look-alikes only. Test sheets: other
collections, 1600–6100 px (`unlabeled-sheets` of ≥ 1600 px and `highres-sheets`), each once
clean and once stained. All at tile scale 0.5, so a test sheet has 1.5–13× the tiles of a
training sheet. `herbnet` tile runs with 3 seeds; for each, the rule and threshold are chosen on
its validation sheets by

- **before**: the best balanced accuracy among mean, max, top-3, top tenth and vote;
- **after** (herbscan now): mean, unless top tenth or vote beats it in a McNemar test;

and applied to the test sheets. Prints test accuracy per seed and the spread, then one JSON.

    python benchmarks/aggregation_shift.py [--seeds 0,1,2] [--work DIR]
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
OLD_RULES = (("mean", None), ("max", None), ("topk", 3), ("topk", None), ("vote", None))


def paint_to(src: Path, dst: Path, stained: bool, seed: list[int]) -> None:
    from PIL import Image

    from herbscan.images import open_rgb
    from herbscan.stains import paint, scanner

    rng = np.random.default_rng(seed)
    sheet = np.asarray(open_rgb(src))
    sev = rng.uniform(0.3, 1.0) if stained else None
    img, _, _ = paint(rng, sheet, stained=stained, severity=sev, n_negatives=2)
    Image.fromarray(scanner(rng, img)).save(dst, quality=90)


def build(work: Path) -> tuple[Path, Path]:
    """The painted training manifest (split) and the test manifest."""
    from herbscan.images import image_size, list_images
    from herbscan.manifest import split

    train_csv, test_csv = work / "train_all.csv", work / "test.csv"
    if train_csv.is_file() and test_csv.is_file():
        return work / "split.csv", test_csv
    (work / "train").mkdir(parents=True, exist_ok=True)
    (work / "test").mkdir(parents=True, exist_ok=True)
    with open(ALA / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    specimens = sorted({r["catalog_number"] for r in rows})
    rng = np.random.default_rng(7)
    stained_ids = set(rng.choice(specimens, len(specimens) // 2, replace=False).tolist())
    out = []
    for i, r in enumerate(rows):
        stained = r["catalog_number"] in stained_ids
        dst = work / "train" / f"{i:03d}.jpg"
        paint_to(ALA / r["file"], dst, stained, [1, i])
        label = "contaminated" if stained else "clean"
        out.append({"path": str(dst), "label": label, "specimen_id": r["catalog_number"]})
    with open(train_csv, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, ["path", "label", "specimen_id"])
        w.writeheader()
        w.writerows(out)
    split(train_csv, work / "split.csv", near_duplicates="off", seed=0)
    sources = [p for p in list_images(SHARED / "unlabeled-sheets") if max(image_size(p)) >= 1600]
    sources += list_images(SHARED / "highres-sheets" / "images")
    test = []
    for i, p in enumerate(sources):
        for stained in (False, True):
            dst = work / "test" / f"{i:03d}_{int(stained)}.jpg"
            paint_to(p, dst, stained, [2, i, int(stained)])
            label = "contaminated" if stained else "clean"
            test.append({"path": str(dst), "label": label, "specimen_id": f"t{i}"})
    with open(test_csv, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, ["path", "label", "specimen_id"])
        w.writeheader()
        w.writerows(test)
    return work / "split.csv", test_csv


def tile_probs(run: Path, paths: list[str]) -> list[np.ndarray]:
    """(n_kept, 2) tile probabilities (clean, contaminated) of each sheet."""
    from herbscan.predict import Predictor

    out = []
    for p in Predictor(run).predict(paths, progress=False):
        s = p.tiles.scores[p.tiles.kept] if p.tiles is not None else np.zeros(0)
        s = s[np.isfinite(s)]
        out.append(np.stack([1 - s, s], 1) if len(s) else np.full((1, 2), 0.5))
    return out


def choose(sheets: list[np.ndarray], y: np.ndarray, rules) -> dict:
    from herbscan.views import choose_aggregation

    probs = np.concatenate(sheets)
    groups = np.concatenate([np.full(len(s), i) for i, s in enumerate(sheets)])
    if rules == "old":
        from herbscan.metrics import operating_point
        from herbscan.views import group_probs

        best = None
        for rule, k in OLD_RULES:
            sp = group_probs(probs, groups, len(y), rule, k)
            op = operating_point(sp[:, 1], y == 1)
            if best is None or op["balanced_accuracy"] > best["balanced_accuracy"]:
                best = {"rule": rule, "k": k, **op}
        return best
    return choose_aggregation(probs, groups, y, ["clean", "contaminated"])


def apply(sheets: list[np.ndarray], y: np.ndarray, chosen: dict) -> dict:
    from herbscan.tiles import aggregate

    s = np.array([aggregate(t, chosen["rule"], chosen["k"])[1] for t in sheets])
    flag = s >= chosen["threshold"]
    return {
        "accuracy": float(np.mean(flag == (y == 1))),
        "flagged_clean": float(np.mean(flag[y == 0])),
        "missed_stained": float(np.mean(~flag[y == 1])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    if not ALA.is_dir():
        sys.exit(f"{ALA} not found (set HERBSCAN_SHARED_DATA)")
    warnings.simplefilter("ignore")
    from herbscan.manifest import read_source
    from herbscan.train import train

    work = Path(a.work or tempfile.mkdtemp(prefix="herbscan-aggregation-shift-"))
    t0 = time.perf_counter()
    data, test_csv = build(work)
    m = read_source(data)
    val = m.subset("validation")
    val_paths = [str(p) for p in val.paths()]
    y_val = np.array([lab == "contaminated" for lab in val.labels()], int)
    t = read_source(test_csv)
    test_paths = [str(p) for p in t.paths()]
    y_test = np.array([lab == "contaminated" for lab in t.labels()], int)
    results = {}
    for seed in [int(s) for s in a.seeds.split(",")]:
        run = work / f"run{seed}"
        train(
            data,
            run,
            model="herbnet",
            mode="tiles",
            scale=0.5,
            epochs=a.epochs,
            samples_per_epoch=3000,
            seed=seed,
            patience=0,
            cache_dir=work / "cache",
            progress=False,
            resume=run.exists(),
        )
        vs, ts = tile_probs(run, val_paths), tile_probs(run, test_paths)
        row = {}
        for policy in ("old", "new"):
            chosen = choose(vs, y_val, policy)
            row[policy] = {
                "rule": chosen["rule"] + ("" if chosen["k"] is None else f"{chosen['k']}"),
                "threshold": chosen["threshold"],
                "validation_balanced_accuracy": chosen["balanced_accuracy"],
                **apply(ts, y_test, chosen),
            }
        results[seed] = row
        print(seed, json.dumps(row), flush=True)

    tiles_train = float(np.median([len(s) for s in vs]))
    tiles_test = float(np.median([len(s) for s in ts]))
    print(
        f"\nTile runs (herbnet, 128² tiles at scale 0.5): {len(val_paths)} validation sheets, "
        f"{len(test_paths)} test sheets from other collections; median kept tiles per sheet "
        f"{tiles_train:.0f} (validation) vs {tiles_test:.0f} (test)"
    )
    print(f"{'seed':<6} {'before: rule':<14} {'test acc':>9} {'after: rule':<14} {'test acc':>9}")
    for seed, row in results.items():
        print(
            f"{seed:<6} {row['old']['rule']:<14} {row['old']['accuracy']:>9.3f} "
            f"{row['new']['rule']:<14} {row['new']['accuracy']:>9.3f}"
        )
    spread = {
        p: [
            min(r[p]["accuracy"] for r in results.values()),
            max(r[p]["accuracy"] for r in results.values()),
        ]
        for p in ("old", "new")
    }
    print(f"spread before {spread['old']}, after {spread['new']}")
    print(
        json.dumps(
            {
                "results": results,
                "spread": spread,
                "median_tiles": [tiles_train, tiles_test],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
