"""Does learning stains from a collection's own clean sheets beat the shipped detector there?

The clean sheets of other herbaria in ../shared/data (the stains_eval sources) stand in for a
collection. 2-fold over its sheets: `learn-stains` on one half (from the shipped `mercury`, or
from ImageNet), then every sheet of the other half is painted four ways as in
`benchmarks/stains_eval.py` (clean, hard negatives, faint, heavy; held-out style) and scored by
the adapted run and by the shipped model. Prints AUC (clean vs stained, vs faint, vs heavy,
hard negatives vs stained), specificity and detection at the run's own threshold, and accuracy
with a threshold calibrated on painted sheets, pooled over both folds, then one JSON line. The
pooled scores go to WORK/INIT-STEPS/scores.json for paired comparisons between runs.
`--painter second` (or `third`) paints the test sheets with the independent
benchmarks/second_painter.py (third_painter.py; scores-PAINTER.json): learning sees only
herbscan's painter, so a gain there is not the painter's habits learnt; `--reuse` scores the fold
runs already in WORK instead of learning again.

    python benchmarks/stain_adapt.py [--init mercury|imagenet] [--steps 200]
        [--cache /tmp/painted] [--work /tmp/stain-adapt] [--painter second|third] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import stains_eval as se  # noqa: E402

VERSIONS = se.VERSIONS[:-1]


def scores(run, paths, idx, cache, painter="herbscan") -> dict[str, list[float]]:
    """P(contaminated) of each painted version of sheets `idx`."""
    score = se.scorer(run)
    return {
        v: [score(se.painted_cached(paths, int(i), v, (), cache, painter)) for i in idx]
        for v in VERSIONS
    }


def summary(s: dict[str, list[float]]) -> dict:
    s = {k: np.array(v) for k, v in s.items()}
    clean, faint, heavy = s["clean"], s["faint"], s["heavy"]
    stained = np.r_[faint, heavy]
    return {
        "auc": round(se._auc(stained, clean), 3),
        "auc_faint": round(se._auc(faint, clean), 3),
        "auc_heavy": round(se._auc(heavy, clean), 3),
        "auc_hard_negatives": round(se._auc(stained, s["hard negatives"]), 3),
        "specificity": round(float((clean < 0.5).mean()), 3),
        "faint_found": round(float((faint >= 0.5).mean()), 3),
        "heavy_found": round(float((heavy >= 0.5).mean()), 3),
        "calibrated_accuracy": round(se.calibrated(clean, faint, heavy)["accuracy"], 3),
        "n_sheets": len(clean),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", choices=["mercury", "imagenet"], default="mercury")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--sources", nargs="*", type=Path, default=se.DEFAULT_SOURCES)
    ap.add_argument("--cache", type=Path, default=None, help="painted images, kept for later runs")
    ap.add_argument("--work", type=Path, default=Path("/tmp/stain-adapt"))
    ap.add_argument("--painter", choices=("herbscan", "second", "third"), default="herbscan")
    ap.add_argument(
        "--reuse", action="store_true", help="score the runs already in --work, learn nothing"
    )
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from herbscan.learn_stains import learn_stains
    from herbscan.predict import expand_images

    paths, _ = expand_images(args.sources)
    paths = sorted(paths)
    fold = np.arange(len(paths)) % 2
    pooled = {name: {v: [0.0] * len(paths) for v in VERSIONS} for name in ("shipped", "adapted")}
    seconds = []
    for f in (0, 1):
        train, test = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        out = args.work / f"{args.init}-{args.steps}" / f"fold{f}"
        if not (args.reuse and (out / "run.json").is_file()):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.monotonic()
            learn_stains(
                [paths[i] for i in train],
                out,
                steps=args.steps,
                init=args.init,
                validation_sheets=6,
                cache_dir=args.work / "cache",
                progress=False,
                seed=f,
            )
            seconds.append(round(time.monotonic() - t0, 1))
        for name, run in (("shipped", "mercury"), ("adapted", out)):
            s = scores(run, paths, test, args.cache, args.painter)
            for v in VERSIONS:
                for j, i in enumerate(test):
                    pooled[name][v][i] = s[v][j]
    suffix = "" if args.painter == "herbscan" else f"-{args.painter}"
    (args.work / f"{args.init}-{args.steps}" / f"scores{suffix}.json").write_text(
        json.dumps(pooled)
    )
    res = {name: summary(pooled[name]) for name in pooled}
    res.update(init=args.init, steps=args.steps, painter=args.painter, learn_seconds=seconds)
    for name in ("shipped", "adapted"):
        print(f"{name:>8}: " + ", ".join(f"{k} {v}" for k, v in res[name].items()))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
