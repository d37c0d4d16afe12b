"""The demo collection (synthetic mercury) in full-sheet and tile mode, from scratch and pretrained.

One synthetic collection (`herbscan.synth`, 768 × 1152 sheets, half of them stained), one split
by specimen, then in the same run:

- full sheet: `herbnet` from scratch (the demo's model) and `efficientnet_lite0` from ImageNet
  (LP-FT, 320²);
- tiles (scale 1): `herbnet` from scratch on 128² tiles (the paper's size), and
  `efficientnet_lite0` from ImageNet on 128² tiles and on 256² tiles (a 128² tile is small for a
  net made for 224²: a larger tile gives it more context instead of upsampling the same pixels).

Reports test accuracy with a 95% Wilson interval, per-class accuracy, training time and
inference speed. Prints a table, then one JSON object on the last line.

    python benchmarks/demo_modes.py [--specimens 300] [--work DIR] [--only full-herbnet,...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

CONFIGS = {
    "full-herbnet": dict(mode="full", model="herbnet", epochs=20),
    "full-lite0": dict(mode="full", model="efficientnet_lite0", epochs=5),
    "tiles128-herbnet": dict(mode="tiles", model="herbnet", epochs=8, tile_size=128),
    "tiles128-lite0": dict(mode="tiles", model="efficientnet_lite0", epochs=4, tile_size=128),
    "tiles256-lite0": dict(mode="tiles", model="efficientnet_lite0", epochs=4, tile_size=256),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specimens", type=int, default=300)
    ap.add_argument("--samples-per-epoch", type=int, default=3000, help="tiles per epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None)
    ap.add_argument("--only", default=",".join(CONFIGS))
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    warnings.simplefilter("ignore")
    from herbscan.evaluate import evaluate
    from herbscan.manifest import split
    from herbscan.metrics import wilson_interval
    from herbscan.synth import make_collection
    from herbscan.train import train

    work = Path(a.work or tempfile.mkdtemp(prefix="herbscan-demo-modes-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "sheets" / "manifest.csv"
    if not manifest.is_file():
        manifest = make_collection(work / "sheets", n_specimens=a.specimens, seed=a.seed)
    data, _ = split(manifest, work / "split.csv", group_col="catalogNumber", seed=a.seed)
    results = {}
    for name in [n for n in a.only.split(",") if n]:
        cfg = dict(CONFIGS[name])
        run = work / name
        t0 = time.perf_counter()
        extra = {"samples_per_epoch": a.samples_per_epoch} if cfg["mode"] == "tiles" else {}
        train(
            data,
            run,
            seed=a.seed,
            cache_dir=work / "cache",
            patience=0,
            progress=False,
            resume=run.exists(),
            **cfg,
            **extra,
        )
        secs = time.perf_counter() - t0
        t1 = time.perf_counter()
        m = evaluate(run, split="test", cache_dir=work / "cache", progress=False)
        infer = m["n"] / (time.perf_counter() - t1)
        k = round(m["accuracy"] * m["n"])
        lo, hi = wilson_interval(k, m["n"])
        hist = json.loads((run / "run.json").read_text())["training"]
        results[name] = {
            "accuracy": m["accuracy"],
            "accuracy_low": lo,
            "accuracy_high": hi,
            "per_class": m["per_class_accuracy"],
            "n": m["n"],
            "train_seconds": round(secs, 1),
            "best_epoch": hist.get("best_epoch"),
            "epochs_run": hist.get("epochs_run"),
            "sheets_per_s_evaluate": round(infer, 2),
        }
        print(name, results[name], flush=True)

    print(f"\nDemo collection, {a.specimens} specimens, test split")
    print(
        f"{'configuration':<18} {'accuracy (95% CI)':<22} {'per class':<26} "
        f"{'train':>8} {'eval':>10}"
    )
    for name, r in results.items():
        pc = ", ".join(f"{k} {v:.2f}" for k, v in r["per_class"].items())
        print(
            f"{name:<18} {r['accuracy']:.3f} ({r['accuracy_low']:.3f}–{r['accuracy_high']:.3f})"
            f"   {pc:<26} {r['train_seconds']:>7.0f}s {r['sheets_per_s_evaluate']:>6.1f} sh/s"
        )
    print(json.dumps({"results": results, "specimens": a.specimens, "seed": a.seed}))


if __name__ == "__main__":
    main()
