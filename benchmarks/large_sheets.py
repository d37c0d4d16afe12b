"""Peak memory and time of very large sheets (108 MP and 170 MP) through predict and screen.

A 30×42 cm sheet scanned at 750–800 dpi has ~108 MP; 170 MP is near Pillow's old hard stop. Each
case runs as its own `herbscan` process; its peak RSS is the largest sum over the whole process
tree (workers included), sampled every 50 ms from /proc. Baseline in the same run: the same
commands on a 24 MP (4000×6000) sheet. Prints a table, then one JSON object on the last line.

    python benchmarks/large_sheets.py [--sizes 24,108,170] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERBSCAN = [sys.executable, "-m", "herbscan.cli"]


def make_sheet(path: Path, megapixels: float, seed: int = 0) -> None:
    """A 2:3 sheet with paper texture, a plant-like scrawl, a label and dark speckles."""
    rng = np.random.default_rng(seed)
    w = int((megapixels * 1e6 / 1.5) ** 0.5)
    h = int(w * 1.5)
    small = rng.normal(232, 4, (h // 16, w // 16, 3)).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    d = ImageDraw.Draw(im)
    x, y = w // 2, h // 5
    for _ in range(400):
        nx, ny = x + int(rng.integers(-w // 30, w // 30)), y + int(rng.integers(0, h // 100))
        d.line([(x, y), (nx, ny)], fill=(60, 100, 50), width=max(3, w // 600))
        x, y = min(max(nx, 0), w - 1), min(ny, h - 1)
    d.rectangle([w * 0.6, h * 0.85, w * 0.95, h * 0.97], fill=(245, 243, 235), outline=(0, 0, 0))
    for _ in range(300):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), int(rng.integers(2, 12))
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(40, 40, 40))
    im.save(path, quality=85)


def _tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(d))
            rss[int(d)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def measure(args: list[str], env: dict) -> tuple[float, float, int, str]:
    """(seconds, peak tree RSS in MB, return code, last output line) of one command."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        HERBSCAN + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    while p.poll() is None:
        peak = max(peak, _tree_rss(p.pid))
        time.sleep(0.05)
    out = p.stdout.read()
    p.stdout.close()
    last = out.strip().splitlines()[-1] if out.strip() else ""
    return time.perf_counter() - t0, peak / 2**20, p.returncode, last


def _train_runs(work: Path, env: dict) -> tuple[Path, Path]:
    """A full-sheet and a tile run, one epoch on a tiny synthetic collection (speed only)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_sheet as small_sheet

    rng = np.random.default_rng(0)
    coll = work / "coll"
    for label, dotted in (("clean", False), ("contaminated", True)):
        (coll / label).mkdir(parents=True)
        for i in range(10):
            small_sheet(rng, dotted, (400, 600)).save(coll / label / f"{i}.jpg")
    subprocess.run(
        HERBSCAN + ["split", str(coll), "--out", str(work / "data.csv")],
        env=env,
        check=True,
        capture_output=True,
    )
    runs = []
    for mode in ("full", "tiles"):
        run = work / f"run_{mode}"
        subprocess.run(
            HERBSCAN
            + [
                "train",
                str(work / "data.csv"),
                "--out",
                str(run),
                "--mode",
                mode,
                "--epochs",
                "1",
                "--model",
                "herbnet",
                "--workers",
                "1",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        runs.append(run)
    return runs[0], runs[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="24,108,170", help="megapixels, comma-separated")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="herbscan-large-"))
    env = dict(os.environ, HERBSCAN_CACHE=str(work / "cache"))
    full, tiles = _train_runs(work, env)
    results, table = {}, []
    for mp in [float(s) for s in a.sizes.split(",")]:
        sheet = work / "sheets" / f"sheet_{mp:g}mp.jpg"
        sheet.parent.mkdir(exist_ok=True)
        make_sheet(sheet, mp)
        for name, args in (
            (
                "predict full",
                ["predict", str(full), str(sheet), "--out", str(work / f"p_full_{mp:g}.csv")],
            ),
            (
                "predict tiles",
                ["predict", str(tiles), str(sheet), "--out", str(work / f"p_tiles_{mp:g}.csv")],
            ),
            (
                "screen full",
                [
                    "screen",
                    str(full),
                    str(sheet.parent),
                    "--out",
                    str(work / f"s_{mp:g}"),
                    "--workers",
                    str(a.workers),
                ],
            ),
        ):
            if name == "screen full":  # the folder holds only this size's sheet
                for other in sheet.parent.iterdir():
                    if other != sheet:
                        other.unlink()
            sec, mb, rc, last = measure(args, env)
            table.append((f"{mp:g} MP", name, sec, mb, rc, last[:70]))
            key = f"{name.replace(' ', '_')}_{mp:g}mp"
            results[f"{key}_s"] = round(sec, 2)
            results[f"{key}_peak_mb"] = round(mb)
            results[f"{key}_ok"] = rc == 0
    print(f"{'sheet':>8} {'command':<14} {'seconds':>8} {'peak MB':>8} {'rc':>3}  output")
    for row in table:
        print(f"{row[0]:>8} {row[1]:<14} {row[2]:8.1f} {row[3]:8.0f} {row[4]:3d}  {row[5]}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
