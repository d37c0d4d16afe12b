"""How well do stain runs find painted mercury on real sheets from collections they never saw?

Evaluation sheets come from other sources than the training sheets (default: the highres,
unlabeled and plant-mask sheets of ../shared/data; train with `learn-stains` on ALA only). Each
sheet is decoded at --width px wide (2:3; default 1024, the shipped working scale) and painted
by `herbscan.stains` with the generator's held-out style, in five versions:

- clean: 0-4 random look-alikes (dust, ink, pencil, foxing, glue, water, shadow, chart, ...);
- hard negatives: 4 look-alikes and no stain;
- faint: a handful of speckles or a faint cloud (severity 0.02-0.2);
- heavy: severity 0.6-1.0;
- held-out kinds: stained only with the kinds given by --holdout-kinds (those the run did not
  train on), severity 0.1-1.0.

Prints detection rate (stained versions) or specificity (clean versions) with 95% Wilson
intervals per version, the confusion matrix and accuracy on clean + faint + heavy, the AUC of
clean vs faint and vs all stained, the accuracy when the threshold is calibrated on painted
sheets of the same collections (2-fold over the sheets), and one JSON object on the last line.
With --heatmaps DIR it also writes a heatmap of the two US National Herbarium sheets in
../shared/data/mercury-reference.

    python benchmarks/stains_eval.py RUN [RUN ...] [--holdout-kinds halo,tideline]
        [--sources DIR ...] [--heatmaps docs/screenshots] [--cache /tmp/painted]
        [--painter herbscan|second|third] [--width 1024]

With several runs it also prints each one's AUC gain over the first, paired on the same sheets.

`--painter second` paints with benchmarks/second_painter.py instead, a generator written
without reading herbscan.stains, and `--painter third` with third_painter.py, written without
reading either: each has its own stain and look-alike kinds, drawn at each sheet's native
resolution before the sheet is brought to --width. A detector that learnt herbscan.stains'
habits rather than stains scores well on the first painter only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HERBSCAN_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_SOURCES = [
    SHARED / "highres-sheets" / "images",
    SHARED / "unlabeled-sheets",
    SHARED / "plant-masks" / "img",
]
VERSIONS = ("clean", "hard negatives", "faint", "heavy", "held-out kinds")
# The look-alikes painted here are those of stop 30: look-alikes added later to teach detectors
# stay out of the test, and the painted images (and numbers) stay comparable across stops.
EVAL_NEGATIVES = (
    "dust", "ink", "pencil", "foxing", "glue", "water", "shadow", "chart", "ruler", "barcode",
    "debris", "texture", "text", "form", "frame", "coin", "finger", "specks", "stems",
)  # fmt: skip


def wilson(k: int, n: int) -> tuple[float, float]:
    from herbscan.metrics import wilson_interval

    return wilson_interval(k, n)


def painted(sheet: np.ndarray, version: str, i: int, holdout: tuple[str, ...]):
    from herbscan.stains import STAIN_KINDS, STYLES, paint, scanner

    rng = np.random.default_rng([12345, i, VERSIONS.index(version)])
    kw = {"style": STYLES["holdout"], "negatives": EVAL_NEGATIVES}
    if version == "clean":
        img, _, d = paint(rng, sheet, stained=False, **kw)
    elif version == "hard negatives":
        img, _, d = paint(rng, sheet, stained=False, n_negatives=4, **kw)
    elif version == "faint":
        img, _, d = paint(rng, sheet, stained=True, severity=rng.uniform(0.02, 0.2), **kw)
    elif version == "heavy":
        img, _, d = paint(rng, sheet, stained=True, severity=rng.uniform(0.6, 1.0), **kw)
    else:
        img, _, d = paint(
            rng,
            sheet,
            stained=True,
            severity=rng.uniform(0.1, 1.0),
            kinds=holdout or STAIN_KINDS,
            **kw,
        )
    return scanner(rng, img), d


PAINTER_SEEDS = {"second": 54321, "third": 98765}


def painted_other(painter: str, path: Path, version: str, i: int, width: int = 1024) -> np.ndarray:
    """Sheet painted by an independent painter (benchmarks/second_painter.py or
    third_painter.py) at its native resolution, as a stain is part of the scan, then brought to
    `width` px wide."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    module = importlib.import_module(f"{painter}_painter")

    from herbscan.images import fit_square, open_rgb

    rng = np.random.default_rng([PAINTER_SEEDS[painter], i, VERSIONS.index(version)])
    sheet = np.asarray(open_rgb(path), np.uint8)
    if version == "clean":
        img = module.paint(rng, sheet, None)
    elif version == "hard negatives":
        img = module.paint(rng, sheet, None, n_lookalikes=4)
    elif version == "faint":
        img = module.paint(rng, sheet, rng.uniform(0.02, 0.2))
    elif version == "heavy":
        img = module.paint(rng, sheet, rng.uniform(0.6, 1.0))
    else:
        raise SystemExit(f"the {painter} painter has no stain kinds to hold out")
    return np.asarray(fit_square(Image.fromarray(img), width, "sheet"), np.uint8)


def painted_cached(
    paths,
    i: int,
    version: str,
    holdout,
    cache: Path | None,
    painter: str = "herbscan",
    width: int = 1024,
) -> np.ndarray:
    """Sheet i painted as `version` at `width` px wide; kept in `cache` (if given) for the next
    run, so comparing runs paints each image once."""
    from herbscan.images import load_sheet

    f = None
    if cache is not None:
        tag = ",".join(holdout) or "all"
        prefix = "" if painter == "herbscan" else f"{painter}-"
        suffix = "" if width == 1024 else f"-w{width}"
        f = cache / (
            f"{prefix}{Path(paths[i]).stem}-{i}-{VERSIONS.index(version)}-{tag}{suffix}.npy"
        )
        if f.exists():
            return np.load(f)
    if painter in PAINTER_SEEDS:
        img = painted_other(painter, paths[i], version, i, width)
    else:
        img, _ = painted(load_sheet(paths[i], width, "sheet"), version, i, holdout)
    if f is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp.npy")
        np.save(tmp, img)
        os.replace(tmp, f)
    return img


def scorer(run_name: str):
    """A function from a painted sheet image to the run's P(contaminated)."""
    from herbscan.accel import Accel
    from herbscan.images import input_shape
    from herbscan.runs import load_run

    r = load_run(run_name)
    prep = r.preprocessing
    acc = Accel.resolve()
    net = acc.prepare(r.build_model())
    h, w = input_shape(prep.size, prep.fit)

    def score(img: np.ndarray) -> float:
        x = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))
        with torch.inference_mode(), acc.autocast():
            logits = net(acc.to_input(x[None].copy(), prep.mean, prep.std)).float()
        return float(torch.softmax(logits, 1)[0, 1])

    return score


def evaluate(
    run_name: str,
    paths: list[Path],
    holdout: tuple[str, ...],
    limit: int | None,
    cache: Path | None = None,
    painter: str = "herbscan",
    width: int = 1024,
):
    score = scorer(run_name)
    versions = VERSIONS if holdout else VERSIONS[:-1]
    scores = {v: [] for v in versions}
    t0 = time.monotonic()
    for i in range(len(paths[:limit])):
        for v in versions:
            scores[v].append(score(painted_cached(paths, i, v, holdout, cache, painter, width)))
    seconds = time.monotonic() - t0
    res = {
        "run": run_name,
        "painter": painter,
        "width": width,
        "n_sheets": len(paths[:limit]),
        "seconds": round(seconds, 1),
    }
    for v in versions:
        s = np.array(scores[v])
        flagged = int((s >= 0.5).sum())
        k = flagged if v in ("faint", "heavy", "held-out kinds") else len(s) - flagged
        lo, hi = wilson(k, len(s))
        res[v] = {"rate": k / len(s), "k": k, "n": len(s), "ci95": [round(lo, 3), round(hi, 3)]}
    clean = np.array(scores["clean"])
    stained = np.concatenate([scores["faint"], scores["heavy"]])
    tn, fp = int((clean < 0.5).sum()), int((clean >= 0.5).sum())
    tp, fn = int((stained >= 0.5).sum()), int((stained < 0.5).sum())
    n = tn + fp + tp + fn
    lo, hi = wilson(tn + tp, n)
    res["confusion"] = {"true clean": [tn, fp], "true stained": [fn, tp]}
    res["accuracy"] = {"value": (tn + tp) / n, "n": n, "ci95": [round(lo, 3), round(hi, 3)]}
    faint = np.array(scores["faint"])
    res["auc_clean_vs_stained"] = _auc(stained, clean)
    res["calibrated"] = calibrated(clean, np.array(scores["faint"]), np.array(scores["heavy"]))
    res["auc_clean_vs_faint"] = _auc(faint, clean)
    res["_scores"] = {v: np.array(scores[v]) for v in versions}
    return res


def _gain(a: dict, b: dict, pos: tuple[str, ...], idx: np.ndarray) -> float:
    stained = [np.concatenate([r[v][idx] for v in pos]) for r in (a, b)]
    return _auc(stained[1], b["clean"][idx]) - _auc(stained[0], a["clean"][idx])


def paired_gain(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """AUC of run b minus run a on the same painted sheets, with a 95% interval from resampling
    sheets (each sheet keeps its clean and stained versions together)."""
    rng = np.random.default_rng(seed)
    n = len(a["clean"])
    out = {}
    for name, pos in (
        ("auc_clean_vs_stained", ("faint", "heavy")),
        ("auc_clean_vs_faint", ("faint",)),
    ):
        boots = [_gain(a, b, pos, rng.integers(0, n, n)) for _ in range(n_boot)]
        lo, hi = np.percentile(boots, [2.5, 97.5])
        out[name] = {
            "gain": round(_gain(a, b, pos, np.arange(n)), 3),
            "ci95": [round(lo, 3), round(hi, 3)],
        }
    return out


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from herbscan.learn_stains import auc

    return auc(np.r_[pos, neg], np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(bool))


def calibrated(clean: np.ndarray, faint: np.ndarray, heavy: np.ndarray) -> dict:
    """Accuracy when the threshold is chosen on painted sheets of the same collection (what
    learn-stains' validation does): 2-fold over the sheets, odd and even, pooled."""
    from herbscan.metrics import operating_point, wilson_interval

    right = total = 0
    for fold in (0, 1):
        pick = np.arange(len(clean)) % 2 == fold
        s = np.concatenate([clean[pick], faint[pick], heavy[pick]])
        y = np.r_[np.zeros(pick.sum()), np.ones(2 * pick.sum())].astype(bool)
        t = operating_point(s, y)["threshold"]
        s2 = np.concatenate([clean[~pick], faint[~pick], heavy[~pick]])
        y2 = np.r_[np.zeros((~pick).sum()), np.ones(2 * (~pick).sum())].astype(bool)
        right += int(((s2 >= t) == y2).sum())
        total += len(y2)
    lo, hi = wilson_interval(right, total)
    return {"accuracy": right / total, "n": total, "ci95": [round(lo, 3), round(hi, 3)]}


def reference_heatmaps(run_name: str, out: Path) -> list[dict]:
    """Heatmap of each panel of the mercury-reference figure; returns the sheet scores."""
    from herbscan.accel import Accel
    from herbscan.runs import load_run

    fig = Image.open(SHARED / "mercury-reference" / "images" / "stained_sheets.png").convert("RGB")
    panels = {"c": (47, 10, 414, 530), "d": (450, 10, 816, 533)}  # the sheets, without colour bars
    r = load_run(run_name)
    prep = r.preprocessing
    net = r.build_model().float().eval()
    acc = Accel.resolve(precision="fp32")
    rows, tiles = [], []
    for name, box in panels.items():
        sheet = fig.crop(box).resize((prep.size, prep.size * 3 // 2), Image.Resampling.BICUBIC)
        x = acc.to_input(np.asarray(sheet)[None].copy(), prep.mean, prep.std)
        with torch.inference_mode():
            cells = torch.sigmoid(net.cell_logits(x)[0]).numpy()
            p = float(torch.softmax(net(x), 1)[0, 1])
        rows.append(
            {
                "panel": name,
                "p_contaminated": round(p, 3),
                "cells_flagged": int((cells >= 0.5).sum()),
                "cells": int(cells.size),
            }
        )
        heat = Image.fromarray((np.clip(cells, 0, 1) * 255).astype(np.uint8)).resize(
            sheet.size, Image.Resampling.NEAREST
        )
        red = Image.new("RGB", sheet.size, (230, 20, 20))
        tiles.append(Image.composite(red, sheet, heat.point(lambda v: int(v * 0.6))))
    w = sum(t.width for t in tiles) // 2
    canvas = Image.new("RGB", (w + 10, tiles[0].height // 2), "white")
    x = 0
    for t in tiles:
        t = t.resize((t.width // 2, t.height // 2))
        canvas.paste(t, (x, 0))
        x += t.width + 10
    out.mkdir(parents=True, exist_ok=True)
    canvas.save(out / "mercury-reference-heatmap.png")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders, or 'mercury' for the shipped model")
    ap.add_argument("--sources", nargs="*", type=Path, default=DEFAULT_SOURCES)
    ap.add_argument("--holdout-kinds", default="")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--heatmaps", type=Path, default=None)
    ap.add_argument(
        "--cache", type=Path, default=None, help="keep the painted images here for later runs"
    )
    ap.add_argument(
        "--painter",
        choices=("herbscan", "second", "third"),
        default="herbscan",
        help="who paints the stains: herbscan.stains (held-out style) or one of the independent "
        "benchmarks/second_painter.py and third_painter.py",
    )
    ap.add_argument(
        "--width",
        type=int,
        default=1024,
        help="paint the sheets this wide (px, 2:3); each run then resizes them to its own input",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from herbscan.predict import expand_images

    paths, _ = expand_images(args.sources)
    paths = sorted(paths)
    holdout = tuple(k for k in args.holdout_kinds.split(",") if k)
    results = []
    for run in args.runs:
        res = evaluate(run, paths, holdout, args.limit, args.cache, args.painter, args.width)
        if args.heatmaps is not None:
            res["mercury_reference"] = reference_heatmaps(run, args.heatmaps / Path(run).name)
        results.append(res)
        print(f"\n{run}: {res['n_sheets']} sheets, {res['seconds']} s")
        for v in VERSIONS:
            if v in res:
                what = "specificity" if v in ("clean", "hard negatives") else "detected"
                d = res[v]
                print(
                    f"  {v:<15} {what:<11} {d['rate']:.3f} ({d['k']}/{d['n']}, "
                    f"95% {d['ci95'][0]:.3f}-{d['ci95'][1]:.3f})"
                )
        a = res["accuracy"]
        print(
            f"  accuracy (clean + faint + heavy) {a['value']:.3f} (n={a['n']}, 95% "
            f"{a['ci95'][0]:.3f}-{a['ci95'][1]:.3f}); AUC clean vs stained "
            f"{res['auc_clean_vs_stained']:.3f}, vs faint {res['auc_clean_vs_faint']:.3f}; "
            f"calibrated accuracy {res['calibrated']['accuracy']:.3f}"
        )
        print(
            f"  confusion (rows true clean / stained; cols predicted clean / stained): "
            f"{res['confusion']['true clean']} {res['confusion']['true stained']}"
        )
        for row in res.get("mercury_reference", []):
            print(
                f"  mercury-reference panel {row['panel']}: P(contaminated) "
                f"{row['p_contaminated']}, {row['cells_flagged']}/{row['cells']} cells flagged"
            )
    for res in results[1:]:
        res["vs_first_run"] = paired_gain(results[0]["_scores"], res["_scores"])
        print(
            f"\n{res['run']} against {results[0]['run']} (paired, 95% bootstrap over sheets): "
            + "; ".join(
                f"{k} {d['gain']:+.3f} ({d['ci95'][0]:+.3f}…{d['ci95'][1]:+.3f})"
                for k, d in res["vs_first_run"].items()
            )
        )
    for res in results:
        res.pop("_scores")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
