"""Tile-mode inference speed: herbscan's Predictor vs a plain loop, same model, same run.

herbscan: JPEG draft decoding at the working scale, tiles below the run's entropy threshold
dropped, kept tiles classified in batches, channels_last + bf16 autocast where supported.
Plain baseline: full-resolution decode with Pillow, resize to the working scale, every tile
classified one at a time, fp32 NCHW. A second baseline batches its tiles like herbscan does, to
show how much of the gain is batching. All aggregate tile probabilities by the mean rule. The
threshold is Otsu's cut of the benchmark sheets' own tile entropies (what `herbscan tiles`
reports); weights are a fresh herbnet (speed does not depend on them).

    python benchmarks/tiles_speed.py [--images DIR] [--scale 0.5] [--workers 2]

Prints a table, then one JSON object on its last line with `ratio` = herbscan / plain baseline
sheets/s and `ratio_batched` = herbscan / batched baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from herbscan.fileio import write_json
from herbscan.models import create_model
from herbscan.predict import Predictor
from herbscan.runs import FORMAT, WEIGHTS, save_tensors
from herbscan.tiles import TileSpec, aggregate, otsu_threshold, sheet_tiles, windows

MEAN, STD = 0.5, 0.25


def default_images() -> Path:
    root = (
        os.environ.get("HERBSCAN_SHARED_DATA")
        or Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    return Path(root) / "highres-sheets" / "images"


def make_run(folder: Path, spec: TileSpec, threshold: float, model: str) -> Path:
    torch.manual_seed(0)
    net = create_model(model, 2, input_size=spec.size)
    save_tensors(folder / WEIGHTS, net.state_dict())
    write_json(
        folder / "run.json",
        {
            "format": FORMAT,
            "classes": ["clean", "contaminated"],
            "preprocessing": {
                "mode": "tiles",
                "size": spec.size,
                "fit": "stretch",
                "mean": [MEAN] * 3,
                "std": [STD] * 3,
                "tile_size": spec.size,
                "stride": spec.stride,
                "scale": spec.scale,
                "min_entropy": threshold,
            },
            "architecture": {"name": model, "kwargs": {}},
            "aggregation": {"rule": "mean", "k": None, "threshold": None, "positive_class": None},
            "training": {},
        },
    )
    return folder


@torch.no_grad()
def baseline(paths, spec: TileSpec, model: str, batch_size: int) -> tuple[float, int]:
    """Seconds and tiles for the plain loop over all sheets."""
    torch.manual_seed(0)
    net = create_model(model, 2, input_size=spec.size).eval()
    t0, n_tiles = time.perf_counter(), 0
    for p in paths:
        im = Image.open(p).convert("RGB")
        if spec.scale < 1:
            im = im.resize(
                (round(im.width * spec.scale), round(im.height * spec.scale)),
                Image.Resampling.BILINEAR,
            )
        a = np.asarray(im)
        coords = windows(a.shape[1], a.shape[0], spec)
        probs = []
        for b in range(0, len(coords), batch_size):
            tiles = np.stack(
                [a[y : y + spec.size, x : x + spec.size] for x, y in coords[b : b + batch_size]]
            )
            x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float().div(255).sub(MEAN).div(STD)
            probs.append(torch.softmax(net(x.contiguous()), 1).numpy())
        aggregate(np.concatenate(probs), "mean")
        n_tiles += len(coords)
    return time.perf_counter() - t0, n_tiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, default=default_images())
    ap.add_argument("--tile-size", type=int, default=128)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--model", default="herbnet")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    paths = sorted(p for p in args.images.glob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        sys.exit(f"{args.images}: no JPEG sheets; pass --images or set HERBSCAN_SHARED_DATA")
    spec = TileSpec(args.tile_size, args.tile_size, args.scale)
    stats = [sheet_tiles(p, spec) for p in paths]
    threshold = otsu_threshold(np.concatenate([s.entropy for s in stats]))
    total = sum(len(s.coords) for s in stats)
    kept = sum(int((s.entropy >= threshold).sum()) for s in stats)
    del stats
    run = make_run(
        Path(tempfile.mkdtemp(prefix="herbscan-tiles-bench-")), spec, threshold, args.model
    )

    predictor = Predictor(run, batch_size=args.batch_size, workers=args.workers)
    predictor.predict(paths[:1], progress=False)  # warm-up: oneDNN kernels, worker start
    t0 = time.perf_counter()
    preds = predictor.predict(paths, progress=False)
    hs = time.perf_counter() - t0
    assert all(p.error == "" for p in preds)
    base_s, base_tiles = baseline(paths, spec, args.model, 1)
    batched_s, _ = baseline(paths, spec, args.model, args.batch_size)

    n = len(paths)
    print(
        f"{n} sheets, tiles {spec.size}² stride {spec.stride} scale {spec.scale:g}; "
        f"entropy threshold {threshold:.2f} bits keeps {kept}/{total} tiles "
        f"({100 * kept / total:.0f}%)"
    )
    print(f"{'':24}{'herbscan':>12}{'plain':>12}{'batched':>12}")
    print(f"{'seconds':24}{hs:12.2f}{base_s:12.2f}{batched_s:12.2f}")
    print(f"{'sheets per second':24}{n / hs:12.3f}{n / base_s:12.3f}{n / batched_s:12.3f}")
    print(f"{'tiles classified':24}{kept:12d}{base_tiles:12d}{base_tiles:12d}")
    print(
        f"precision {predictor.accel.precision}, workers {args.workers}, "
        f"threads {torch.get_num_threads()}"
    )
    print(
        json.dumps(
            {
                "herbscan_sheets_per_s": round(n / hs, 3),
                "baseline_sheets_per_s": round(n / base_s, 3),
                "batched_baseline_sheets_per_s": round(n / batched_s, 3),
                "ratio": round(base_s / hs, 2),
                "ratio_batched": round(batched_s / hs, 2),
                "sheets": n,
                "tiles_total": total,
                "tiles_kept": kept,
                "min_entropy": round(threshold, 3),
                "scale": spec.scale,
                "precision": predictor.accel.precision,
                "workers": args.workers,
            }
        )
    )


if __name__ == "__main__":
    main()
