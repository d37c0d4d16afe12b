"""Does a sheet-level rank loss on twin crops make the stain detector generalise better?

A clean real sheet has 37-39 cells (of 6,144) with a positive stain logit, and a faint stain
adds only a few more, so the top-3 pooling that decides a sheet often reports the sheet's own
false alarms. Per-cell BCE never asks a faint stain's cells to beat those. This trains
`scripts/train_mercury.py`'s recipe (400 synthetic clean sheets, 600 steps from ImageNet, 5
blocks frozen) with two changes:

- **twin crops**: each batch is pairs, one crop painted with look-alikes and the same crop with
  the same look-alikes and a stain on top, scanned alike, so only the stain tells them apart;
- **rank loss**: each stained crop's highest stain cell must beat, by a margin, the mean of the
  3 highest unstained cells of the whole batch (16 crops of 256², about two thirds of a sheet),
  weighted `--contrast` and added to learn_stains' `crop_loss`.

Writes an ordinary run folder; score it against the shipped weights with

    python benchmarks/rank_contrast.py --work /tmp/rank [--contrast 1] [--seed 0]
    python benchmarks/stains_eval.py mercury /tmp/rank/run --painter third --cache /tmp/painted

An experiment, not herbscan's training path (docs/measurements.md, stop 34: it lost on both
painters).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "scripts")]

import train_mercury  # noqa: E402

from herbscan import learn_stains as ls  # noqa: E402
from herbscan.stains import paint, scanner  # noqa: E402


class TwinSampler(ls.CropSampler):
    """learn_stains' crop sampler, drawing a batch as (look-alikes, look-alikes + stain) pairs."""

    def twin(self, patch: np.ndarray, ppm: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """The crop painted with look-alikes, and again with a stain on top; scanned alike."""
        kw = {"style": self.style, "ppm": ppm}
        clean, none, _ = paint(self.rng, patch, stained=False, negatives=self.negatives, **kw)
        stained, strength, _ = paint(
            self.rng, clean, stained=True, kinds=self.kinds, negatives=(), n_negatives=0, **kw
        )
        seed = int(self.rng.integers(2**63))
        return [
            (scanner(np.random.default_rng(seed), clean), none),
            (scanner(np.random.default_rng(seed), stained), strength),
        ]

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [p for _ in range(n // 2) for p in self.twin(*self._crop())]
        pairs += [self.painted(*self._crop()) for _ in range(n % 2)]
        xs, masks = zip(*pairs)
        return np.stack(xs), np.stack(masks)


def rank_loss(cells: torch.Tensor, target: torch.Tensor, k: int = 3, margin: float = 1.0):
    """softplus(margin + mean of the batch's k highest unstained cells - each stained crop's
    highest stain cell), averaged over the crops that hold a stain; 0 when none does."""
    flat, t = cells.flatten(1), target.flatten(1) > 0.5
    stained = t.any(1)
    negative = flat[~t]
    if not stained.any() or not len(negative):
        return flat.sum() * 0
    top_negative = negative.topk(min(k, len(negative))).values.mean()
    top_positive = flat.masked_fill(~t, float("-inf")).amax(1)[stained]
    return F.softplus(margin + top_negative - top_positive).mean()


def with_rank_loss(weight: float):
    """learn_stains' crop_loss plus `weight` × rank_loss."""
    base = ls.crop_loss

    def loss(net, cells, target):
        return base(net, cells, target) + weight * rank_loss(cells, target, net.top_k)

    return loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--contrast", type=float, default=1.0, help="weight of the rank loss")
    ap.add_argument("--sheets", type=int, default=400)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ls.CropSampler = TwinSampler  # learn_stains builds its sampler and loss from these names
    ls.crop_loss = with_rank_loss(args.contrast)
    run = train_mercury.train(args.work, sheets=args.sheets, steps=args.steps, seed=args.seed)
    cfg = json.loads((run / "run.json").read_text())
    print(
        json.dumps(
            {
                "run": str(run),
                "contrast": args.contrast,
                "seed": args.seed,
                "validation": cfg["metrics"]["validation"],
                "train_seconds": cfg["training"]["train_seconds"],
            }
        )
    )


if __name__ == "__main__":
    main()
