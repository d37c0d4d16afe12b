"""Can a stain run use a collection's own clean sheets without labels? Two ways, measured.

Every collection has thousands of clean sheets. This asks whether they help the stain detector
on that collection without training anything, on stains_eval's painted images (the same 56
other-herbaria sheets, any of the three painters), 2-fold over sheets: the clean and
hard-negative versions of one half are "the collection's clean sheets", the other half is
screened, then the halves swap.

- memory: the run's 112-channel features of every 16-px cell of the clean sheets are kept (a
  random 20,000 of them). A screened cell's distance to its nearest kept cell says how unlike
  the collection's clean content it is (PatchCore-style anomaly). Scored alone (`distance`) and
  with the stain logit (`logit+log distance`: a stain-like cell that is also unlike anything on
  the clean sheets).
- adabn: every BatchNorm layer's statistics re-estimated on the clean sheets (AdaBN), so the
  network normalises with the collection's paper, scanner and plants instead of the synthetic
  training sheets'.

Prints AUC clean vs stained and vs faint, calibrated accuracy, and each method's paired AUC
gain over the unadapted run (95% bootstrap over sheets); one JSON object on the last line.

    python benchmarks/collection_adapt.py [RUN] [--painter herbscan|second|third]
        [--cache /tmp/painted] [--methods memory,adabn]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import stains_eval  # noqa: E402

VERSIONS = stains_eval.VERSIONS[:4]  # clean, hard negatives, faint, heavy
CLEAN = (0, 1)
MEMORY_CELLS = 20_000


def cell_features(net, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A StainNet's (h, w) cell logits and (h*w, channels) backbone features for one sheet."""
    f = net.features(x)
    return net.stain_head(f)[0, 0].numpy(), f[0].flatten(1).T.numpy()


def nearest_distance(queries: np.ndarray, memory: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Euclidean distance from each query row to its nearest memory row."""
    m = torch.from_numpy(np.ascontiguousarray(memory, np.float32))
    m2 = (m * m).sum(1)
    out = np.empty(len(queries), np.float32)
    for s in range(0, len(queries), batch):
        q = torch.from_numpy(np.ascontiguousarray(queries[s : s + batch], np.float32))
        d2 = (q * q).sum(1)[:, None] + m2[None] - 2 * q @ m.T
        out[s : s + batch] = d2.clamp_min(0).min(1).values.sqrt().numpy()
    return out


def adapt_batchnorm(net: torch.nn.Module, inputs) -> torch.nn.Module:
    """Re-estimate every BatchNorm's running mean and variance as the average over `inputs`
    (AdaBN); weights are untouched and the network is returned in eval mode."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    net.eval()
    for m in bns:
        m.train()
    with torch.inference_mode():
        for x in inputs:
            net(x)
    return net.eval()


def by_version(s: np.ndarray) -> dict[str, np.ndarray]:
    """(sheets, 4 versions) scores as stains_eval's {version: scores}."""
    return {v: s[:, j] for j, v in enumerate(VERSIONS)}


def summary(s: np.ndarray) -> dict:
    """AUCs and calibrated accuracy of (sheets, 4 versions) scores."""
    auc = stains_eval._auc
    return {
        "auc_clean_vs_stained": round(auc(np.r_[s[:, 2], s[:, 3]], s[:, 0]), 3),
        "auc_clean_vs_faint": round(auc(s[:, 2], s[:, 0]), 3),
        "calibrated_accuracy": round(
            stains_eval.calibrated(s[:, 0], s[:, 2], s[:, 3])["accuracy"], 3
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default="mercury")
    ap.add_argument("--painter", choices=("herbscan", "second", "third"), default="herbscan")
    ap.add_argument("--cache", type=Path, default=None, help="stains_eval's painted images")
    ap.add_argument("--methods", default="memory,adabn")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "src"))
    from herbscan.accel import Accel
    from herbscan.images import input_shape
    from herbscan.predict import expand_images
    from herbscan.runs import load_run
    from herbscan.stainnet import StainNet

    methods = [m for m in args.methods.split(",") if m]
    paths = sorted(expand_images(stains_eval.DEFAULT_SOURCES)[0])
    n = len(paths)
    run = load_run(args.run)
    prep = run.preprocessing
    h, w = input_shape(prep.size, prep.fit)
    acc = Accel.resolve(precision="fp32")

    def sheet(i: int, v: int) -> torch.Tensor:
        img = stains_eval.painted_cached(paths, i, VERSIONS[v], (), args.cache, args.painter, 1024)
        x = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
        return acc.to_input(x[None].copy(), prep.mean, prep.std)

    t0 = time.monotonic()
    net = run.build_model().float().eval()
    if not isinstance(net, StainNet):
        raise SystemExit(
            f"{args.run}: an ensemble of stain nets; this benchmark reads one net's backbone "
            "features: give a single run (scripts/train_mercury.py --members 1)"
        )

    def pool(cells: np.ndarray) -> float:
        """The sheet score StainNet gives these cell scores: the mean of its top k."""
        return float(net.pool(torch.from_numpy(cells)[None])[0])

    logits, feats = {}, {}
    with torch.inference_mode():
        for i in range(n):
            for v in range(4):
                lg, f = cell_features(net, sheet(i, v))
                logits[i, v], feats[i, v] = lg, f.astype(np.float16)
    scores = {"unadapted": np.array([[pool(logits[i, v]) for v in range(4)] for i in range(n)])}
    seconds = {"unadapted": time.monotonic() - t0}
    folds = [np.flatnonzero(np.arange(n) % 2 == f) for f in (0, 1)]
    rng = np.random.default_rng(0)
    if "memory" in methods:
        t0 = time.monotonic()
        dist_s, comb_s = np.zeros((n, 4)), np.zeros((n, 4))
        for test, ref in (folds, folds[::-1]):
            bank = np.concatenate([feats[i, v] for i in ref for v in CLEAN])
            bank = bank[rng.choice(len(bank), min(len(bank), MEMORY_CELLS), replace=False)]
            for i in test:
                for v in range(4):
                    d = nearest_distance(feats[i, v], bank).reshape(logits[i, v].shape)
                    dist_s[i, v] = pool(d)
                    comb_s[i, v] = pool(logits[i, v] + np.log(d + 1e-3))
        scores["memory: distance"], scores["memory: logit+log distance"] = dist_s, comb_s
        seconds["memory"] = time.monotonic() - t0
    if "adabn" in methods:
        t0 = time.monotonic()
        s = np.zeros((n, 4))
        for test, ref in (folds, folds[::-1]):
            adapted = adapt_batchnorm(
                run.build_model().float(), (sheet(i, v) for i in ref for v in CLEAN)
            )
            with torch.inference_mode():
                for i in test:
                    for v in range(4):
                        s[i, v] = float(adapted(sheet(i, v))[0, 1])
        scores["adabn"] = s
        seconds["adabn"] = time.monotonic() - t0

    base = by_version(scores["unadapted"])
    rows = []
    print(f"{args.run} on {n} sheets painted by {args.painter}'s painter, 2-fold over sheets")
    print(f"{'method':<28} {'AUC':>6} {'faint':>6} {'calib':>6}  paired AUC gain (95%)")
    for name, s in scores.items():
        row = {"method": name, **summary(s)}
        if name != "unadapted":
            g = stains_eval.paired_gain(base, by_version(s))
            row["vs_unadapted"] = g
            gain = "; ".join(
                f"{'faint' if 'faint' in key else 'all'} {d['gain']:+.3f} "
                f"({d['ci95'][0]:+.3f}…{d['ci95'][1]:+.3f})"
                for key, d in g.items()
            )
        else:
            gain = "–"
        rows.append(row)
        print(
            f"{name:<28} {row['auc_clean_vs_stained']:>6.3f} {row['auc_clean_vs_faint']:>6.3f} "
            f"{row['calibrated_accuracy']:>6.3f}  {gain}"
        )
    print(
        json.dumps(
            {
                "run": args.run,
                "painter": args.painter,
                "n_sheets": n,
                "seconds": {key: round(v, 1) for key, v in seconds.items()},
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
