"""Screening throughput: herbscan screen vs the decode floor and a naive loop, same session.

A collection of 4000×6000 JPEG sheets is generated first (one synthetic sheet, shifted and
re-encoded per copy). Then, on the same files:
- herbscan: `screen()` with a full-sheet run of `--model` (draft decoding to its input size in
  `--workers` processes, batched bf16/channels_last inference, Parquet shards);
- floor: Pillow draft decoding to the same size alone, in the same number of processes;
- naive: full decode, resize, fp32 NCHW inference, one sheet at a time, one process.

    python benchmarks/screen_speed.py [--sheets 100] [--workers 2] [--dask]
        [--model herbnet|efficientnet_lite0|stainnet] [--size 256] [--members K]

With `--dask`, the same screen also runs on Dask LocalClusters of 1 and 2 single-threaded
worker processes, for the speedup per worker and a projection to 1.4 million sheets.
Prints a table, then one JSON object on its last line with `ratio_floor` and `ratio_naive`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from herbscan.fileio import write_json
from herbscan.images import input_shape, load_sheet
from herbscan.models import create_model
from herbscan.runs import FORMAT, WEIGHTS, save_tensors
from herbscan.screen import screen, screen_report
from herbscan.synth import make_sheet

SIZE, MEAN, STD = 256, 0.5, 0.25
MODEL, FIT = "herbnet", "stretch"
KWARGS: dict = {}


def configure(model: str, size: int | None, members: int = 1) -> None:
    """Model and input size of this run (the defaults herbscan train would use); `members` > 1
    makes a stainnet an ensemble of that many."""
    global MODEL, SIZE, MEAN, STD, FIT, KWARGS
    from herbscan.models import model_info
    from herbscan.train import default_size

    info = model_info(model)
    MODEL, SIZE, FIT = model, size or default_size(model), info["fit"]
    MEAN, STD = (info["mean"] or (MEAN,))[0], (info["std"] or (STD,))[0]
    KWARGS = {"members": members} if members > 1 else {}


def make_collection(folder: Path, n: int) -> list[Path]:
    base, _ = make_sheet(np.random.default_rng(0), stained=True, size=(4000, 6000))
    a = np.asarray(base)
    paths = []
    for i in range(n):
        p = folder / f"sheet_{i:04d}.jpg"
        Image.fromarray(np.roll(a, (i * 7) % 200, axis=1)).save(p, quality=88)
        paths.append(p)
    return paths


def make_run(folder: Path) -> Path:
    torch.manual_seed(0)
    save_tensors(folder / WEIGHTS, create_model(MODEL, 2, input_size=SIZE, **KWARGS).state_dict())
    write_json(
        folder / "run.json",
        {
            "format": FORMAT,
            "classes": ["clean", "contaminated"],
            "preprocessing": {
                "mode": "full",
                "size": SIZE,
                "fit": FIT,
                "mean": [MEAN] * 3,
                "std": [STD] * 3,
            },
            "architecture": {"name": MODEL, "kwargs": KWARGS},
            "training": {},
        },
    )
    return folder


def _decode(path: str, size: int, fit: str) -> int:
    return int(load_sheet(path, size, fit).shape[0])


def floor(paths: list[Path], workers: int) -> float:
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            n = len(paths)
            list(pool.map(_decode, map(str, paths), [SIZE] * n, [FIT] * n, chunksize=4))
    else:
        for p in paths:
            _decode(str(p), SIZE, FIT)
    return time.perf_counter() - t0


@torch.no_grad()
def naive(paths: list[Path]) -> float:
    torch.manual_seed(0)
    net = create_model(MODEL, 2, input_size=SIZE, **KWARGS).eval()
    t0 = time.perf_counter()
    for p in paths:
        h, w = input_shape(SIZE, FIT)
        a = np.array(Image.open(p).convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
        x = torch.from_numpy(a).permute(2, 0, 1)[None].float().div(255).sub(MEAN).div(STD)
        torch.softmax(net(x.contiguous()), 1)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sheets", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--naive-sheets",
        type=int,
        default=20,
        help="the naive loop runs on the first N sheets (it is slow)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="times herbscan and the floor are each measured (best kept)",
    )
    ap.add_argument("--dask", action="store_true", help="also time Dask local:1 and local:2")
    ap.add_argument("--model", default="herbnet", help="a registered model (weights are random)")
    ap.add_argument("--size", type=int, default=None, help="input size (default: the model's)")
    ap.add_argument("--members", type=int, default=1, help="stainnet: an ensemble of K members")
    args = ap.parse_args()
    configure(args.model, args.size, args.members)
    h, w = input_shape(SIZE, FIT)
    print(f"model {MODEL} {KWARGS or ''} at {w} × {h} (fit {FIT})")
    tmp = Path(tempfile.mkdtemp(prefix="herbscan-screen-bench-"))
    (tmp / "sheets").mkdir()
    t0 = time.perf_counter()
    paths = make_collection(tmp / "sheets", args.sheets)
    print(f"generated {len(paths)} sheets of 4000×6000 in {time.perf_counter() - t0:.0f} s")
    run = make_run(tmp / "run")

    # alternate the two and keep each one's best, so machine noise hits both alike
    hs = fs = float("inf")
    for r in range(args.repeat):
        t0 = time.perf_counter()
        s = screen(
            run,
            tmp / "sheets",
            tmp / f"screen{r}",
            workers=args.workers,
            progress=False,
            report=False,
        )
        hs = min(hs, time.perf_counter() - t0)
        assert s["screened"] == len(paths) and s["failed"] == 0
        fs = min(fs, floor(paths, args.workers))
    t0 = time.perf_counter()
    screen_report(tmp / "screen0", group_by=[])
    report_s = time.perf_counter() - t0
    ns = naive(paths[: args.naive_sheets]) * len(paths) / args.naive_sheets
    n = len(paths)
    print(f"{'':30}{'sheets/s':>10}")
    print(f"{'herbscan screen':30}{n / hs:10.2f}")
    print(f"{'decode floor (same processes)':30}{n / fs:10.2f}")
    print(f"{'naive (1 process, fp32)':30}{n / ns:10.2f}")
    print(
        f"workers {args.workers}; best of {args.repeat} for herbscan and the floor; herbscan "
        "time includes process start-up and the Parquet shards; the summary report "
        f"(thumbnails of the flagged) took {report_s:.1f} s more"
    )
    extra = {}
    if args.dask:
        for w in (1, 2):
            t0 = time.perf_counter()
            screen(
                run,
                tmp / "sheets",
                tmp / f"dask{w}",
                progress=False,
                report=False,
                dask=f"local:{w}",
                shard_size=max(1, n // 10),
            )
            extra[f"dask_local{w}_sheets_per_s"] = round(n / (time.perf_counter() - t0), 2)
        extra["dask_speedup_2_vs_1"] = round(
            extra["dask_local2_sheets_per_s"] / extra["dask_local1_sheets_per_s"], 2
        )
        per_worker = extra["dask_local1_sheets_per_s"]
        print(
            f"{'dask local:1 / local:2':30}{per_worker:10.2f}"
            f"{extra['dask_local2_sheets_per_s']:10.2f}  (speedup "
            f"{extra['dask_speedup_2_vs_1']:.2f}×, cluster start-up included)"
        )
        print(
            f"1.4 million sheets: {1.4e6 / (n / hs) / 3600:.1f} h on this machine "
            f"({n / hs:.1f} sheets/s); with Dask, {1.4e6 / per_worker / 3600:.1f} h per "
            "single-core worker, divided by the number of such workers"
        )
        extra["projected_hours_this_machine"] = round(1.4e6 / (n / hs) / 3600, 1)
        extra["projected_hours_per_dask_worker"] = round(1.4e6 / per_worker / 3600, 1)
    print(
        json.dumps(
            {
                **extra,
                "herbscan_sheets_per_s": round(n / hs, 2),
                "floor_sheets_per_s": round(n / fs, 2),
                "naive_sheets_per_s": round(n / ns, 2),
                "ratio_floor": round(fs / hs, 2),
                "ratio_naive": round(ns / hs, 2),
                "sheets": n,
                "workers": args.workers,
                "model": MODEL,
                "size": SIZE,
                "members": args.members,
            }
        )
    )


if __name__ == "__main__":
    main()
