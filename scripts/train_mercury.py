"""Rebuild herbscan's shipped mercury model (`--model mercury`) from nothing but herbscan itself.

The training sheets are clean sheets drawn by `herbscan.synth` (plant, labels, tape, barcode,
colour bar, dirt and foxing), written as JPEGs to a work folder; `learn_stains` paints mercury and
look-alikes on them and starts from the ImageNet EfficientNet-Lite0 weights (Apache-2.0). No image
of `../shared` or of any collection goes into the weights.

    python scripts/train_mercury.py [--sheets 400] [--steps 600] [--size 1024] [--work DIR]
        [--members 3] [--resume]

`--resume` continues a stopped job in the same `--work` folder from its last checkpoint (one
every quarter of the steps) instead of starting again. The shipped model is `--members 3`, the
default: the recipe trained with seeds seed … seed+2, each on its own synthetic sheets (in
work/seed-N), joined into one StainEnsemble run; `--members 1` trains one StainNet in work.

Writes src/herbscan/weights/mercury/{run.json, model.safetensors (fp16), history.csv}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from herbscan.learn_stains import learn_stains
from herbscan.runs import RunConfig, load_run, load_tensors, save_tensors
from herbscan.stainnet import StainEnsemble
from herbscan.synth import make_sheet

DEST = Path(__file__).resolve().parents[1] / "src" / "herbscan" / "weights" / "mercury"


def synth_sheets(folder: Path, n: int, seed: int, size: int = 1024) -> None:
    """n clean synthetic sheets, 0.9-1.2x the working width `size` (herbscan.synth draws its
    plant, labels and dirt in proportion to the sheet, so a larger size is a sharper scan)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        w = int(rng.choice([900, 1024, 1200])) * size // 1024
        img, _ = make_sheet(rng, stained=False, size=(w, w * 3 // 2))
        img.save(folder / f"synth_{i:05d}.jpg", "JPEG", quality=int(rng.integers(80, 96)))


def train(
    work: Path,
    *,
    sheets: int = 400,
    steps: int = 600,
    seed: int = 0,
    size: int = 1024,
    batch_size: int = 16,
    freeze_blocks: int = 5,
    resume: bool = False,
) -> Path:
    """The shipped recipe in `work`: `sheets` synthetic sheets (drawn once, in work/sheets), then
    learn_stains from ImageNet into work/run, which it returns. Benchmarks that vary the recipe
    replace learn_stains' CropSampler or crop_loss and call this."""
    folder = work / "sheets"
    if not folder.is_dir() or len(list(folder.glob("*.jpg"))) < sheets:
        synth_sheets(folder, sheets, seed, size)
    run = work / "run"
    if not resume:
        shutil.rmtree(run, ignore_errors=True)
    learn_stains(
        [folder],
        run,
        steps=steps,
        size=size,
        batch_size=batch_size,
        seed=seed,
        cache_dir=work / "cache",
        validation_sheets=24,
        init="imagenet",
        freeze_blocks=freeze_blocks,
        resume=resume,
    )
    return run


def join(runs: list[Path], out: Path) -> Path:
    """One StainEnsemble run in `out` of trained stain runs that froze the same blocks. Each
    member keeps the operating point folded into its head, so the ensemble flags where the
    members' mean log-odds over their own thresholds is positive."""
    loaded = [load_run(folder) for folder in runs]
    members = []
    for r in loaded:
        net = r.build_model()
        net.freeze(r.config.training.frozen_blocks or 0)
        members.append(net)
    ens = StainEnsemble.from_members(members)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / "model.safetensors", {k: v.float() for k, v in ens.state_dict().items()})
    cfgs = [r.config for r in loaded]
    cfg = cfgs[0]
    cfg.architecture.kwargs = {"members": len(members), "shared_blocks": ens.shared_blocks}
    cfg.architecture.parameters = sum(p.numel() for p in ens.parameters())
    cfg.training.train_seconds = round(sum(c.training.train_seconds or 0 for c in cfgs), 1)
    cfg.metrics = {"members": [{"seed": c.seed, **(c.metrics or {})} for c in cfgs]}
    if cfg.operating_point is not None:
        cfg.operating_point.source = (
            "each member's own on its painted validation sheets (folded into its head): the "
            "ensemble flags when the members' mean log-odds over them is positive"
        )
        for key in ("raw_threshold", "balanced_accuracy", "precision", "recall", "accuracy", "n"):
            setattr(cfg.operating_point, key, None)
    cfg.save(out)
    shutil.copy(Path(runs[0]) / "history.csv", out / "history.csv")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sheets", type=int, default=400)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--size", type=int, default=1024, help="working width in px (the height is 1.5x)"
    )
    ap.add_argument(
        "--freeze-blocks", type=int, default=5, help="ImageNet blocks kept as they are (0: none)"
    )
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--dest", type=Path, default=DEST)
    ap.add_argument(
        "--members", type=int, default=3, help="train this many seeds and join them (ensemble)"
    )
    ap.add_argument("--resume", action="store_true", help="continue a stopped job in --work")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="herbscan-mercury-"))
    seeds = list(range(args.seed, args.seed + max(args.members, 1)))
    runs = [
        train(
            work if len(seeds) == 1 else work / f"seed-{seed}",
            sheets=args.sheets,
            steps=args.steps,
            seed=seed,
            size=args.size,
            batch_size=args.batch_size,
            freeze_blocks=args.freeze_blocks,
            resume=args.resume,
        )
        for seed in seeds
    ]
    run = runs[0] if len(runs) == 1 else join(runs, work / "ensemble")
    args.dest.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.half() if v.is_floating_point() else v
        for k, v in load_tensors(run / "model.safetensors").items()
    }
    save_tensors(args.dest / "model.safetensors", state)
    cfg = RunConfig.load(run / "run.json")
    seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    cfg.training.sources = [f"herbscan.synth clean sheets: {args.sheets} per seed, {seeds_text}"]
    cfg.save(args.dest)
    shutil.copy(run / "history.csv", args.dest / "history.csv")
    print(
        json.dumps(
            {
                "dest": str(args.dest),
                "metrics": cfg.metrics,
                "operating_point": cfg.to_dict()["operating_point"],
                "train_seconds": cfg.training.train_seconds,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
