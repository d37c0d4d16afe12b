"""Pretrained backbones vs training from scratch, by 5-fold grouped cross-validation on ALA genus.

Every one of the 158 ALA Lycopodiaceae sheets in ../shared/data is a test sheet exactly once:
folds are stratified by genus and grouped by catalogue number. In each fold, a fifth of the
training sheets is held out for validation (best epoch, early stopping). Compared, in one run on
the same machine:

- `herbnet` from scratch (herbscan's default before pretrained backbones);
- `efficientnet_lite0` / `efficientnet_lite2` fine-tuned from ImageNet (herbscan's recipe:
  head warm-up, then the whole net with the backbone at 0.1× the learning rate);
- a linear probe per backbone: frozen ImageNet features (global average) + multinomial logistic
  regression, the floor a fine-tune must beat.

Accuracy comes with a 95% Wilson interval over the 158 pooled test predictions, macro-F1 with a
95% bootstrap interval over sheets. Prints a table, then one JSON object on the last line.

    python benchmarks/pretrained.py [--models herbnet,efficientnet_lite0,efficientnet_lite2]
        [--size 320] [--fit stretch|sheet] [--epochs 15] [--folds 5] [--probe-only]
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
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HERBSCAN_SHARED_DATA", REPO.parent / "shared" / "data"))
ALA = SHARED / "ala-lycopodiaceae"


def folds(rows: list[dict], k: int, seed: int = 0) -> list[int]:
    """Fold of each row: stratified by genus, grouped by catalogue number."""
    rng = np.random.default_rng(seed)
    by_genus: dict[str, list[str]] = {}
    for r in rows:
        g = by_genus.setdefault(r["genus"], [])
        if r["catalog_number"] not in g:
            g.append(r["catalog_number"])
    fold_of: dict[str, int] = {}
    offset = 0
    for genus in sorted(by_genus):
        specimens = by_genus[genus]
        rng.shuffle(specimens)
        for i, s in enumerate(specimens):
            fold_of[s] = (i + offset) % k
        offset += len(specimens)
    return [fold_of[r["catalog_number"]] for r in rows]


def write_fold(rows, fold_ids, f, out: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed + f)
    specimens = sorted({r["catalog_number"] for r, fi in zip(rows, fold_ids) if fi != f})
    val = set(rng.choice(specimens, size=max(1, len(specimens) // 5), replace=False).tolist())
    path = out / f"fold{f}.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "specimen_id", "split"])
        for r, fi in zip(rows, fold_ids):
            split = "test" if fi == f else ("validation" if r["catalog_number"] in val else "train")
            w.writerow([str(ALA / r["file"]), r["genus"], r["catalog_number"], split])
    return path


def macro_f1(y, p, k) -> float:
    f1 = []
    for c in range(k):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        if tp + fp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def summarise(y, p, k, seed=0) -> dict:
    from herbscan.metrics import wilson_interval

    n = len(y)
    acc = float(np.mean(y == p))
    lo, hi = wilson_interval(int(np.sum(y == p)), n)
    rng = np.random.default_rng(seed)
    boot = [macro_f1(y[i], p[i], k) for i in (rng.integers(0, n, n) for _ in range(1000))]
    return {
        "accuracy": acc,
        "accuracy_low": lo,
        "accuracy_high": hi,
        "macro_f1": macro_f1(y, p, k),
        "macro_f1_low": float(np.percentile(boot, 2.5)),
        "macro_f1_high": float(np.percentile(boot, 97.5)),
        "n": n,
    }


def features(model_name: str, paths: list[str], size: int, fit: str = "stretch") -> np.ndarray:
    """Frozen ImageNet features (global average of the last feature map) of every sheet."""
    from herbscan.accel import Accel
    from herbscan.cache import load_sheets
    from herbscan.models import create_model, model_info

    info = model_info(model_name)
    net = create_model(model_name, 2, input_size=size, pretrained=True).eval()
    acc = Accel.resolve("auto", "auto")
    net = acc.prepare(net)
    x, ok, failures = load_sheets(paths, size, fit, progress=False)
    assert not failures, failures
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 16):
            batch = acc.to_input(x[i : i + 16], info["mean"], info["std"])
            with acc.autocast():
                f = net.forward_features(batch).float().mean(dim=(2, 3))
            out.append(f.cpu().numpy())
    return np.concatenate(out)


def logistic(xtr, ytr, xte, k) -> np.ndarray:
    """herbscan's linear probe (the one that starts a fine-tune), on frozen features."""
    from herbscan.train import fit_logistic

    w, b = fit_logistic(torch.tensor(xtr, dtype=torch.float64), ytr, k)
    return (torch.tensor(xte, dtype=torch.float64) @ w.T + b).argmax(1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="herbnet,efficientnet_lite0,efficientnet_lite2")
    ap.add_argument("--probes", default="efficientnet_lite0,efficientnet_lite2")
    ap.add_argument("--size", type=int, default=320, help="input size of the pretrained nets")
    ap.add_argument(
        "--fit", default="stretch", help="stretch (size²) or sheet (size × 1.5·size, 2:3 upright)"
    )
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--scratch-epochs", type=int, default=30)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="folder for runs (default: a temp folder)")
    a = ap.parse_args()
    if not ALA.is_dir():
        sys.exit(f"{ALA} not found (set HERBSCAN_SHARED_DATA)")
    torch.set_num_threads(os.cpu_count() or 1)
    warnings.simplefilter("ignore")
    from herbscan.train import train

    with open(ALA / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["genus"] for r in rows})
    k = len(classes)
    fold_ids = folds(rows, a.folds, a.seed)
    work = Path(a.work or tempfile.mkdtemp(prefix="herbscan-pretrained-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HERBSCAN_CACHE", str(work / "cache"))
    y_all = np.array([classes.index(r["genus"]) for r in rows])
    results, timing = {}, {}

    for name in [m for m in a.probes.split(",") if m]:
        t0 = time.perf_counter()
        feats = features(name, [str(ALA / r["file"]) for r in rows], a.size, a.fit)
        pred = np.empty(len(rows), np.int64)
        for f in range(a.folds):
            te = np.array(fold_ids) == f
            pred[te] = logistic(feats[~te], y_all[~te], feats[te], k)
        results[f"probe_{name}"] = summarise(y_all, pred, k)
        timing[f"probe_{name}"] = {"seconds_total": round(time.perf_counter() - t0, 1)}

    from herbscan.predict import Predictor

    for name in [m for m in a.models.split(",") if m]:
        scratch = name.startswith("herbnet") or name.startswith("smithsonian")
        pred = np.empty(len(rows), np.int64)
        secs, epochs_run, infer = [], [], []
        for f in range(a.folds):
            data = write_fold(rows, fold_ids, f, work, a.seed)
            run = work / f"{name}_fold{f}"
            t0 = time.perf_counter()
            train(
                data,
                run,
                model=name,
                size=256 if scratch else a.size,
                fit=a.fit,
                epochs=a.scratch_epochs if scratch else a.epochs,
                patience=10,
                workers=2,
                progress=False,
                seed=a.seed,
                resume=run.exists(),
            )
            secs.append(time.perf_counter() - t0)
            cfg = json.loads((run / "run.json").read_text())
            epochs_run.append(cfg["training"]["epochs_run"])
            te = [i for i, fi in enumerate(fold_ids) if fi == f]
            t1 = time.perf_counter()
            preds = Predictor(run).predict([str(ALA / rows[i]["file"]) for i in te], progress=False)
            infer.append(len(te) / (time.perf_counter() - t1))
            for i, p in zip(te, preds):
                pred[i] = classes.index(p.label)
        results[name] = summarise(y_all, pred, k)
        timing[name] = {
            "seconds_per_fold": round(float(np.mean(secs)), 1),
            "seconds_per_epoch": round(float(np.sum(secs) / np.sum(epochs_run)), 2),
            "sheets_per_s_inference_cached": round(float(np.mean(infer)), 1),
        }
        print(name, results[name], timing[name], flush=True)

    print(
        f"\nALA genus, {len(rows)} sheets, {a.folds}-fold grouped CV, {k} genera "
        f"(majority baseline {np.bincount(y_all).max() / len(y_all):.3f})"
    )
    print(f"{'model':<28} {'accuracy (95% CI)':<24} {'macro-F1 (95% CI)':<24} time")
    for name, r in results.items():
        t = timing[name]
        when = (
            f"{t['seconds_per_fold']} s/fold, {t['seconds_per_epoch']} s/epoch, "
            f"{t['sheets_per_s_inference_cached']} sheets/s"
            if "seconds_per_fold" in t
            else f"{t['seconds_total']} s in all"
        )
        print(
            f"{name:<28} {r['accuracy']:.3f} ({r['accuracy_low']:.3f}–{r['accuracy_high']:.3f})"
            f"   {r['macro_f1']:.3f} ({r['macro_f1_low']:.3f}–{r['macro_f1_high']:.3f})   "
            f"{when}"
        )
    print(
        json.dumps(
            {
                "results": results,
                "timing": timing,
                "size": a.size,
                "fit": a.fit,
                "epochs": a.epochs,
                "folds": a.folds,
            }
        )
    )


if __name__ == "__main__":
    main()
