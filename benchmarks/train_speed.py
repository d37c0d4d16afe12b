"""Time per training epoch: herbscan vs a plain PyTorch loop, in the same run.

herbscan: sheets decoded once into the cache (draft decoding), then every epoch indexes a uint8
array; channels_last + bf16 autocast where supported; batched augmentation on the device.
Baseline: every epoch decodes every JPEG at full resolution with Pillow, resizes to 256², and
trains the same model in fp32 NCHW with flips only. Both run a validation pass per epoch.

    python benchmarks/train_speed.py [--data MANIFEST] [--epochs 3] [--device auto]

Prints a table, then one JSON object on the last line with `ratio` = baseline / herbscan
seconds per epoch (steady state: the first epoch of each is a warm-up and is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from herbscan.accel import Accel
from herbscan.cache import load_sheets
from herbscan.manifest import read_source, split
from herbscan.models import create_model
from herbscan.train import train

MEAN, STD = 0.5, 0.25


def default_data() -> Path:
    root = (
        os.environ.get("HERBSCAN_SHARED_DATA")
        or Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    return Path(root) / "ala-lycopodiaceae" / "manifest.csv"


def baseline_epochs(m, classes, model_name, size, batch_size, epochs, device, seed=0):
    """Plain loop: full decode every epoch, fp32, NCHW. Returns seconds per epoch."""
    torch.manual_seed(seed)
    tr, va = m.subset("train"), m.subset("validation")
    paths, ys = tr.paths(), [classes.index(lab) for lab in tr.labels()]
    vpaths = va.paths()
    net = create_model(model_name, len(classes), input_size=size).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)

    def batch_tensor(ps):
        arr = np.stack(
            [
                np.asarray(
                    Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                )
                for p in ps
            ]
        )
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255).sub(MEAN).div(STD)
        return x.contiguous().to(device)

    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        net.train()
        order = np.random.default_rng(len(times)).permutation(len(paths))
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            if len(idx) < 2:
                continue
            x = batch_tensor([paths[i] for i in idx])
            if np.random.rand() < 0.5:
                x = x.flip(3)
            y = torch.tensor([ys[i] for i in idx], device=device)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            for b in range(0, len(vpaths), 64):
                net(batch_tensor(vpaths[b : b + 64])).argmax(1).tolist()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def breakdown(x_tr, n_classes, model_name, size, batch_size, accel, steps=10):
    """Seconds per step for the data path alone (index, transfer, augment) and the model alone."""
    from herbscan.train import augment

    g = torch.Generator().manual_seed(0)
    net = accel.prepare(create_model(model_name, n_classes, input_size=size))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if accel.device.type == "cuda" else (lambda: None)
    idx = np.arange(min(batch_size, len(x_tr)))
    x = augment(accel.to_input(x_tr[idx], [MEAN] * 3, [STD] * 3), g)
    y = torch.zeros(len(idx), dtype=torch.long, device=accel.device)

    def model_step():
        with accel.autocast():
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def data_step():
        augment(
            accel.to_input(
                x_tr[np.sort(np.random.permutation(len(x_tr))[:batch_size])], [MEAN] * 3, [STD] * 3
            ),
            g,
        )

    out = {}
    for name, fn in (("data", data_step), ("model", model_step)):
        fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        out[name] = (time.perf_counter() - t0) / steps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--label-col", default="genus")
    ap.add_argument("--group-col", default="catalog_number")
    ap.add_argument("--path-col", default="file")
    ap.add_argument("--model", default="herbnet")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"{args.data}: not found; pass --data or set HERBSCAN_SHARED_DATA")
    tmp = Path(tempfile.mkdtemp(prefix="herbscan-bench-"))
    data, _ = split(
        args.data,
        tmp / "split.csv",
        label_col=args.label_col,
        group_col=args.group_col,
        path_col=args.path_col,
        rare="train",
    )
    m = read_source(data)
    classes = sorted(set(m.subset("train").labels()))
    accel = Accel.resolve(args.device)
    epochs = max(2, args.epochs)

    t0 = time.perf_counter()
    load_sheets(
        m.subset("train").paths() + m.subset("validation").paths(),
        args.size,
        cache_dir=tmp / "cache",
        workers=args.workers,
        progress=False,
    )
    decode_s = time.perf_counter() - t0
    run = train(
        data,
        tmp / "run",
        model=args.model,
        size=args.size,
        epochs=epochs,
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=tmp / "cache",
        patience=0,
        progress=False,
        workers=args.workers,
    )
    hist = [float(r.split(",")[-1]) for r in (run / "history.csv").read_text().splitlines()[1:]]
    base = baseline_epochs(m, classes, args.model, args.size, args.batch_size, epochs, accel.device)
    x_tr, _, _ = load_sheets(
        m.subset("train").paths(), args.size, cache_dir=tmp / "cache", progress=False
    )
    parts = breakdown(x_tr, len(classes), args.model, args.size, args.batch_size, accel)
    hs, bs = statistics.median(hist[1:]), statistics.median(base[1:])
    n_train = len(m.subset("train").rows)
    print(f"{'':28}{'herbscan':>12}{'baseline':>12}")
    print(f"{'seconds per epoch':28}{hs:12.2f}{bs:12.2f}")
    print(f"{'train sheets per second':28}{n_train / hs:12.1f}{n_train / bs:12.1f}")
    print(f"{'first epoch (warm-up) s':28}{hist[0]:12.2f}{base[0]:12.2f}")
    print(
        f"per step of {args.batch_size}: data path {parts['data'] * 1000:.1f} ms, model "
        f"{parts['model'] * 1000:.1f} ms -> bottleneck: "
        f"{'data pipeline' if parts['data'] > parts['model'] else 'model compute'}"
    )
    print(
        f"one-time decode into the cache: {decode_s:.2f} s for {n_train} train + validation "
        f"sheets ({args.workers} workers); precision {accel.precision}, device {accel.device}"
    )
    print(
        json.dumps(
            {
                "herbscan_epoch_s": round(hs, 3),
                "baseline_epoch_s": round(bs, 3),
                "ratio": round(bs / hs, 2),
                "decode_once_s": round(decode_s, 2),
                "train_sheets": n_train,
                "data_ms_per_step": round(parts["data"] * 1e3, 2),
                "model_ms_per_step": round(parts["model"] * 1e3, 2),
                "model": args.model,
                "epochs": epochs,
                "precision": accel.precision,
                "device": str(accel.device),
            }
        )
    )


if __name__ == "__main__":
    main()
