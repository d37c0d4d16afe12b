"""What the review queue's uncertainty order buys: a simulated curator labels 20 sheets a round.

Three sets with known truth:

- demo: herbscan's synthetic sheets (`synth.make_sheet`, mercury stains drawn on made-up plants),
  contaminated vs clean;
- ala-painted: the 158 real ALA Lycopodiaceae sheets of ../shared/data, each painted once by
  `stains.paint` (half with stains, all with look-alikes such as ink, foxing and text), so the
  plants, labels and paper are real and only the truth is synthetic;
- ala-genus: the same sheets unpainted with their real genus, Lycopodium vs the rest (what a
  curator confirms when reviewing a `--compare-col genus` screen).

Frozen ImageNet features of `efficientnet_lite0` are extracted once per sheet; each round a
linear probe (`train.fit_logistic`, the probe `herbscan train --epochs 0` fits) is refitted on
the sheets reviewed so far and scored on held-out sheets. Per seed, the specimens are split into
a pool (70%) and a test set (30%); round 0 reviews 20 random pool sheets, then every round the
simulated curator reviews 20 more, taken either in the review queue's uncertainty order
(`review.learn.uncertainty_order` of the current probe's P(contaminated), closest to its 0.5
operating point first) or at random. Accuracy on the test sheets after each round: mean and
range (min–max) over 3 seeds. Prints a table, then one JSON object on the last line.

    python benchmarks/review_active.py [--rounds 5] [--demo-sheets 400] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HERBSCAN_SHARED_DATA", REPO.parent / "shared" / "data"))
ALA = SHARED / "ala-lycopodiaceae"
SIZE, BATCH, PER_ROUND = 320, 16, 20


def _features(images: list[np.ndarray]) -> np.ndarray:
    """Global-average features of the last feature map of ImageNet efficientnet_lite0 (any
    input shape: the net is fully convolutional up to the pooling)."""
    from herbscan.accel import Accel
    from herbscan.models import create_model, model_info

    info = model_info("efficientnet_lite0")
    acc = Accel.resolve("auto", "auto")
    net = acc.prepare(create_model("efficientnet_lite0", 2, input_size=SIZE, pretrained=True))
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), BATCH):
            x = np.stack(images[i : i + BATCH])
            with acc.autocast():
                f = net.forward_features(acc.to_input(x, info["mean"], info["std"]))
            out.append(f.float().mean(dim=(2, 3)).cpu().numpy())
    return np.concatenate(out)


def demo_set(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(images as the model sees them, truth 1 = contaminated) of n synthetic sheets."""
    from herbscan.images import fit_square
    from herbscan.synth import make_sheet

    truth = np.random.default_rng(2024).permutation(n) % 2
    imgs = []
    for i in range(n):
        im, _ = make_sheet(np.random.default_rng([7, i]), stained=bool(truth[i]), size=(512, 768))
        imgs.append(np.asarray(fit_square(im, SIZE)))
    return imgs, truth


def _ala_rows() -> list[dict] | None:
    import csv

    if not (ALA / "manifest.csv").is_file():
        return None
    with open(ALA / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def ala_painted(rows: list[dict]) -> tuple[list[np.ndarray], np.ndarray]:
    """The ALA sheets painted once each at 1000×1500: half with stains (severity 0.4–1, the
    range a curator is shown), all with look-alikes (ink, foxing, text, …); seen by the model
    at 448×672 (`fit="sheet"`, the stain detector's 2:3 input: a 320² input cannot show
    millimetre marks, and then no order of review can teach anything)."""
    from PIL import Image

    from herbscan.images import fit_square, open_rgb
    from herbscan.stains import paint

    truth = np.random.default_rng(2025).permutation(len(rows)) % 2
    imgs = []
    for i, r in enumerate(rows):
        im = open_rgb(ALA / r["file"], min_size=(1000, 1500)).resize((1000, 1500))
        rng = np.random.default_rng([11, i])
        sev = float(rng.uniform(0.4, 1.0))
        painted, _, _ = paint(rng, np.asarray(im), stained=bool(truth[i]), severity=sev)
        im = Image.fromarray((np.clip(painted, 0, 1) * 255 + 0.5).astype(np.uint8))
        imgs.append(np.asarray(fit_square(im, 448, "sheet")))
    return imgs, truth


def ala_genus(rows: list[dict]) -> tuple[list[np.ndarray], np.ndarray]:
    """The same ALA sheets unpainted, with their real labels: Lycopodium or another genus (the
    review of a `--compare-col genus` screen)."""
    from herbscan.images import load_sheet

    truth = np.array([int(r["genus"] == "Lycopodium") for r in rows])
    return [load_sheet(ALA / r["file"], SIZE) for r in rows], truth


def simulate(feats: np.ndarray, truth: np.ndarray, seed: int, order: str, rounds: int) -> list:
    """Test accuracy after round 0..rounds of `order` (uncertainty | random) reviewing."""
    from herbscan.review.learn import uncertainty_order
    from herbscan.train import fit_logistic

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(truth))
    n_test = round(0.3 * len(truth))
    test, pool = idx[:n_test], list(idx[n_test:])
    reviewed = [pool.pop(int(rng.integers(len(pool)))) for _ in range(PER_ROUND)]
    f = torch.tensor(feats, dtype=torch.float64)
    acc = []
    for r in range(rounds + 1):
        y = truth[reviewed]
        if len(set(y.tolist())) < 2:  # a probe needs both classes: the curator reviews on
            w = b = None
            acc.append(float(np.mean(truth[test] == np.bincount(y).argmax())))
        else:
            w, b = fit_logistic(f[reviewed], y, 2)
            p_test = torch.softmax(f[test] @ w.T + b, 1)[:, 1].numpy()
            acc.append(float(np.mean((p_test >= 0.5) == truth[test])))
        if r == rounds:
            break
        if order == "uncertainty" and w is not None:
            p_pool = torch.softmax(f[pool] @ w.T + b, 1)[:, 1].numpy()
            pick = [pool[i] for i in uncertainty_order(p_pool.tolist(), 0.5)[:PER_ROUND]]
        else:
            pick = [pool[i] for i in rng.choice(len(pool), PER_ROUND, replace=False)]
        reviewed += pick
        pool = [i for i in pool if i not in set(pick)]
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--demo-sheets", type=int, default=400)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = {}
    t0 = time.perf_counter()
    imgs, truth = demo_set(args.demo_sheets)
    sets["demo"] = (_features(imgs), truth)
    print(f"demo: {len(truth)} sheets, features in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = _ala_rows()
    if rows is None:
        print(f"ala sets: skipped, {ALA} not found (set HERBSCAN_SHARED_DATA)")
    for name, make in (("ala-painted", ala_painted), ("ala-genus", ala_genus)):
        if rows is None:
            break
        t0 = time.perf_counter()
        imgs, truth = make(rows)
        sets[name] = (_features(imgs), truth)
        print(f"{name}: {len(truth)} sheets in {time.perf_counter() - t0:.0f} s", flush=True)
    result: dict = {"per_round": PER_ROUND, "seeds": seeds, "sets": {}}
    print(
        f"\naccuracy on held-out sheets after k rounds of {PER_ROUND} reviewed sheets "
        f"(mean [min–max] over seeds {seeds})"
    )
    for name, (feats, truth) in sets.items():
        pool = len(truth) - round(0.3 * len(truth))
        rounds = min(args.rounds, (pool - PER_ROUND) // PER_ROUND)  # ALA: 111 in the pool
        curves = {
            o: np.array([simulate(feats, truth, s, o, rounds) for s in seeds])
            for o in ("uncertainty", "random")
        }
        print(f"\n{name} ({len(truth)} sheets, {int(truth.sum())} positive)")
        print(f"{'reviewed':>9} | {'uncertainty order':>22} | {'random order':>22}")
        for k in range(rounds + 1):
            cells = [
                f"{c[:, k].mean():.3f} [{c[:, k].min():.3f}–{c[:, k].max():.3f}]"
                for c in curves.values()
            ]
            print(f"{PER_ROUND * (k + 1):>9} | {cells[0]:>22} | {cells[1]:>22}")
        result["sets"][name] = {
            "n": len(truth),
            "reviewed": [PER_ROUND * (k + 1) for k in range(rounds + 1)],
            **{
                o: {
                    "mean": [round(float(v), 4) for v in c.mean(0)],
                    "min": [round(float(v), 4) for v in c.min(0)],
                    "max": [round(float(v), 4) for v in c.max(0)],
                }
                for o, c in curves.items()
            },
        }
    sys.stdout.flush()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
