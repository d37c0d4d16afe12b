"""One training loop for every task: clean/contaminated, family, genus or species.

Sheets are decoded once into the cache and held as one uint8 array; each epoch only indexes it,
and augmentation (flips, small rotations and scale, colour jitter) runs on whole batches on the
training device. The best epoch on the validation split (macro-F1, ties broken by lower loss) is
kept as `model.safetensors`; a checkpoint after every epoch makes `resume=True` continue an
interrupted run where it stopped.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from herbscan import __version__
from herbscan.accel import Accel
from herbscan.cache import load_sheets
from herbscan.images import FITS
from herbscan.errors import ManifestError, RunError, check_choice, check_range
from herbscan.manifest import Manifest, read_source
from herbscan.metrics import accuracy, macro_f1
from herbscan.models import create_model, list_models
from herbscan.progress import Progress
from herbscan.runs import (
    FORMAT,
    HISTORY,
    RUN_JSON,
    SKIPPED,
    WEIGHTS,
    load_tensors,
    save_tensors,
    write_csv,
    write_json,
)

BALANCE = ("loss", "sampler", "none")
MODES = ("full",)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                  "val_macro_f1", "lr", "seconds"]
CKPT = "checkpoint"


def augment(x: torch.Tensor, g: torch.Generator, *, rotate_deg: float = 5.0,
            scale: float = 0.1, jitter: float = 0.15) -> torch.Tensor:
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
    theta = torch.stack([
        torch.stack([cos * flip_h, -sin * flip_v, torch.zeros_like(cos)], 1),
        torch.stack([sin * flip_h, cos * flip_v, torch.zeros_like(cos)], 1)], 1)
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


def _class_weights(y: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return len(y) / (k * np.maximum(counts, 1))


def _load_split(m: Manifest, split: str, classes: list[str], size: int, fit: str, cache_dir,
                workers: int, skipped: list[dict], progress: bool):
    sub = m.subset(split)
    paths = sub.paths()
    arrays, ok, failures = load_sheets(paths, size, fit, cache_dir=cache_dir, workers=workers,
                                       progress=progress)
    for p, err in failures:
        skipped.append({"path": p, "split": split, "error": err})
    labels = [sub.label(sub.rows[i]) for i in ok]
    y = np.array([classes.index(lab) for lab in labels], dtype=np.int64)
    return arrays, y


def train(data: str | Path, out: str | Path, *, model: str = "herbnet", size: int = 256,
          fit: str = "stretch", epochs: int = 30, batch_size: int = 32, lr: float = 2e-3,
          weight_decay: float = 0.05, precision: str = "auto", device: str = "auto",
          balance: str = "loss", patience: int = 10, seed: int = 0, workers: int = 2,
          cache_dir: str | Path | None | bool = None, resume: bool = False,
          label_col: str | None = None, path_col: str | None = None,
          group_col: str | None = None, mode: str = "full", progress: bool = True,
          augmentation: bool = True, checkpoint_seconds: float = 60.0) -> Path:
    """Train a classifier on a split manifest's train rows, select on validation; return the run.

    `data` is a manifest with a `split` column (see `herbscan.manifest.split`). The run folder
    `out` receives run.json, model.safetensors, history.csv and skipped.csv. A resume checkpoint
    (weights + optimiser, 3× the model's size) is written after an epoch when at least
    `checkpoint_seconds` have passed since the last one (0: after every epoch).
    """
    check_choice("balance", balance, BALANCE)
    check_choice("mode", mode, MODES)
    check_choice("model", model, list_models())
    check_choice("fit", fit, FITS)
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("size", size),
                    ("workers", workers)):
        check_range(name, v, 1)
    check_range("lr", lr, 0, low_open=True)
    check_range("patience", patience, 0)
    out = Path(out)
    ckpt_dir = out / CKPT
    if (out / RUN_JSON).exists() and not resume:
        raise RunError(f"{out}: already holds a run; pass --resume to continue it or choose "
                       "another --out")
    if resume and (out / RUN_JSON).exists() and not ckpt_dir.exists():
        return out  # finished earlier: nothing left to do

    m = read_source(data, label_col=label_col, path_col=path_col, group_col=group_col)
    if not m.has_split():
        raise ManifestError(f"{data}: no 'split' column; run `herbscan split {data} --out "
                            "split.csv` first and train on its output")
    train_m, val_m = m.subset("train"), m.subset("validation")
    if not train_m.rows:
        raise ManifestError(f"{data}: no rows with split=train; re-run herbscan split")
    classes = sorted(set(train_m.labels()))
    if len(classes) < 2:
        raise ManifestError(f"{data}: the train split has only the class {classes}; a classifier "
                            "needs at least two labelled classes")
    unseen = sorted(set(val_m.labels()) - set(classes))
    if unseen:
        raise ManifestError(f"{data}: class(es) {', '.join(unseen)} appear in validation but "
                            "have no training sheets; re-run herbscan split")
    if not val_m.rows:
        warnings.warn(f"{data}: no validation rows; the last epoch is kept", stacklevel=2)

    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    acc = Accel.resolve(device, precision)
    out.mkdir(parents=True, exist_ok=True)
    skipped: list[dict] = []
    x_tr, y_tr = _load_split(m, "train", classes, size, fit, cache_dir, workers, skipped,
                            progress)
    x_va, y_va = _load_split(m, "validation", classes, size, fit, cache_dir, workers, skipped,
                            progress)
    write_csv(out / SKIPPED, skipped, ["path", "split", "error"])
    empty = [c for i, c in enumerate(classes) if not (y_tr == i).any()]
    if empty:
        raise ManifestError(f"{data}: every training image of class(es) {', '.join(empty)} "
                            f"failed to load (see {out / SKIPPED}); fix those files")
    if len(y_tr) < 2:
        raise ManifestError(f"{data}: fewer than 2 readable training images")

    net = acc.prepare(create_model(model, len(classes), input_size=size))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, len(y_tr) // batch_size + (len(y_tr) % batch_size > 1))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    scaler = torch.amp.GradScaler(enabled=acc.precision == "fp16")
    cw = torch.tensor(_class_weights(y_tr, len(classes)), dtype=torch.float32,
                      device=acc.device) if balance == "loss" else None
    sample_w = torch.tensor(_class_weights(y_tr, len(classes))[y_tr], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)

    config = {
        "format": FORMAT,
        "task": "classification",
        "classes": classes,
        "label_column": m.label_col,
        "preprocessing": {"mode": mode, "size": size, "fit": fit, "mean": list(MEAN),
                          "std": list(STD)},
        "architecture": {"name": model, "kwargs": {},
                         "parameters": sum(p.numel() for p in net.parameters())},
        "training": {"data": str(Path(data).resolve()), "epochs": epochs,
                     "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                     "balance": balance, "patience": patience, "augmentation": augmentation,
                     "precision": acc.precision, "device": str(acc.device), "seed": seed,
                     "n_train": len(y_tr), "n_validation": len(y_va),
                     "n_skipped": len(skipped)},
        "seed": seed,
        "versions": {"herbscan": __version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }

    state = {"epoch": 0, "best": None, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "seconds": 0.0}
    if resume and (ckpt_dir / "state.json").exists():
        state = _load_checkpoint(ckpt_dir, net, opt, sched, gen)

    total_steps = (epochs - state["epoch"]) * steps_per_epoch
    bar = Progress(total_steps, f"training {model}", unit="steps", enabled=progress)
    last_ckpt = time.monotonic()
    stopped_early = False
    for epoch in range(state["epoch"] + 1, epochs + 1):
        t0 = time.monotonic()
        net.train()
        if balance == "sampler":
            order = torch.multinomial(sample_w, len(y_tr), replacement=True, generator=gen)
        else:
            order = torch.randperm(len(y_tr), generator=gen)
        order = order.numpy()
        seen, loss_sum, correct = 0, 0.0, 0
        for b in range(steps_per_epoch):
            idx = np.sort(order[b * batch_size:(b + 1) * batch_size])
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            x = acc.to_input(x_tr[idx], MEAN, STD)
            if augmentation:
                x = augment(x, gen)
            y = torch.from_numpy(y_tr[idx]).to(acc.device)
            with acc.autocast():
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y, weight=cw, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            bar.update(1, epoch=epoch, loss=loss_sum / seen, acc=correct / seen)
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
               "train_accuracy": correct / max(seen, 1), "lr": sched.get_last_lr()[0]}
        if len(y_va):
            probs = acc.predict_proba(net, x_va, MEAN, STD, batch_size=max(batch_size, 64))
            pred = probs.argmax(1)
            row["val_loss"] = float(-np.log(np.clip(probs[np.arange(len(y_va)), y_va], 1e-7, 1))
                                    .mean())
            row["val_accuracy"] = accuracy(y_va, pred)
            row["val_macro_f1"] = macro_f1(y_va, pred, len(classes))
            bar.update(0, val_acc=row["val_accuracy"])
        row["seconds"] = time.monotonic() - t0
        state["seconds"] += row["seconds"]
        state["history"].append(row)
        write_csv(out / HISTORY, state["history"], HISTORY_FIELDS)

        score = ((row["val_macro_f1"], -row["val_loss"]) if len(y_va) else (epoch, 0.0))
        if state["best"] is None or score > tuple(state["best"]):
            state.update(best=list(score), best_epoch=epoch, bad_epochs=0)
            config["metrics"] = {"validation": {k: row.get(k) for k in
                                                ("val_loss", "val_accuracy", "val_macro_f1")},
                                 "best_epoch": epoch}
            save_tensors(out / WEIGHTS, net.state_dict(), {"format": FORMAT})
            _write_config(out, config, state, epoch, stopped_early=False)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        stopped_early = patience > 0 and state["bad_epochs"] >= patience and epoch < epochs
        if stopped_early or epoch == epochs:
            break
        if time.monotonic() - last_ckpt >= checkpoint_seconds:
            _save_checkpoint(ckpt_dir, net, opt, sched, gen, state)
            last_ckpt = time.monotonic()
    bar.close()
    _write_config(out, config, state, state["epoch"], stopped_early=stopped_early)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return out


def _write_config(out: Path, config: dict, state: dict, epoch: int, stopped_early: bool) -> None:
    config["training"].update(best_epoch=state["best_epoch"], epochs_run=epoch,
                              stopped_early=stopped_early,
                              train_seconds=round(state["seconds"], 2))
    write_json(out / RUN_JSON, config)


def _save_checkpoint(folder: Path, net, opt, sched, gen, state: dict) -> None:
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


def _load_checkpoint(folder: Path, net, opt, sched, gen) -> dict:
    tensors = load_tensors(folder / "last.safetensors")
    meta = json.loads((folder / "state.json").read_text())
    try:
        net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError:
        raise RunError(f"{folder}: checkpoint is for another model or class list; start a new "
                       "run with another --out") from None
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
