"""Does the scanner's JPEG quality reach the network? Full sheets vs native-resolution tiles.

Other herbaria save their scans at other JPEG qualities. Whether training should imitate that
(re-encode inputs at random qualities) depends on whether the artefacts survive the way herbscan
feeds the network:

- **full sheet**: the 1500 × 2253 ALA scans are re-encoded at quality q *at their own
  resolution*, then shrunk to the model's input as usual. herbscan's linear probe on frozen
  `efficientnet_lite0` features (5-fold CV grouped by catalogue number, trained on the original
  scans) is tested on the re-encoded ones: accuracy and the share of predictions that change;
- **tiles** (scale 1): 128² windows cut from the same scans are re-encoded at q, as the scanner
  would have; the features move by the distance printed, relative to the spread between tiles;
- **augmentation at the model's input**: the same probe, trained on the original scans plus one
  copy of each re-encoded *after* shrinking (quality uniform in 20–95, what `train` can afford
  per batch), tested as above: does imitating JPEG at input resolution teach invariance to the
  scanner's JPEG at full resolution?

The "feature shift" is the median distance between the features of an input and of its
re-encoded copy, divided by the median distance between features of different inputs: near 0
means the network cannot see the quality, near 1 means it changes the input as much as swapping
it for another one. Prints a table, then one JSON object on the last line.

    python benchmarks/jpeg_quality.py [--qualities 20,50] [--tiles-per-sheet 4]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrained import ALA, folds, logistic  # noqa: E402


def embed(net, acc, info, arrays: np.ndarray) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(arrays), 16):
            x = acc.to_input(arrays[i : i + 16], info["mean"], info["std"])
            with acc.autocast():
                out.append(net.forward_features(x).float().mean(dim=(2, 3)).cpu().numpy())
    return np.concatenate(out)


def shift(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Median ‖a_i − b_i‖ over median ‖a_i − a_j‖ (i ≠ j, random pairs)."""
    rng = np.random.default_rng(seed)
    same = np.linalg.norm(a - b, axis=1)
    i, j = rng.integers(0, len(a), (2, 4 * len(a)))
    keep = i != j
    other = np.linalg.norm(a[i[keep]] - a[j[keep]], axis=1)
    return float(np.median(same) / np.median(other))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qualities", default="20,50")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--tiles-per-sheet", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not ALA.is_dir():
        sys.exit(f"{ALA} not found (set HERBSCAN_SHARED_DATA)")
    torch.set_num_threads(os.cpu_count() or 1)
    warnings.simplefilter("ignore")
    from PIL import Image

    from herbscan.accel import Accel
    from herbscan.images import fit_square, open_rgb, reencode_jpeg
    from herbscan.models import create_model, model_info

    qualities = [int(q) for q in a.qualities.split(",")]
    with open(ALA / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["genus"] for r in rows})
    y = np.array([classes.index(r["genus"]) for r in rows])
    fold_ids = np.array(folds(rows, 5, a.seed))
    name = "efficientnet_lite0"
    info = model_info(name)
    acc = Accel.resolve("auto", "auto")
    net = acc.prepare(create_model(name, 2, input_size=a.size, pretrained=True).eval())
    rng = np.random.default_rng(a.seed)

    t0 = time.perf_counter()
    sheets = {q: [] for q in [0] + qualities}  # 0: the scan as it is
    tiles = {q: [] for q in [0] + qualities}
    for r in rows:
        im = open_rgb(ALA / r["file"])
        native = np.asarray(im)
        for q in [0] + qualities:
            arr = native if q == 0 else reencode_jpeg(native, q)
            small = fit_square(Image.fromarray(arr), a.size, "stretch")
            sheets[q].append(np.asarray(small))
        h, w = native.shape[:2]
        for _ in range(a.tiles_per_sheet):
            # windows on the plant or label (the sheet's darker half), not blank paper
            for _try in range(20):
                ty, tx = rng.integers(0, h - 128), rng.integers(0, w - 128)
                tile = native[ty : ty + 128, tx : tx + 128]
                if tile.mean() < 200:
                    break
            tiles[0].append(tile)
            for q in qualities:
                tiles[q].append(reencode_jpeg(np.ascontiguousarray(tile), q))
    feats = {q: embed(net, acc, info, np.stack(v)) for q, v in sheets.items()}
    aug_q = rng.integers(20, 96, len(rows))
    feats_aug = embed(
        net, acc, info, np.stack([reencode_jpeg(s, q) for s, q in zip(sheets[0], aug_q)])
    )
    tfeats = {q: embed(net, acc, info, np.stack(v)) for q, v in tiles.items()}

    table = {}
    for q in [0] + qualities:
        pred = np.empty(len(rows), np.int64)
        pred_aug = np.empty(len(rows), np.int64)
        for f in range(5):
            te = fold_ids == f
            pred[te] = logistic(feats[0][~te], y[~te], feats[q][te], len(classes))
            x_tr = np.concatenate([feats[0][~te], feats_aug[~te]])
            y_tr = np.concatenate([y[~te], y[~te]])
            pred_aug[te] = logistic(x_tr, y_tr, feats[q][te], len(classes))
        if q == 0:
            base, base_aug = pred.copy(), pred_aug.copy()
        table[q] = {
            "accuracy": float(np.mean(pred == y)),
            "predictions_changed": float(np.mean(pred != base)),
            "accuracy_jpeg_augmented": float(np.mean(pred_aug == y)),
            "predictions_changed_jpeg_augmented": float(np.mean(pred_aug != base_aug)),
            "sheet_feature_shift": shift(feats[0], feats[q]) if q else 0.0,
            "tile_feature_shift": shift(tfeats[0], tfeats[q]) if q else 0.0,
        }
    secs = time.perf_counter() - t0

    print(f"ALA genus, {len(rows)} sheets (1500 × 2253), lite0 probe at {a.size}², 5-fold CV")
    print(
        f"{'scan quality':<14} {'accuracy':>9} {'changed':>8} {'aug: acc':>9} {'aug: chg':>9} "
        f"{'sheet shift':>12} {'tile shift':>11}"
    )
    for q, r in table.items():
        print(
            f"{'as scanned' if q == 0 else f'JPEG q{q}':<14} {r['accuracy']:>9.3f} "
            f"{r['predictions_changed']:>8.3f} {r['accuracy_jpeg_augmented']:>9.3f} "
            f"{r['predictions_changed_jpeg_augmented']:>9.3f} {r['sheet_feature_shift']:>12.3f} "
            f"{r['tile_feature_shift']:>11.3f}"
        )
    print(json.dumps({"results": {str(q): r for q, r in table.items()}, "seconds": round(secs, 1)}))


if __name__ == "__main__":
    main()
