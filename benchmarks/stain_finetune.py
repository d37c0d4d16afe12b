"""Fine-tuning on 150 labelled sheets: from the shipped mercury model, from ImageNet, from scratch.

The labelled sheets are a synthetic collection made by `herbscan.synth` (its own stain painter,
not `herbscan.stains`: for the stain models these are stains from a generator they never saw),
150 specimens, split 70/20/10 by specimen with three seeds. Per seed, on the same split:

- `mercury, no training`: the shipped model as it is;
- `mercury → fine-tune`: `train --init mercury` (StainNet, its scale, all its weights);
- `ImageNet → fine-tune`: StainNet from the ImageNet Lite0 stages;
- `scratch`: StainNet from random weights;
- `README recipe`: efficientnet_lite0 at 320² from ImageNet, the full-sheet default.

StainNets work at --size (default 768 wide, the synthetic sheets' own width). Prints test accuracy
per seed and pooled over the seeds with 95% Wilson intervals, seconds per run, and one JSON
object on the last line.

    python benchmarks/stain_finetune.py [--seeds 0,1,2] [--epochs 4] [--size 768] [--work DIR]
        [--only mercury,scratch]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--specimens", type=int, default=150)
    ap.add_argument("--readme-epochs", type=int, default=15)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument(
        "--only", default="", help="recipes whose names start with these words (comma list)"
    )
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    warnings.simplefilter("ignore")
    from herbscan.evaluate import evaluate
    from herbscan.manifest import split
    from herbscan.metrics import wilson_interval
    from herbscan.synth import make_collection
    from herbscan.train import train

    work = args.work or Path(tempfile.mkdtemp(prefix="stain-finetune-"))
    manifest = work / "sheets" / "manifest.csv"
    if not manifest.is_file():
        manifest = make_collection(work / "sheets", n_specimens=args.specimens, seed=7)
    cache = work / "cache"
    recipes = {
        "mercury, no training": dict(init="mercury", epochs=0),
        "mercury → fine-tune": dict(init="mercury", epochs=args.epochs),
        "ImageNet → fine-tune": dict(
            model="stainnet", fit="sheet", pretrained=True, epochs=args.epochs
        ),
        "scratch": dict(model="stainnet", fit="sheet", pretrained=False, epochs=args.epochs),
        "README recipe": dict(model="efficientnet_lite0", epochs=args.readme_epochs),
    }
    only = tuple(w.strip().lower() for w in args.only.split(",") if w.strip())
    recipes = {k: v for k, v in recipes.items() if not only or k.lower().startswith(only)}
    results = {name: {"k": 0, "n": 0, "seconds": 0.0, "per_seed": []} for name in recipes}
    for seed in [int(s) for s in args.seeds.split(",")]:
        data, _ = split(manifest, work / f"split{seed}.csv", group_col="catalogNumber", seed=seed)
        for name, kw in recipes.items():
            out = work / f"seed{seed}" / name.split()[0].lower().replace(",", "")
            out = out.with_name(out.name + ("-ft" if "fine-tune" in name else ""))
            kw = dict(kw)
            if kw.get("model") != "efficientnet_lite0":
                kw.setdefault("size", args.size)
            t0 = time.monotonic()
            done = (out / "run.json").exists() and json.loads((out / "run.json").read_text())[
                "training"
            ].get("complete")
            if not done:
                shutil.rmtree(out, ignore_errors=True)
                train(
                    data,
                    out,
                    seed=seed,
                    cache_dir=cache,
                    batch_size=8,
                    patience=0,
                    workers=1,
                    progress=False,
                    **kw,
                )
            m = evaluate(out, split="test", cache_dir=cache, progress=False)
            seconds = time.monotonic() - t0
            k = round(m["accuracy"] * m["n"])
            r = results[name]
            r["k"] += k
            r["n"] += m["n"]
            r["seconds"] += seconds
            r["per_seed"].append({"seed": seed, "accuracy": m["accuracy"], "n": m["n"]})
            print(
                f"seed {seed} {name:<22} test accuracy {m['accuracy']:.3f} (n={m['n']}) "
                f"{seconds:.0f} s",
                flush=True,
            )
    print(f"\n{'recipe':<22} {'pooled accuracy':>16} {'95% interval':>14} {'s/run':>7}")
    for name, r in results.items():
        lo, hi = wilson_interval(r["k"], r["n"])
        r.update(accuracy=r["k"] / r["n"], ci95=[round(lo, 3), round(hi, 3)])
        runs = max(1, len(r["per_seed"]))
        print(
            f"{name:<22} {r['accuracy']:>10.3f} ({r['k']}/{r['n']}) {lo:.3f}-{hi:.3f} "
            f"{r['seconds'] / runs:>7.0f}"
        )
    print(json.dumps({"size": args.size, "epochs": args.epochs, "results": results}))


if __name__ == "__main__":
    main()
