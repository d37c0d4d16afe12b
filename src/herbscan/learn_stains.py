"""Learn to find mercury stains from a collection's own clean sheets: no labels needed.

`learn_stains(["collection/"], "runs/stains")` samples sheets, decodes each once to the working
scale (2:3, `size` px wide; kept in herbscan's decode cache, read back as memory maps), and trains
a StainNet on random crops on which `stains.paint` draws mercury (half of the crops) and
look-alikes (all of them), so every batch is new and nothing painted is written to disk. A few
sheets are held out: they are painted once, whole, with the generator's held-out style (and any
`holdout_kinds`), and score the model as a screen would. The best checkpoint's operating point
(best balanced accuracy on those sheets) is folded into the head's bias, so P(contaminated) ≥ 0.5
means "flag". The result is an ordinary run folder: predict, evaluate, screen and export take it.

The few stained sheets a collection holds among its "clean" ones are label noise of a few
percent, which the per-cell loss tolerates.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from herbscan import __version__
from herbscan.accel import Accel
from herbscan.cache import SheetCache, cache_root, check_free_space, iter_sheets
from herbscan.efficientnet import MEAN, STD
from herbscan.errors import HerbscanError, ParameterError, RunError, check_range
from herbscan.fileio import write_csv
from herbscan.images import input_shape
from herbscan.metrics import operating_point
from herbscan.models import create_model
from herbscan.predict import expand_images
from herbscan.pretrained import pretrained_weights, weights_record
from herbscan.progress import Progress
from herbscan.runs import (
    HISTORY,
    RUN_JSON,
    SKIPPED,
    WEIGHTS,
    Architecture,
    OperatingPoint,
    Preprocessing,
    RunConfig,
    Training,
    load_run,
    load_tensors,
    save_tensors,
)
from herbscan.stainnet import STRIDE, StainDetector, cell_targets
from herbscan.stains import NEGATIVE_KINDS, STAIN_KINDS, STYLES, paint, pixels_per_mm, scanner
from herbscan.train import CKPT, load_checkpoint, save_checkpoint

CLASSES = ["clean", "contaminated"]
MIN_AREA = 1.5  # pixels' worth of darkening before a cell counts as stained
FRESH_INITS = ("imagenet", "scratch")  # other --init values name a stain run
_BYTES_PER_PIXEL = 3


def cache_bytes(n_sheets: int, size: int) -> int:
    """Disk the decode cache needs for n sheets at working width `size`."""
    h, w = input_shape(size, "sheet")
    return n_sheets * (h * w * _BYTES_PER_PIXEL + 128)


def _decode_all(paths, size, cache: SheetCache, workers, progress, skipped) -> list[Path]:
    """Decode every sheet into the cache; return the cache entries of those that loaded."""
    entries = []
    for i, a, err in iter_sheets(
        paths, size, "sheet", cache_dir=cache.root, workers=workers, progress=progress
    ):
        if a is None:
            skipped.append({"path": str(paths[i]), "split": "", "error": err})
        else:
            entries.append(cache.entry(paths[i]))
    return entries


class CropSampler:
    """Random painted crops of cached sheets, with per-cell targets."""

    def __init__(self, entries, size: int, crop: int, kinds, negatives, style, seed: int):
        self.entries, self.crop = list(entries), crop
        self.kinds, self.negatives, self.style = tuple(kinds), tuple(negatives), style
        self.ppm = pixels_per_mm(input_shape(size, "sheet"))
        self.rng = np.random.default_rng(seed)

    def _crop(self) -> tuple[np.ndarray, float]:
        rng = self.rng
        sheet = np.load(self.entries[int(rng.integers(len(self.entries)))], mmap_mode="r")
        scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))  # framing varies
        side = min(int(round(self.crop * scale)), *sheet.shape[:2])
        y = int(rng.integers(0, sheet.shape[0] - side + 1))
        x = int(rng.integers(0, sheet.shape[1] - side + 1))
        patch = np.array(sheet[y : y + side, x : x + side])
        if side != self.crop:
            patch = np.asarray(
                Image.fromarray(patch).resize((self.crop, self.crop), Image.Resampling.BILINEAR)
            )
        patch = np.rot90(patch, int(rng.integers(4)))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        return np.ascontiguousarray(patch), self.ppm * self.crop / side

    def painted(self, patch: np.ndarray, ppm: float) -> tuple[np.ndarray, np.ndarray]:
        """One crop painted (stained half the time) and scanned, and its stain strength map."""
        img, strength, _ = paint(
            self.rng,
            patch,
            stained=self.rng.random() < 0.5,
            kinds=self.kinds,
            negatives=self.negatives,
            style=self.style,
            ppm=ppm,
        )
        return scanner(self.rng, img), strength

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, masks = zip(*(self.painted(*self._crop()) for _ in range(n)))
        return np.stack(xs), np.stack(masks)


def crop_loss(net: StainDetector, cells: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Training loss of a batch of crops: BCE per cell, and BCE of each crop's pooled logit
    against "any cell stained", so the top-k pooling that decides a sheet is trained too."""
    return F.binary_cross_entropy_with_logits(cells, target) + F.binary_cross_entropy_with_logits(
        net.pool(cells), target.flatten(1).amax(1)
    )


def painted_sheets(sheets, kinds, negatives, style, seed: int):
    """Each sheet (uint8 array, or a cached .npy) twice, whole: once clean with look-alikes,
    once stained. Returns (uint8 images, is_stained, descriptions)."""
    images, labels, info = [], [], []
    for i, sheet in enumerate(sheets):
        if not isinstance(sheet, np.ndarray):
            sheet = np.load(sheet)
        for stained in (False, True):
            rng = np.random.default_rng([seed, i, int(stained)])
            img, _, d = paint(
                rng, sheet, stained=stained, kinds=kinds, negatives=negatives, style=style
            )
            images.append(scanner(rng, img))
            labels.append(stained)
            info.append(d)
    return images, np.array(labels, bool), info


def auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (probability a stained sheet outscores a clean one)."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


@torch.inference_mode()
def sheet_scores(net, acc: Accel, images, mean=MEAN, std=STD) -> np.ndarray:
    """Stain logit per whole sheet."""
    net.eval()
    out = []
    for img in images:
        x = acc.to_input(img[None], mean, std)
        with acc.autocast():
            out.append(float(net(x)[0, 1].float()))
    net.train()
    return np.array(out, np.float32)


def calibrate(
    run,
    paths,
    *,
    n: int = 24,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
) -> dict:
    """The operating point of a stain run on this collection: up to `n` of its sheets (a random
    sample of `paths`), each painted once clean and once stained with the held-out style, scored
    by the run; the threshold with the best balanced accuracy there, and what it achieved.

    The shipped model learnt on synthetic sheets; a collection's paper, scanner and labels move
    its scores, and this moves its threshold with them, without any labelled sheet."""
    from herbscan.images import load_sheet

    check_range("n", n, 2)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    prep = run.preprocessing
    sheets, failed = [], 0
    for i in order:
        if len(sheets) >= n:
            break
        try:
            sheets.append(load_sheet(paths[i], prep.size, prep.fit))
        except HerbscanError:
            failed += 1
    if len(sheets) < 2:
        raise ParameterError(
            f"calibrating needs at least 2 readable sheets of the collection; found {len(sheets)}"
        )
    images, y, _ = painted_sheets(sheets, STAIN_KINDS, NEGATIVE_KINDS, STYLES["holdout"], seed)
    acc = Accel.resolve(device, precision)
    net = acc.prepare(run.build_model())
    logits = sheet_scores(net, acc, images, prep.mean, prep.std)
    op = operating_point(1 / (1 + np.exp(-logits)), y)
    return {**op, "sheets": len(sheets), "unreadable": failed, "auc": auc(logits, y)}


def default_steps(init) -> int:
    """Adapting a stain run needs a third of the steps that learning from ImageNet does."""
    return 600 if str(init) in FRESH_INITS else 200


def learn_stains(
    sources,
    out: str | Path,
    *,
    sheets: int | None = None,
    size: int = 1024,
    crop: int = 256,
    steps: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    validation_sheets: int = 12,
    holdout_kinds=(),
    negatives=NEGATIVE_KINDS,
    init: str | Path = "mercury",
    freeze_blocks: int = 0,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    resume: bool = False,
) -> Path:
    """Train a StainNet on painted crops of clean `sources` (folders or image files); return
    the run folder. See the module docstring.

    `init` is where the detector starts: "mercury" (the shipped detector, adapted to these
    sheets; the default), another stain run's folder, "imagenet" (Lite0's ImageNet weights) or
    "scratch". `freeze_blocks` keeps the stem and that many first blocks as they start (the
    shipped detector froze 5, its stride-8 ImageNet filters). `steps` defaults to 200 from a
    stain run and 600 otherwise. Learnt on 28 clean sheets of other herbaria and tested on the
    other 28, 200 steps from `mercury` scored AUC 0.71-0.73 and 600 from ImageNet 0.70; the
    shipped `mercury` alone scores 0.72 (docs/measurements.md, stops 30-31).

    At every validation (a quarter of the steps) the weights, optimiser and sampler state go to
    `out/checkpoint/`; `resume=True` continues a stopped job from there, refusing changed
    settings."""
    check_range("size", size, 256, 4096)
    check_range("crop", crop, 64, 1024)
    from_run = str(init) not in FRESH_INITS
    if from_run:  # before the decode, so a mistyped --init costs nothing
        try:
            start = load_run(init)
        except RunError as e:
            raise ParameterError(
                f"--init {init}: choose mercury, imagenet, scratch or a stain run folder ({e})"
            ) from None
    steps = default_steps(init) if steps is None else steps
    check_range("steps", steps, 1)
    check_range("batch_size", batch_size, 1)
    check_range("validation_sheets", validation_sheets, 1)
    if size % STRIDE or crop % STRIDE:
        raise ParameterError(f"size and crop must be multiples of {STRIDE}; got {size}, {crop}")
    holdout_kinds = tuple(holdout_kinds)
    bad = [k for k in holdout_kinds if k not in STAIN_KINDS]
    if bad:
        raise ParameterError(f"unknown stain kind {bad[0]!r}; choose from {', '.join(STAIN_KINDS)}")
    train_kinds = tuple(k for k in STAIN_KINDS if k not in holdout_kinds)
    if not train_kinds:
        raise ParameterError("holdout_kinds leaves no stain kind to train on")
    out = Path(out)
    if (out / RUN_JSON).exists():
        raise ParameterError(f"{out}: a run is already there; choose another --out")
    ckpt = out / CKPT
    if (ckpt / "state.json").exists() and not resume:
        raise ParameterError(
            f"{out}: holds an unfinished learn-stains job; pass --resume to continue it or "
            "choose another --out"
        )
    settings = json.loads(
        json.dumps(
            {
                "sources": sorted(
                    str(Path(p).resolve())
                    for p in (sources if not isinstance(sources, (str, Path)) else [sources])
                ),
                "sheets": sheets,
                "size": size,
                "crop": crop,
                "steps": steps,
                "batch_size": batch_size,
                "lr": lr,
                "validation_sheets": validation_sheets,
                "holdout_kinds": list(holdout_kinds),
                "negatives": list(negatives),
                "init": str(init),
                "freeze_blocks": freeze_blocks,
                "seed": seed,
            }
        )
    )

    paths, left_out = expand_images(
        list(sources) if not isinstance(sources, (str, Path)) else [sources]
    )
    paths = sorted({str(p) for p in paths})
    if len(paths) < 3:
        raise ParameterError(
            f"learn-stains needs at least 3 readable sheets; found {len(paths)} "
            f"in {', '.join(map(str, sources))}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    if sheets is not None:
        check_range("sheets", sheets, 3)
        order = order[:sheets]
    n_val = min(validation_sheets, max(1, len(order) // 5))
    val_paths = [paths[i] for i in order[:n_val]]
    train_paths = [paths[i] for i in order[n_val:]]

    root = cache_root(cache_dir if cache_dir is not None else True)
    cache = SheetCache(root, size, "sheet")
    check_free_space(root, cache_bytes(len(order), size), "the decode cache")
    skipped = [{"path": str(p), "split": "", "error": why} for p, why in left_out]
    train_entries = _decode_all(train_paths, size, cache, workers, progress, skipped)
    val_entries = _decode_all(val_paths, size, cache, workers, progress, skipped)
    if not train_entries or not val_entries:
        raise ParameterError(
            f"too few sheets could be read to train and validate; see the errors in {out / SKIPPED}"
        )

    acc = Accel.resolve(device, precision)
    torch.manual_seed(seed)
    if from_run:
        net = start.build_model()
        if not isinstance(net, StainDetector):
            raise ParameterError(
                f"{init}: --init needs a stain run (learn-stains output), mercury, imagenet or "
                "scratch"
            )
        weights = {"source": str(init), "sha256": start.model_id}
    else:
        pretrained = str(init) == "imagenet"
        net = create_model("stainnet", 2, pretrained=pretrained)
        weights = weights_record(pretrained_weights("efficientnet_lite0")) if pretrained else None
    net.freeze(freeze_blocks)
    net = acc.prepare(net).train()
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)

    val_style = STYLES["holdout"]
    val_images, val_y, _ = painted_sheets(val_entries, STAIN_KINDS, negatives, val_style, seed)
    sampler = CropSampler(train_entries, size, crop, train_kinds, negatives, STYLES["train"], seed)
    checks = sorted({max(1, round(steps * f)) for f in (0.25, 0.5, 0.75, 1.0)})
    out.mkdir(parents=True, exist_ok=True)
    history, best, first, spent = [], None, 1, 0.0
    gen = torch.Generator()
    if resume and (ckpt / "state.json").exists():
        meta = load_checkpoint(ckpt, net, opt, sched, gen, settings)
        history, first, spent = meta["history"], meta["step"] + 1, meta["seconds"]
        sampler.rng.bit_generator.state = meta["sampler"]
        best_state = {k[6:]: v for k, v in load_tensors(ckpt / "best.safetensors").items()}
        best = (tuple(meta["best_key"]), meta["best_step"], best_state)
    t0 = time.monotonic() - spent
    bar = Progress(steps - first + 1, "learning stains", unit="step", enabled=progress)
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(sampler.batch, batch_size)
        for step in range(first, steps + 1):
            xb, mb = nxt.result()
            nxt = pool.submit(sampler.batch, batch_size)
            x = acc.to_input(xb, MEAN, STD)
            target = cell_targets(torch.from_numpy(mb), MIN_AREA).to(acc.device)
            with acc.autocast():
                cells = net.member_cells(x).float()
            loss = torch.stack([crop_loss(net, c, target) for c in cells]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1, loss=f"{loss.item():.3f}")
            if step in checks:
                scores = sheet_scores(net, acc, val_images)
                row = {
                    "step": step,
                    "loss": round(loss.item(), 4),
                    "val_auc": auc(scores, val_y),
                    **{
                        f"val_{k}": v
                        for k, v in operating_point(1 / (1 + np.exp(-scores)), val_y).items()
                        if k in ("balanced_accuracy", "threshold")
                    },
                    "seconds": round(time.monotonic() - t0, 1),
                }
                history.append(row)
                write_csv(out / HISTORY, history, list(row))  # progress visible while it runs
                key = (row["val_auc"] or 0, row["val_balanced_accuracy"])
                if best is None or key >= best[0]:
                    best = (key, step, {k: v.detach().clone() for k, v in net.state_dict().items()})
                    save_tensors(
                        ckpt / "best.safetensors", {f"model.{k}": v for k, v in best[2].items()}
                    )
                if step < steps:
                    save_checkpoint(
                        ckpt,
                        net,
                        opt,
                        sched,
                        gen,
                        {
                            "settings": settings,
                            "epoch": len(history),
                            "history": history,
                            "step": step,
                            "seconds": time.monotonic() - t0,
                            "sampler": sampler.rng.bit_generator.state,
                            "best_key": list(best[0]),
                            "best_step": best[1],
                        },
                    )
        nxt.cancel()
    bar.close()
    seconds = time.monotonic() - t0

    net.load_state_dict(best[2])
    scores = sheet_scores(net, acc, val_images)
    op = operating_point(1 / (1 + np.exp(-scores)), val_y)
    t = min(max(op["threshold"], 1e-4), 1 - 1e-4)
    net.shift_logits(-math.log(t / (1 - t)))  # the operating point in the head: flag at P >= 0.5
    save_tensors(out / WEIGHTS, {k: v.float() for k, v in net.state_dict().items()})
    write_csv(out / HISTORY, history, list(history[0]))
    write_csv(out / SKIPPED, skipped, ["path", "split", "error"])
    config = RunConfig(
        classes=CLASSES,
        preprocessing=Preprocessing(
            mode="full", size=size, fit="sheet", mean=list(MEAN), std=list(STD)
        ),
        architecture=Architecture(
            name="stainnet",
            kwargs=dict(start.config.architecture.kwargs) if from_run else {},
            parameters=sum(p.numel() for p in net.parameters()),
            init="run" if from_run else str(init),
            weights=weights,
        ),
        training=Training(
            kind="learn-stains",
            sources=[
                str(s) for s in (sources if not isinstance(sources, (str, Path)) else [sources])
            ],
            n_train_sheets=len(train_entries),
            n_validation_sheets=len(val_entries),
            validation="each held-out sheet painted once clean and once stained, style "
            f"'{val_style.name}'",
            size=size,
            crop=crop,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            stain_kinds=list(train_kinds),
            holdout_kinds=list(holdout_kinds),
            negatives=list(negatives),
            frozen_blocks=freeze_blocks or None,
            seed=seed,
            best_epoch=best[1],
            epochs_run=steps,
            precision=acc.precision,
            device=str(acc.device),
            train_seconds=round(seconds, 1),
            complete=True,
        ),
        metrics={
            "validation": {
                "val_auc": auc(scores, val_y),
                "val_accuracy": op["accuracy"],
                "n": len(val_y),
            }
        },  # fmt: skip
        operating_point=OperatingPoint(
            positive_class="contaminated",
            source="painted validation sheets (folded into the model: flag at 0.5)",
            threshold=0.5,
            raw_threshold=op["threshold"],
            **{k: op[k] for k in ("balanced_accuracy", "precision", "recall", "accuracy", "n")},
        ),
        seed=seed,
        versions={"herbscan": __version__, "torch": torch.__version__},
    )
    config.save(out)
    shutil.rmtree(ckpt, ignore_errors=True)
    return out
