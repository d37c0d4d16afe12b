"""Does a detector that learns from two stain generators find a third one's stains better?

Trains `scripts/train_mercury.py`'s recipe (400 synthetic clean sheets, 600 steps from ImageNet,
5 blocks frozen) with a share of the crops painted by benchmarks/second_painter.py instead of
herbscan.stains: stained crops at a log-uniform severity 0.02-1 with 0-2 of its look-alikes, clean
ones with look-alikes only. The per-pixel target is the darkening the stain adds (the same crop
painted from the same random state without the stain, before the rescan). Writes an ordinary run
folder; score it on the painter it never saw with

    python benchmarks/mixed_painters.py --work /tmp/mix [--share 0.5] [--seed 0]
    python benchmarks/stains_eval.py mercury /tmp/mix/run --painter third --cache /tmp/painted

An experiment, not herbscan's training path: the second painter stays a benchmark, so a run
trained this way can no longer be tested with `--painter second`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks"), str(REPO / "scripts")]

import second_painter  # noqa: E402
import train_mercury  # noqa: E402

from herbscan import learn_stains as ls  # noqa: E402

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class MixedSampler(ls.CropSampler):
    """learn_stains' crop sampler with `share` of the crops painted by the second painter."""

    share = 0.5

    def painted(self, patch: np.ndarray, ppm: float) -> tuple[np.ndarray, np.ndarray]:
        if self.rng.random() >= self.share:
            return super().painted(patch, ppm)
        stained = self.rng.random() < 0.5
        k = int(self.rng.integers(0, 3))
        sev = float(np.exp(self.rng.uniform(np.log(0.02), 0))) if stained else None
        state = self.rng.bit_generator.state
        out, before = second_painter._paint(self.rng, patch, sev, ppm, k, keep=True)
        strength = np.zeros(patch.shape[:2], np.float32)
        if stained:  # the same look-alikes from the same state, without the stain
            twin = np.random.default_rng()
            twin.bit_generator.state = state
            _, clean = second_painter._paint(twin, patch, None, ppm, k, keep=True)
            strength = np.clip((clean @ LUMA - before @ LUMA) / (0.25 * 255), 0, 1)
        return out, strength.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--share", type=float, default=0.5)
    ap.add_argument("--sheets", type=int, default=400)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    MixedSampler.share = args.share
    ls.CropSampler = MixedSampler  # learn_stains builds its sampler from this name
    run = train_mercury.train(args.work, sheets=args.sheets, steps=args.steps, seed=args.seed)
    cfg = json.loads((run / "run.json").read_text())
    print(json.dumps({"run": str(run), "share": args.share, "metrics": cfg["metrics"]}))


if __name__ == "__main__":
    main()
